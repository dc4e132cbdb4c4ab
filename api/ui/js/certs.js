// Certificates: search with filters and cursor paging (refreshed live), and one certificate with revoke and renew
// and the nodes it was deployed to.

import {ApiError, api} from "./api.js";
import {clearProblems, day, download, field, fill, h, showProblem, table} from "./dom.js";
import {confirmStep} from "./forms.js";
import {exportForm} from "./issue.js";
import {certificateDeployments} from "./deployments.js";

const FILTERS = ["common_name", "san", "status", "profile", "ca_id", "expiring_within", "sort", "serial"];
const STATUSES = ["", "valid", "issued", "expired", "revoked"];
const WINDOWS = [["", "any time"], ["7d", "7 days"], ["30d", "30 days"], ["90d", "90 days"]];
export const REASONS = ["unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
                        "cessation_of_operation", "privilege_withdrawn"];

function select(name, options, value) {
  return h("select", {name}, options.map(([v, label]) => h("option", {value: v, selected: v === (value || "")},
                                                             label)));
}

function searchForm(query, context) {
  const text = (name, label) => field(label, h("input", {name, type: "search", value: query.get(name) || "",
                                                         autocapitalize: "none"}));
  const form = h("form.filters.card", {role: "search"},
    text("common_name", "Common name"), text("san", "Subject alt name"),
    field("Status", select("status", STATUSES.map(s => [s, s || "any"]), query.get("status"))),
    field("Expiring within", select("expiring_within", WINDOWS, query.get("expiring_within"))),
    text("profile", "Profile"), text("ca_id", "CA id"), text("serial", "Serial (hex)"),
    field("Sort by", select("sort", [["issued", "issued (oldest first)"], ["expiry", "expiry (soonest first)"]], query.get("sort"))),
    h("div.actions", {}, h("button.primary", {type: "submit"}, "Search"), h("a.button", {href: "#/certs"}, "Clear")));
  form.addEventListener("submit", event => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) next.set(name, value);
    context.go(`/certs?${next}`);
  });
  return form;
}

function statusBadge(cert) {
  return h(`span.badge.st-${cert.status}`, {}, cert.status);
}

export async function certificatesView(main, context, {query}) {
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const form = searchForm(query, context);
  const results = h("section", {"aria-label": "Results", "aria-live": "polite", id: "results"});
  const issue = context.can.has("cert:issue") && context.can.has("ca:read") && context.can.has("profile:read")
    ? h("div.actions", {}, h("a.button", {href: "#/issue"}, "Issue with a key held here")) : null;
  fill(main, h("h1", {}, "Certificates"), issue, form, banner, results);
  const render = async (position, signal) => {
    const filters = Object.fromEntries(FILTERS.map(name => [name, query.get(name)]));
    const tenant = context.session.tenant_id ? null : context.tenant;
    let page;
    try {
      page = await api("/v1/certificates", {query: {...filters, tenant_id: tenant, cursor: query.get("cursor"),
                                                    limit: query.get("limit") || 25, min_position: position},
                         signal});
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      return showProblem(form, banner, error.problem);
    }
    clearProblems(form, banner);
    const next = new URLSearchParams(query);
    if (page.next_cursor) next.set("cursor", page.next_cursor);
    fill(results, page.items.length ? table([
      ["Common name", c => h("a", {href: `#/certs/${c.certificate_id}`}, c.common_name || c.certificate_id)],
      ["Status", statusBadge], ["Profile", c => c.profile], ["Algorithm", c => c.algorithm],
      ["Expires", c => day(c.not_after)], ["Serial", c => h("code", {}, c.serial_hex.slice(0, 16) + "…")],
    ], page.items) : h("p.muted", {}, "No certificate matches."),
    h("div.actions", {},
      query.get("cursor") ? h("button", {type: "button", on: {click: () => history.back()}}, "Previous page") : null,
      page.next_cursor ? h("a.button", {href: `#/certs?${next}`}, "Next page") : null));
  };
  await render();
  context.onEvent((message, signal) => render(message.id, signal));
}

function revokeForm(cert, context, refresh) {
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const form = h("form.card", {"aria-label": "Revoke"}, h("h2", {}, "Revoke"), banner,
    field("Reason", select("reason", REASONS.map(r => [r, r.replaceAll("_", " ")]), "unspecified")),
    h("button.danger", {type: "submit"}, "Revoke certificate"));
  form.addEventListener("submit", async event => {
    event.preventDefault();
    clearProblems(form, banner);
    if (!await confirmStep(form.querySelector("button[type=submit]"), {
      question: `Revoke ${cert.common_name || cert.certificate_id}?`, yes: "Yes, revoke",
      explain: "Revocation is final: the CRL and OCSP say so before this answers."})) return;
    try {
      const revoked = await api(`/v1/certificates/${cert.certificate_id}/revoke`, {
        method: "POST", body: {reason: form.elements.reason.value}, idempotent: true});
      await refresh(revoked.global_position);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showProblem(form, banner, error.problem);
    }
  });
  return form;
}

function renewButton(cert, context, banner) {
  return h("button", {type: "button", on: {click: async () => {
    try {
      const renewed = await api(`/v1/certificates/${cert.certificate_id}/renew`, {method: "POST", body: {},
                                                                                 idempotent: true});
      context.go(`/certs/${renewed.certificate_id}`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showProblem(null, banner, error.problem);
    }
  }}}, "Renew now");
}

export async function certificateView(main, context, {params: [id]}) {
  let exporter = null;  // kept across live reloads: what is typed into it (a password) is not lost
  const render = async (position, signal) => {
    const cert = await api(`/v1/certificates/${encodeURIComponent(id)}`, {query: {min_position: position}, signal});
    exporter ??= exportForm(cert, context);
    const banner = h("p.banner.error", {role: "alert", hidden: true});
    const live = cert.status === "valid" || cert.status === "issued";
    const sans = Object.entries(cert.sans || {}).flatMap(([kind, values]) => values.map(v => `${kind}: ${v}`));
    const facts = [["Subject", cert.subject_dn], ["Names", sans.join(", ")], ["Status", cert.status],
      ["Revoked", cert.revoked_at ? `${cert.revoked_at} (${cert.revocation_reason})` : null],
      ["Profile", cert.profile], ["Algorithm", cert.algorithm], ["Key", cert.key_source === "csr"
        ? "kept by its owner (CSR)" : "generated and held here"],
      ["Valid", `${cert.not_before} – ${cert.not_after}`], ["Serial", cert.serial_hex],
      ["Fingerprint (SHA-256)", cert.fingerprint], ["Issuer", cert.issuer_dn], ["Tags", cert.tags.join(", ")],
      ["Renewed by", cert.superseded_by], ["Renews", cert.supersedes]];
    const pem = async () => download(`${cert.certificate_id}.pem`, await api(
      `/v1/certificates/${cert.certificate_id}/export`, {query: {format: "pem", include_chain: true},
                                                         accept: "application/x-pem-file, */*"}));
    fill(main, h("p", {}, h("a", {href: "#/certs"}, "← Certificates")),
      h("h1", {}, h("span.cn", {}, cert.common_name || cert.certificate_id), " ", statusBadge(cert)), banner,
      h("dl.facts.card", {}, facts.filter(([, v]) => v).map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
      h("div.actions", {},
        h("button.primary", {type: "button", on: {click: pem}}, "Download certificate and chain (PEM)"),
        live && context.can.has("cert:issue") ? renewButton(cert, context, banner) : null,
        h("a.button", {href: `#/cas/${encodeURIComponent(cert.ca_id)}`}, "Issuing CA"),
        context.can.has("cert:revoke") ? h("a.button", {href: `#/compromised?certificate_id=${encodeURIComponent(
          cert.certificate_id)}`}, "Report its key compromised") : null),
      exporter,
      live && context.can.has("cert:revoke") ? revokeForm(cert, context, render) : null,
      await certificateDeployments(cert, position, signal),
      h("details", {}, h("summary", {}, "Certificate (PEM)"), h("pre.pem", {}, cert.certificate_pem)));
  };
  await render();
  context.onEvent((message, signal) => render(message.id, signal));
}

// Discovered endpoints of the tenant in view: what each served when last scanned, matched against the tenant's
// certificates, with cursor paging.

import {api} from "./api.js";
import {day, fill, h, table} from "./dom.js";

/** What an endpoint's latest observation says: unreachable (an error), unmanaged (not issued here), or the state of
 * the tenant's certificate it serves: revoked, expired, superseded (renewed, the old one still served) or matched. */
export function endpointStatus(e, now = Date.now()) {
  if (e.error) return "unreachable";
  if (!e.certificate_id) return "unmanaged";
  if (e.certificate_status === "revoked") return "revoked";
  if (e.certificate_status === "expired" || (e.not_after && Date.parse(e.not_after) < now)) return "expired";
  if (e.superseded_by) return "superseded";
  return "matched";
}

function served(e) {
  if (e.error) return `${e.error}${e.reason ? `: ${e.reason}` : ""}`;
  return e.subject_dn || "";
}

/** The chain the endpoint sent after its leaf: how many, and whether its issuer was among them (null: not known). */
function chain(e) {
  if (!e.chain) return "";
  const sent = `${e.chain.length} sent`;
  if (e.chain_complete === false) return h("span.badge.st-incomplete", {title: "the issuing CA's certificate is " +
    "missing: a client trusting only the root cannot build the path"}, `${sent}, issuer missing`);
  return e.chain_complete ? `${sent}, complete` : sent;
}

function clientCertificate(e) {
  return {required: "required", not_required: "not required"}[e.client_certificate] || "";
}

function certificate(e) {
  if (!e.certificate_id) return e.fingerprint_sha256 ? h("code.wrap", {}, `SHA-256 ${e.fingerprint_sha256.slice(0, 16)}…`)
    : "";
  const link = h("a", {href: `#/certs/${encodeURIComponent(e.certificate_id)}`}, `${e.certificate_id.slice(0, 12)}…`);
  return e.superseded_by ? [link, " → ", h("a", {href: `#/certs/${encodeURIComponent(e.superseded_by)}`},
                                           `${e.superseded_by.slice(0, 12)}…`)] : link;
}

export async function discoveryView(main, context, {query}) {
  const tenant = context.tenant;
  if (!tenant) return fill(main, h("h1", {}, "Discovered endpoints"), h("p", {}, "No tenant in view."));
  const results = h("section", {"aria-label": "Endpoints", "aria-live": "polite", id: "endpoints"});
  fill(main, h("h1", {}, "Discovered endpoints"),
    h("p.hint", {}, "Endpoints a scan recorded (csm discover scan, or POST …/discovered from a scanner elsewhere) and " +
      "the tenant's certificate each served when last observed."), results);
  const render = async (position, signal) => {
    const page = await api(`/v1/tenants/${encodeURIComponent(tenant)}/discovered`, {query: {
      cursor: query.get("cursor"), limit: query.get("limit") || 50, min_position: position}, signal});
    const next = new URLSearchParams(query);
    if (page.next_cursor) next.set("cursor", page.next_cursor);
    fill(results, page.items.length ? table([
      ["Endpoint", e => h("code.wrap", {}, e.endpoint)],
      ["Status", e => { const s = endpointStatus(e); return h(`span.badge.st-${s}`, {dataset: {status: s}}, s); }],
      ["Served", served], ["Certificate", certificate], ["Expires", e => day(e.not_after)],
      ["Chain", chain], ["Client cert", clientCertificate],
      ["TLS", e => e.tls_version || ""], ["Observed", e => e.observed_at]], page.items)
      : h("p.muted", {}, "No endpoint scanned yet."),
    h("div.actions", {},
      query.get("cursor") ? h("button", {type: "button", on: {click: () => history.back()}}, "Previous page") : null,
      page.next_cursor ? h("a.button", {href: `#/discovery?${next}`}, "Next page") : null));
  };
  await render();
  context.onEvent((message, signal) => render(message.id, signal));
}

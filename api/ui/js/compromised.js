// Compromised keys of the tenant in view: the keys reported (never certified again in the tenant), and reporting
// one, a certificate's key or a CA's keys, after a confirmation that names what is reported.

import {api} from "./api.js";
import {day, field, fill, h, table} from "./dom.js";
import {confirmStep, form} from "./forms.js";

const keysPath = tenant => `/v1/tenants/${encodeURIComponent(tenant)}/compromised-keys`;

function through(k) {
  if (k.certificate_id) return h("a", {href: `#/certs/${encodeURIComponent(k.certificate_id)}`},
                                 `certificate ${k.certificate_id.slice(0, 12)}…`);
  if (k.subject_ca_id) return h("a", {href: `#/cas/${encodeURIComponent(k.subject_ca_id)}`}, `CA ${k.subject_ca_id}`);
  return "";
}

function reportForm(context, tenant, query, result, render) {
  const caAllowed = context.can.has("ca:manage");
  return form("Report a compromised key", [h("h2", {}, "Report a compromised key"),
    h("p.hint", {}, "For a key found compromised after its certificate was revoked for another reason, or a root's " +
      "keys. The key is never certified again in the tenant, and every still trusted certificate of it is revoked " +
      "(key compromise). This cannot be undone."),
    field("Certificate id", h("input", {name: "certificate_id", value: query.get("certificate_id") || "",
                                        autocapitalize: "none", spellcheck: "false"}), "Its key is reported."),
    caAllowed ? field("Or a CA id", h("input", {name: "ca_id", value: query.get("ca_id") || "", autocapitalize: "none",
                                                spellcheck: "false"}), "Every key the CA has held is reported.") : null,
    caAllowed ? field("Only this key of the CA (SHA-256 of its public key, hex)", h("input", {name: "public_key_sha256",
      autocapitalize: "none", spellcheck: "false"}), "Empty: all of its keys. E.g. a root's old key after a rollover.")
      : null,
    field("Compromised since", h("input", {name: "invalidity_date", type: "datetime-local"}),
          "When the key was, or may have been, compromised (optional; your local time)."),
    h("button.danger", {type: "submit"}, "Report key compromised")], async el => {
    const e = el.elements;
    const certificate = e.certificate_id.value.trim();
    const ca = e.ca_id?.value.trim() || "";
    const named = certificate || ca;
    if (named && !await confirmStep(el.querySelector("button[type=submit]"), {
      question: `Report the key of ${certificate ? "certificate" : "CA"} ${named} compromised?`,
      yes: "Yes, report it compromised", typed: named,
      explain: ["Final: the key is never certified again in this tenant, and its trusted certificates are revoked now.",
                "Relying parties learn it from the CRL and OCSP at once."]})) return;
    const until = e.invalidity_date.value;
    const body = {certificate_id: certificate || null, ca_id: ca || null,
                  public_key_sha256: e.public_key_sha256?.value.trim() || null,
                  invalidity_date: until ? new Date(until).toISOString() : null};
    const done = await api(keysPath(tenant), {method: "POST", body, idempotent: true});
    el.reset();
    fill(result, h("p", {}, done.result.changed ? `Recorded ${done.public_keys_sha256.length} key(s).`
      : "Already reported: nothing changed."), done.revoked.length ? h("p", {}, "Revoked: ", done.revoked.map(
      (id, i) => [i ? ", " : "", h("a", {href: `#/certs/${encodeURIComponent(id)}`}, id.slice(0, 12) + "…")])) : null);
    result.hidden = false;
    await render();
  }, {id: "report-compromised"});
}

export async function compromisedView(main, context, {query}) {
  const tenant = context.tenant;
  if (!tenant) return fill(main, h("h1", {}, "Compromised keys"), h("p", {}, "No tenant in view."));
  const list = h("section", {"aria-label": "Compromised keys", id: "compromised-keys"});
  const result = h("div.banner.ok", {role: "status", hidden: true, id: "report-result"});
  const render = async () => {
    const keys = await api(keysPath(tenant));  // the tenant's own stream: current without min_position
    fill(list, keys.items.length ? table([
      ["Key (SHA-256 of its public key)", k => h("code.wrap", {}, k.public_key_sha256)],
      ["Reason", k => k.reason.replaceAll("_", " ")], ["Reported", k => day(k.reported_at)],
      ["Compromised since", k => day(k.invalidity_date)], ["Through", through], ["By", k => k.through]],
    [...keys.items].reverse()) : h("p.muted", {}, "No key has been reported compromised."));
  };
  fill(main, h("h1", {}, "Compromised keys"), result, list,
       context.can.has("cert:revoke") ? reportForm(context, tenant, query, result, render) : null);
  await render();
}

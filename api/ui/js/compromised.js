// Compromised keys of the tenant in view: the keys reported (never certified again in the tenant), and reporting
// one, a certificate's key or a CA's keys, after a confirmation that names what is reported; lifting a block reported
// in error (key:unblock, a reason and a confirmation: nothing is un-revoked), and the blocks lifted.

import {api} from "./api.js";
import {day, field, fill, h, minute, table} from "./dom.js";
import {confirmStep, form} from "./forms.js";

const keysPath = tenant => `/v1/tenants/${encodeURIComponent(tenant)}/compromised-keys`;

function through(k) {
  if (k.certificate_id) return h("a", {href: `#/certs/${encodeURIComponent(k.certificate_id)}`},
                                 `certificate ${k.certificate_id.slice(0, 12)}…`);
  if (k.subject_ca_id) return h("a", {href: `#/cas/${encodeURIComponent(k.subject_ca_id)}`}, `CA ${k.subject_ca_id}`);
  return "";
}

/** Whether lifting ``k`` is refused whatever is said (409 compromise_rollover_final): it, or the other half of its
 * hybrid report, is a key a compromise rollover rolled away from. */
function rolledAway(k, items) {
  const partners = items.filter(o => o === k || o.alternative_of === k.public_key_sha256 ||
                                     o.public_key_sha256 === k.alternative_of);
  return partners.some(o => o.through === "rollover");
}

const LIFT = ["The key (and the other half of a hybrid key reported with it) may be certified in this tenant again.",
  "Nothing is un-revoked: the certificates revoked with the report stay revoked, and the CRL and OCSP keep saying " +
  "key compromise. Your reason is kept in the audit trail."];

/** The in-page form lifting the block of ``k`` (in ``slot``): a reason, then a confirmation naming the key. */
function liftForm(tenant, k, slot, result, render) {
  const short = `${k.public_key_sha256.slice(0, 16)}…`;
  const el = form("Lift the block", [h("h2", {}, "Lift the block"),
    h("p", {}, "Key ", h("code.wrap", {}, k.public_key_sha256)),
    h("p.hint", {}, "Only for a key reported compromised in error. " + LIFT.join(" ")),
    field("Reason", h("input", {name: "reason", id: "lift-reason", required: true, minlength: 3, maxlength: 500}),
          "Why the report was in error (kept in the audit trail)."),
    // a key reported from several sources is lifted only when the operator says every report was in error
    (k.sources || 1) > 1 ? h("div.check", {},
      h("input", {type: "checkbox", name: "every_report", id: "lift-every-report"}),
      h("label", {for: "lift-every-report"}, `All ${k.sources} reports of this key were in error`)) : null,
    h("div.actions", {}, h("button.danger", {type: "submit"}, "Lift block"),
      h("button", {type: "button", on: {click: () => fill(slot)}}, "Cancel"))], async f => {
    if (!await confirmStep(f.querySelector("button[type=submit]"), {
      question: `Lift the block of key ${short}?`, yes: "Yes, lift the block", explain: LIFT})) return;
    const done = await api(`${keysPath(tenant)}/${encodeURIComponent(k.public_key_sha256)}/lift`, {
      method: "POST", idempotent: true, body: {reason: f.elements.reason.value.trim(),
                                               every_report: Boolean(f.elements.every_report?.checked)}});
    fill(slot);
    fill(result, h("p", {}, `Lifted the block of ${done.public_keys_sha256.length} key(s). Nothing was un-revoked.`));
    result.hidden = false;
    await render();
  }, {id: "lift-compromised"});
  fill(slot, el);
  el.elements.reason.focus();
}

function reportForm(context, tenant, query, result, render) {
  const caAllowed = context.can.has("ca:manage");
  return form("Report a compromised key", [h("h2", {}, "Report a compromised key"),
    h("p.hint", {}, "For a key found compromised after its certificate was revoked for another reason, or a root's " +
      "keys. The key is never certified again in the tenant, and every still trusted certificate of it is revoked " +
      "(key compromise). Revocations are final; a block reported in error can only be lifted by a tenant admin."),
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
      explain: ["The key is never certified again in this tenant, and its trusted certificates are revoked now " +
                "(final).", "Relying parties learn it from the CRL and OCSP at once."]})) return;
    const until = e.invalidity_date.value;
    const body = {certificate_id: certificate || null, ca_id: ca || null,
                  public_key_sha256: e.public_key_sha256?.value.trim() || null,
                  invalidity_date: until ? new Date(until).toISOString() : null};
    const done = await api(keysPath(tenant), {method: "POST", body, idempotent: true});
    el.reset();
    fill(result, h("p", {}, done.result.changed ? `Recorded ${done.public_keys_sha256.length} key(s).`
      : "Already reported: nothing changed."), done.revoked.length ? h("p", {}, "Revoked: ", done.revoked.map(
      (id, i) => [i ? ", " : "", h("a", {href: `#/certs/${encodeURIComponent(id)}`}, id.slice(0, 12) + "…")])) : null,
      done.revoked_ca_certificates?.length ? h("p", {}, "Revoked CA certificates of the key: ",
        done.revoked_ca_certificates.map((c, i) => [i ? ", " : "", `serial ${c.serial_hex} by `,
          h("a", {href: `#/cas/${encodeURIComponent(c.issuer_ca_id)}`}, `CA ${c.issuer_ca_id.slice(0, 12)}…`)])) : null);
    result.hidden = false;
    await render();
  }, {id: "report-compromised"});
}

export async function compromisedView(main, context, {query}) {
  const tenant = context.tenant;
  if (!tenant) return fill(main, h("h1", {}, "Compromised keys"), h("p", {}, "No tenant in view."));
  const list = h("section", {"aria-label": "Compromised keys", id: "compromised-keys"});
  const lifted = h("section", {"aria-label": "Lifted blocks", id: "lifted-keys"});
  const slot = h("div", {id: "lift-slot"});
  const result = h("div.banner.ok", {role: "status", hidden: true, id: "report-result"});
  const unblocking = context.can.has("key:unblock");
  const render = async () => {
    const keys = await api(keysPath(tenant));  // the tenant's own stream: current without min_position
    const lift = k => rolledAway(k, keys.items)
      ? h("span.hint", {title: "A key a compromise rollover rolled away from stays blocked"}, "final (rollover)")
      : h("button", {type: "button", "aria-label": `Lift the block of key ${k.public_key_sha256.slice(0, 16)}…`,
                     on: {click: () => liftForm(tenant, k, slot, result, render)}}, "Lift block");
    fill(list, keys.items.length ? table([
      ["Key (SHA-256 of its public key)", k => h("code.wrap", {}, k.public_key_sha256)],
      ["Reason", k => k.reason.replaceAll("_", " ")], ["Reported", k => day(k.reported_at)],
      ["Compromised since", k => day(k.invalidity_date)], ["Through", through], ["By", k => k.through],
      ["Sources", k => String(k.sources || 1)],
      ...unblocking ? [["", lift]] : []],
    [...keys.items].reverse()) : h("p.muted", {}, "No key is blocked as compromised."));
    fill(lifted, keys.lifted?.length ? [h("h2", {}, "Lifted blocks"),
      h("p.hint", {}, "Reported in error and lifted: these keys may be certified again. Nothing was un-revoked."),
      table([["Key (SHA-256 of its public key)", k => h("code.wrap", {}, k.public_key_sha256)],
        ["Status", () => h("span.badge.st-lifted", {}, "lifted")], ["Reported", k => day(k.reported_at)],
        ["Lifted", k => minute(k.lifted_at)], ["Why", k => k.reason]], [...keys.lifted].reverse(), "Lifted blocks")]
      : null);
  };
  fill(main, h("h1", {}, "Compromised keys"), result, slot, list, lifted,
       context.can.has("cert:revoke") ? reportForm(context, tenant, query, result, render) : null);
  await render();
}

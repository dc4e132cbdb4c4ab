// CA administration: creating a root or an intermediate, and on one CA disable/enable, key rollover (routine, or
// after a root key's compromise behind its own confirmation), revocation, cross-signing and the CRL link.

import {api} from "./api.js";
import {field, h} from "./dom.js";
import {choice, confirmStep, form, number, scope, subjectOf} from "./forms.js";
import {keyOffline} from "./offline.js";
import {reissueOf} from "./compromise.js";
import {REASONS} from "./certs.js";

const DEFAULT_ALGORITHM = "hybrid-p384-ml-dsa-65";  // the API's default for a CA

/** The algorithms a CA may use here (GET /v1/algorithms): available and allowed for a CA, post-quantum marked. */
export async function caAlgorithms() {
  const offers = await api("/v1/algorithms");
  return offers.filter(a => a.available && a.allowed_for_ca).map(a => [a.name,
    `${a.name} (${a.family}${a.post_quantum ? ", post-quantum" : ""}, ${a.security_bits}-bit)`]);
}

function algorithmSelect(options, value, blank) {
  const chosen = options.some(([name]) => name === value) ? value : options[0]?.[0];
  return choice("algorithm", blank ? [["", blank], ...options] : options, blank ? "" : chosen);
}

/** The create form (needs ca:create): a root, or an intermediate under one of the tenant's active CAs. */
export async function caCreateForm(context, reload) {
  const [algorithms, parents] = await Promise.all([caAlgorithms(),
    api("/v1/cas", {query: {...scope(context), status: "active", limit: 500}})]);
  // an offline root signs only at its ceremony: its intermediates are requested (offline.js)
  const online = parents.items.filter(ca => !keyOffline(ca));
  const parentField = field("Parent CA", choice("parent_id", online.map(ca => [ca.ca_id,
    `${ca.name} (${ca.kind}, ${ca.algorithm})`])));
  parentField.hidden = true;
  const el = form("Create a CA", [h("h2", {}, "Create a CA"),
    field("Kind", choice("kind", [["root", "Root (self-signed)"], ["intermediate", "Intermediate (signed by a parent)"]],
                         "root", {on: {change: e => { parentField.hidden = e.target.value !== "intermediate"; }}})),
    parentField,
    field("Name", h("input", {name: "name", required: true}), "How the CA is listed here."),
    field("Common name", h("input", {name: "common_name", required: true})),
    field("Organization", h("input", {name: "organization"})),
    field("Country", h("input", {name: "country", maxlength: 2, autocapitalize: "characters"}), "Two letters; optional."),
    field("Algorithm", algorithmSelect(algorithms, DEFAULT_ALGORITHM),
          "ML-DSA and hybrid (classical + ML-DSA) keys are post-quantum."),
    field("Key storage", choice("key_storage", [["vault", "Key vault (envelope-encrypted)"],
                                                ["hsm", "HSM (PKCS#11; ECDSA P-256/P-384 or RSA-4096; the key never leaves it)"]], "vault")),
    field("Validity (days)", h("input", {name: "validity_days", type: "number", min: 1}),
          "Empty: 10 years for a root; an intermediate's default below its parent's."),
    field("Path length", h("input", {name: "path_length", type: "number", min: 0}),
          "CAs allowed below this one; empty: no limit for a root, 0 for an intermediate."),
    h("button.primary", {type: "submit"}, "Create CA")], async form => {
    const kind = form.elements.kind.value;
    const body = {kind, ...scope(context), name: form.elements.name.value.trim(), subject: subjectOf(form),
                  algorithm: form.elements.algorithm.value, key_storage: form.elements.key_storage.value,
                  validity_days: number(form.elements.validity_days), path_length: number(form.elements.path_length)};
    if (kind === "intermediate") body.parent_id = form.elements.parent_id.value;
    for (const key of ["validity_days", "path_length"]) if (body[key] === null) delete body[key];
    const created = await api("/v1/cas", {method: "POST", body, idempotent: true});
    context.go(`/cas/${encodeURIComponent(created.ca_id)}`);
  }, {id: "create-ca"});
  return el;
}

async function post(ca, action, body) {
  return api(`/v1/cas/${encodeURIComponent(ca.ca_id)}/${action}`, {method: "POST", body, idempotent: true});
}

function statusForm(ca, render) {
  const disabling = ca.status === "active";
  return form(disabling ? "Disable" : "Enable", [h("h2", {}, disabling ? "Disable" : "Enable"),
    h("p.hint", {}, disabling ? "A disabled CA signs nothing more until it is enabled again; what it signed stays valid."
      : "The CA signs again."),
    field("Reason", h("input", {name: "reason", id: "status-reason", required: true})),
    h(disabling ? "button.danger" : "button", {type: "submit"}, disabling ? "Disable CA" : "Enable CA")], async el => {
    if (disabling && !await confirmStep(el.querySelector("button[type=submit]"), {
      question: `Disable ${ca.name}?`, yes: "Yes, disable", explain: "Issuance and renewals under it stop."})) return;
    await render((await post(ca, disabling ? "disable" : "enable", {reason: el.elements.reason.value.trim()}))
      .global_position);
  });
}

const COMPROMISE = ["The old key is recorded compromised in the tenant: it is never certified again.",
  "No link certificate is signed, and from now on no chain, truststore or caIssuers answer holds a certificate of " +
  "the root's keys until now: every node trusting the old root stops trusting what it signed.",
  "Nothing is revoked: the answer lists the CAs and certificates still signed under the old keys, to issue again."];

function rolloverForm(ca, algorithms, render) {
  const compromised = h("input", {type: "checkbox", name: "compromised", id: "f-compromised"});
  const el = form("Roll over the key", [h("h2", {}, "Roll over the key"),
    h("p.hint", {}, "A new key with overlapping validity; the old key's certificates stay valid" +
      (ca.kind === "root" ? " and link certificates chain the old key to the new." : ".")),
    field("Reason", h("input", {name: "reason", id: "rollover-reason", required: true})),
    field("Algorithm", algorithmSelect(algorithms, ca.algorithm, `keep ${ca.algorithm}`)),
    field("Validity (days)", h("input", {name: "validity_days", id: "rollover-validity", type: "number", min: 1}),
          "Empty: as before."),
    ca.kind === "root" ? h("div.check", {}, compromised, h("label", {for: "f-compromised"},
      "The root's key was stolen (compromise rollover)")) : null,
    h("button", {type: "submit"}, "Roll over")], async form => {
    const stolen = compromised.checked;
    if (stolen && !await confirmStep(form.querySelector("button[type=submit]"), {
      question: `Compromise rollover of ${ca.name}: the old keys are distrusted`, explain: COMPROMISE,
      yes: "Yes, the key was stolen: distrust it"})) return;
    const body = {reason: form.elements.reason.value.trim(), compromised: stolen};
    if (form.elements.algorithm.value) body.algorithm = form.elements.algorithm.value;
    if (number(form.elements.validity_days) !== null) body.validity_days = number(form.elements.validity_days);
    const done = await post(ca, "rollover", body);
    await render(done.global_position);
    // the answer's count, once; the page's Compromise rollovers section reads it again from the API (compromise.js)
    if (done.compromised) document.getElementById("main").prepend(h("div.banner.warn", {role: "status", id: "reissue"},
      h("p", {}, "Rolled over in compromise mode."), reissueOf(done.reissue)));
  });
  return el;
}

function revokeForm(ca, render) {
  return form("Revoke the CA", [h("h2", {}, "Revoke the CA"),
    h("p.hint", {}, "Its issuer's CRL lists it and everything under it is no longer trusted. Final."),
    field("Reason", choice("reason", REASONS.map(r => [r, r.replaceAll("_", " ")]), "unspecified",
                           {id: "revoke-reason"})),
    h("button.danger", {type: "submit"}, "Revoke CA")], async el => {
    if (!await confirmStep(el.querySelector("button[type=submit]"), {
      question: `Revoke ${ca.name}?`, yes: "Yes, revoke the CA",
      explain: "Revocation is final: every certificate it signed, and every CA below it, stops being trusted."})) return;
    await render((await post(ca, "revoke", {reason: el.elements.reason.value})).global_position);
  });
}

/** Cross-certification: another active CA of the tenant certifies this CA's key (a second path of trust). */
function crossForm(ca, issuers, render) {
  return form("Cross-sign", [h("h2", {}, "Cross-sign"),
    h("p.hint", {}, "Another CA signs a certificate for this CA's key, so that clients trusting that CA's root trust " +
      "what this CA signs too (e.g. while moving to a new root). The signing CA is one of this tenant's whose key is " +
      "held here: the API has no way to install a cross-certificate signed outside the tenant."),
    field("Signed by", choice("issuer_id", issuers.map(c => [c.ca_id, `${c.name} (${c.kind}, ${c.algorithm})`]),
                              issuers[0]?.ca_id, {id: "cross-issuer"})),
    field("Validity (days)", h("input", {name: "validity_days", id: "cross-validity", type: "number", min: 1}),
          "Empty: 1825 days, or what the signing CA has left."),
    field("Path length", h("input", {name: "path_length", id: "cross-path", type: "number", min: 0}),
          "Empty: this CA's own; it may be narrowed, never widened."),
    h("button", {type: "submit"}, "Cross-sign")], async el => {
    const issuer = issuers.find(c => c.ca_id === el.elements.issuer_id.value);
    if (!await confirmStep(el.querySelector("button[type=submit]"), {
      question: `Have ${issuer?.name || el.elements.issuer_id.value} certify ${ca.name}?`, yes: "Yes, cross-sign",
      explain: "Everything this CA signs becomes trusted, too, wherever the signing CA's root is trusted, until the " +
        "cross-certificate expires (it cannot be withdrawn on its own: revoking this CA ends both paths)."})) return;
    const body = {issuer_id: el.elements.issuer_id.value};
    for (const key of ["validity_days", "path_length"]) if (number(el.elements[key]) !== null) {
      body[key] = number(el.elements[key]);
    }
    await render((await post(ca, "cross-sign", body)).global_position);
  }, {id: "cross-sign"});
}

/** What ``ca`` offers the caller: the CRL link always, the rest with ca:manage while the CA is not revoked. An
 * offline root's key is not here: it neither rolls over nor signs, nor is cross-certified (its CRL: offline.js). */
export async function caActions(ca, context, render) {
  const crl = h("div.actions", {}, h("a.button", {href: `/v1/cas/${encodeURIComponent(ca.ca_id)}/crl?format=pem`,
                                                  download: `${ca.ca_id}.crl.pem`}, "Download CRL (PEM)"));
  if (ca.status === "pending") return [];  // no certificate yet: no CRL, nothing to manage
  if (!context.can.has("ca:manage") || ca.status === "revoked") return [crl];
  const [algorithms, active] = await Promise.all([caAlgorithms().catch(() => []),
    api("/v1/cas", {query: {tenant_id: ca.tenant_id, status: "active", limit: 500}}).catch(() => ({items: []}))]);
  const issuers = active.items.filter(c => c.ca_id !== ca.ca_id && !keyOffline(c));
  const offline = keyOffline(ca);
  return [crl, h("div.grid", {id: "ca-admin"}, statusForm(ca, render),
    offline ? null : rolloverForm(ca, algorithms, render),
    ca.kind === "intermediate" ? revokeForm(ca, render) : null,
    ca.status === "active" && !offline && issuers.length ? crossForm(ca, issuers, render) : null)];
}

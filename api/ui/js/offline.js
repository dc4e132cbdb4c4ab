// Offline CAs: importing an offline root's certificate, requesting an intermediate whose key is made here (or on the
// token) for the offline ceremony to sign (its CSR to download, the certificate signed to install), and an offline
// root's CRL ceremony (the request to download for `csm ca root sign-crl`, the CRL it signed to upload). The ceremony
// itself runs on the offline machine (`csm ca root ...`): nothing here holds, or asks for, the root's key.

import {api} from "./api.js";
import {day, download, field, fill, h, table} from "./dom.js";
import {pem} from "./der.js";
import {choice, form, scope, subjectOf} from "./forms.js";

const DEFAULT_ALGORITHM = "hybrid-p384-ml-dsa-65";  // the API's default for a CA, as `csm ca request-intermediate`'s

/** An imported root: its key never comes online, its CRLs come only from the ceremony. */
export function keyOffline(ca) {
  return ca.origin === "offline" && ca.kind === "root";
}

/** An intermediate requested from an offline root, waiting for the certificate the ceremony signs. */
export function awaitingCeremony(ca) {
  return ca.origin === "offline" && ca.status === "pending";
}

/** A file name made of the CA's name (or id). */
function fileName(ca, suffix) {
  return `${ca.name.replace(/[^A-Za-z0-9._-]+/g, "_") || ca.ca_id}${suffix}`;
}

/** The state of an offline root's CRL, named as the compliance rules name a gap (ca_crl_missing, ca_crl_overdue):
 * missing (none signed yet), overdue (the last one lapsed), due (a revocation it lacks, or a third of its period
 * left) or current. */
export function crlState(request, now = Date.now()) {
  if (request.last_crl_number === null || request.last_crl_number === undefined) {
    return {state: "missing", text: "no CRL signed yet", rule: "ca_crl_missing"};
  }
  const next = request.last_next_update;
  if (next && Date.parse(next) <= now) return {state: "overdue", text: `lapsed ${day(next)}`, rule: "ca_crl_overdue"};
  if (request.due) return {state: "due", text: `due: sign before ${day(next)}`};
  return {state: "current", text: `next by ${day(next)}`};
}

/** A badge of ``crlState``; the CRL request of ``ca`` is read (GET …/crl-request, ca:read). */
export async function crlBadge(ca, position) {
  const request = await api(`/v1/cas/${encodeURIComponent(ca.ca_id)}/crl-request`, {query: {min_position: position}});
  const found = crlState(request);
  return h(`span.badge.st-crl-${found.state}`, {dataset: {crl: found.state}, title: found.rule || null},
           `CRL ${found.text}`);
}

/** The text of a PEM file chosen in ``input`` (DER is armoured as ``label``), else ``pasted``'s. */
async function pemOf(input, pasted, label) {
  const file = input.files?.[0];
  if (!file) return pasted.value.trim();
  const bytes = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder().decode(bytes);
  return text.includes("-----BEGIN ") ? text : pem(label, bytes);
}

/** A file input and a textarea for the same PEM: the API's error for ``name`` shows under the textarea. */
function pemFields(name, label, id) {
  const file = h("input", {type: "file", name: `${name}_file`, id: `${id}-file`, accept: ".pem,.crt,.cer,.der,.crl"});
  const text = h("textarea", {name, id, rows: 5, spellcheck: "false", autocapitalize: "none"});
  return {file, text, fields: [field(`${label} (file)`, file, "PEM or DER."), field(`… or paste it (PEM)`, text)]};
}

/** Import an offline root (ca:create): its certificate only, from `csm ca root init --offline`. */
export function importRootForm(context) {
  const cert = pemFields("certificate_pem", "Root certificate", "import-root-pem");
  return form("Import an offline root", [h("h2", {}, "Import an offline root"),
    h("p.hint", {}, "The certificate of a root whose key stays offline (csm ca root init --offline writes root.pem). " +
      "Intermediates are then requested here and signed at the ceremony; its CRLs are signed there too."),
    field("Name", h("input", {name: "name", id: "import-root-name", required: true}), "How the CA is listed here."),
    cert.fields, h("button.primary", {type: "submit"}, "Import root")], async el => {
    const body = {...scope(context), name: el.elements.name.value.trim(),
                  certificate_pem: await pemOf(cert.file, cert.text, "CERTIFICATE")};
    const created = await api("/v1/cas/import", {method: "POST", body, idempotent: true});
    context.go(`/cas/${encodeURIComponent(created.ca_id)}`);
  }, {id: "import-root"});
}

/** Request an intermediate of an offline root (ca:create): its key is made here or on the token, its CSR goes to
 * the ceremony. ``roots``: the tenant's active offline roots. */
export function requestIntermediateForm(context, roots, algorithms) {
  return form("Request an intermediate from an offline root", [
    h("h2", {}, "Request an intermediate from an offline root"),
    h("p.hint", {}, "Its key is made here (or on the HSM); the request (CSR) is then downloaded from the CA's page for " +
      "the offline root to sign."),
    field("Offline root", choice("parent_id", roots.map(ca => [ca.ca_id, `${ca.name} (${ca.algorithm})`]),
                                 roots[0]?.ca_id, {id: "offline-parent"})),
    field("Name", h("input", {name: "name", id: "offline-name", required: true})),
    field("Common name", h("input", {name: "common_name", id: "offline-cn", required: true})),
    field("Organization", h("input", {name: "organization", id: "offline-o"})),
    field("Country", h("input", {name: "country", id: "offline-c", maxlength: 2, autocapitalize: "characters"}),
          "Two letters; optional."),
    field("Algorithm", choice("algorithm", algorithms, algorithms.some(([a]) => a === DEFAULT_ALGORITHM)
      ? DEFAULT_ALGORITHM : algorithms[0]?.[0], {id: "offline-algorithm"}),
          "ML-DSA and hybrid (classical + ML-DSA) keys are post-quantum."),
    field("Key storage", choice("key_storage", [["vault", "Key vault (envelope-encrypted)"],
                                                ["hsm", "HSM (PKCS#11; the key never leaves it)"]], "vault",
                                {id: "offline-key-storage"})),
    h("button.primary", {type: "submit"}, "Request intermediate")], async el => {
    const body = {...scope(context), parent_id: el.elements.parent_id.value, name: el.elements.name.value.trim(),
                  subject: subjectOf(el), algorithm: el.elements.algorithm.value,
                  key_storage: el.elements.key_storage.value};
    const created = await api("/v1/cas/offline-intermediate", {method: "POST", body, idempotent: true});
    context.go(`/cas/${encodeURIComponent(created.ca_id)}`);
  }, {id: "request-intermediate"});
}

function command(id, text) {
  return h("div.command", {}, h("pre.wrap", {id}, text));
}

/** A pending intermediate: its CSR, the ceremony's command, and (ca:create) installing what the ceremony signed. */
function pendingSection(ca, context, render) {
  const csr = `${fileName(ca, "")}.csr`;
  const cert = pemFields("certificate_pem", "Signed certificate", "install-pem");
  const install = context.can.has("ca:create") ? form("Install the signed certificate", [
    h("h3", {}, "3. Install the certificate the ceremony signed"),
    cert.fields, h("button.primary", {type: "submit"}, "Install certificate")], async el => {
    const body = {certificate_pem: await pemOf(cert.file, cert.text, "CERTIFICATE")};
    const done = await api(`/v1/cas/${encodeURIComponent(ca.ca_id)}/certificate`, {method: "POST", body,
                                                                                 idempotent: true});
    await render(done.global_position);
  }, {id: "install-certificate"}) : null;
  return h("section", {id: "offline-ceremony", "aria-label": "Offline ceremony"},
    h("h2", {}, "Waiting for the offline root's signature"),
    h("p", {}, "This intermediate's key is held here; it signs nothing until the offline root has certified it."),
    h("h3", {}, "1. Take its request to the ceremony"),
    h("div.actions", {}, h("button.primary", {type: "button", on: {click: () => download(csr, ca.csr_pem,
      "application/pkcs10")}}, "Download the CSR")),
    h("h3", {}, "2. Sign it on the offline machine"),
    command("sign-intermediate-command", `csm ca root sign-intermediate --root-dir ROOT_DIR --csr ${csr} ` +
      `--out ${fileName(ca, ".pem")} --crl-url ${location.origin}/v1/cas/${ca.parent_id}/crl`),
    install,
    h("details", {}, h("summary", {}, "CSR (PEM)"), h("pre.pem", {}, ca.csr_pem || "")));
}

/** An offline root's CRL ceremony: where its CRL stands, the request to sign, and (ca:manage) the signed CRL. */
async function crlSection(ca, context, render, position) {
  const request = await api(`/v1/cas/${encodeURIComponent(ca.ca_id)}/crl-request`, {query: {min_position: position}});
  const found = crlState(request);
  const file = `${fileName(ca, "")}-crl-request-${request.crl_number}.json`;
  const crl = pemFields("crl_pem", "Signed CRL", "crl-pem");
  const upload = context.can.has("ca:manage") ? form("Install the signed CRL", [
    h("h3", {}, "Install the CRL the ceremony signed"),
    h("p.hint", {}, "Refused unless the root's key signed it, its number is above the last, it is current and it " +
      "lists exactly the revocations recorded here."),
    crl.fields, h("button.primary", {type: "submit"}, "Install CRL")], async el => {
    const body = {crl_pem: await pemOf(crl.file, crl.text, "X509 CRL")};
    const done = await api(`/v1/cas/${encodeURIComponent(ca.ca_id)}/crls`, {method: "POST", body, idempotent: true});
    await render(done.global_position);
  }, {id: "install-crl"}) : null;
  const facts = [["CRL", h(`span.badge.st-crl-${found.state}`, {dataset: {crl: found.state}}, found.text)],
    ["Last CRL number", request.last_crl_number ?? "none"], ["Its next update", request.last_next_update || "—"],
    ["Next CRL number", request.crl_number], ["Revocations recorded", request.entries.length]];
  return h("section", {id: "crl-ceremony", "aria-label": "CRL ceremony"},
    h("h2", {}, "CRL ceremony (offline key)"),
    h("p", {}, "This root's key is offline: relying parties get its CRL only when the ceremony signs one. " +
      (found.rule ? `The compliance report lists this as ${found.rule}.` : "")),
    h("dl.facts.card", {}, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v instanceof Node ? v : String(v))])),
    h("div.actions", {}, h("button.primary", {type: "button", on: {click: () => download(file,
      JSON.stringify(request, null, 2), "application/json")}}, "Download the CRL request")),
    command("sign-crl-command", `csm ca root sign-crl --root-dir ROOT_DIR --request ${file} ` +
      `--out ${fileName(ca, "")}-${request.crl_number}.crl`),
    upload);
}

/** What an offline CA's page adds: the intermediate's ceremony while it waits, or an offline root's CRL ceremony. */
export async function offlineSection(ca, context, render, position) {
  if (awaitingCeremony(ca)) return pendingSection(ca, context, render);
  if (keyOffline(ca) && (ca.status === "active" || ca.status === "disabled")) {
    return crlSection(ca, context, render, position);
  }
  return null;
}

/** The offline roots among ``cas`` with their CRL's state, and the intermediates waiting for a ceremony. */
export async function offlineList(cas, position) {
  const rows = await Promise.all(cas.filter(ca => keyOffline(ca) || awaitingCeremony(ca)).map(async ca => [ca,
    ca.status === "active" || ca.status === "disabled" ? await crlBadge(ca, position).catch(() => "") : ""]));
  const link = ca => h("a", {href: `#/cas/${encodeURIComponent(ca.ca_id)}`}, ca.name);
  return rows.length ? table([["Name", ([ca]) => link(ca)], ["Kind", ([ca]) => ca.kind],
    ["Status", ([ca]) => awaitingCeremony(ca) ? h("span.badge.st-pending", {}, "awaiting ceremony")
      : h(`span.badge.st-${ca.status}`, {}, ca.status)], ["CRL", ([, badge]) => badge]], rows)
    : h("p.muted", {}, "No offline root in this tenant.");
}

/** The forms that start an offline CA (ca:create): import a root, request an intermediate of an active one. */
export function offlineForms(context, cas, algorithms) {
  const roots = cas.filter(ca => keyOffline(ca) && ca.status === "active");
  return h("div.grid", {id: "offline-forms"}, importRootForm(context),
           roots.length ? requestIntermediateForm(context, roots, algorithms) : null);
}

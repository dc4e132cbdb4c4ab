// A certificate with its key made and held by the server (profile, names, algorithm), and the export form of a
// certificate: PEM, DER, PKCS#12, JKS, truststores and the connection bundle, fetched with the bearer token (and a
// store's password in the X-Export-Password header, never the URL) and saved from a Blob.

import {api} from "./api.js";
import {download, field, fill, h} from "./dom.js";
import {choice, form, number, scope, words} from "./forms.js";

async function choices(context) {
  const {tenant_id: tenant} = scope(context);
  const [profiles, cas, algorithms] = await Promise.all([
    api("/v1/profiles", {query: {tenant_id: tenant}}),
    api("/v1/cas", {query: {tenant_id: tenant, status: "active", limit: 500}}),
    api("/v1/algorithms")]);
  return {profiles: profiles.filter(p => p.status === "active"),
          cas: [...cas.items].sort((a, b) => (a.kind === "root") - (b.kind === "root")),
          algorithms: algorithms.filter(a => a.available)};
}

export async function issueView(main, context) {
  const found = await choices(context);
  const el = form("Issue a certificate", [h("h2", {}, "Certificate with a key held here"),
    h("p.hint", {}, "The server makes the key pair and keeps it in its key vault; export it below once issued " +
      "(that needs key:export and is audited). To keep the key yourself, use Request a certificate instead."),
    field("Issuing CA", choice("ca_id", found.cas.map(ca => [ca.ca_id, `${ca.name} (${ca.algorithm})`]))),
    field("Profile", choice("profile", found.profiles.map(p => [p.name, `${p.name}: ${p.profile.description}`]),
                            "cassandra-node")),
    field("Common name", h("input", {name: "common_name", required: true, autocapitalize: "none"})),
    field("DNS names", h("input", {name: "dns", autocapitalize: "none"}), "Comma-separated; optional."),
    field("IP addresses", h("input", {name: "ip", autocapitalize: "none"}), "Comma-separated; optional."),
    field("Algorithm", choice("algorithm", [["", "the profile's default"], ...found.algorithms.map(a => [a.name,
      `${a.name}${a.post_quantum ? " (post-quantum)" : ""}`])], "")),
    field("Validity (days)", h("input", {name: "validity_days", type: "number", min: 1, max: 36500}),
          "Empty: the profile's default."),
    h("button.primary", {type: "submit"}, "Issue certificate")], async f => {
    const sans = {dns: words(f.elements.dns.value), ip: words(f.elements.ip.value)};
    const body = {...scope(context), ca_id: f.elements.ca_id.value, profile: f.elements.profile.value,
                  subject: {common_name: f.elements.common_name.value.trim()},
                  sans: Object.fromEntries(Object.entries(sans).filter(([, v]) => v.length))};
    if (f.elements.algorithm.value) body.algorithm = f.elements.algorithm.value;
    if (number(f.elements.validity_days) !== null) body.validity_days = number(f.elements.validity_days);
    const issued = await api("/v1/certificates", {method: "POST", body, idempotent: true});
    context.go(`/certs/${encodeURIComponent(issued.certificate_id)}`);
  }, {id: "issue-form"});
  fill(main, h("h1", {}, "Issue a certificate"), found.cas.length ? el
    : h("p.muted", {}, "No active CA in this tenant: create one first."));
}

// [format, label, needs the key, file name's ending]
const FORMATS = [["pem", "PEM: certificate and chain", false, "pem"], ["der", "DER: the certificate alone", false, "der"],
  ["pkcs12-truststore", "PKCS#12 truststore", false, "truststore.p12"],
  ["jks-truststore", "JKS truststore", false, "truststore.jks"],
  ["pem-key", "PEM with the private key", true, "pem"], ["pkcs12", "PKCS#12 keystore (key and chain)", true, "p12"],
  ["jks", "JKS keystore (key and chain)", true, "jks"],
  ["bundle", "Connection bundle (zip: stores, key, driver settings)", true, "connection-bundle.zip"]];

/** The export form of ``cert``: formats carrying its key only when the server holds it and the caller has key:export. The password is read from its field for the one request and the field
 * is cleared afterwards; it is kept nowhere. */
export function exportForm(cert, context) {
  const withKey = cert.has_key && context.can.has("key:export");
  // a bundle carries the key when the server holds one, and then needs key:export; otherwise it is certificates only
  const formats = FORMATS.filter(([v, , key]) => !key || withKey || (v === "bundle" && !cert.has_key));
  const password = h("input", {name: "X-Export-Password", type: "password", autocomplete: "new-password"});
  const points = field("Contact points", h("input", {name: "contact_points", autocapitalize: "none"}),
                       "The bundle's driver settings: host[:port], comma-separated; optional.");
  points.hidden = true;
  const passwordField = field("Export password", password,
    "Keystores and truststores need one (at least 8 characters); a PEM key or bundle is encrypted with it if given.");
  const el = form("Export", [h("h2", {}, "Export"),
    field("Format", choice("format", formats.map(([v, label]) => [v, label]), "pem", {on: {change: e => {
      points.hidden = e.target.value !== "bundle";
    }}})), passwordField, points,
    h("button.primary", {type: "submit"}, "Download export")], async f => {
    const [format, , , ending] = FORMATS.find(([v]) => v === f.elements.format.value);
    const query = {format: format === "pem-key" ? "pem" : format, include_key: format === "pem-key" ? "true" : null,
                   contact_points: format === "bundle" ? f.elements.contact_points.value.trim() : null};
    const headers = password.value ? {"X-Export-Password": password.value} : {};
    const body = await api(`/v1/certificates/${encodeURIComponent(cert.certificate_id)}/export`, {
      query, headers, accept: "*/*", blob: true});
    password.value = "";
    download(`${(cert.common_name || cert.certificate_id).replace(/[^A-Za-z0-9._-]+/g, "_")}.${ending}`, body,
             body.type || "application/octet-stream");
  }, {id: "export-form"});
  return el;
}

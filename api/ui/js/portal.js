// The developer self-service portal: a client certificate from a key pair made in this browser (WebCrypto, the
// private key never sent), or from a CSR made elsewhere (openssl), then the certificate and its chain.

import {ApiError, api} from "./api.js";
import {clearProblems, download, field, fill, h, showProblem} from "./dom.js";
import {requestAndKey} from "./csr.js";

const list = text => String(text || "").split(/[\s,]+/).filter(Boolean);

function opensslCommand(data) {
  const sans = [...list(data.dns).map(d => `DNS:${d}`), ...list(data.email).map(e => `email:${e}`)];
  const subject = `/CN=${data.common_name || "app.example.internal"}${data.organization ? `/O=${data.organization}` : ""}`;
  return ["openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\",
          `  -keyout client.key -out client.csr -subj '${subject}'` + (sans.length ? " \\" : ""),
          sans.length ? `  -addext 'subjectAltName=${sans.join(",")}'` : null].filter(Boolean).join("\n");
}

async function choices(context) {
  const tenant = context.session.tenant_id ? null : context.tenant;
  const [profiles, cas] = await Promise.all([
    api("/v1/profiles", {query: {tenant_id: tenant}}),
    api("/v1/cas", {query: {tenant_id: tenant, status: "active", limit: 500}}),
  ]);
  return {tenant, profiles: profiles.filter(p => p.status === "active" && !p.profile.extended_key_usage
                                              .includes("ocsp_signing")),
          // issuing CAs first: leaf certificates usually come from an intermediate, not from the root
          cas: [...cas.items].sort((a, b) => (a.kind === "root") - (b.kind === "root"))};
}

function requestForm(found) {
  const option = (value, label, selected) => h("option", {value, selected}, label);
  const mode = (value, label, checked) => h("label.radio", {}, h("input", {type: "radio", name: "mode", value, checked}),
                                            " ", label);
  return h("form.card", {id: "request-form"},
    h("h2", {}, "Request a client certificate"),
    h("p.banner.error", {role: "alert", hidden: true}),
    field("Issuing CA", h("select", {name: "ca_id", required: true},
      found.cas.map(ca => option(ca.ca_id, `${ca.name} (${ca.algorithm})`)))),
    field("Profile", h("select", {name: "profile"}, found.profiles.map(p => option(
      p.name, `${p.name}: ${p.profile.description}`, p.name === "cassandra-client")))),
    h("fieldset", {}, h("legend", {}, "Key"),
      mode("browser", "Generate an ECDSA P-256 key in this browser (it never leaves it)", true),
      mode("csr", "I have a CSR (made with openssl or another tool)", false)),
    h("div", {id: "browser-fields"},
      field("Common name", h("input", {name: "common_name", autocapitalize: "none"}),
            "Usually the application's name or DNS name."),
      field("Organization", h("input", {name: "organization"})),
      field("DNS names", h("input", {name: "dns", autocapitalize: "none"}), "Comma-separated; optional."),
      field("Email addresses", h("input", {name: "email", type: "text", autocapitalize: "none"}),
            "Comma-separated; optional.")),
    h("div", {id: "csr-fields", hidden: true},
      h("p", {}, "Make the key and the request yourself, for example:"),
      h("pre.command", {id: "openssl-command"}),
      field("CSR (PEM)", h("textarea", {name: "csr", rows: 8, spellcheck: false}))),
    field("Validity (days)", h("input", {name: "validity_days", type: "number", min: 1, max: 36500}),
          "Empty: the profile's default."),
    h("button.primary", {type: "submit"}, "Request certificate"));
}

function wire(form) {
  const command = form.querySelector("#openssl-command");
  const update = () => {
    const data = Object.fromEntries(new FormData(form));
    const byBrowser = data.mode === "browser";
    form.querySelector("#browser-fields").hidden = false;
    form.querySelector("#csr-fields").hidden = byBrowser;
    command.textContent = opensslCommand(data);
  };
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  update();
}

async function issued(result, privateKey, context) {
  const cert = await api(`/v1/certificates/${result.certificate_id}`, {query: {min_position: result.global_position}});
  const chain = await api(`/v1/cas/${encodeURIComponent(cert.ca_id)}/chain`,
                          {accept: "application/pem-certificate-chain, */*"});
  const name = (cert.common_name || cert.certificate_id).replace(/[^A-Za-z0-9._-]+/g, "_");
  return h("section.card", {id: "issued", "aria-label": "Your certificate"},
    h("h2", {}, "Your certificate"),
    h("p", {}, "Issued: ", h("a", {href: `#/certs/${cert.certificate_id}`}, cert.subject_dn), ` until ${cert.not_after}.`),
    privateKey ? h("p.banner.warn", {}, "Your private key exists only in this page: download it now. It was never ",
                   "sent to the server, and it cannot be recovered.") : null,
    h("div.actions", {},
      privateKey ? h("button.primary", {type: "button", id: "download-key",
                                        on: {click: () => download(`${name}.key.pem`, privateKey)}},
                     "Download private key (PKCS#8 PEM)") : null,
      h("button", {type: "button", id: "download-cert", on: {click: () => download(`${name}.crt.pem`,
                                                                                  cert.certificate_pem)}},
        "Download certificate"),
      h("button", {type: "button", id: "download-chain", on: {click: () => download(`${name}.chain.pem`, chain)}},
        "Download CA chain")),
    h("details", {open: true}, h("summary", {}, "Certificate (PEM)"), h("pre.pem", {id: "certificate-pem"},
                                                                        cert.certificate_pem)),
    h("details", {}, h("summary", {}, "CA chain (PEM)"), h("pre.pem", {}, chain)));
}

export async function portalView(main, context) {
  const found = await choices(context);
  if (!found.cas.length) return fill(main, h("h1", {}, "Request a certificate"), h("p", {}, "No active CA here yet."));
  const form = requestForm(found);
  const banner = form.querySelector(".banner");
  const outcome = h("div", {"aria-live": "polite"});
  wire(form);
  form.addEventListener("submit", async event => {
    event.preventDefault();
    clearProblems(form, banner);
    const data = Object.fromEntries(new FormData(form));
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      let csr = data.csr;
      let privateKey = null;
      if (data.mode === "browser") {
        if (!data.common_name) {
          return showProblem(form, banner, {field: "common_name", detail: "a common name is required"});
        }
        ({csr, privateKey} = await requestAndKey({commonName: data.common_name, organization: data.organization},
                                                 {dns: list(data.dns), email: list(data.email)}));
      }
      const body = {ca_id: data.ca_id, profile: data.profile, csr};
      if (data.validity_days) body.validity_days = Number(data.validity_days);
      if (found.tenant) body.tenant_id = found.tenant;
      const result = await api("/v1/certificates", {method: "POST", body, idempotent: true});
      fill(outcome, await issued(result, privateKey, context));
      outcome.querySelector("h2").focus?.();
    } catch (error) {
      showProblem(form, banner, error instanceof ApiError ? error.problem : {field: "csr", detail: error.message});
    } finally {
      button.disabled = false;
    }
  });
  fill(main, h("h1", {}, "Request a certificate"), form, outcome);
}

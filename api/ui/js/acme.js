// ACME for the tenant in view: its directory URL, and its external account binding (EAB) keys: made (the HMAC key
// shown once, with certbot and lego command lines), listed and revoked.

import {api} from "./api.js";
import {field, fill, h, table} from "./dom.js";
import {attempt, choice, confirmStep, form, lines, showSecret} from "./forms.js";

const keysPath = tenant => `/v1/tenants/${encodeURIComponent(tenant)}/acme/eab-keys`;

/** ``value`` quoted for a POSIX shell (single quotes; a quote inside closes, escapes and reopens). */
export function shellQuote(value) {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${String(value).replaceAll("'", "'\\''")}'`;
}

/** The certbot and lego command lines that register with this key and obtain a certificate for ``name``. */
export function clientCommands(directory, kid, hmac, name) {
  const q = shellQuote;
  return {
    certbot: `certbot certonly --server ${q(directory)} --eab-kid ${q(kid)} --eab-hmac-key=${q(hmac)} ` +
      `--agree-tos --register-unsafely-without-email --standalone -d ${q(name)}`,
    lego: `lego --server ${q(directory)} --eab --kid ${q(kid)} --hmac=${q(hmac)} ` +
      `--email ${q(`admin@${name.split(".").slice(1).join(".") || "example.com"}`)} --accept-tos --domains ${q(name)} ` +
      "--http run",
  };
}

/** A name the commands can show: the first exact name allowed, else one under the first pattern. */
function exampleName(names) {
  const exact = names.find(n => !n.startsWith("*") && !n.startsWith("."));
  if (exact) return exact;
  return names.length ? `node1.${names[0].replace(/^\*?\.?/, "")}` : "node1.example.com";
}

function commandBlock(label, text) {
  return h("div.command", {}, h("p", {}, h("strong", {}, label)), h("pre.wrap", {dataset: {client: label}}, text));
}

function createForm(context, tenant, cas, profiles, secret, reload) {
  return form("Create an EAB key", [h("h2", {}, "Create an EAB key"),
    h("p.hint", {}, "One key registers one ACME account, which then orders certificates from the CA below with " +
      "the profile below, for the names allowed."),
    field("CA", choice("ca_id", cas.map(c => [c.ca_id, `${c.name} (${c.ca_id})`]), cas[0]?.ca_id)),
    field("Profile", choice("profile", profiles, profiles.includes("cassandra-node") ? "cassandra-node" : profiles[0])),
    field("Names allowed", h("textarea", {name: "allowed_names", rows: 3, autocapitalize: "none", spellcheck: "false"}),
          "One pattern a line: node1.example.com exactly, *.example.com one label below, .example.com any depth; " +
          "IP addresses a network a line (10.0.1.0/24, or 10.0.1.5 alone): with patterns but no network, no " +
          "address. Empty: what the tenant policy allows."),
    field("Description", h("input", {name: "description"})),
    h("button.primary", {type: "submit"}, "Create key")], async el => {
    const names = lines(el.elements.allowed_names.value);
    const body = {ca_id: el.elements.ca_id.value, profile: el.elements.profile.value, allowed_names: names,
                  description: el.elements.description.value};
    const made = await api(keysPath(tenant), {method: "POST", body, idempotent: true});
    el.reset();
    const name = exampleName(names);
    const hmac = made.hmac_key || "(already shown: this was a retry)";
    const commands = clientCommands(made.directory, made.key_id, hmac, name);
    showSecret(secret, `HMAC key of ${made.key_id}`, hmac, "The commands below carry it too.", [
      h("p", {}, "Key id (kid): ", h("code", {id: "eab-kid"}, made.key_id)),
      h("p", {}, "Directory: ", h("code.wrap", {}, made.directory)),
      commandBlock("certbot", commands.certbot), commandBlock("lego", commands.lego),
      h("p.hint", {}, "Both answer the http-01 challenge themselves on port 80 (run them on the node being named, " +
        "or adjust --http-01-port / --http.port); the server's TLS CA must be trusted (REQUESTS_CA_BUNDLE for " +
        "certbot, LEGO_CA_CERTIFICATES for lego).")]);
    await reload(made.global_position);
  }, {id: "create-eab-key"});
}

function revokeButton(key, tenant, banner, render) {
  const button = h("button.danger", {type: "button", "aria-label": `Revoke EAB key ${key.key_id}`, on: {click: async () => {
    if (!await confirmStep(button.closest("table").parentElement, {question: `Revoke the EAB key ${key.key_id}?`,
      yes: "Yes, revoke the key", explain: key.account_id ? "Its account orders and finalizes nothing more; the " +
        "certificates it has are not revoked." : "It can no longer register an account."})) return;
    const done = await attempt(banner, () => api(`${keysPath(tenant)}/${encodeURIComponent(key.key_id)}`,
                                                 {method: "DELETE"}));
    if (done) await render(done.global_position);
  }}}, "Revoke");
  return button;
}

export async function acmeView(main, context) {
  const tenant = context.tenant;
  if (!tenant) return fill(main, h("h1", {}, "ACME"), h("p", {}, "No tenant in view."));
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const secret = h("section", {id: "secret", "aria-label": "One-time secret", hidden: true});
  const list = h("section", {"aria-label": "EAB keys", id: "eab-keys"});
  const render = async position => {
    const page = await api(keysPath(tenant), {query: {min_position: position}});
    fill(list, h("h2", {}, "External account binding keys"), page.items.length ? table([
      ["Key id", k => h("code", {}, k.key_id)], ["Status", k => h(`span.badge.st-${k.status}`, {}, k.status)],
      ["CA", k => h("a", {href: `#/cas/${encodeURIComponent(k.ca_id)}`}, k.ca_id)], ["Profile", k => k.profile],
      ["Names", k => k.allowed_names.join(", ") || "the tenant policy's"], ["Description", k => k.description],
      ["Account", k => k.account_id || ""], ["", k => k.status === "revoked" ? "" : revokeButton(k, tenant, banner,
                                                                                             render)]],
    page.items) : h("p.muted", {}, "No EAB keys."));
  };
  const query = context.session.tenant_id ? {} : {tenant_id: tenant};
  const [cas, profiles] = await Promise.all([
    api("/v1/cas", {query: {...query, status: "active", limit: 500}}),
    api("/v1/profiles", {query}).catch(() => [])]);
  const usable = profiles.filter(p => p.status === "active").map(p => p.name);
  fill(main, h("h1", {}, "ACME: ", h("span.tenant-name", {}, tenant)),
    h("section.card", {"aria-label": "Directory"}, h("h2", {}, "Directory"),
      h("p", {}, "ACME clients (certbot, lego, cert-manager) start from this URL; a new account needs an EAB key."),
      h("p", {}, h("code.wrap", {id: "acme-directory"}, `${location.origin}/acme/${encodeURIComponent(tenant)}/directory`)),
      h("p.hint", {}, "Behind a proxy, the server's CSM_ACME_BASE_URL names it instead: the directory a new key's " +
        "answer gives is the one to use.")),
    banner, secret, list, createForm(context, tenant, cas.items || [], usable, secret, render));
  await render();
}

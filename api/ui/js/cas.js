// Certificate authorities: the tenant's list (and creating one, or starting an offline one), and one CA with its
// chain (PEM download), its offline ceremony if it has one (offline.js) and, for ca:manage, its administration
// (ca_admin.js).

import {api} from "./api.js";
import {day, download, fill, h, table} from "./dom.js";
import {caActions, caAlgorithms, caCreateForm} from "./ca_admin.js";
import {keyOffline, offlineForms, offlineList, offlineSection} from "./offline.js";
import {compromiseSection} from "./compromise.js";

function tenantQuery(context) {
  return context.session.tenant_id ? {} : {tenant_id: context.tenant};
}

export async function casView(main, context, {query}) {
  const list = h("section", {"aria-label": "CAs", id: "ca-list"});
  const offline = h("section", {"aria-label": "Offline CAs", id: "offline-cas"});
  const creating = context.can.has("ca:create") && (context.session.tenant_id || context.tenant);
  const all = async (position, signal) => (await api("/v1/cas", {query: {...tenantQuery(context), limit: 500,
                                                                        min_position: position}, signal})).items;
  const create = creating ? await caCreateForm(context) : null;
  const start = creating ? offlineForms(context, await all(), await caAlgorithms().catch(() => [])) : null;
  fill(main, h("h1", {}, "Certificate authorities"), list,
    h("h2", {}, "Offline CAs"), h("p.hint", {}, "A root whose key stays offline signs at a ceremony " +
      "(csm ca root …): its intermediates and its CRLs are carried there and back."), offline, start, create);
  const render = async (position, signal) => {  // everything read, then drawn at once (app.js, reloads)
    const [offlineCas, page] = await Promise.all([
      all(position, signal).then(cas => offlineList(cas, position)),
      api("/v1/cas", {query: {...tenantQuery(context), cursor: query.get("cursor"), limit: 50, min_position: position},
                      signal})]);
    signal?.throwIfAborted();  // offlineList's CRL badges show a failure as none: an abort is not
    fill(offline, offlineCas);
    fill(list,
      page.items.length ? table([
        ["Name", ca => h("a", {href: `#/cas/${encodeURIComponent(ca.ca_id)}`}, ca.name)],
        ["Kind", ca => ca.kind], ["Status", ca => h(`span.badge.st-${ca.status}`, {}, ca.status)],
        ["Key", ca => keyOffline(ca) ? h("span.badge.st-offline", {}, "offline") : ca.key_storage],
        ["Algorithm", ca => ca.algorithm], ["Subject", ca => ca.subject_dn || ""],
        ["Expires", ca => day(ca.not_after)]], page.items) : h("p.muted", {}, "No CAs in this tenant."),
      page.next_cursor ? h("a.button", {href: `#/cas?cursor=${encodeURIComponent(page.next_cursor)}`}, "Next page")
        : null);
  };
  await render();
  context.onEvent((message, signal) => render(message.id, signal));
}

export async function caView(main, context, {params: [caId]}) {
  // no live reload here: it would empty the forms being filled in; an action reloads the page itself
  const render = async position => caPage(main, context, caId, render, position);
  await render();
}

async function caPage(main, context, caId, render, position) {
  const ca = await api(`/v1/cas/${encodeURIComponent(caId)}`, {query: {min_position: position}});
  const chainButton = h("button.primary", {type: "button", on: {click: async () => {
    const chain = await api(`/v1/cas/${encodeURIComponent(caId)}/chain`, {accept: "application/pem-certificate-chain, */*"});
    download(`${ca.name.replace(/[^A-Za-z0-9._-]+/g, "_") || caId}-chain.pem`, chain);
  }}}, "Download chain (PEM)");
  const facts = [["Id", ca.ca_id], ["Kind", ca.kind], ["Status", ca.status], ["Origin", keyOffline(ca)
    ? "offline (its key never comes online)" : ca.origin],
    ["Algorithm", ca.algorithm], ["Key storage", keyOffline(ca) ? "offline: not held here" : ca.key_storage],
    ["Subject", ca.subject_dn], ["Parent", ca.parent_id],
    ["Valid", ca.not_before ? `${day(ca.not_before)} – ${day(ca.not_after)}` : null],
    ["Fingerprint (SHA-256)", ca.fingerprint],
    ["Path length", ca.path_length], ["Revoked", ca.revoked_at ? `${ca.revoked_at} (${ca.revocation_reason})` : null]];
  const compromise = await compromiseSection(ca, position);
  fill(main, h("p", {}, h("a", {href: "#/cas"}, "← All CAs")),
    h("h1", {}, ca.name), compromise?.id === "recertification" ? compromise : null,
    h("dl.facts.card", {}, facts.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    h("div.actions", {}, ca.status === "pending" ? null : chainButton,  // no certificate yet: no chain
      h("a.button", {href: `#/certs?ca_id=${encodeURIComponent(ca.ca_id)}`}, "Its certificates")),
    compromise?.id === "ca-compromise" ? compromise : null,
    await offlineSection(ca, context, render, position),
    await caActions(ca, context, render),
    await keyCertificates(ca, position),
    ca.link_certificates?.length ? table([["Role", c => c.role], ["Subject", c => c.subject_dn],
      ["Issuer", c => c.issuer_dn], ["Expires", c => day(c.not_after)]], ca.link_certificates, "Link certificates")
      : null);
}

const ROLES = {current: "current key", previous: "previous key", cross: "cross-certificate"};

/** The certificates of the CA's keys: its own, its earlier keys', cross-certificates (a root's link certificates
 * have their own table). */
async function keyCertificates(ca, position) {
  const certs = (await api(`/v1/cas/${encodeURIComponent(ca.ca_id)}/certificates`, {
    query: {min_position: position}})).filter(c => c.role in ROLES);
  if (certs.length < 2) return null;  // the CA's own certificate only: the facts above say it all
  const pem = c => h("button", {type: "button", "aria-label": `Download the ${ROLES[c.role] || c.role} (PEM)`,
    on: {click: () => download(`${ca.ca_id}-${c.role}-${c.fingerprint.slice(0, 8)}.pem`, c.certificate_pem)}}, "PEM");
  return h("section", {id: "ca-certificates", "aria-label": "Certificates of its keys"}, table([
    ["Role", c => ROLES[c.role] || c.role], ["Issuer", c => c.issuer_ca_id
      ? h("a", {href: `#/cas/${encodeURIComponent(c.issuer_ca_id)}`}, c.issuer_dn) : c.issuer_dn],
    ["Valid", c => `${day(c.not_before)} – ${day(c.not_after)}`], ["Trusted", c => c.distrusted_at
      ? `no (distrusted ${day(c.distrusted_at)})` : "yes"], ["", pem]], certs, "Certificates of its keys"));
}

// A CA page's compromise view: on a root, its compromise rollovers (GET /v1/cas/{id}/compromise: when, why, the key
// rolled away from, the new certificate), the link certificates they revoked and what is still to re-issue, read
// again each time; on a CA below such a root, whether it must be re-certified (rolled over) before it signs again.

import {api, ApiError} from "./api.js";
import {h, minute, table} from "./dom.js";

const LINKS = {new_with_old: "new key, certified by the old", old_with_new: "old key, certified by the new"};

async function compromiseOf(caId, position) {
  return api(`/v1/cas/${encodeURIComponent(caId)}/compromise`, {query: {min_position: position}});
}

/** The CAs above ``ca``, nearest first (a parent loop, which the API never makes, stops the walk). */
async function ancestors(ca, position) {
  const found = [];
  for (let id = ca.parent_id; id && !found.some(c => c.ca_id === id) && id !== ca.ca_id;) {
    const parent = await api(`/v1/cas/${encodeURIComponent(id)}`, {query: {min_position: position}});
    found.push(parent);
    id = parent.parent_id;
  }
  return found;
}

function list(ids, link) {
  return ids.map((id, i) => [i ? ", " : "", link(id)]);
}

/** What is still to re-issue (``reissue`` of a compromise rollover's answer or report), each CA and certificate
 * linked; ``names``: CA id → name. */
export function reissueOf(reissue, names = new Map()) {
  if (!reissue) return h("p.muted", {}, "What is left to re-issue could not be counted now: reload the page.");
  if (!reissue.count) return h("p", {}, "Nothing is left to re-issue: everything chains to a trusted key again.");
  const ca = id => h("a", {href: `#/cas/${encodeURIComponent(id)}`}, names.get(id) ? `${names.get(id)} (${id})` : id);
  const cert = id => h("a", {href: `#/certs/${encodeURIComponent(id)}`}, id);
  return [h("p", {}, `${reissue.count} still chain only to a withdrawn key and validate for no relying party: ` +
      "issue them again" + (reissue.complete ? "." : " (the count may be incomplete: the read models were behind).")),
    reissue.cas.length ? h("p", {}, "CAs to roll over (in this order, nearest the root first): ", list(reissue.cas, ca))
      : null,
    reissue.certificates.length ? h("p", {}, "Certificates to renew (once their CA is rolled over): ",
                                    list(reissue.certificates, cert)) : null];
}

/** A root's compromise report, or null when it never rolled over in compromise mode. */
async function rootReport(ca, position) {
  const report = await compromiseOf(ca.ca_id, position);
  if (!report.rollovers.length) return null;
  const cas = await api("/v1/cas", {query: {tenant_id: ca.tenant_id, limit: 500}}).catch(() => ({items: []}));
  const names = new Map(cas.items.map(c => [c.ca_id, c.name]));
  return h("section.card", {id: "ca-compromise", "aria-label": "Compromise rollovers"},
    h("h2", {}, "Compromise rollovers"),
    h("p.hint", {}, "The root's key was stolen: each rollover below withdrew its keys until then from every chain " +
      "and truststore, and revoked its link certificates (key compromise). The old keys stay blocked in the tenant."),
    table([["When", r => minute(r.rolled_over_at)], ["Why", r => r.reason],
      ["Old key (SHA-256 of its public key)", r => h("code.wrap", {}, r.compromised_key_sha256)],
      ["New certificate (SHA-256)", r => h("code.wrap", {}, r.certificate_fingerprint)]], report.rollovers,
    "Compromise rollovers"),
    h("p", {}, `${report.withdrawn_certificates} certificate(s) of the root's keys and links left every chain and ` +
      "truststore."),
    report.revoked_links.length ? table([["Serial", l => h("code.wrap", {}, l.serial_hex)],
      ["Link", l => LINKS[l.role] || l.role], ["Reason", l => l.reason.replaceAll("_", " ")],
      ["Revoked", l => minute(l.revoked_at)]], report.revoked_links, "Link certificates revoked") : null,
    h("h3", {}, "Still to re-issue"), h("div", {id: "ca-reissue"}, reissueOf(report.reissue, names)));
}

/** For a CA below a root that rolled over in compromise mode and still chaining through a withdrawn key: a banner
 * saying it signs nothing until it is rolled over, and which CA to roll over first; else null. */
async function recertification(ca, position) {
  const above = await ancestors(ca, position);
  const root = above.at(-1);
  if (!root || root.kind !== "root") return null;
  const report = await compromiseOf(root.ca_id, position);
  if (!report.reissue?.cas.includes(ca.ca_id)) return null;
  const path = new Set([ca.ca_id, ...above.map(c => c.ca_id)]);
  const first = report.reissue.cas.find(id => path.has(id)) || ca.ca_id;
  const named = [ca, ...above].find(c => c.ca_id === first);
  return h("div.banner.warn", {role: "status", id: "recertification"},
    h("p", {}, h("strong", {}, "Must be re-certified. "), "This CA's chain runs through a key that the compromise " +
      "rollover of ", h("a", {href: `#/cas/${encodeURIComponent(root.ca_id)}`}, root.name), " withdrew from trust: " +
      "it issues nothing (422 ca_recertification_required) and what it signed validates nowhere until it is rolled " +
      "over under a trusted key."),
    h("p", {}, first === ca.ca_id ? "Roll this CA over (below), then renew what it signed."
      : ["Roll over ", h("a", {href: `#/cas/${encodeURIComponent(first)}`}, named ? named.name : first),
         " first: its parent's trusted key certifies it, then this CA can roll over."]));
}

/** The compromise view of ``ca``'s page: a root's report, or the re-certification a CA below one needs. */
export async function compromiseSection(ca, position) {
  if (ca.status === "pending") return null;
  try {
    return await (ca.kind === "root" ? rootReport(ca, position) : recertification(ca, position));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    // the rest of the page does not depend on it: say what could not be read instead of failing the page
    return h("p.muted", {id: "ca-compromise-unread"}, `Compromise report not read: ${error.message}`);
  }
}

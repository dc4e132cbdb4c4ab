// Deployments, read-only (deploying runs over SSH from the CLI: csm cluster deploy, verify, rollback): each node of
// the tenant in view with what it holds as far as the store knows, since when, its last verification, the
// generations it keeps for a rollback and a deployment started and never recorded as done; and on a certificate's
// page, the nodes it was deployed to.

import {api} from "./api.js";
import {fill, h, minute, table} from "./dom.js";

/** The last check of the node's TLS ports (csm cluster verify, or after a deploy or rollback): every port served the
 * certificate, one did not, or not checked since it was deployed or put back. */
function verification(verified, at) {
  if (verified === null || verified === undefined) return h("span.badge", {dataset: {verified: "unknown"}},
                                                            "not checked");
  return [h(`span.badge.st-${verified ? "verified" : "mismatch"}`, {dataset: {verified: String(verified)}},
    verified ? "served" : "not served"), at ? h("br") : null, minute(at)];
}

function certificateLink(id) {
  return id ? h("a", {href: `#/certs/${encodeURIComponent(id)}`}, `${id.slice(0, 12)}…`) : null;
}

function where(row) {
  const port = row.port && row.port !== 22 ? `:${row.port}` : "";
  return row.host ? `${row.user ? `${row.user}@` : ""}${row.host}${port}` : "";
}

/** The certificate a node holds (a link, or what a rollback put back that no recorded deployment installed), and
 * its files. */
function holds(row) {
  const what = row.certificate_id ? certificateLink(row.certificate_id) : h("span.muted", {},
    row.state === "rolled_back" ? "files put back by a rollback (no recorded deployment)" : "nothing recorded yet");
  return [what, files(row)];
}

function since(row) {
  return row.since ? [minute(row.since), row.actor ? h("br") : null, row.actor ? `by ${row.actor}` : null] : "";
}

function generations(row) {
  const kept = `${row.generations.length} of ${row.keep}`;
  if (!row.generations.length) return kept;
  return h("details", {}, h("summary", {}, kept), h("ol", {}, row.generations.map(g => h("li", {},
    certificateLink(g.certificate_id) || "unrecorded files", g.since ? [" since ", minute(g.since)] : ""))));
}

/** A deployment started there and never recorded as done: failed (its failure recorded: when, the step, why) or
 * unfinished (nothing more recorded: its process died). */
function unfinished(row) {
  const s = row.started;
  if (!s) return "";
  const failure = s.failure;
  return h("div", {}, h(`span.badge.st-${failure ? "failed" : "unfinished"}`,
    {dataset: {unfinished: s.certificate_id, outcome: failure ? "failed" : "unfinished"}},
    failure ? "failed" : "unfinished"), " ",
    certificateLink(s.certificate_id), " started ", minute(s.at), ` by ${s.actor}; ${s.files.length} file(s) staged`,
    failure ? ["; failed ", minute(failure.at), ` at ${failure.step}: `, h("code.wrap", {}, failure.reason)] : "",
    ": the node may hold some of its files and not others (deploy again, or roll back)");
}

function files(row) {
  if (!row.files.length) return "";
  return h("details", {}, h("summary", {}, `${row.files.length} file(s)${row.format ? `, ${row.format}` : ""}`),
    h("ul", {}, row.files.map(f => h("li", {}, h("code.wrap", {}, f.path), h("br"),
      h("code.wrap", {title: "SHA-256"}, f.sha256)))));
}

function nodeFilter(query, context) {
  const input = h("input", {name: "node", id: "deployments-node", type: "search", value: query.get("node") || "",
                            autocapitalize: "none", spellcheck: "false"});
  const el = h("form.filters.card", {role: "search", "aria-label": "Find a node"},
    h("div.field", {}, h("label", {for: "deployments-node"}, "Node"), input),
    h("div.actions", {}, h("button.primary", {type: "submit"}, "Show"), h("a.button", {href: "#/deployments"}, "All")));
  el.addEventListener("submit", event => {
    event.preventDefault();
    context.go(input.value.trim() ? `/deployments?node=${encodeURIComponent(input.value.trim())}` : "/deployments");
  });
  return el;
}

export async function deploymentsView(main, context, {query}) {
  const tenant = context.session.tenant_id ? null : context.tenant;
  const results = h("section", {"aria-label": "Nodes", "aria-live": "polite", id: "nodes"});
  fill(main, h("h1", {}, "Deployments"),
    h("p.hint", {}, "What each node holds as far as the store knows. Deploying, verifying and rolling back run over " +
      "SSH from the command line (csm cluster deploy, verify, rollback); this view only reads what they recorded."),
    nodeFilter(query, context), results);
  const render = async (position, signal) => {
    const page = await api("/v1/deployments", {query: {tenant_id: tenant, node: query.get("node"),
      cursor: query.get("cursor"), limit: query.get("limit") || 50, min_position: position}, signal});
    const next = new URLSearchParams(query);
    if (page.next_cursor) next.set("cursor", page.next_cursor);
    fill(results, page.items.length ? table([
      ["Node", n => [h("strong", {dataset: {node: n.node}}, n.node), n.host ? h("br") : null,
                     n.host ? h("code.wrap", {}, where(n)) : null]],
      ["Holds", holds],
      ["State", n => h(`span.badge.st-${n.state}`, {dataset: {state: n.state}}, n.state.replace("_", " "))],
      ["Since", since], ["Verification", n => verification(n.verified, n.verified_at)],
      ["Generations kept", generations], ["Unfinished deployment", unfinished]], page.items)
      : h("p.muted", {}, query.get("node") ? "No deployment to this node." : "Nothing deployed yet."),
    h("div.actions", {},
      query.get("cursor") ? h("button", {type: "button", on: {click: () => history.back()}}, "Previous page") : null,
      page.next_cursor ? h("a.button", {href: `#/deployments?${next}`}, "Next page") : null));
  };
  await render();
  context.onEvent((message, signal) => render(message.id, signal));
}

const STATES = {current: "holds it", replaced: "replaced", rolled_back: "rolled back", started: "started, not done",
                failed: "failed"};

const CERTIFICATE_COLUMNS = [
  ["Node", d => h("a", {href: `#/deployments?node=${encodeURIComponent(d.node)}`, dataset: {node: d.node}}, d.node)],
  ["State", d => h(`span.badge.st-${d.state}`, {dataset: {state: d.state}}, STATES[d.state] || d.state)],
  ["Last deployed", d => d.last_deployed_at ? [minute(d.last_deployed_at), d.last_actor ? ` by ${d.last_actor}`
    : ""] : ""],
  ["First deployed", d => minute(d.first_deployed_at)], ["Times", d => String(d.deployments)],
  ["Verification", d => verification(d.verified, d.verified_at)],
  ["Rolled back", d => minute(d.rolled_back_at)],
  ["Unfinished", d => d.started_at ? [h("span.badge.st-unfinished", {}, "started"), " ", minute(d.started_at)]
    : ""],
  ["Last failure", d => d.failed_at ? [minute(d.failed_at), ` at ${d.failed_step}: `,
    h("code.wrap", {}, d.failed_reason)] : ""]];

/** The nodes ``cert`` was deployed to (GET /v1/certificates/{id}/deployments), for its page: the first page, and a
 * button that adds the next one (the list pages by cursor, as GET /v1/deployments). */
export async function certificateDeployments(cert, position, signal) {
  const url = `/v1/certificates/${encodeURIComponent(cert.certificate_id)}/deployments`;
  const first = await api(url, {query: {min_position: position}, signal});
  const section = h("section", {id: "certificate-deployments", "aria-label": "Deployed to"});
  const show = (items, cursor) => {
    const more = cursor ? h("button", {type: "button", on: {click: async () => {
      more.disabled = true;
      try {
        const page = await api(url, {query: {cursor}});
        show([...items, ...page.items], page.next_cursor);
      } catch {
        more.disabled = false;  // a failed page leaves the rows shown; the button can try again
      }
    }}}, "More nodes") : null;
    fill(section, h("h2", {}, "Deployed to"), items.length ? table(CERTIFICATE_COLUMNS, items)
      : h("p.muted", {}, "Not deployed to any node (csm cluster deploy)."), more ? h("div.actions", {}, more) : null);
  };
  show(first.items, first.next_cursor);
  return section;
}

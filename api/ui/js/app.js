// The shell: hash routes, the navigation the caller's roles allow, the tenant in view, and live updates.

import {api, current, onSession, permissions, signOut, signOutEverywhere} from "./api.js";
import {fill, h} from "./dom.js";
import {subscribe} from "./events.js";
import {enrollView, signInView} from "./signin.js";
import {overviewView} from "./overview.js";
import {caView, casView} from "./cas.js";
import {certificateView, certificatesView} from "./certs.js";
import {portalView} from "./portal.js";
import {auditView} from "./audit.js";
import {tenantView, tenantsView} from "./tenants.js";
import {issueView} from "./issue.js";
import {serviceAccountView, userView, usersView} from "./users.js";
import {webhooksView} from "./webhooks.js";
import {complianceView} from "./compliance.js";
import {profileView, profilesView} from "./profiles.js";
import {policyView} from "./policy.js";
import {acmeView} from "./acme.js";
import {compromisedView} from "./compromised.js";
import {discoveryView} from "./discovery.js";
import {analyticsView} from "./analytics.js";
import {deploymentsView} from "./deployments.js";

const TENANT = "csm.tenant";
const main = document.getElementById("main");
let stopStream = null;
let eventHandler = null;

/** What every view gets: the session, its permissions, the tenant in view, and hooks into the shell. */
export const context = {
  session: null, can: new Set(), tenant: null,
  go: path => { location.hash = `#${path}`; },
  onEvent: fn => { eventHandler = reloads(fn); },
  home: () => home(),
  refreshTenants: position => tenantPicker(position),
};

const ROUTES = [
  [/^\/signin$/, () => signInView],
  [/^\/enroll$/, () => enrollView],
  [/^\/overview$/, () => overviewView],
  [/^\/cas$/, () => casView],
  [/^\/cas\/([^/?]+)$/, () => caView],
  [/^\/certs$/, () => certificatesView],
  [/^\/certs\/([^/?]+)$/, () => certificateView],
  [/^\/portal$/, () => portalView],
  [/^\/audit$/, () => auditView],
  [/^\/tenants$/, () => tenantsView],
  [/^\/tenants\/([^/?]+)$/, () => tenantView],
  [/^\/issue$/, () => issueView],
  [/^\/users$/, () => usersView],
  [/^\/users\/([^/?]+)$/, () => userView],
  [/^\/service-accounts\/([^/?]+)$/, () => serviceAccountView],
  [/^\/webhooks$/, () => webhooksView],
  [/^\/compliance$/, () => complianceView],
  [/^\/profiles$/, () => profilesView],
  [/^\/profiles\/([^/?]+)$/, () => profileView],
  [/^\/policy$/, () => policyView],
  [/^\/acme$/, () => acmeView],
  [/^\/compromised$/, () => compromisedView],
  [/^\/discovery$/, () => discoveryView],
  [/^\/analytics$/, () => analyticsView],
  [/^\/deployments$/, () => deploymentsView],
];

function portal(can) {
  return can.has("cert:issue") && can.has("ca:read") && can.has("profile:read");
}

function home() {
  const {can} = context;
  if (!context.session) return "/signin";
  if (context.session.enroll_only) return "/enroll";
  if (portal(can) && !can.has("cert:revoke")) return "/portal";  // a developer's
  return can.has("ca:read") ? "/overview" : "/certs";
}

function nav() {
  const {can, session} = context;
  const links = !session || session.enroll_only ? [] : [
    can.has("cert:read") && can.has("ca:read") && ["/overview", "Overview"], can.has("ca:read") && ["/cas", "CAs"],
    can.has("cert:read") && ["/certs", "Certificates"], portal(can) && ["/portal", "Request a certificate"],
    can.has("cert:read") && can.has("ca:read") && ["/compliance", "Compliance"],
    (can.has("audit:verify") || can.has("audit:read")) && ["/audit", "Audit"],
    !session.tenant_id && can.has("tenant:create") && ["/tenants", "Tenants"],
    session.tenant_id && can.has("tenant:update") && [`/tenants/${encodeURIComponent(session.tenant_id)}`, "Tenant"],
    can.has("user:read") && ["/users", "Users"], can.has("webhook:read") && ["/webhooks", "Webhooks"],
    can.has("profile:read") && ["/profiles", "Profiles"], can.has("tenant:update") && ["/policy", "Policy"],
    can.has("acme:manage") && ["/acme", "ACME"], can.has("cert:read") && ["/compromised", "Compromised keys"],
    can.has("cert:read") && ["/discovery", "Discovery"], can.has("cert:read") && ["/deployments", "Deployments"],
    can.has("audit:read") && ["/analytics", "Analytics"],
  ].filter(Boolean);
  const here = location.hash.slice(1).split("?")[0];
  fill(document.getElementById("nav"), h("ul", {}, links.map(([path, label]) =>
    h("li", {}, h("a", {href: `#${path}`, "aria-current": here.startsWith(path) ? "page" : null}, label)))));
}

async function tenantPicker(position) {
  const who = document.getElementById("who");
  const {session} = context;
  if (!session) return fill(who);
  const out = [h("button.link", {type: "button", on: {click: () => { signOut(); context.go("/signin"); }}}, "Sign out"),
               everywhereButton(session)];
  const name = h("span.subject", {title: session.roles.join(", ")}, session.subject);
  if (session.tenant_id || session.enroll_only || !context.can.has("tenant:read")) return fill(who, name, out);
  const {items} = await api("/v1/tenants", {query: {limit: 500, min_position: position}});
  context.tenant ||= items[0]?.tenant_id || null;
  const select = h("select", {id: "tenant", name: "tenant", on: {change: e => {
    context.tenant = e.target.value;
    sessionStorage.setItem(TENANT, context.tenant);
    route();
  }}}, items.map(t => h("option", {value: t.tenant_id, selected: t.tenant_id === context.tenant}, t.tenant_id)));
  fill(who, h("label.tenant", {for: "tenant"}, "Tenant "), select, name, out);
}

/** "Sign out everywhere": a local user's sessions on every device end (API keys and directory users have none
 * to end: no button); a refusal or an unreachable server is shown, and this tab stays signed in. */
function everywhereButton(session) {
  if (!session.subject.startsWith("user:") || session.enroll_only) return null;
  const failed = h("span.error", {role: "alert", hidden: true});
  const button = h("button.link", {type: "button", title: "End every session of this account, on every device",
                                   on: {click: async () => {
    button.disabled = true;
    try {
      await signOutEverywhere();
      context.go("/signin");
    } catch (error) {
      failed.hidden = false;
      failed.textContent = `Not signed out everywhere: ${error.message}`;
      button.disabled = false;
    }
  }}}, "Sign out everywhere");
  return [button, failed];
}

function live(state) {
  const banner = document.getElementById("live");
  banner.hidden = state === "stopped";
  banner.dataset.state = state;
  banner.textContent = state === "live" ? "Live updates on" : "Live updates reconnecting…";
}

function inView(message) {
  if (context.session?.tenant_id) return true;  // the server sends a tenant's principals only their own events
  try {
    return JSON.parse(message.data).tenant_id === context.tenant;
  } catch {
    return true;
  }
}

function streamEvents() {
  stopStream?.();
  stopStream = null;
  if (!context.can.has("events:stream")) return live("stopped");
  let timer = null;
  let latest = null;
  stopStream = subscribe(message => {
    if (!inView(message)) return;
    latest = message;
    // at most one refresh per half second however fast events come, with the latest position to read at
    timer ??= setTimeout(() => {
      timer = null;
      eventHandler?.(latest);
    }, 500);
  }, live);
}

/** A view's live reloads, in the order they draw. ``fn(message, signal)`` reloads the view at the event's position:
 * it reads (passing ``signal`` to its requests), then draws once, and its promise settles when it has drawn. Each
 * reload waits for its own min_position, so several may be in flight and answer out of order: one that has drawn
 * aborts every earlier one still in flight, which would otherwise draw its older data over the newer. Only a drawn
 * reload does: aborting an earlier one when a newer merely starts would, with events coming faster than a slow view
 * reads, abort every reload before it drew. Errors are dropped (an aborted reload's among them): the next event
 * reloads again. */
function reloads(fn) {
  let started = 0;
  const inFlight = new Map();  // sequence number -> its AbortController
  return message => {
    const sequence = ++started;
    const controller = new AbortController();
    inFlight.set(sequence, controller);
    const reload = Promise.resolve().then(() => fn(message, controller.signal));
    reload.then(() => {
      for (const [earlier, older] of inFlight) if (earlier < sequence) older.abort();
    }, () => {}).finally(() => inFlight.delete(sequence));
  };
}

async function sessionChanged(session) {
  context.session = session;
  context.can = await permissions();
  context.tenant = session?.tenant_id || sessionStorage.getItem(TENANT) || null;
  streamEvents();
  await tenantPicker().catch(() => {});
}

async function route() {
  const [path, query = ""] = location.hash.slice(1).split("?");
  const open = ["/signin"];
  if (!context.session && !open.includes(path)) return context.go("/signin");
  const match = ROUTES.map(([pattern, view]) => [path.match(pattern), view]).find(([m]) => m);
  if (!match) return context.go(home());
  nav();
  document.getElementById("nav").classList.remove("open");  // a phone's menu folds after a choice
  document.getElementById("menu").setAttribute("aria-expanded", "false");
  eventHandler = null;
  const [found, view] = match;
  // Each route draws into an element of its own: a view left behind may still be reading (a live reload waits for
  // its min_position), and what it draws then lands in its own element, off the page, not over the view now shown.
  const outlet = h("div.view", {}, h("p", {}, "Loading…"));
  fill(main, outlet);
  const current = () => main.firstChild === outlet;
  const here = Object.create(context);  // the shell's context, but only the view on screen receives events
  here.onEvent = fn => { if (current()) eventHandler = reloads(fn); };
  try {
    await view()(outlet, here, {params: found.slice(1).map(decodeURIComponent), query: new URLSearchParams(query)});
  } catch (error) {
    fill(outlet, h("h1", {}, "Something went wrong"), h("p.error", {role: "alert"}, error.message));
  }
  if (current()) main.focus({preventScroll: true});
}

function menu() {
  const button = document.getElementById("menu");
  button.addEventListener("click", () => {
    const open = document.getElementById("nav").classList.toggle("open");
    button.setAttribute("aria-expanded", String(open));
  });
}

onSession(async session => {
  await sessionChanged(session);
  if (!session) context.go("/signin");
});
window.addEventListener("hashchange", route);
menu();
await sessionChanged(current());
if (!location.hash || location.hash === "#/") context.go(home());
else await route();


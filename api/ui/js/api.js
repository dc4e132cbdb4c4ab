// The /v1 client: the session (token in memory and sessionStorage, never localStorage), fetch with the bearer
// token, problem+json errors as ApiError, token refresh, and what the caller's roles allow.

const STORE = "csm.session";
let session = load();
let roleTable = null;
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE)) || null;
  } catch {
    return null;
  }
}

/** Store the session; resolves once every listener (the shell: permissions, tenant, event stream) has run. */
function save(next) {
  session = next;
  if (next) sessionStorage.setItem(STORE, JSON.stringify(next));
  else sessionStorage.removeItem(STORE);
  return Promise.all([...listeners].map(fn => fn(session)));
}

export function onSession(fn) {
  listeners.add(fn);
}

/** The claims of a JWT, read (not verified: the API verifies; the UI only decides what to show). */
function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, "=")));
  } catch {
    return {};
  }
}

function fromTokens(tokens, extra = {}) {
  const c = claims(tokens.access_token);
  return {
    access_token: tokens.access_token, refresh_token: tokens.refresh_token || null,
    expires_at: Date.now() + (tokens.expires_in || 300) * 1000,
    subject: c.sub || "", tenant_id: c.tenant ?? null, roles: c.roles || [],
    enroll_only: Boolean(tokens.mfa_enrollment_required), ...extra,
  };
}

export function current() {
  return session;
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch { /* fall through */ }
  }
  return {status: response.status, title: response.statusText, detail: `HTTP ${response.status}`};
}

async function tokenRequest(fields) {
  const response = await fetch("/v1/auth/token", {
    method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
    body: new URLSearchParams(Object.entries(fields).filter(([, v]) => v)),
  });
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  return response.json();
}

/** Password sign-in (``totp`` when the account has it); API keys sign in with the client_credentials grant. */
export async function signIn({username, password, totp, tenant_id, api_key}) {
  const tokens = api_key
    ? await tokenRequest({grant_type: "client_credentials", client_secret: api_key})
    : await tokenRequest({grant_type: "password", username, password, totp, tenant_id});
  await save(fromTokens(tokens, {username: username || "", login_tenant: tenant_id || null}));
  return session;
}

/** End the session on the server too (RFC 7009: its refresh family and its access tokens stop working at
 * once), then forget it here. Best effort: a server that cannot be reached still leaves the tab signed out. */
export async function signOut() {
  const ending = session;
  await save(null);
  const token = ending?.refresh_token || ending?.access_token;
  if (!token) return;
  try {
    await fetch("/v1/auth/revoke", {
      method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
      body: new URLSearchParams({token}),
    });
  } catch { /* offline: the tokens expire on their own */ }
}

/** Sign out everywhere (a local user's own account): every session of it ends on the server, this one included,
 * then this tab forgets it. Unlike ``signOut`` it throws (ApiError, or a network error) and keeps the session when
 * the server did not confirm: the caller must not believe sessions ended that did not. */
export async function signOutEverywhere() {
  await api("/v1/auth/sessions/revoke-all", {method: "POST", body: {}});
  await save(null);
}

let refreshing = null;

async function fresh() {
  if (!session) return null;
  if (session.expires_at - Date.now() > 30_000 || !session.refresh_token) return session.access_token;
  refreshing ??= tokenRequest({grant_type: "refresh_token", refresh_token: session.refresh_token})
    .then(tokens => save(fromTokens(tokens, {username: session.username, login_tenant: session.login_tenant})))
    .catch(() => save(null))
    .finally(() => { refreshing = null; });
  await refreshing;
  return session?.access_token ?? null;
}

/** The Authorization header's value, refreshed first when the access token is about to expire. */
export async function bearer() {
  const token = await fresh();
  return token ? `Bearer ${token}` : null;
}

/** A /v1 request: JSON in, JSON (or text, or with ``blob`` a Blob) out; a problem becomes ApiError; 401 ends the
 * session. ``headers`` adds request headers (an export password goes in one, never in the URL). ``signal`` (an
 * AbortSignal) aborts it: it then rejects with the signal's reason (an AbortError), whether still waiting for the
 * answer or reading its body. */
export async function api(path, {method = "GET", body, query, accept = "application/json", idempotent, headers: extra,
                                 blob, signal} = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = {...extra, Accept: accept};
  const auth = await bearer();
  if (auth) headers.Authorization = auth;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotent) headers["Idempotency-Key"] = crypto.randomUUID();
  const response = await fetch(url, {method, headers, signal,
                                     body: body === undefined ? undefined : JSON.stringify(body)});
  if (!response.ok) {
    const problem = await problemOf(response);
    signal?.throwIfAborted();  // an abort while its body was read: not a problem to show
    if (response.status === 401 && session) save(null);
    throw new ApiError(response.status, problem);
  }
  if (blob) return response.blob();
  return accept === "application/json" ? response.json() : response.text();
}

/** Every permission the session's roles grant (those only platform-wide principals can use removed). */
export async function permissions() {
  roleTable ??= await fetch("/ui/roles.json").then(r => r.json());
  if (!session || session.enroll_only) return new Set();
  const granted = new Set(session.roles.flatMap(role => roleTable.roles[role] || []));
  if (session.tenant_id) for (const p of roleTable.platform_only) granted.delete(p);
  return granted;
}

let catalogue = null;

/** The domain's fixed lists (/ui/catalog.json): webhook event types, compliance rules and their remedies. */
export async function catalog() {
  catalogue ??= await fetch("/ui/catalog.json").then(r => r.json());
  return catalogue;
}

/** Every role name (/ui/roles.json), for the forms that grant them. */
export async function roleNames() {
  roleTable ??= await fetch("/ui/roles.json").then(r => r.json());
  return Object.keys(roleTable.roles);
}

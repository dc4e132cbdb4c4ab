// Users and service accounts of the tenant in view: lists, creating them (a user's first password and a key's
// secret shown once), a user's role grants and status, a service account's API keys and status.

import {api, roleNames} from "./api.js";
import {day, field, fill, h, table} from "./dom.js";
import {attempt, confirmStep, form, randomPassword, scope, showSecret} from "./forms.js";

const path = (kind, name) => `/v1/${kind}/${encodeURIComponent(name)}`;

function roleBoxes(roles, prefix) {
  return h("fieldset", {}, h("legend", {}, "Roles"), roles.map(role => h("div.check", {},
    h("input", {type: "checkbox", name: "roles", value: role, id: `${prefix}-${role}`}),
    h("label", {for: `${prefix}-${role}`}, role))));
}

function checked(el) {
  return [...el.querySelectorAll("input[name=roles]:checked")].map(box => box.value);
}

function createUserForm(context, roles, secret, reload) {
  return form("Create a user", [h("h2", {}, "Create a user"),
    field("Username", h("input", {name: "username", required: true, autocapitalize: "none", spellcheck: "false"})),
    field("Display name", h("input", {name: "display_name"})), roleBoxes(roles, "new-user"),
    h("p.hint", {}, "A password is generated here and shown once after the user is created: hand it over safely. " +
      "Platform-admin, tenant-admin and ca-operator users set up two-factor sign-in at their first sign-in."),
    h("button.primary", {type: "submit"}, "Create user")], async el => {
    const password = randomPassword();
    const username = el.elements.username.value.trim();
    const body = {...scope(context), username, password, roles: checked(el),
                  display_name: el.elements.display_name.value.trim() || null};
    const done = await api("/v1/users", {method: "POST", body, idempotent: true});
    el.reset();
    showSecret(secret, `Password of ${username}`, password);
    await reload(done.global_position);
  }, {id: "create-user"});
}

function createAccountForm(context, reload) {
  return form("Create a service account", [h("h2", {}, "Create a service account"),
    field("Name", h("input", {name: "name", required: true, autocapitalize: "none", spellcheck: "false"})),
    field("Description", h("input", {name: "description"})),
    h("button", {type: "submit"}, "Create service account")], async el => {
    const body = {...scope(context), name: el.elements.name.value.trim(), description: el.elements.description.value};
    const done = await api("/v1/service-accounts", {method: "POST", body, idempotent: true});
    el.reset();
    await reload(done.global_position);
  }, {id: "create-service-account"});
}

export async function usersView(main, context) {
  const roles = await roleNames();
  const manage = context.can.has("user:manage");
  const secret = h("section", {id: "secret", "aria-label": "One-time secret", hidden: true});
  const users = h("section", {"aria-label": "Users", id: "users"});
  const accounts = h("section", {"aria-label": "Service accounts", id: "service-accounts"});
  const render = async position => {
    const query = {...scope(context), limit: 500, min_position: position};
    const [people, robots] = await Promise.all([api("/v1/users", {query}), api("/v1/service-accounts", {query})]);
    fill(users, h("h2", {}, "Users"), people.items.length ? table([
      ["Username", u => h("a", {href: `#/users/${encodeURIComponent(u.username)}`}, u.username)],
      ["Name", u => u.display_name || ""], ["Status", u => h(`span.badge.st-${u.status}`, {}, u.status)],
      ["Roles", u => u.roles.join(", ")], ["TOTP", u => u.totp_enabled ? "on" : "off"],
      ["Last sign-in", u => day(u.last_login_at)]], people.items) : h("p.muted", {}, "No users."));
    fill(accounts, h("h2", {}, "Service accounts"), robots.items.length ? table([
      ["Name", a => h("a", {href: `#/service-accounts/${encodeURIComponent(a.name)}`}, a.name)],
      ["Description", a => a.description], ["Status", a => h(`span.badge.st-${a.status}`, {}, a.status)],
      ["Active keys", a => String(a.keys.filter(k => k.status === "active").length)]], robots.items)
      : h("p.muted", {}, "No service accounts."));
  };
  fill(main, h("h1", {}, "Users and service accounts"), secret, users,
    manage ? createUserForm(context, roles, secret, render) : null, accounts,
    context.can.has("serviceaccount:manage") ? createAccountForm(context, render) : null);
  await render();
}

function grantForm(user, context, roles, render) {
  return form("Grant a role", [h("h2", {}, "Grant a role"),
    field("Role", h("select", {name: "role"}, roles.filter(r => !user.roles.includes(r))
      .map(r => h("option", {value: r}, r)))),
    field("Until", h("input", {name: "expires_at", type: "datetime-local"}), "Empty: until revoked."),
    h("button", {type: "submit"}, "Grant role")], async el => {
    const until = el.elements.expires_at.value;
    const body = {role: el.elements.role.value, expires_at: until ? new Date(until).toISOString() : null};
    const done = await api(`${path("users", user.username)}/roles`, {method: "POST", body, query: scope(context),
                                                                     idempotent: true});
    await render(done.global_position);
  });
}

function statusForm(user, context, render) {
  const disabling = user.status !== "disabled";
  return form(disabling ? "Disable" : "Enable", [h("h2", {}, disabling ? "Disable" : "Enable"),
    field("Reason", h("input", {name: "reason"})),
    h(disabling ? "button.danger" : "button", {type: "submit"}, disabling ? "Disable user" : "Enable user")],
  async el => {
    if (disabling && !await confirmStep(el.querySelector("button[type=submit]"), {
      question: `Disable ${user.username}?`, yes: "Yes, disable",
      explain: "Sign-in stops and the user's sessions end at once."})) return;
    const done = await api(`${path("users", user.username)}/${disabling ? "disable" : "enable"}`, {
      method: "POST", body: {reason: el.elements.reason.value}, query: scope(context)});
    await render(done.global_position);
  });
}

/** Password reset, unlock and TOTP reset: each asks first, since the first and the last end the user's sessions. */
function accessForm(user, context, secret, render) {
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const run = (button, ask, action) => async () => {
    if (ask && !await confirmStep(button.parentElement, ask)) return;
    const done = await attempt(banner, action);
    if (done) await render(done.global_position);
  };
  const base = path("users", user.username);
  const reset = h("button.danger", {type: "button"}, "Reset password");
  reset.addEventListener("click", run(reset, {question: `Reset the password of ${user.username}?`,
    yes: "Yes, reset the password", explain: ["A new password is generated here and shown once: hand it over safely.",
      "Every session of the user ends at once: their browser tabs and refresh tokens are refused from now on."]},
  async () => {
    const password = randomPassword();
    const done = await api(`${base}/password`, {method: "POST", body: {password}, query: scope(context)});
    showSecret(secret, `New password of ${user.username}`, password);
    return done;
  }));
  const unlock = h("button", {type: "button", disabled: !user.locked_until}, "Unlock");
  unlock.addEventListener("click", run(unlock, null, () => api(`${base}/unlock`, {method: "POST",
                                                                                   query: scope(context)})));
  const totp = h("button.danger", {type: "button", disabled: !user.totp_enabled}, "Reset TOTP");
  totp.addEventListener("click", run(totp, {question: `Turn off two-factor sign-in for ${user.username}?`,
    yes: "Yes, reset TOTP", explain: ["For a lost device. Every session of the user ends first; a privileged user sets " +
      "up a new key at their next sign-in."]},
  () => api(`${base}/totp`, {method: "DELETE", query: scope(context)})));
  return h("section.card", {"aria-label": "Sign-in", id: "access"}, h("h2", {}, "Sign-in"), banner,
    h("p.hint", {}, user.locked_until ? `Locked after failed sign-ins until ${user.locked_until}.`
      : "Not locked out."), h("div.actions", {}, reset, unlock, totp));
}

function revokeRole(user, grant, context, banner, render) {
  const button = h("button", {type: "button", on: {click: async () => {
    if (!await confirmStep(button.closest("table").parentElement, {question: `Revoke ${grant.role} from ${
      user.username}?`, yes: `Yes, revoke ${grant.role}`, explain: "The API refuses what it allowed at once; the user's UI " +
      "shows it at their next token refresh or sign-in."})) return;
    const done = await attempt(banner, () => api(`${path("users", user.username)}/roles/${encodeURIComponent(
      grant.role)}`, {method: "DELETE", query: scope(context)}));
    if (done) await render(done.global_position);
  }}}, `Revoke ${grant.role}`);
  return button;
}

export async function userView(main, context, {params: [username]}) {
  const roles = await roleNames();
  const secret = h("section", {id: "secret", "aria-label": "One-time secret", hidden: true});
  const render = async position => {
    const user = await api(path("users", username), {query: {...scope(context), min_position: position}});
    const banner = h("p.banner.error", {role: "alert", hidden: true});
    const manage = context.can.has("user:manage");
    fill(main, h("p", {}, h("a", {href: "#/users"}, "← Users")),
      h("h1", {}, user.username, " ", h(`span.badge.st-${user.status}`, {}, user.status)), banner, secret,
      h("dl.facts.card", {}, [["Name", user.display_name], ["TOTP", user.totp_enabled ? "on" : "off"],
        ["Locked until", user.locked_until], ["Last sign-in", user.last_login_at],
        ["Created", `${user.created_at} by ${user.created_by}`]].filter(([, v]) => v)
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
      h("section.card", {"aria-label": "Roles"}, h("h2", {}, "Roles"), user.grants.length ? table([
        ["Role", g => g.role], ["Until", g => g.expires_at || "no end"], ["Granted", g => `${day(g.granted_at)} by ${
          g.granted_by}`], ...(manage ? [["", g => revokeRole(user, g, context, banner, render)]] : [])],
      user.grants) : h("p.muted", {}, "No roles.")),
      manage ? accessForm(user, context, secret, render) : null,
      manage ? h("div.grid", {}, grantForm(user, context, roles, render), statusForm(user, context, render)) : null);
  };
  await render();
}

function keyForm(account, context, roles, secret, render) {
  return form("Create an API key", [h("h2", {}, "Create an API key"),
    field("Key name", h("input", {name: "name", value: "api key"})), roleBoxes(roles, "key"),
    field("Expires in (days)", h("input", {name: "expires_in_days", type: "number", min: 1, max: 3650, value: 90})),
    h("button.primary", {type: "submit"}, "Create key")], async el => {
    const body = {name: el.elements.name.value.trim(), roles: checked(el),
                  expires_in_days: Number(el.elements.expires_in_days.value) || null};
    const issued = await api(`${path("service-accounts", account.name)}/keys`, {method: "POST", body,
                                                                               query: scope(context), idempotent: true});
    showSecret(secret, `API key ${issued.key_id}`, issued.api_key || "(already shown: this was a retry)",
               "Sign in with it, or send it as client_secret of the client_credentials grant.");
    await render(issued.result.global_position);
  });
}

function revokeKey(account, key, context, banner, render) {
  const button = h("button.danger", {type: "button", "aria-label": `Revoke key ${key.name} (${key.key_id})`,
                                     on: {click: async () => {
    if (!await confirmStep(button.closest("table").parentElement, {question: `Revoke key ${key.name} (${key.key_id})?`,
      yes: "Yes, revoke the key", explain: "Whatever signs in with it is refused from now on."})) return;
    const done = await attempt(banner, () => api(`${path("service-accounts", account.name)}/keys/${encodeURIComponent(
      key.key_id)}`, {method: "DELETE", query: scope(context)}));
    if (done) await render(done.global_position);
  }}}, "Revoke key");
  return button;
}

/** Disable (every key refused at once and revoked) or enable (its old keys stay revoked) a service account. */
function accountStatusForm(account, context, render) {
  const disabling = account.status !== "disabled";
  const verb = disabling ? "Disable" : "Enable";
  return form(`${verb} the account`, [h("h2", {}, `${verb} the account`),
    field("Reason", h("input", {name: "reason", required: true, maxlength: 500}), "Recorded in the audit log."),
    h(disabling ? "button.danger" : "button", {type: "submit"}, `${verb} service account`)], async el => {
    if (disabling && !await confirmStep(el.querySelector("button[type=submit]"), {
      question: `Disable ${account.name}?`, yes: "Yes, disable the account",
      explain: ["Every API key of the account, and every access token signed in with one, is refused from the " +
        "next request on, and each key is revoked.", "No key can be issued to it until it is enabled; enabling " +
        "brings none of these keys back."]})) return;
    const done = await api(`${path("service-accounts", account.name)}/${disabling ? "disable" : "enable"}`, {
      method: "POST", body: {reason: el.elements.reason.value.trim()}, query: scope(context)});
    await render(done.global_position);
  });
}

export async function serviceAccountView(main, context, {params: [name]}) {
  const roles = await roleNames();
  const secret = h("section", {id: "secret", "aria-label": "One-time secret", hidden: true});
  const body = h("div");
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const manage = context.can.has("serviceaccount:manage");
  let creator = null;
  const render = async position => {
    const account = await api(path("service-accounts", name), {query: {...scope(context), min_position: position}});
    creator ??= manage ? keyForm(account, context, roles, secret, render) : null;
    fill(body, h("dl.facts.card", {}, [["Description", account.description], ["Status", account.status],
      ["Created", `${account.created_at} by ${account.created_by}`]].filter(([, v]) => v)
      .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    h("section.card", {"aria-label": "API keys"}, h("h2", {}, "API keys"), account.keys.length ? table([
      ["Key", k => `${k.name} (${k.key_id})`], ["Roles", k => k.roles.join(", ")], ["Status", k => k.status],
      ["Expires", k => day(k.expires_at) || "never"],
      ...(manage ? [["", k => k.status === "active" ? revokeKey(account, k, context, banner, render) : ""]] : [])],
    account.keys) : h("p.muted", {}, "No keys.")), account.status === "active" ? creator : null,
    manage ? accountStatusForm(account, context, render) : null);
  };
  fill(main, h("p", {}, h("a", {href: "#/users"}, "← Users and service accounts")), h("h1", {}, name), banner, secret,
       body);
  await render();
}

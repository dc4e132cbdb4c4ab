// Sign-in (password, with a TOTP code when the account has one, or a service account's API key), and TOTP
// enrollment for a privileged account's first sign-in.

import {ApiError, api, signIn, signOut} from "./api.js";
import {clearProblems, field, fill, h, showProblem} from "./dom.js";

let notice = null;  // shown once by the next sign-in form

function input(name, type = "text", extra = {}) {
  return h("input", {name, type, autocomplete: "off", ...extra});
}

export async function signInView(main, context) {
  const totp = field("TOTP code", input("totp", "text", {inputmode: "numeric", autocomplete: "one-time-code",
                                                         pattern: "[0-9]{6,8}", maxlength: 8}),
                     "From your authenticator app: this account needs a current code.");
  totp.hidden = true;
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const withKey = h("input", {type: "checkbox", name: "use_key", id: "use-key"});
  const passwordFields = h("div", {},
    field("Username", input("username", "text", {autocomplete: "username", required: true, autocapitalize: "none"})),
    field("Password", input("password", "password", {autocomplete: "current-password", required: true})),
    field("Tenant", input("tenant_id", "text", {autocapitalize: "none"}),
          "Your tenant's id; leave empty for a platform account."),
    totp);
  const keyFields = h("div", {hidden: true},
    field("API key", input("client_secret", "password", {autocomplete: "off"}), "csm_<key id>_<secret>"));
  withKey.addEventListener("change", () => {
    passwordFields.hidden = withKey.checked;
    keyFields.hidden = !withKey.checked;
    for (const el of passwordFields.querySelectorAll("[required]")) el.required = !withKey.checked;
  });
  const form = h("form.card.narrow", {novalidate: false},
    h("h1", {}, "Sign in"), notice ? h("p.banner.ok", {role: "status"}, notice) : null, banner, passwordFields, keyFields,
    h("div.check", {}, withKey, h("label", {for: "use-key"}, "Sign in with a service account's API key")),
    h("button.primary", {type: "submit"}, "Sign in"));
  form.addEventListener("submit", async event => {
    event.preventDefault();
    clearProblems(form, banner);
    const data = Object.fromEntries(new FormData(form));
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const session = await signIn(withKey.checked ? {api_key: data.client_secret}
        : {username: data.username, password: data.password, totp: data.totp, tenant_id: data.tenant_id});
      context.go(session.enroll_only ? "/enroll" : context.home());
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.problem.field === "totp") totp.hidden = false;
      showProblem(form, banner, error.problem);
      (form.querySelector("[aria-invalid]") || form.querySelector("input:not([type=checkbox])")).focus();
    } finally {
      button.disabled = false;
    }
  });
  if (notice) totp.hidden = false;
  notice = null;
  fill(main, form);
  form.querySelector("input").focus();
}

export async function enrollView(main, context) {
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const intro = h("p", {}, "Your role needs a second factor. Add this key to an authenticator app (TOTP, ",
                  "SHA-1, 6 digits, 30 seconds), then enter the code it shows.");
  const start = h("button.primary", {type: "button"}, "Show my TOTP key");
  const form = h("form.card.narrow", {}, h("h1", {}, "Set up two-factor sign-in"), banner, intro, start);
  start.addEventListener("click", async () => {
    try {
      const enrollment = await api("/v1/auth/totp", {method: "POST"});
      start.replaceWith(
        h("dl.facts", {}, h("dt", {}, "Key (base32)"), h("dd", {}, h("code", {id: "totp-secret"}, enrollment.secret)),
          h("dt", {}, "otpauth URI"), h("dd", {}, h("code.wrap", {}, enrollment.otpauth_uri))),
        h("p.hint", {}, "Shown once: the key is kept only encrypted."),
        field("Code", h("input", {name: "code", inputmode: "numeric", autocomplete: "one-time-code", required: true})),
        h("button.primary", {type: "submit"}, "Confirm"));
    } catch (error) {
      showProblem(form, banner, error.problem || {detail: error.message});
    }
  });
  form.addEventListener("submit", async event => {
    event.preventDefault();
    clearProblems(form, banner);
    try {
      await api("/v1/auth/totp/confirm", {method: "POST", body: {code: form.elements.code.value.trim()}});
      notice = "Two-factor sign-in is on: sign in again with your password and the next code from your app.";
      signOut();  // the enrollment token can do nothing else: sign in again with a (later) code
    } catch (error) {
      showProblem(form, banner, error.problem || {detail: error.message});
    }
  });
  fill(main, form);
}

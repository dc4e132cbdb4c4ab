// What the admin views share: a form that shows the API's refusal next to its fields, an in-page confirmation step
// before anything destructive, a secret shown once with a copy button, and the tenant a request concerns.

import {ApiError} from "./api.js";
import {clearProblems, field, fill, h, showProblem} from "./dom.js";

/** The tenant_id a platform-wide principal names (the one in view); a tenant's principals name none. */
export function scope(context) {
  return context.session.tenant_id ? {} : {tenant_id: context.tenant};
}

/** A <select name=...> of [value, label] pairs (or plain values). */
export function choice(name, options, value, attrs = {}) {
  return h("select", {name, ...attrs}, options.map(o => Array.isArray(o) ? o : [o, o]).map(([v, label]) =>
    h("option", {value: v, selected: v === value}, label)));
}

/** The subject a CA form's common_name, organization and country fields name (empty ones left out). */
export function subjectOf(el) {
  const subject = {common_name: el.elements.common_name.value.trim()};
  for (const name of ["organization", "country"]) if (el.elements[name].value.trim()) {
    subject[name] = el.elements[name].value.trim();
  }
  return subject;
}

/** A form (its children given) whose submit runs ``action(form)``; a problem is shown next to the fields it names,
 * focus going to the first refused one. The submit button is disabled while the request runs. */
export function form(label, children, action, attrs = {}) {
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const el = h("form.card", {"aria-label": label, ...attrs}, banner, children);
  el.addEventListener("submit", async event => {
    event.preventDefault();
    clearProblems(el, banner);
    const buttons = [...el.querySelectorAll("button[type=submit]")];
    buttons.forEach(b => { b.disabled = true; });
    try {
      await action(el);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showProblem(el, banner, error.problem);
      (el.querySelector("[aria-invalid=true]") || banner).focus?.();
    } finally {
      buttons.forEach(b => { b.disabled = false; });
    }
  });
  return el;
}

/** Run ``action``, showing a refusal in ``banner`` (for buttons outside a form). */
export async function attempt(banner, action) {
  clearProblems(null, banner);
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showProblem(null, banner, error.problem);
    return undefined;
  }
}

/** Ask before a destructive action: a panel after ``place`` saying what ``yes`` will do; resolves true or false.
 * The confirm button takes focus; Escape or Cancel answers no. */
export function confirmStep(place, {question, explain = [], yes, typed}) {
  place.parentElement.querySelector(":scope > .confirm")?.remove();
  const before = document.activeElement;
  return new Promise(resolve => {
    const done = answer => {
      panel.remove();
      if (!answer) before?.focus();  // back where the keyboard was
      resolve(answer);
    };
    const button = h("button.danger", {type: "button", disabled: Boolean(typed), on: {click: () => done(true)}}, yes);
    // a strong confirmation: the button stays off until ``typed`` is typed exactly
    const echo = typed ? field(`Type ${typed} to confirm`, h("input", {name: "confirm-text", autocomplete: "off",
      autocapitalize: "none", spellcheck: "false", on: {input: e => { button.disabled = e.target.value !== typed; }}}))
      : null;
    const panel = h("div.confirm.card", {role: "alertdialog", "aria-label": question, "aria-modal": "false",
                                         on: {keydown: e => { if (e.key === "Escape") done(false); }}},
      h("p", {}, h("strong", {}, question)), [explain].flat().map(text => h("p", {}, text)), echo,
      h("div.actions", {}, button, h("button", {type: "button", on: {click: () => done(false)}}, "Cancel")));
    place.after(panel);
    (panel.querySelector("input") || button).focus();
  });
}

/** A group of checkboxes named ``name`` (values ``options``, those in ``selected`` ticked) with one error slot, which
 * problem+json errors naming ``name`` (or ``name[i]``) fill. */
export function checks(legend, name, options, selected = [], prefix = name) {
  const pairs = options.map(o => Array.isArray(o) ? o : [o, o]);
  const slot = `${prefix}-${pairs[0]?.[0]}-error`;  // the first box's: where showProblem looks
  return h("fieldset", {}, h("legend", {}, legend), pairs.map(([value, label]) => h("div.check", {},
    h("input", {type: "checkbox", name, value, id: `${prefix}-${value}`, checked: selected.includes(value),
                "aria-describedby": slot}),
    h("label", {for: `${prefix}-${value}`}, label))), h("p.field-error", {id: slot, role: "alert", hidden: true}));
}

/** The values of the ticked checkboxes named ``name`` in ``el``. */
export function ticked(el, name) {
  return [...el.querySelectorAll(`input[name="${CSS.escape(name)}"]:checked`)].map(box => box.value);
}

/** One entry a line (or comma-separated) in a textarea, as a list. */
export function lines(text) {
  return String(text || "").split(/[\n,]+/).map(line => line.trim()).filter(Boolean);
}

/** A secret the API returns once: shown in ``slot`` with a copy button and a warning (and ``extra`` nodes that
 * carry it, such as command lines); kept nowhere else. */
export function showSecret(slot, label, secret, note, extra = []) {
  const code = h("code.secret.wrap", {id: "one-time-secret"}, secret);
  const status = h("span.hint", {role: "status"});
  const copy = h("button", {type: "button", on: {click: async () => {
    try {
      await navigator.clipboard.writeText(secret);
      status.textContent = "Copied.";
    } catch {
      getSelection().selectAllChildren(code);  // no clipboard permission: select it for Ctrl+C
      status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  }}}, "Copy");
  fill(slot, h("div.banner.warn", {role: "status"},
    h("p", {}, h("strong", {}, label), " — shown this once: it is not stored in the browser and the API cannot show it",
      " again. ", note || ""),
    h("p", {}, code), extra, h("div.actions", {}, copy, status,
      h("button", {type: "button", on: {click: () => fill(slot)}}, "I have saved it"))));
  slot.hidden = false;
  copy.focus();
}

/** A random password for a new user (the API takes the password; the admin hands it over once). */
export function randomPassword() {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
  let out = "";
  while (out.length < 20) {  // 20 of 56 letters: 116 bits; bytes from 224 up are dropped, so each letter is as likely
    for (const b of crypto.getRandomValues(new Uint8Array(32))) if (b < 224 && out.length < 20) out += alphabet[b % 56];
  }
  return out;
}

/** Comma- or space-separated text as a list. */
export function words(text) {
  return String(text || "").split(/[\s,]+/).filter(Boolean);
}

/** A (possibly empty) number input's value: null when empty. */
export function number(input) {
  return input.value === "" ? null : Number(input.value);
}

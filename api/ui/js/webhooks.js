// Webhooks of the tenant in view: the subscriptions, subscribing a URL (the signing secret shown once), changing,
// rotating the secret of (shown once) and deleting one, and each one's delivery log.

import {api, catalog} from "./api.js";
import {field, fill, h, table} from "./dom.js";
import {attempt, checks, confirmStep, form, scope, showSecret, ticked} from "./forms.js";

function createForm(context, types, secret, reload) {
  return form("Subscribe a URL", [h("h2", {}, "Subscribe a URL"),
    field("URL", h("input", {name: "url", type: "url", required: true, autocapitalize: "none"}),
          "HTTPS; each delivery is signed with the secret shown once after this."),
    eventBoxes(types, [], "ev"),
    field("Description", h("input", {name: "description"})),
    h("button.primary", {type: "submit"}, "Create webhook")], async el => {
    const events = ticked(el, "event_types");
    const body = {...scope(context), url: el.elements.url.value.trim(), description: el.elements.description.value,
                  event_types: events.length ? events : null};
    const created = await api("/v1/webhooks", {method: "POST", body, idempotent: true});
    el.reset();
    showSecret(secret, `Signing secret of ${created.webhook_id}`, created.secret || "(already shown: this was a retry)",
               "Receivers check the X-CSM-Signature header with it.");
    await reload(created.global_position);
  }, {id: "create-webhook"});
}

async function deliveries(hook, context, slot) {
  const page = await api(`/v1/webhooks/${encodeURIComponent(hook.webhook_id)}/deliveries`, {
    query: {...scope(context), limit: 50}});
  fill(slot, h("h3", {}, `Deliveries of ${hook.url}`), page.items.length ? table([
    ["Event", d => d.event_type], ["Status", d => h(`span.badge.st-${d.status}`, {}, d.status)],
    ["Attempts", d => String(d.attempts)], ["Last answer", d => d.last_error || String(d.last_status_code ?? "")],
    ["Updated", d => d.updated_at]], page.items) : h("p.muted", {}, "No deliveries yet."));
  slot.hidden = false;
}

function eventBoxes(types, chosen, prefix) {
  return checks("Event types (none ticked: all)", "event_types", types, chosen, prefix);
}

/** Change a subscription's URL, event types, description or enabled flag (PATCH: what is sent replaces). */
function editForm(hook, context, types, slot, render) {
  const el = form(`Change the webhook to ${hook.url}`, [h("h2", {}, "Change the webhook"),
    field("URL", h("input", {name: "url", type: "url", required: true, value: hook.url, autocapitalize: "none",
                             id: "edit-url"})),
    eventBoxes(types, hook.event_types, "edit-ev"),
    field("Description", h("input", {name: "description", value: hook.description, id: "edit-description"})),
    h("div.check", {}, h("input", {type: "checkbox", name: "enabled", id: "edit-enabled", checked: hook.enabled}),
      h("label", {for: "edit-enabled"}, "Enabled (deliveries are sent)")),
    h("div.actions", {}, h("button.primary", {type: "submit"}, "Save webhook"),
      h("button", {type: "button", on: {click: () => { slot.hidden = true; fill(slot); }}}, "Cancel"))], async f => {
    const events = ticked(f, "event_types");
    const body = {url: f.elements.url.value.trim(), description: f.elements.description.value,
                  enabled: f.elements.enabled.checked, event_types: events};  // none ticked: every type
    const done = await api(`/v1/webhooks/${encodeURIComponent(hook.webhook_id)}`, {method: "PATCH", body,
                                                                                   query: scope(context)});
    slot.hidden = true;
    fill(slot);
    await render(done.global_position);
  }, {id: "edit-webhook"});
  fill(slot, el);
  slot.hidden = false;
  el.elements.url.focus();
}

function actions(hook, context, types, slots, render) {
  const {banner, log, editor, secret} = slots;
  const show = h("button", {type: "button", "aria-label": `Deliveries of ${hook.url}`,
                            on: {click: () => attempt(banner, () => deliveries(hook, context, log))}}, "Deliveries");
  if (!context.can.has("webhook:manage")) return show;
  const edit = h("button", {type: "button", "aria-label": `Change ${hook.url}`,
                            on: {click: () => editForm(hook, context, types, editor, render)}}, "Edit");
  const rotate = h("button", {type: "button", "aria-label": `Rotate the secret of ${hook.url}`, on: {click: async () => {
    if (!await confirmStep(rotate.closest("table").parentElement, {question: `Rotate the signing secret of ${hook.url}?`,
      yes: "Yes, rotate", explain: "Every delivery from now on (retries too) is signed with the new secret, shown " +
      "once: the receiver must have it before it accepts them."})) return;
    const done = await attempt(banner, () => api(`/v1/webhooks/${encodeURIComponent(hook.webhook_id)}/rotate-secret`,
      {method: "POST", query: scope(context)}));
    if (!done) return;
    showSecret(secret, `New signing secret of ${hook.webhook_id}`, done.secret, "Receivers check the " +
               "X-CSM-Signature header with it.");
    await render(done.global_position);
  }}}, "Rotate secret");
  const remove = h("button.danger", {type: "button", "aria-label": `Delete ${hook.url}`, on: {click: async () => {
    if (!await confirmStep(remove.closest("table").parentElement, {question: `Delete the webhook to ${hook.url}?`,
      yes: "Yes, delete", explain: "Its pending deliveries are cancelled; nothing more is sent to it."})) return;
    const done = await attempt(banner, () => api(`/v1/webhooks/${encodeURIComponent(hook.webhook_id)}`, {
      method: "DELETE", query: scope(context)}));
    if (done) await render(done.global_position);
  }}}, "Delete");
  return h("span.actions", {}, show, edit, rotate, remove);
}

export async function webhooksView(main, context) {
  const {webhook_event_types: types} = await catalog();
  const secret = h("section", {id: "secret", "aria-label": "One-time secret", hidden: true});
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const list = h("section", {"aria-label": "Webhooks", id: "webhooks"});
  const log = h("section.card", {"aria-label": "Deliveries", id: "deliveries", hidden: true});
  const editor = h("section", {"aria-label": "Change a webhook", id: "webhook-editor", hidden: true});
  const slots = {banner, log, editor, secret};
  const render = async position => {
    const page = await api("/v1/webhooks", {query: {...scope(context), min_position: position}});
    fill(list, page.items.length ? table([["URL", w => h("code.wrap", {}, w.url)],
      ["Events", w => w.event_types.join(", ")], ["Status", w => h(`span.badge.st-${w.status}`, {}, w.status)],
      ["Enabled", w => w.enabled ? "yes" : "no"], ["Description", w => w.description],
      ["", w => actions(w, context, types, slots, render)]], page.items) : h("p.muted", {}, "No webhooks."));
  };
  fill(main, h("h1", {}, "Webhooks"), banner, secret, list, editor, log,
       context.can.has("webhook:manage") ? createForm(context, types, secret, render) : null);
  await render();
}

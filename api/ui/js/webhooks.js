// Webhooks of the tenant in view: the subscriptions, subscribing a URL (the signing secret shown once), deleting
// one, and each one's delivery log.

import {api, catalog} from "./api.js";
import {field, fill, h, table} from "./dom.js";
import {attempt, confirmStep, form, scope, showSecret} from "./forms.js";

function createForm(context, types, secret, reload) {
  return form("Subscribe a URL", [h("h2", {}, "Subscribe a URL"),
    field("URL", h("input", {name: "url", type: "url", required: true, autocapitalize: "none"}),
          "HTTPS; each delivery is signed with the secret shown once after this."),
    h("fieldset", {}, h("legend", {}, "Event types (none ticked: all)"), types.map(type => h("div.check", {},
      h("input", {type: "checkbox", name: "event_types", value: type, id: `ev-${type}`}),
      h("label", {for: `ev-${type}`}, type)))),
    field("Description", h("input", {name: "description"})),
    h("button.primary", {type: "submit"}, "Create webhook")], async el => {
    const events = [...el.querySelectorAll("input[name=event_types]:checked")].map(box => box.value);
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

function actions(hook, context, banner, log, render) {
  const show = h("button", {type: "button", "aria-label": `Deliveries of ${hook.url}`,
                            on: {click: () => attempt(banner, () => deliveries(hook, context, log))}}, "Deliveries");
  if (!context.can.has("webhook:manage")) return show;
  const remove = h("button.danger", {type: "button", "aria-label": `Delete ${hook.url}`, on: {click: async () => {
    if (!await confirmStep(remove.closest("table").parentElement, {question: `Delete the webhook to ${hook.url}?`,
      yes: "Yes, delete", explain: "Its pending deliveries are cancelled; nothing more is sent to it."})) return;
    const done = await attempt(banner, () => api(`/v1/webhooks/${encodeURIComponent(hook.webhook_id)}`, {
      method: "DELETE", query: scope(context)}));
    if (done) await render(done.global_position);
  }}}, "Delete");
  return h("span.actions", {}, show, remove);
}

export async function webhooksView(main, context) {
  const {webhook_event_types: types} = await catalog();
  const secret = h("section", {id: "secret", "aria-label": "One-time secret", hidden: true});
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const list = h("section", {"aria-label": "Webhooks", id: "webhooks"});
  const log = h("section.card", {"aria-label": "Deliveries", id: "deliveries", hidden: true});
  const render = async position => {
    const page = await api("/v1/webhooks", {query: {...scope(context), min_position: position}});
    fill(list, page.items.length ? table([["URL", w => h("code.wrap", {}, w.url)],
      ["Events", w => w.event_types.join(", ")], ["Status", w => h(`span.badge.st-${w.status}`, {}, w.status)],
      ["Enabled", w => w.enabled ? "yes" : "no"], ["Description", w => w.description],
      ["", w => actions(w, context, banner, log, render)]], page.items) : h("p.muted", {}, "No webhooks."));
  };
  fill(main, h("h1", {}, "Webhooks"), banner, secret, list, log,
       context.can.has("webhook:manage") ? createForm(context, types, secret, render) : null);
  await render();
}

// Tenants (platform-wide principals): the list with quotas, creating one, and one tenant's rename, quotas, usage,
// suspend and resume.

import {api} from "./api.js";
import {day, field, fill, h, table} from "./dom.js";
import {confirmStep, form, number} from "./forms.js";

// [quota, label, what the usage report counts against it]
const QUOTAS = [["max_cas", "Maximum CAs", "cas"], ["max_certificates", "Maximum live certificates", "certificates"],
                ["max_issuances_per_day", "Maximum issuances a day", "issuances_today"]];

function quota(value) {
  return value === null || value === undefined ? "unlimited" : String(value);
}

function quotaFields(quotas = {}) {
  return QUOTAS.map(([name, label]) => field(label, h("input", {name, type: "number", min: 0, inputmode: "numeric",
                                                                value: quotas[name] ?? ""}), "Empty: unlimited."));
}

function quotasOf(el) {
  return Object.fromEntries(QUOTAS.map(([name]) => [name, number(el.elements[name])]));
}

function createForm(context, reload) {
  return form("Create a tenant", [h("h2", {}, "Create a tenant"),
    field("Tenant id", h("input", {name: "tenant_id", required: true, autocapitalize: "none", spellcheck: "false"}),
          "Lower-case letters, digits and hyphens; it cannot change later."),
    field("Name", h("input", {name: "name", required: true})), h("fieldset", {}, h("legend", {}, "Quotas"),
      ...quotaFields()), h("button.primary", {type: "submit"}, "Create tenant")], async el => {
    const body = {tenant_id: el.elements.tenant_id.value.trim(), name: el.elements.name.value.trim(),
                  quotas: quotasOf(el)};
    const created = await api("/v1/tenants", {method: "POST", body, idempotent: true});
    el.reset();
    await context.refreshTenants(created.global_position);
    await reload(created.global_position);
  }, {id: "create-tenant"});
}

export async function tenantsView(main, context) {
  const list = h("section", {"aria-label": "Tenants", id: "tenants"});
  const render = async (position, signal) => {
    const page = await api("/v1/tenants", {query: {limit: 500, min_position: position}, signal});
    fill(list, page.items.length ? table([
      ["Tenant", t => h("a", {href: `#/tenants/${encodeURIComponent(t.tenant_id)}`}, t.tenant_id)],
      ["Name", t => t.name], ["Status", t => h(`span.badge.st-${t.status}`, {}, t.status)],
      ...QUOTAS.map(([name, label]) => [label, t => quota(t.quotas[name])]), ["Created", t => day(t.created_at)],
    ], page.items) : h("p.muted", {}, "No tenants yet."));
  };
  fill(main, h("h1", {}, "Tenants"), list, context.can.has("tenant:create") ? createForm(context, render) : null);
  await render();
  context.onEvent((message, signal) => render(message.id, signal));
}

function renameForm(tenant, render) {
  return form("Rename", [h("h2", {}, "Rename"), field("Name", h("input", {name: "name", value: tenant.name,
                                                                         required: true})),
    h("button", {type: "submit"}, "Rename")], async el => {
    const done = await api(`/v1/tenants/${encodeURIComponent(tenant.tenant_id)}/rename`, {
      method: "POST", body: {name: el.elements.name.value.trim()}, idempotent: true});
    await render(done.global_position);
  });
}

function quotasForm(tenant, render) {
  return form("Quotas", [h("h2", {}, "Quotas"), ...quotaFields(tenant.quotas),
    h("button", {type: "submit"}, "Set quotas")], async el => {
    const done = await api(`/v1/tenants/${encodeURIComponent(tenant.tenant_id)}/quotas`, {
      method: "PUT", body: quotasOf(el), idempotent: true});
    await render(done.global_position);
  });
}

function statusForm(tenant, render) {
  const suspended = tenant.status === "suspended";
  const verb = suspended ? "resume" : "suspend";
  return form(suspended ? "Resume" : "Suspend", [h("h2", {}, suspended ? "Resume" : "Suspend"),
    h("p.hint", {}, suspended ? "Its principals can sign in and act again."
      : "While suspended the tenant's principals are refused (423) and nothing is issued or renewed in it."),
    field("Reason", h("input", {name: "reason", required: true})),
    h(suspended ? "button" : "button.danger", {type: "submit"}, suspended ? "Resume tenant" : "Suspend tenant")],
  async el => {
    if (!suspended && !await confirmStep(el.querySelector("button[type=submit]"), {
      question: `Suspend ${tenant.tenant_id}?`, yes: "Yes, suspend",
      explain: "Every request of its users and service accounts is refused until it is resumed."})) return;
    const done = await api(`/v1/tenants/${encodeURIComponent(tenant.tenant_id)}/${verb}`, {
      method: "POST", body: {reason: el.elements.reason.value.trim()}, idempotent: true});
    await render(done.global_position);
  });
}

export async function tenantView(main, context, {params: [id]}) {
  const render = async position => {
    const tenant = await api(`/v1/tenants/${encodeURIComponent(id)}`, {query: {min_position: position}});
    const usage = await api(`/v1/tenants/${encodeURIComponent(id)}/usage`).catch(() => null);
    const facts = [["Id", tenant.tenant_id], ["Name", tenant.name], ["Status", tenant.status],
      ["Created", tenant.created_at], ...QUOTAS.map(([name, label, used]) => [label, usage
        ? `${usage.usage[used]} used of ${quota(tenant.quotas[name])}` : quota(tenant.quotas[name])])];
    const admin = context.can.has("tenant:create");
    fill(main, h("p", {}, h("a", {href: "#/tenants"}, "← Tenants")),
      h("h1", {}, tenant.name, " ", h(`span.badge.st-${tenant.status}`, {}, tenant.status)),
      h("dl.facts.card", {}, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
      h("div.grid", {}, context.can.has("tenant:update") ? renameForm(tenant, render) : null,
        admin ? quotasForm(tenant, render) : null,
        context.can.has("tenant:suspend") ? statusForm(tenant, render) : null));
  };
  await render();  // no live reload: it would empty the forms being filled in
}

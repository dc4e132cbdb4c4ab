// The tenant policy in view: what its certificates may say (algorithms, names, validity), read and replaced.

import {api} from "./api.js";
import {field, fill, h} from "./dom.js";
import {checks, choice, form, lines, number, ticked} from "./forms.js";

const LISTS = [["allowed_dns", "DNS names allowed", "One pattern a line: a.example.com exactly, *.example.com one " +
                "label below, .example.com any depth below. Empty: any."],
               ["allowed_ip_networks", "IP networks allowed", "One network a line, e.g. 10.0.0.0/8. Empty: any."],
               ["allowed_email_domains", "Email domains allowed", "One domain pattern a line. Empty: any."]];
// allow_wildcards: null refuses wildcard names to ACME orders only; true allows them everywhere; false refuses them.
const WILDCARDS = [["", "Not to ACME orders (API, CLI and UI requests may)"], ["true", "Allowed (ACME orders too)"],
                   ["false", "Refused to every request"]];
const wildcardValue = text => text === "" ? null : text === "true";
const wildcardText = value => value === true ? "true" : value === false ? "false" : "";

/** The policy in force (GET /v1/tenants/{id}/policy, read from the tenant's stream: tenant:read). */
async function currentPolicy(tenant) {
  return (await api(`/v1/tenants/${encodeURIComponent(tenant)}/policy`)).policy;
}

function policyOf(el) {
  const algorithms = ticked(el, "allowed_algorithms");
  return {allowed_algorithms: algorithms.length ? algorithms : null,
          ...Object.fromEntries(LISTS.map(([name]) => [name, lines(el.elements[name].value)])),
          max_validity_days: number(el.elements.max_validity_days),
          allow_wildcards: wildcardValue(el.elements.allow_wildcards.value)};
}

function describe(policy) {
  if (!policy) return h("p.hint", {}, "This sign-in cannot read the tenant (tenant:read): saving replaces the policy " +
                        "whole with what is below.");
  const shown = [["Algorithms", policy.allowed_algorithms?.join(", ") || "any the service allows"],
    ...LISTS.map(([name, label]) => [label, (policy[name] || []).join(", ") || "any"]),
    ["Maximum validity", policy.max_validity_days ? `${policy.max_validity_days} days` : "the profile's"],
    ["Wildcard names", Object.fromEntries(WILDCARDS)[wildcardText(policy.allow_wildcards)]]];
  return h("dl.facts.card", {id: "policy-now"}, shown.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export async function policyView(main, context) {
  const tenant = context.tenant;
  if (!tenant) return fill(main, h("h1", {}, "Tenant policy"), h("p", {}, "No tenant in view."));
  const [algorithms, policy] = await Promise.all([api("/v1/algorithms"),
    context.can.has("tenant:read") ? currentPolicy(tenant) : null]);
  const now = policy || {};
  const saved = h("p.banner.ok", {role: "status", hidden: true});
  const edit = context.can.has("tenant:update") ? form("Change the policy", [h("h2", {}, "Change the policy"),
    checks("Algorithms allowed (none ticked: any the service allows)", "allowed_algorithms",
           algorithms.map(a => [a.name, `${a.name}${a.post_quantum ? " (post-quantum)" : ""}`]),
           now.allowed_algorithms || [], "policy-alg"),
    LISTS.map(([name, label, hint]) => field(label, h("textarea", {name, rows: 3, autocapitalize: "none",
      spellcheck: "false"}, (now[name] || []).join("\n")), hint)),
    field("Maximum validity (days)", h("input", {name: "max_validity_days", type: "number", inputmode: "numeric",
      value: now.max_validity_days ?? ""}), "Empty: no tenant limit (each profile's applies)."),
    field("Wildcard names (*.example.com)", choice("allow_wildcards", WILDCARDS, wildcardText(now.allow_wildcards)),
          "ACME proves a wildcard by dns-01 only; still within the DNS names allowed above."),
    h("button.primary", {type: "submit"}, "Save policy")], async el => {
    saved.hidden = true;
    const done = await api(`/v1/tenants/${encodeURIComponent(tenant)}/policy`, {method: "PUT", body: policyOf(el),
                                                                                idempotent: true});
    fill(saved, done.changed === false ? "The policy was already this." : "Policy saved.");
    saved.hidden = false;
    const current = main.querySelector("#policy-now");
    if (current) current.replaceWith(describe(policyOf(el)));
  }, {id: "edit-policy"}) : null;
  fill(main, h("h1", {}, "Tenant policy: ", h("span.tenant-name", {}, tenant)),
    h("p.hint", {}, "What every certificate of the tenant must keep to, on top of its profile and the service's own " +
      "rules."), describe(policy), saved, edit);
}

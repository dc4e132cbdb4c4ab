// Certificate profiles: the built-in ones and the tenant's own; creating, replacing and retiring a tenant profile.

import {api, catalog} from "./api.js";
import {field, fill, h, table} from "./dom.js";
import {checks, choice, confirmStep, form, number, scope, ticked} from "./forms.js";

const path = name => `/v1/profiles/${encodeURIComponent(name)}`;

function box(name, label, on) {
  return h("div.check", {}, h("input", {type: "checkbox", name, id: `f-${name}`, checked: Boolean(on)}),
           h("label", {for: `f-${name}`}, label));
}

function numberField(name, label, value, hint, attrs = {}) {
  return field(label, h("input", {name, type: "number", inputmode: "numeric", value: value ?? "", ...attrs}), hint);
}

/** The profile's fields, named as the API names them so that a refusal lands next to its field. */
function profileFields(lists, algorithms, p = {}) {
  const renewal = p.renewal || {auto: true, renew_at_percent: 67};
  const offered = algorithms.filter(a => a.available).map(a => a.name);
  return [
    field("Name", h("input", {name: "name", required: true, value: p.name || "", readOnly: Boolean(p.name),
                              autocapitalize: "none", spellcheck: "false"}),
          p.name ? "A profile keeps its name." : "Lower-case letters, digits and hyphens, starting with a letter."),
    field("Description", h("input", {name: "description", value: p.description || ""})),
    checks("Key usage", "key_usage", lists.key_usages, p.key_usage || ["digital_signature"]),
    checks("Extended key usage", "extended_key_usage", lists.extended_key_usages, p.extended_key_usage || []),
    checks("Subject alternative name types allowed", "allowed_san_types", lists.san_types,
           p.allowed_san_types || ["dns"]),
    box("require_san", "At least one subject alternative name", p.require_san),
    box("require_common_name", "A common name", p.require_common_name ?? true),
    numberField("max_validity_days", "Maximum validity (days)", p.max_validity_days ?? 397, "At most 825."),
    numberField("default_validity_days", "Default validity (days)", p.default_validity_days ?? 365),
    checks("Algorithms allowed (none ticked: what the tenant policy allows)", "allowed_algorithms", offered,
           p.allowed_algorithms || [], "profile-alg"),
    field("Default algorithm", choice("default_algorithm", offered, p.default_algorithm || "ecdsa-p256")),
    box("ocsp_no_check", "OCSP no-check (a delegated OCSP responder's profile)", p.ocsp_no_check),
    h("fieldset", {}, h("legend", {}, "Renewal"), box("auto", "Renewed automatically", renewal.auto),
      numberField("renew_at_percent", "Renew after this share of the lifetime (%)", renewal.renew_at_percent, null,
                  {min: 1, max: 99}),
      numberField("renew_before_days", "Or this many days before expiry", renewal.renew_before_days,
                  "Empty: by the share above."),
      box("reuse_key", "Keep the key at renewal", renewal.reuse_key)),
  ];
}

function profileOf(el) {
  const e = el.elements;
  const algorithms = ticked(el, "allowed_algorithms");
  return {name: e.name.value.trim(), description: e.description.value, key_usage: ticked(el, "key_usage"),
    extended_key_usage: ticked(el, "extended_key_usage"), allowed_san_types: ticked(el, "allowed_san_types"),
    require_san: e.require_san.checked, require_common_name: e.require_common_name.checked,
    max_validity_days: number(e.max_validity_days), default_validity_days: number(e.default_validity_days),
    allowed_algorithms: algorithms.length ? algorithms : null, default_algorithm: e.default_algorithm.value,
    ocsp_no_check: e.ocsp_no_check.checked,
    renewal: {auto: e.auto.checked, renew_at_percent: number(e.renew_at_percent),
              renew_before_days: number(e.renew_before_days), reuse_key: e.reuse_key.checked}};
}

async function lists() {
  const [fixed, algorithms] = await Promise.all([catalog(), api("/v1/algorithms")]);
  return [fixed, algorithms];
}

export async function profilesView(main, context) {
  const list = h("section", {"aria-label": "Profiles", id: "profiles"});
  const render = async position => {
    const profiles = await api("/v1/profiles", {query: {...scope(context), min_position: position}});
    fill(list, table([
      ["Profile", p => h("a", {href: `#/profiles/${encodeURIComponent(p.name)}`}, p.name)],
      ["Source", p => p.source], ["Status", p => h(`span.badge.st-${p.status}`, {}, p.status)],
      ["Description", p => p.profile.description], ["Maximum days", p => String(p.profile.max_validity_days)],
      ["Extended key usage", p => p.profile.extended_key_usage.join(", ")]], profiles));
  };
  let creator = null;
  if (context.can.has("profile:manage")) {
    const [fixed, algorithms] = await lists();
    creator = form("Create a profile", [h("h2", {}, "Create a profile"), ...profileFields(fixed, algorithms),
      h("button.primary", {type: "submit"}, "Create profile")], async el => {
      const done = await api("/v1/profiles", {method: "POST", body: {...scope(context), profile: profileOf(el)},
                                               idempotent: true});
      context.go(`/profiles/${encodeURIComponent(el.elements.name.value.trim())}?position=${done.global_position}`);
    }, {id: "create-profile"});
  }
  fill(main, h("h1", {}, "Certificate profiles"), list, creator);
  await render();
}

function facts(p) {
  const renewal = p.renewal || {};
  return [["Description", p.description], ["Key usage", p.key_usage.join(", ")],
    ["Extended key usage", p.extended_key_usage.join(", ")], ["SAN types", p.allowed_san_types.join(", ")],
    ["Requires", [p.require_san && "a SAN", p.require_common_name && "a common name"].filter(Boolean).join(", ")],
    ["Validity", `${p.default_validity_days} days by default, at most ${p.max_validity_days}`],
    ["Algorithms", p.allowed_algorithms ? p.allowed_algorithms.join(", ") : "what the tenant policy allows"],
    ["Default algorithm", p.default_algorithm], ["OCSP no-check", p.ocsp_no_check ? "yes" : ""],
    ["Renewal", renewal.auto === false ? "on request only" : renewal.renew_before_days
      ? `${renewal.renew_before_days} days before expiry` : `after ${renewal.renew_at_percent}% of the lifetime`]];
}

function retireForm(name, context, render) {
  return form("Retire", [h("h2", {}, "Retire"),
    h("p.hint", {}, "Nothing more is issued with it; its certificates stay valid and are no longer renewed with it."),
    field("Reason", h("input", {name: "reason", required: true})),
    h("button.danger", {type: "submit"}, "Retire profile")], async el => {
    if (!await confirmStep(el.querySelector("button[type=submit]"), {question: `Retire the profile ${name}?`,
      yes: "Yes, retire", explain: "A retired profile cannot be used again under this name."})) return;
    const done = await api(`${path(name)}/retire`, {method: "POST",
      body: {...scope(context), reason: el.elements.reason.value.trim()}});
    await render(done.global_position);
  });
}

export async function profileView(main, context, {params: [name], query}) {
  const manage = context.can.has("profile:manage");
  const [fixed, algorithms] = manage ? await lists() : [null, null];
  const render = async position => {
    const profiles = await api("/v1/profiles", {query: {...scope(context), min_position: position}});
    const found = profiles.find(p => p.name === name);
    if (!found) return fill(main, h("p", {}, h("a", {href: "#/profiles"}, "← Profiles")),
                            h("h1", {}, "No such profile"));
    const p = found.profile;
    const own = manage && found.source === "tenant" && found.status === "active";
    fill(main, h("p", {}, h("a", {href: "#/profiles"}, "← Profiles")),
      h("h1", {}, name, " ", h(`span.badge.st-${found.status}`, {}, found.status)),
      h("p.hint", {}, found.source === "builtin" ? "Built in: it cannot be changed." : "This tenant's profile."),
      h("dl.facts.card", {}, facts(p).filter(([, v]) => v).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      own ? form("Change the profile", [h("h2", {}, "Change the profile"), ...profileFields(fixed, algorithms, p),
        h("button.primary", {type: "submit"}, "Save profile")], async el => {
        const done = await api(path(name), {method: "PUT", body: {...scope(context), profile: profileOf(el)},
                                            idempotent: true});
        await render(done.global_position);
      }, {id: "update-profile"}) : null,
      own ? retireForm(name, context, render) : null);
  };
  await render(query.get("position"));
}

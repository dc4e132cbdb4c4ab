// The tenant's compliance report in full: every finding (rule, severity, subject, detail and the rule's remedy),
// filtered by severity.

import {api, catalog} from "./api.js";
import {fill, h, table} from "./dom.js";
import {choice} from "./forms.js";

const SEVERITIES = ["critical", "high", "medium", "low", "info"];

function subject(f) {
  if (f.subject_type === "certificate") return h("a", {href: `#/certs/${encodeURIComponent(f.subject_id)}`},
                                                  f.subject_id);
  if (f.subject_type === "ca") return h("a", {href: `#/cas/${encodeURIComponent(f.subject_id)}`}, `CA ${f.subject_id}`);
  return `${f.subject_type} ${f.subject_id}`;
}

export async function complianceView(main, context, {query}) {
  const tenant = context.tenant;
  if (!tenant) return fill(main, h("h1", {}, "Compliance"), h("p", {}, "No tenant in view."));
  const severity = query.get("severity") || "";
  const {compliance_rules: rules} = await catalog();
  const filter = choice("severity", [["", "every severity"], ...SEVERITIES.map(s => [s, s])], severity, {
    id: "severity", on: {change: e => context.go(`/compliance${e.target.value ? `?severity=${e.target.value}` : ""}`)}});
  const results = h("section", {id: "findings", "aria-label": "Findings", "aria-live": "polite"});
  fill(main, h("h1", {}, "Compliance: ", h("span.tenant-name", {}, tenant)),
    h("div.field", {}, h("label", {for: "severity"}, "Severity"), filter), results);
  const render = async (position, signal) => {
    const report = await api(`/v1/tenants/${encodeURIComponent(tenant)}/compliance`, {
      query: {limit: 10000, min_position: position}, signal});
    const shown = report.findings.filter(f => !severity || f.severity === severity);
    fill(results,
      h("p.severities", {}, SEVERITIES.filter(s => report.counts[s] !== undefined)
        .map(s => h(`span.badge.sev-${s}`, {}, `${s}: ${report.counts[s]}`))),
      h("p.hint", {id: "shown"}, `${shown.length} of ${report.findings.length} findings shown.`),
      shown.length ? table([
        ["Rule", f => h("code", {}, f.rule)],
        ["Severity", f => h(`span.badge.sev-${f.severity}`, {}, f.severity)],
        ["Subject", subject], ["Detail", f => f.detail],
        ["Remedy", f => rules[f.rule]?.remedy || ""]], shown)
        : h("p.muted", {}, "No findings."),
      report.truncated ? h("p.hint", {}, "More findings exist than the report lists (10,000).") : null,
      h("p.hint", {}, `As of position ${report.position}, ${report.generated_at}.`));
  };
  await render();
  context.onEvent((message, signal) => render(message.id, signal));
}

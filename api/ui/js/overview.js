// The tenant overview: what it holds, what expires soon, and its compliance findings (refreshed live).

import {api} from "./api.js";
import {fill, h, table} from "./dom.js";

const SEVERITIES = ["critical", "high", "medium", "low", "info"];

function tile(label, value, href) {
  const body = [h("span.tile-value", {}, String(value ?? 0)), h("span.tile-label", {}, label)];
  return href ? h("a.tile", {href}, ...body) : h("div.tile", {}, ...body);
}

function counts(title, entries) {
  const rows = Object.entries(entries || {});
  return h("section.card", {}, h("h2", {}, title),
    rows.length ? h("dl.facts", {}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]))
      : h("p.muted", {}, "None."));
}

export async function overviewView(main, context) {
  const tenant = context.tenant;
  if (!tenant) return fill(main, h("h1", {}, "Overview"), h("p", {}, "No tenant yet: create one with the API or CLI."));
  const render = async (position, signal) => {
    const query = position ? {min_position: position} : {};
    const [usage, report] = await Promise.all([
      context.can.has("tenant:read")
        ? api(`/v1/tenants/${encodeURIComponent(tenant)}/usage`, {signal}).catch(() => null) : null,
      api(`/v1/tenants/${encodeURIComponent(tenant)}/compliance`, {query: {limit: 50, ...query}, signal}),
    ]);
    signal?.throwIfAborted();  // the usage's failure is shown as none: an abort is not
    const summary = report.summary;
    const expiring = summary.expiring_within_days || {};
    fill(main,
      h("h1", {}, "Overview: ", h("span.tenant-name", {}, tenant)),
      h("section.tiles", {"aria-label": "Counts"},
        tile("live certificates", summary.live_certificates, "#/certs?status=valid"),
        tile("CAs in service", summary.cas_in_service, "#/cas"),
        ...["7", "30", "90"].map(days => tile(`expiring within ${days} days`, expiring[days],
                                              `#/certs?expiring_within=${days}d&sort=expiry`)),
        usage ? tile("issued today", usage.usage.issuances_today) : null,
        tile("compromised keys", summary.compromised_keys)),
      h("section.card", {"aria-label": "Compliance findings"},
        h("h2", {}, "Compliance findings"),
        h("p.severities", {}, SEVERITIES.filter(s => report.counts[s] !== undefined)
          .map(s => h(`span.badge.sev-${s}`, {}, `${s}: ${report.counts[s]}`))),
        report.findings.length ? table([
          ["Severity", f => h(`span.badge.sev-${f.severity}`, {}, f.severity)],
          ["Rule", f => f.rule],
          ["Subject", f => f.subject_type === "certificate"
            ? h("a", {href: `#/certs/${encodeURIComponent(f.subject_id)}`}, f.subject_id.slice(0, 12) + "…")
            : `${f.subject_type} ${f.subject_id}`],
          ["Detail", f => f.detail],
        ], report.findings) : h("p.muted", {}, "No findings."),
        report.truncated ? h("p.hint", {}, "More findings than shown: GET /v1/tenants/{id}/compliance lists all.") : null),
      h("div.grid", {}, counts("Certificates by profile", summary.by_profile),
        counts("Certificates by algorithm", summary.by_algorithm), counts("CAs by status", summary.cas_by_status),
        counts("Revoked in the last 30 days", summary.revoked_last_30_days)),
      h("p.hint", {}, `As of position ${report.position}, ${report.generated_at}.`));
  };
  await render();
  context.onEvent((message, signal) => render(message.id, signal));
}

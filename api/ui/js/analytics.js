// Analytics of the tenant in view: daily counts of one kind of security-relevant event over a chosen range, as an
// SVG bar chart (built with DOM calls, no library) and a table.

import {ApiError, api, catalog} from "./api.js";
import {field, fill, h, showProblem, svg, table} from "./dom.js";
import {choice} from "./forms.js";

const DAY = 86_400_000;
const HEIGHT = 120;
const BAR = 12;

function iso(time) {
  return new Date(time).toISOString().slice(0, 10);
}

/** Every UTC day from ``since`` to ``until`` (both included), as YYYY-MM-DD. */
export function daysBetween(since, until) {
  const out = [];
  for (let t = Date.parse(`${since}T00:00:00Z`); t <= Date.parse(`${until}T00:00:00Z`); t += DAY) out.push(iso(t));
  return out;
}

function sum(counts) {
  return Object.values(counts || {}).reduce((a, b) => a + b, 0);
}

/** One bar a day (zero-height on a day without any), each with its day and count as data and as a tooltip. */
function chart(metric, days, byDay) {
  const most = Math.max(1, ...days.map(d => sum(byDay[d])));
  const width = Math.max(days.length * BAR, 1);
  return svg("svg", {class: "chart", viewBox: `0 0 ${width} ${HEIGHT + 16}`, role: "img",
                     "aria-label": `${metric} per day, at most ${most}`},
    svg("line", {class: "axis", x1: 0, y1: HEIGHT, x2: width, y2: HEIGHT}),
    days.map((d, i) => {
      const count = sum(byDay[d]);
      const height = Math.round(count / most * (HEIGHT - 4));
      return svg("rect", {class: "bar", x: i * BAR + 1, y: HEIGHT - height, width: BAR - 2, height,
                          "data-day": d, "data-count": count}, svg("title", {}, `${d}: ${count}`));
    }),
    svg("text", {class: "label", x: 0, y: HEIGHT + 13}, days[0] || ""),
    svg("text", {class: "label end", x: width, y: HEIGHT + 13}, days.at(-1) || ""));
}

function rangeForm(query, metrics, context) {
  const until = query.get("until") || iso(Date.now());
  const since = query.get("since") || iso(Date.parse(`${until}T00:00:00Z`) - 29 * DAY);
  const el = h("form.filters.card", {"aria-label": "Range"},
    field("Events", choice("metric", metrics, query.get("metric") || "certificate.issued")),
    field("From (UTC day)", h("input", {name: "since", type: "date", value: since})),
    field("To (UTC day)", h("input", {name: "until", type: "date", value: until})),
    h("div.actions", {}, h("button.primary", {type: "submit"}, "Show")));
  el.addEventListener("submit", event => {
    event.preventDefault();
    context.go(`/analytics?${new URLSearchParams(new FormData(el))}`);
  });
  return el;
}

export async function analyticsView(main, context, {query}) {
  const tenant = context.tenant;
  if (!tenant) return fill(main, h("h1", {}, "Analytics"), h("p", {}, "No tenant in view."));
  const {analytics_metrics: dimensions} = await catalog();
  const metric = query.get("metric") || "certificate.issued";
  const form = rangeForm(query, Object.keys(dimensions), context);
  const banner = h("p.banner.error", {role: "alert", hidden: true});
  const results = h("section", {"aria-label": "Daily counts", id: "analytics", "aria-live": "polite"});
  fill(main, h("h1", {}, "Analytics: ", h("span.tenant-name", {}, tenant)), form, banner, results);
  let report;
  try {
    report = await api(`/v1/tenants/${encodeURIComponent(tenant)}/analytics`, {query: {
      since: form.elements.since.value, until: form.elements.until.value}});
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return showProblem(form, banner, error.problem);
  }
  const byDay = Object.fromEntries(report.days.map(d => [d.day, d.counts[metric] || {}]));
  const days = daysBetween(report.since, report.until);
  const shown = days.filter(d => sum(byDay[d]));
  const by = dimensions[metric];
  fill(results,
    h("p", {}, `${sum(report.totals[metric])} ${metric} from ${report.since} to ${report.until}`,
      by ? `, by ${by.replaceAll("_", " ")}` : "", "."),
    h("figure.card", {}, chart(metric, days, byDay), h("figcaption.hint", {}, `One bar a day (${days.length}).`)),
    shown.length ? table([["Day", d => d], ["Count", d => String(sum(byDay[d]))],
      ...(by ? [[`By ${by.replaceAll("_", " ")}`, d => Object.entries(byDay[d]).map(([k, n]) => `${k || "—"}: ${n}`)
        .join(", ")]] : [])], shown) : h("p.muted", {}, "None in this range."),
    h("section.card", {"aria-label": "Totals"}, h("h2", {}, "Every kind, over the range"),
      h("dl.facts", {}, Object.entries(report.totals).map(([name, counts]) => [h("dt", {}, name),
        h("dd", {}, String(sum(counts)))]))));
}

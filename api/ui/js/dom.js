// DOM helpers: every value from the server goes in as text (textContent, attributes), never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";  // a namespace name, not fetched

/** h("tag.class", {attr: value, on: {click: fn}}, ...children): an element; strings become text nodes. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "on") {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name in el && typeof value !== "string") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of ``el`` with ``children``. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A labelled input: label, control and an error slot that problem+json errors naming ``name`` fill. */
export function field(label, control, hint) {
  const id = control.id || `f-${control.name}`;
  control.id = id;
  const error = h("p.field-error", {id: `${id}-error`, role: "alert", hidden: true});
  control.setAttribute("aria-describedby", `${id}-error`);
  return h("div.field", {}, h("label", {for: id}, label), control,
           hint ? h("p.hint", {}, hint) : null, error);
}

/** Show a problem (RFC 9457): each error next to the control its ``field`` names, the rest in ``banner``. */
export function showProblem(form, banner, problem) {
  clearProblems(form, banner);
  const errors = problem.errors?.length ? problem.errors : [{field: problem.field, detail: problem.detail}];
  const unplaced = [];
  for (const error of errors) {
    const name = String(error.field || "").split(".").pop().replace(/\[\d+\]$/, "");  // "allowed_dns[2]": its list
    const control = name && form ? form.querySelector(`[name="${CSS.escape(name)}"]`) : null;
    const shown = control && !control.closest("[hidden]");  // a hidden field's error goes to the banner
    const slot = shown ? form.querySelector(`#${CSS.escape(control.id)}-error`) : null;
    if (slot) {
      slot.textContent = error.message || error.detail || problem.detail;
      slot.hidden = false;
      control.setAttribute("aria-invalid", "true");
    } else {
      unplaced.push(error.message || error.detail || problem.detail);
    }
  }
  if (banner) {
    const text = unplaced.length ? unplaced.join("; ") : problem.title || problem.detail;
    fill(banner, text, recertification(problem));
    banner.hidden = false;
  }
}

/** The CA a ``ca_recertification_required`` refusal says to roll over first (its ``ca_to_roll_over`` member), or
 * null. */
function caToRollOver(problem) {
  if (!String(problem?.type || "").endsWith("/ca_recertification_required")) return null;
  return typeof problem.ca_to_roll_over === "string" ? problem.ca_to_roll_over : null;
}

/** What a CA waiting for re-certification needs, as a link to the CA to roll over (null for any other problem). */
function recertification(problem) {
  const ca = caToRollOver(problem);
  return ca ? h("p", {id: "recertify-first"}, "The CA's chain runs through a key a compromise rollover withdrew " +
    "from trust: nothing it signs validates until it is re-certified. Roll over ",
    h("a", {href: `#/cas/${encodeURIComponent(ca)}`}, `CA ${ca}`), " first, then try again.") : null;
}

export function clearProblems(form, banner) {
  for (const slot of form ? form.querySelectorAll(".field-error") : []) {
    slot.hidden = true;
    slot.textContent = "";
  }
  for (const control of form ? form.querySelectorAll("[aria-invalid]") : []) control.removeAttribute("aria-invalid");
  if (banner) {
    banner.hidden = true;
    banner.replaceChildren();
  }
}

/** Offer ``text`` as a file download; nothing leaves the browser. */
export function download(filename, text, type = "application/x-pem-file") {
  const url = URL.createObjectURL(new Blob([text], {type}));
  const link = h("a", {href: url, download: filename, hidden: true});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A table: ``columns`` as [heading, row => cell]; cells are text or nodes. */
export function table(columns, rows, caption) {
  return h("div.table-wrap", {},
    h("table", {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", {scope: "col"}, heading)))),
      h("tbody", {}, rows.map(row => h("tr", {}, columns.map(([heading, cell]) =>
        h("td", {dataset: {label: heading}}, cell(row))))))));
}

/** An SVG element (``svg("rect", {x: 1})``): attributes set as text, children appended; no markup is parsed. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== null && value !== undefined) el.setAttribute(name, String(value));
  append(el, children);
  return el;
}

/** "2026-12-07" from an RFC 3339 time. */
export function day(text) {
  return text ? String(text).slice(0, 10) : "";
}

/** "2026-12-07 13:05 UTC" from an RFC 3339 time in UTC, as the API gives them (the full time in its title). */
export function minute(text) {
  if (!text) return "";
  return h("time", {datetime: String(text), title: String(text)}, `${String(text).slice(0, 16).replace("T", " ")} UTC`);
}

// DOM building and formatting helpers shared by every view. Everything the API returns is put into the
// page as text nodes (never as HTML), so no value can inject markup or script.

/** Create an element: h("a", {href: "#/jobs", class: "x", onclick: fn}, "text", child, [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// --- statuses -------------------------------------------------------------------------------------------

/** Ductile's job statuses (services/api/listing.py STATUSES) */
export const STATUSES = ["queued", "running", "succeeded", "failed", "timed_out", "dead", "skipped", "cancelled"];
/** what POST /job/{id}/retry accepts (services/api/job_actions.py RETRYABLE) */
export const RETRYABLE = new Set(["dead", "failed", "timed_out", "cancelled", "skipped"]);
/** statuses a job never leaves (job_actions.FINAL): anything else can be cancelled */
export const SETTLED = new Set(["succeeded", "dead", "skipped", "cancelled"]);

export function badge(status, extra = "") {
  const text = String(status ?? "unknown");
  return h("span", { class: `badge s-${text.replace(/[^a-z_]/gi, "")} ${extra}`.trim(), title: text }, text.replace("_", " "));
}

// --- time ------------------------------------------------------------------------------------------------

export function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : new Date(t);
}

export function ago(value, now = Date.now()) {
  const t = parseTime(value);
  if (!t) return "—";
  let s = Math.round((now - t.getTime()) / 1000);
  const future = s < 0;
  s = Math.abs(s);
  let text;
  if (s < 5) text = "just now";
  else if (s < 60) text = `${s}s`;
  else if (s < 3600) text = `${Math.floor(s / 60)}m`;
  else if (s < 86400) text = `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  else text = `${Math.floor(s / 86400)}d`;
  if (text === "just now") return text;
  return future ? `in ${text}` : `${text} ago`;
}

export function absolute(value) {
  const t = parseTime(value);
  return t ? t.toLocaleString(undefined, { hour12: false }) : "";
}

/** A relative time with the absolute one as its tooltip. */
export function when(value) {
  return h("time", { datetime: value || undefined, title: absolute(value) }, ago(value));
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60000);
  return `${m}m ${Math.round((ms % 60000) / 1000)}s`;
}

export function span(start, end) {
  const a = parseTime(start);
  const b = parseTime(end);
  return a && b ? duration(b - a) : "—";
}

// --- values ----------------------------------------------------------------------------------------------

export function shortId(id) {
  const text = String(id ?? "");
  return text.length > 13 ? `${text.slice(0, 8)}…${text.slice(-4)}` : text;
}

export function jobLink(id, label) {
  return h("a", { href: `#/job/${encodeURIComponent(id)}`, class: "mono", title: id }, label ?? shortId(id));
}

export function pretty(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** A <pre> of a value (JSON pretty-printed), or a muted dash for nothing. */
export function codeBlock(value, cls = "") {
  if (value === null || value === undefined || value === "") return h("span", { class: "muted" }, "—");
  return h("pre", { class: `code ${cls}`.trim() }, pretty(value));
}

export function number(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString();
}

export function percent(rate) {
  return rate === null || rate === undefined ? "—" : `${(rate * 100).toFixed(rate >= 0.999 || rate === 0 ? 0 : 1)}%`;
}

export function truncate(text, max = 140) {
  const s = String(text ?? "");
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

// --- page pieces -----------------------------------------------------------------------------------------

export function card(title, body, actions) {
  return h(
    "section",
    { class: "card" },
    title ? h("header", { class: "card-head" }, h("h2", {}, title), actions ? h("div", { class: "card-actions" }, actions) : null) : null,
    h("div", { class: "card-body" }, body),
  );
}

export function empty(text) {
  return h("div", { class: "empty" }, text);
}

export function notice(text, kind = "info") {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** A table: columns [{label, cls}], rows of cells (arrays), optional row attributes per row. */
export function table(columns, rows, { rowAttrs, emptyText = "Nothing here yet.", cls = "" } = {}) {
  if (!rows.length) return empty(emptyText);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: `grid ${cls}`.trim() },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.cls }, c.label)))),
      h(
        "tbody",
        {},
        rows.map((cells, i) =>
          h(
            "tr",
            rowAttrs ? rowAttrs(i) : {},
            cells.map((cell, j) => h("td", { class: columns[j]?.cls, "data-label": columns[j]?.label }, cell)),
          ),
        ),
      ),
    ),
  );
}

/** Key/value pairs as a definition grid. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? h("span", { class: "muted" }, "—"))]),
  );
}

export function stat(label, value, cls = "") {
  return h("div", { class: `stat ${cls}`.trim() }, h("div", { class: "stat-value" }, value), h("div", { class: "stat-label" }, label));
}

let toastTimer = null;
/** A short message at the bottom of the screen. */
export function toast(text, kind = "ok") {
  const box = document.getElementById("toast");
  if (!box) return;
  mount(box, h("div", { class: `toast ${kind}`, role: "status" }, text));
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.replaceChildren(), 6000);
}

/** Call `fn` at most once per `ms`, at the end of a burst (one call in flight at a time). */
export function debounce(fn, ms) {
  let timer = null;
  let running = null;
  let again = false;
  const run = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = Promise.resolve().then(fn);
    try {
      await running;
    } catch {
      /* the view shows its own errors */
    } finally {
      running = null;
      if (again) {
        again = false;
        timer = setTimeout(run, ms);
      }
    }
  };
  return () => {
    if (timer === null) timer = setTimeout(run, ms);
  };
}

/**
 * What a view calls on a live event: reload soon (`quick` ms after a burst) and once more `late` ms after
 * it, since the read models the API lists from may be a moment behind the event log the stream reads.
 */
export function refresher(fn, quick = 350, late = 1500) {
  const soon = debounce(fn, quick);
  let timer = null;
  const refresh = () => {
    soon();
    clearTimeout(timer);
    timer = setTimeout(soon, late);
  };
  return refresh;
}

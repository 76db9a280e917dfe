// Jobs: GET /jobs (status, plugin, command; newest first, `total`) or, once a text query or a time range
// is set, GET /job-logs (one row per attempt: full text or substring over errors, stderr and results,
// `from`/`to` on completion time). Live: rows change status as job events arrive (the stream's word wins
// over a row the read model has not caught up with yet), and the page reloads to pick up new jobs. The last 24 h per status (GET /analytics/summary) when the token may see it.

import * as actions from "./actions.js";
import { get, optional } from "./api.js";
import { STATUSES, badge, card, refresher, h, jobLink, mount, notice, number, span, stat, truncate, when } from "./dom.js";

const LIMIT = 50;
/** the status an event gives its job (services/core/jobstate.py evolve_job) */
export const EVENT_STATUS = {
  "job.queued": "queued",
  "job.started": "running",
  "job.succeeded": "succeeded",
  "job.failed": "failed",
  "job.timed_out": "timed_out",
  "job.cancelled": "cancelled",
  "job.retry_scheduled": "queued",
  "job.dead": "dead",
  "job.skipped": "skipped",
};
const FILTERS = ["status", "plugin", "command", "query", "from", "to"];
/** how long a status from the stream overrides the listed one (the read model is never this far behind) */
const OVERLAY_MS = 20000;

function toLocalInput(iso) {
  const t = iso ? new Date(iso) : null;
  if (!t || Number.isNaN(t.getTime())) return "";
  const local = new Date(t.getTime() - t.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

function fromLocalInput(value) {
  if (!value) return "";
  const t = new Date(value);
  return Number.isNaN(t.getTime()) ? "" : t.toISOString();
}

export async function render(ctx) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, ctx.query.get(k) || ""]));
  const offset = Math.max(0, Number.parseInt(ctx.query.get("offset") || "0", 10) || 0);
  const searching = Boolean(filters.query || filters.from || filters.to);
  const catalog = await get("/plugins");
  const pluginNames = [...new Set([...catalog.plugins.map((p) => p.name), "pipeline", "agent", "prompt"])].sort();

  const go = (changes) => ctx.navigate("jobs", { ...filters, ...changes, offset: changes.offset ?? "" });
  const form = filterForm(filters, pluginNames, go);
  const summaryBox = h("div", { class: "stats" });
  const listBox = h("div", { id: "jobs-list" });
  const title = searching ? "Attempts matching the search" : "Jobs";
  mount(
    ctx.root,
    h("div", { class: "view-head" }, h("h1", {}, "Jobs"), h("p", { class: "muted" }, "Every job, newest first; live as it changes.")),
    summaryBox,
    card(title, [form, listBox]),
  );

  const rowsById = new Map();
  // job id -> {status, at}: what the stream said last, which wins over a row the read model has not updated yet
  const latest = new Map();
  const overlay = (j) => {
    const seen = latest.get(j.job_id);
    if (seen && Date.now() - seen.at > OVERLAY_MS) latest.delete(j.job_id);
    return seen && Date.now() - seen.at <= OVERLAY_MS ? { ...j, status: seen.status } : j;
  };
  const load = async () => {
    const query = { ...filters, limit: LIMIT, offset };
    const [page, summary] = await Promise.all([
      searching ? get("/job-logs", query) : get("/jobs", { status: filters.status, plugin: filters.plugin, command: filters.command, limit: LIMIT, offset }),
      optional("/analytics/summary"),
    ]);
    if (!ctx.isCurrent()) return;
    renderSummary(summaryBox, summary, go);
    rowsById.clear();
    const rows = searching ? page.logs : page.jobs.map(overlay);
    mount(listBox, searching ? attemptTable(rows) : jobTable(rows, rowsById, refresh), pager(page, rows.length, offset, go));
  };
  const refresh = refresher(() => load().catch(ctx.fail));
  await load();

  return {
    refresh,
    onEvent(env) {
      const status = EVENT_STATUS[env.type];
      if (!status) return; // job.log lines and the like change no row
      latest.set(env.job_id, { status, at: Date.now() });
      const row = rowsById.get(env.job_id);
      if (row && !searching) patchRow(row, { job_id: env.job_id, status }, refresh);
      if (row || env.type === "job.queued" || searching) refresh();
    },
  };
}

function filterForm(filters, pluginNames, go) {
  const fields = {};
  // what the form says now (a changed select applies every field, typed ones included)
  const collect = () => ({
    status: fields.status.value,
    plugin: fields.plugin.value,
    command: fields.command.value.trim(),
    query: fields.query.value.trim(),
    from: fromLocalInput(fields.from.value),
    to: fromLocalInput(fields.to.value),
  });
  const select = (name, options, label) =>
    (fields[name] = h(
      "select",
      { name, id: `filter-${name}`, "aria-label": label, onchange: () => go(collect()) },
      h("option", { value: "" }, label),
      options.map((o) => h("option", { value: o, selected: o === filters[name] }, o.replace("_", " "))),
    ));
  const input = (name, attrs) => (fields[name] = h("input", { name, id: `filter-${name}`, ...attrs }));
  return h(
    "form",
    {
      class: "filters",
      onsubmit: (ev) => {
        ev.preventDefault();
        go(collect());
      },
    },
    select("status", STATUSES, "any status"),
    select("plugin", pluginNames, "any plugin"),
    input("command", { value: filters.command, placeholder: "command", "aria-label": "command" }),
    input("query", { type: "search", class: "grow", value: filters.query, placeholder: "search errors, stderr, results…", "aria-label": "search" }),
    h("label", { class: "inline muted small" }, "from", input("from", { type: "datetime-local", value: toLocalInput(filters.from), "aria-label": "completed from" })),
    h("label", { class: "inline muted small" }, "to", input("to", { type: "datetime-local", value: toLocalInput(filters.to), "aria-label": "completed until" })),
    h("button", { class: "btn primary small", type: "submit", id: "filter-apply" }, "Apply"),
    FILTERS.some((k) => filters[k])
      ? h("button", { class: "btn ghost small", type: "button", id: "filter-clear", onclick: () => go(Object.fromEntries(FILTERS.map((k) => [k, ""]))) }, "Clear")
      : null,
    filters.query || filters.from || filters.to
      ? h("p", { class: "hint muted small" }, "A text query or a time range searches attempts (GET /job-logs): one row per attempt, ranked by relevance; the range is on completion time.")
      : null,
  );
}

function renderSummary(box, summary, go) {
  if (!summary) {
    box.replaceChildren();
    return;
  }
  const by = summary.by_status || {};
  mount(
    box,
    stat("jobs, last 24 h", number(summary.total)),
    ["succeeded", "running", "queued", "failed", "dead"].map((s) =>
      h("a", { class: "stat-link", href: `#/jobs?status=${s}`, onclick: (ev) => (ev.preventDefault(), go({ status: s })) }, stat(s, number(by[s] || 0), `st-${s}`)),
    ),
    stat("success rate", summary.success_rate == null ? "—" : `${(summary.success_rate * 100).toFixed(1)}%`),
    stat("p95 run time", summary.duration_ms?.p95 == null ? "—" : `${Math.round(summary.duration_ms.p95)} ms`),
  );
}

const JOB_COLUMNS = [
  { label: "Job", cls: "c-id" },
  { label: "Plugin" },
  { label: "Command" },
  { label: "Status" },
  { label: "Attempt", cls: "num" },
  { label: "Created" },
  { label: "Duration", cls: "num" },
  { label: "", cls: "c-actions" },
];

export function jobTable(jobs, rowsById, refresh) {
  if (!jobs.length) return notice("No jobs match these filters.", "info");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "grid jobs" },
      h("thead", {}, h("tr", {}, JOB_COLUMNS.map((c) => h("th", { class: c.cls }, c.label)))),
      h(
        "tbody",
        {},
        jobs.map((j) => {
          const tr = h(
            "tr",
            { class: "job-row", "data-job": j.job_id, "data-status": j.status },
            h("td", { class: "c-id", "data-label": "Job" }, jobLink(j.job_id)),
            h("td", { "data-label": "Plugin" }, j.plugin),
            h("td", { "data-label": "Command" }, j.command),
            h("td", { class: "cell-status", "data-label": "Status" }, badge(j.status)),
            h("td", { class: "num", "data-label": "Attempt" }, j.attempt),
            h("td", { "data-label": "Created" }, when(j.created_at)),
            h("td", { class: "num", "data-label": "Duration" }, span(j.started_at, j.completed_at)),
            h("td", { class: "c-actions" }, actions.buttons(j, refresh)),
          );
          rowsById?.set(j.job_id, tr);
          return tr;
        }),
      ),
    ),
  );
}

function patchRow(tr, job, refresh) {
  tr.dataset.status = job.status;
  mount(tr.querySelector(".cell-status"), badge(job.status));
  mount(tr.querySelector(".c-actions"), actions.buttons(job, refresh));
}

function attemptTable(logs) {
  if (!logs.length) return notice("No attempts match this search.", "info");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "grid attempts" },
      h("thead", {}, h("tr", {}, ["Job", "Plugin", "Command", "Attempt status", "#", "Completed", "Error / output"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        logs.map((l) =>
          h(
            "tr",
            { class: "job-row", "data-job": l.job_id },
            h("td", { class: "c-id" }, jobLink(l.job_id)),
            h("td", {}, l.plugin),
            h("td", {}, l.command),
            h("td", {}, badge(l.status)),
            h("td", { class: "num" }, l.attempt),
            h("td", {}, when(l.completed_at)),
            h("td", { class: "c-text" }, truncate(l.last_error || l.stderr || (l.logs || []).map((x) => x.message).join(" · "), 160)),
          ),
        ),
      ),
    ),
  );
}

function pager(page, shown, offset, go) {
  const total = page.total ?? 0;
  const approx = page.total_is_estimate ? "≈" : "";
  const first = shown ? offset + 1 : 0;
  return h(
    "div",
    { class: "pager" },
    h("span", { class: "muted small", id: "jobs-count" }, `${number(first)}–${number(offset + shown)} of ${approx}${number(total)}`),
    h("div", { class: "spacer" }),
    h("button", { class: "btn small", type: "button", disabled: offset === 0, onclick: () => go({ offset: String(Math.max(0, offset - LIMIT)) }) }, "‹ Newer"),
    h("button", { class: "btn small", type: "button", disabled: offset + shown >= total || shown < LIMIT, onclick: () => go({ offset: String(offset + LIMIT) }) }, "Older ›"),
  );
}

// One job: GET /job/{id} (status, result, last error), its attempts with their log lines, stderr and
// results (GET /job-logs?job_id=…&include_result=true), its pipeline tree (GET /job/{id}/tree: the job
// and every job below it), and, for agent runs and prompts, its traces and token usage (GET
// /api/traces?job_id=…, GET /api/jobs/{id}). Live: reloads when an event of a job of its tree arrives.

import * as actions from "./actions.js";
import { ApiError, get, optional } from "./api.js";
import { SETTLED, badge, card, codeBlock, refresher, facts, h, jobLink, mount, notice, number, span, stat, truncate, when } from "./dom.js";

export async function render(ctx) {
  const jobId = ctx.args[0];
  if (!jobId) return ctx.navigate("jobs");
  const opened = new Set(); // attempts and traces the user opened, kept open across reloads
  const ids = new Set([jobId]);

  const load = async () => {
    let job;
    try {
      job = await get(`/job/${encodeURIComponent(jobId)}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        mount(ctx.root, notice(`No job ${jobId}.`, "error"), h("p", {}, h("a", { href: "#/jobs" }, "‹ back to jobs")));
        return;
      }
      throw err;
    }
    const [logs, tree, traces] = await Promise.all([
      get("/job-logs", { job_id: jobId, include_result: "true", limit: 200 }),
      get(`/job/${encodeURIComponent(jobId)}/tree`),
      optional("/api/traces", { job_id: jobId, limit: 1000 }),
    ]);
    const traceRows = traces?.traces || [];
    const laddr = traceRows.length ? await optional(`/api/jobs/${encodeURIComponent(jobId)}`) : null;
    if (!ctx.isCurrent()) return;
    for (const node of tree) ids.add(node.job_id);
    mount(
      ctx.root,
      header(job, refresh, ctx),
      h(
        "div",
        { class: "cols" },
        card("Details", details(job)),
        card(job.last_error && job.status !== "succeeded" ? "Error" : "Result", outcome(job)),
      ),
      tree.length > 1 || tree[0]?.pipeline ? card(`Pipeline tree (${tree.length} jobs)`, treeView(tree, jobId)) : null,
      card(`Attempts (${logs.logs.length})`, attempts(logs.logs, opened)),
      traceRows.length ? card(`Traces (${traceRows.length})`, tracesView(traceRows, laddr, opened)) : null,
    );
  };
  const refresh = refresher(() => load().catch(ctx.fail));
  await load();
  return {
    refresh,
    onEvent(env) {
      if (ids.has(env.job_id) || ids.has(env.correlation_id) || ids.has(env.data?.parent_job_id)) refresh();
    },
  };
}

function header(job, refresh, ctx) {
  return h(
    "div",
    { class: "view-head job-head" },
    h("a", { href: "#/jobs", class: "back muted small" }, "‹ Jobs"),
    h(
      "div",
      { class: "title-row" },
      h("h1", {}, `${job.plugin}.${job.command}`),
      badge(job.status, "big"),
      h("div", { class: "spacer" }),
      actions.buttons(
        job,
        (newId) => {
          if (newId) ctx.navigate(`job/${encodeURIComponent(newId)}`);
          else refresh();
        },
        { size: "" },
      ),
    ),
    h(
      "div",
      { class: "mono muted small job-id" },
      job.job_id,
      h(
        "button",
        {
          class: "btn ghost tiny",
          type: "button",
          title: "copy the job id",
          onclick: () => navigator.clipboard?.writeText(job.job_id),
        },
        "copy",
      ),
    ),
  );
}

function details(job) {
  return facts([
    ["Status", badge(job.status)],
    ["Plugin", h("a", { href: `#/jobs?plugin=${encodeURIComponent(job.plugin)}` }, job.plugin)],
    ["Command", job.command],
    ["Attempt", job.attempt],
    ["Submitted by", job.submitted_by],
    job.parent_job_id ? ["Parent", jobLink(job.parent_job_id)] : null,
    ["Created", when(job.created_at)],
    ["Started", job.started_at ? when(job.started_at) : null],
    ["Completed", job.completed_at ? when(job.completed_at) : null],
    ["Run time", span(job.started_at, job.completed_at)],
  ]);
}

function outcome(job) {
  const parts = [];
  if (job.last_error && job.status !== "succeeded") parts.push(h("pre", { class: "code error", id: "job-error" }, job.last_error));
  const result = job.result;
  if (result && typeof result === "object" && "result" in result) {
    parts.push(h("div", { class: "label" }, "Output"), h("div", { id: "job-result" }, codeBlock(result.result)));
    parts.push(h("details", { class: "raw" }, h("summary", {}, "Full plugin response"), codeBlock(result)));
  } else if (result !== null && result !== undefined) {
    parts.push(h("div", { id: "job-result" }, codeBlock(result)));
  }
  if (!parts.length) parts.push(h("p", { class: "muted" }, SETTLED.has(job.status) ? "No result." : "No result yet."));
  return parts;
}

function attempts(logs, opened) {
  if (!logs.length) return h("p", { class: "muted" }, "No attempt has finished yet.");
  return h(
    "div",
    { class: "attempts-list" },
    logs.map((a, i) => {
      const key = `attempt-${a.log_id}`;
      const el = h(
        "details",
        {
          class: "attempt",
          open: opened.has(key) || i === 0,
          ontoggle: (ev) => (ev.currentTarget.open ? opened.add(key) : opened.delete(key)),
        },
        h(
          "summary",
          {},
          h("span", { class: "attempt-no" }, `#${a.attempt}`),
          badge(a.status),
          h("span", { class: "muted small" }, when(a.completed_at)),
          h("span", { class: "muted small by" }, a.submitted_by),
          a.last_error ? h("span", { class: "err-snippet" }, truncate(a.last_error, 120)) : null,
        ),
        h(
          "div",
          { class: "attempt-body" },
          logLines(a.logs || []),
          a.stderr ? [h("div", { class: "label" }, "stderr"), h("pre", { class: "code stderr" }, a.stderr)] : null,
          a.last_error ? [h("div", { class: "label" }, "error"), h("pre", { class: "code error" }, a.last_error)] : null,
          a.result !== undefined && a.result !== null ? h("details", { class: "raw" }, h("summary", {}, "This attempt's plugin response"), codeBlock(a.result)) : null,
        ),
      );
      return el;
    }),
  );
}

function logLines(lines) {
  if (!lines.length) return h("p", { class: "muted small" }, "No log lines.");
  return [
    h("div", { class: "label" }, "logs"),
    h(
      "div",
      { class: "logs" },
      lines.map((l) => h("div", { class: `log-line lv-${String(l.level || "info").toLowerCase()}` }, h("span", { class: "lv" }, l.level || "info"), h("span", { class: "msg" }, l.message))),
    ),
  ];
}

function treeView(nodes, current) {
  const children = new Map();
  const byId = new Map(nodes.map((n) => [n.job_id, n]));
  for (const n of nodes) {
    const parent = byId.has(n.parent_job_id) ? n.parent_job_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(n);
  }
  const branch = (parent) =>
    h(
      "ul",
      { class: "tree" },
      (children.get(parent) || []).map((n) =>
        h(
          "li",
          {},
          h(
            "div",
            { class: `node ${n.job_id === current ? "current" : ""}` },
            badge(n.status),
            n.job_id === current ? h("strong", {}, `${n.plugin}.${n.command}`) : h("a", { href: `#/job/${encodeURIComponent(n.job_id)}` }, `${n.plugin}.${n.command}`),
            n.step_id ? h("span", { class: "chip" }, `step ${n.step_id}`) : null,
            n.pipeline ? h("span", { class: "chip muted" }, n.pipeline) : null,
            h("span", { class: "muted small mono" }, n.job_id.slice(0, 8)),
            h("span", { class: "muted small" }, span(n.started_at, n.completed_at)),
            n.last_error && n.status !== "succeeded" ? h("span", { class: "err-snippet" }, truncate(n.last_error, 80)) : null,
          ),
          children.has(n.job_id) ? branch(n.job_id) : null,
        ),
      ),
    );
  return branch(null);
}

export function usageStats(usage) {
  if (!usage) return null;
  return h(
    "div",
    { class: "stats compact" },
    stat("total tokens", number(usage.total_tokens)),
    stat("prompt", number(usage.prompt_tokens)),
    stat("completion", number(usage.completion_tokens)),
    (usage.by_model || []).map((m) => stat(`${m.provider}/${m.model}`, `${number(m.total_tokens)} · ${m.calls} calls`)),
  );
}

export function tracesView(traces, laddr, opened) {
  return [
    laddr ? usageStats(laddr.token_usage) : null,
    h(
      "div",
      { class: "traces" },
      traces.map((t) => {
        const key = `trace-${t.id}`;
        return h(
          "details",
          { class: "trace", open: opened?.has(key), ontoggle: (ev) => (ev.currentTarget.open ? opened?.add(key) : opened?.delete(key)) },
          h(
            "summary",
            {},
            h("span", { class: `ev ev-${t.event_type}` }, t.event_type),
            h("span", { class: "small" }, t.agent_name),
            h("span", { class: "muted small" }, when(t.timestamp)),
            h("span", { class: "muted small trunc" }, truncate(traceSummary(t), 110)),
          ),
          codeBlock(t.payload),
        );
      }),
    ),
  ];
}

function traceSummary(t) {
  const p = t.payload || {};
  if (t.event_type === "llm_usage") return `${p.provider ?? ""}/${p.model ?? ""}: ${p.prompt_tokens ?? 0} + ${p.completion_tokens ?? 0} = ${p.total_tokens ?? "?"} tokens`;
  if (t.event_type.startsWith("tool_")) return [p.tool, p.error ?? p.code ?? inline(p.result ?? p.arguments)].filter(Boolean).join(": ");
  return inline(p.response ?? p.result ?? p.message ?? p.error ?? "");
}

/** A value on one line: text as it is, anything else as compact JSON. */
function inline(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

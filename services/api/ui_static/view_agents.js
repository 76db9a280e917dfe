// Agents (the Laddr dialect): totals (GET /api/metrics: jobs, tool calls, tokens), the configured agents
// with their liveness and trace counts (GET /api/agents), and their latest runs: the traces grouped by
// job (GET /api/traces/grouped, or GET /api/traces?agent_name=… for one agent), each run with its
// status and token usage (GET /api/jobs/{id} `token_usage`, summed over the run's job tree).

import { get, optional } from "./api.js";
import { badge, card, refresher, h, jobLink, mount, notice, number, stat, when } from "./dom.js";
import { tracesView, usageStats } from "./view_job.js";

const RUNS = 10;

export async function render(ctx) {
  const selected = ctx.args[0] || "";
  const opened = new Set();
  const load = async () => {
    const [metrics, agents, traces] = await Promise.all([
      get("/api/metrics"),
      get("/api/agents"),
      selected ? get("/api/traces", { agent_name: selected, limit: 500 }) : get("/api/traces/grouped", { limit: RUNS }),
    ]);
    const groups = selected ? groupByJob(traces.traces) : traces.grouped_traces;
    const shown = groups.slice(0, RUNS);
    const jobs = await Promise.all(shown.map((g) => optional(`/api/jobs/${encodeURIComponent(g.job_id)}`)));
    if (!ctx.isCurrent()) return;
    mount(
      ctx.root,
      h("div", { class: "view-head" }, h("h1", {}, "Agents"), h("p", { class: "muted" }, "LLM agents, their traces and token usage (the Laddr API).")),
      metricStrip(metrics),
      card(`Agents (${agents.agents.length})`, agentTable(agents.agents, selected)),
      card(
        selected ? `Latest runs of ${selected}` : "Latest agent runs",
        runsView(shown, jobs, opened),
        selected ? h("a", { class: "btn small", href: "#/agents" }, "All agents") : null,
      ),
    );
  };
  const refresh = refresher(() => load().catch(ctx.fail));
  await load();
  return {
    refresh,
    onEvent(env) {
      if (["agent", "prompt"].includes(env.data?.plugin) || ["job.succeeded", "job.dead"].includes(env.type)) refresh();
    },
  };
}

function groupByJob(traces) {
  const groups = new Map();
  for (const t of [...traces].sort((a, b) => a.id - b.id)) {
    if (!groups.has(t.job_id)) groups.set(t.job_id, { job_id: t.job_id, traces: [] });
    groups.get(t.job_id).traces.push(t);
  }
  return [...groups.values()]
    .map((g) => ({ ...g, trace_count: g.traces.length, start_time: g.traces[0].timestamp, end_time: g.traces.at(-1).timestamp, agents: [...new Set(g.traces.map((t) => t.agent_name))] }))
    .sort((a, b) => b.traces[0].id - a.traces[0].id);
}

function metricStrip(m) {
  return h(
    "div",
    { class: "stats", id: "agent-metrics" },
    stat("root jobs", number(m.total_jobs)),
    stat("completed", number(m.completed_jobs), "st-succeeded"),
    stat("failed", number(m.failed_jobs), "st-dead"),
    stat("active", number(m.active_jobs), "st-running"),
    stat("active agents", number(m.active_agents_count)),
    stat("tool calls", number(m.tool_calls)),
    stat("total tokens", number(m.total_tokens)),
    stat("avg latency", `${number(m.avg_latency_ms)} ms`),
  );
}

function agentTable(agents, selected) {
  if (!agents.length) return notice("No agents are configured (`agents:` in the config).", "info");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "grid" },
      h("thead", {}, h("tr", {}, ["Agent", "Status", "Model", "Role", "Tools", "Traces", "Last run", "Last seen"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        agents.map((a) =>
          h(
            "tr",
            { class: `clickable ${a.name === selected ? "selected" : ""}`, "data-agent": a.name, onclick: () => (location.hash = `#/agents/${encodeURIComponent(a.name)}`) },
            h("td", {}, h("a", { href: `#/agents/${encodeURIComponent(a.name)}` }, h("strong", {}, a.name)), a.problems?.length ? h("div", { class: "err-snippet small" }, a.problems.join("; ")) : null),
            h("td", {}, badge(a.status)),
            h("td", { class: "small" }, a.offline ? "offline echo" : `${a.provider}/${a.model}`),
            h("td", { class: "c-text small" }, a.role),
            h("td", {}, a.tools.length ? a.tools.map((t) => h("span", { class: "chip" }, t)) : h("span", { class: "muted" }, "none")),
            h("td", { class: "num" }, number(a.trace_count)),
            h("td", {}, a.last_executed ? when(a.last_executed) : "never"),
            h("td", {}, a.last_seen ? when(a.last_seen) : "—"),
          ),
        ),
      ),
    ),
  );
}

function runsView(groups, jobs, opened) {
  if (!groups.length) return notice("No agent has run yet.", "info");
  return h(
    "div",
    { class: "runs" },
    groups.map((g, i) => {
      const job = jobs[i];
      const key = `run-${g.job_id}`;
      return h(
        "details",
        { class: "run", "data-job": g.job_id, open: opened.has(key), ontoggle: (ev) => (ev.currentTarget.open ? opened.add(key) : opened.delete(key)) },
        h(
          "summary",
          {},
          job ? badge(job.status) : null,
          h("strong", {}, job?.pipeline_name || g.agents.join(", ")),
          jobLink(g.job_id),
          h("span", { class: "muted small" }, `${g.trace_count} traces`),
          job?.token_usage ? h("span", { class: "chip tokens" }, `${number(job.token_usage.total_tokens)} tokens`) : null,
          h("span", { class: "muted small" }, when(g.start_time)),
        ),
        h("div", { class: "run-body" }, job ? usageStats(job.token_usage) : null, tracesView(g.traces, null, opened)),
      );
    }),
  );
}

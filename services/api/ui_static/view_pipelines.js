// Pipelines: the configured ones (GET /skills: name, trigger, mode, timeout), their compiled steps when
// the token may read the config (GET /config/view `compiled_pipelines`), and the latest runs (GET
// /jobs?plugin=pipeline: a run's root job; its page shows the tree of its steps).

import { get, optional } from "./api.js";
import { card, refresher, h, mount, notice } from "./dom.js";
import { jobTable } from "./view_jobs.js";

export async function render(ctx) {
  const load = async () => {
    const [skills, config, runs] = await Promise.all([
      get("/skills"),
      optional("/config/view"),
      get("/jobs", { plugin: "pipeline", limit: 25 }),
    ]);
    if (!ctx.isCurrent()) return;
    const pipelines = skills.skills.filter((s) => s.kind === "pipeline");
    const compiled = config?.compiled_pipelines || {};
    mount(
      ctx.root,
      h("div", { class: "view-head" }, h("h1", {}, "Pipelines"), h("p", { class: "muted" }, "Configured pipelines and their latest runs.")),
      card(`Configured (${pipelines.length})`, pipelineTable(pipelines, compiled, Boolean(config))),
      card("Latest runs", jobTable(runs.jobs, null, refresh), h("a", { class: "btn small", href: "#/jobs?plugin=pipeline" }, "All runs")),
    );
  };
  const refresh = refresher(() => load().catch(ctx.fail));
  await load();
  return {
    refresh,
    onEvent(env) {
      if (env.data?.plugin === "pipeline" || env.data?.pipeline_root || env.type === "job.succeeded" || env.type === "job.dead") refresh();
    },
  };
}

function pipelineTable(pipelines, compiled, seesConfig) {
  if (!pipelines.length) return notice("No pipelines are configured (`pipelines:` in the config).", "info");
  return [
    seesConfig ? null : h("p", { class: "muted small" }, "Steps show with a token that may read the config (scope * or system:ro)."),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "grid" },
        h("thead", {}, h("tr", {}, ["Pipeline", "Trigger", "Mode", "Timeout", "Steps", ""].map((c) => h("th", {}, c)))),
        h(
          "tbody",
          {},
          pipelines.map((p) =>
            h(
              "tr",
              { "data-pipeline": p.pipeline },
              h("td", {}, h("strong", {}, p.pipeline)),
              h("td", {}, p.trigger ? h("span", { class: "chip" }, p.trigger) : h("span", { class: "muted" }, "API only")),
              h("td", {}, p.execution_mode),
              h("td", { class: "num" }, p.timeout_secs ? `${p.timeout_secs} s` : "—"),
              h("td", {}, steps(compiled[p.pipeline])),
              h("td", { class: "c-actions" }, h("a", { class: "btn small", href: `#/jobs?plugin=pipeline&command=${encodeURIComponent(p.pipeline)}` }, "Runs")),
            ),
          ),
        ),
      ),
    ),
  ];
}

/** The compiled steps in the order they run (breadth first from the entries). */
function steps(entry) {
  if (!entry?.nodes) return h("span", { class: "muted" }, entry ? `${entry.steps} steps` : "—");
  const order = [];
  const seen = new Set();
  const queue = [...(entry.entries || [])];
  while (queue.length) {
    const id = queue.shift();
    if (seen.has(id) || !entry.nodes[id]) continue;
    seen.add(id);
    order.push(id);
    queue.push(...(entry.nodes[id].next || []));
  }
  for (const id of Object.keys(entry.nodes)) if (!seen.has(id)) order.push(id);
  return h(
    "div",
    { class: "flow" },
    order.map((id, i) => {
      const node = entry.nodes[id];
      return [
        i ? h("span", { class: "arrow" }, "→") : null,
        h("span", { class: `step k-${node.kind}`, title: `${node.kind}${node.conditional ? " (conditional)" : ""}` }, h("b", {}, id), node.uses ? ` ${node.uses}` : ` ${node.kind}`, node.conditional ? " ?" : ""),
      ];
    }),
  );
}

// Plugins: the enabled catalog (GET /plugins), the last 24 h per plugin when the token may see it (GET
// /analytics/summary `plugins`), and a plugin's commands with their types and input schemas on demand
// (GET /plugin/{name}, plugin:ro).

import { ApiError, get, optional } from "./api.js";
import { card, codeBlock, h, mount, notice, number, percent } from "./dom.js";

export async function render(ctx) {
  const [catalog, summary] = await Promise.all([get("/plugins"), optional("/analytics/summary")]);
  if (!ctx.isCurrent()) return null;
  const stats = summary?.plugins || {};
  const detail = h("div", { id: "plugin-detail" });
  mount(
    ctx.root,
    h("div", { class: "view-head" }, h("h1", {}, "Plugins"), h("p", { class: "muted" }, "The enabled plugin catalog. Select a plugin for its commands.")),
    card(`Catalog (${catalog.plugins.length})`, pluginTable(catalog.plugins, stats, Boolean(summary), (name) => showDetail(detail, name, ctx).catch(ctx.fail))),
    detail,
  );
  if (ctx.args[0]) await showDetail(detail, ctx.args[0], ctx);
  return null;
}

function pluginTable(plugins, stats, seesStats, select) {
  if (!plugins.length) return notice("No plugin is enabled.", "info");
  return [
    seesStats ? null : h("p", { class: "muted small" }, "Run figures show with an admin token (scope *)."),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "grid" },
        h("thead", {}, h("tr", {}, ["Plugin", "Version", "Description", "Commands", "Jobs 24 h", "Success", "p50", "p95", ""].map((c) => h("th", {}, c)))),
        h(
          "tbody",
          {},
          plugins.map((p) => {
            const s = stats[p.name];
            return h(
              "tr",
              { class: "clickable", "data-plugin": p.name, onclick: () => select(p.name) },
              h("td", {}, h("strong", {}, p.name)),
              h("td", { class: "mono small" }, p.version),
              h("td", { class: "c-text" }, p.description),
              h("td", {}, p.commands.map((c) => h("span", { class: "chip" }, c))),
              h("td", { class: "num" }, s ? number(s.total) : "—"),
              h("td", { class: "num" }, s ? percent(s.success_rate) : "—"),
              h("td", { class: "num" }, s?.duration_ms?.p50 != null ? `${Math.round(s.duration_ms.p50)} ms` : "—"),
              h("td", { class: "num" }, s?.duration_ms?.p95 != null ? `${Math.round(s.duration_ms.p95)} ms` : "—"),
              h("td", { class: "c-actions" }, h("a", { class: "btn small", href: `#/jobs?plugin=${encodeURIComponent(p.name)}`, onclick: (ev) => ev.stopPropagation() }, "Jobs")),
            );
          }),
        ),
      ),
    ),
  ];
}

async function showDetail(box, name, ctx) {
  let plugin;
  try {
    plugin = await get(`/plugin/${encodeURIComponent(name)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      mount(box, notice(`Commands of ${name} need a token with plugin:ro.`, "info"));
      return;
    }
    throw err;
  }
  if (!ctx.isCurrent()) return;
  mount(
    box,
    card(
      `${plugin.name} ${plugin.version}`,
      [
        h("p", { class: "muted" }, plugin.description || "", plugin.protocol ? ` · protocol ${plugin.protocol}` : ""),
        h(
          "div",
          { class: "commands" },
          plugin.commands.map((c) =>
            h(
              "details",
              { class: "command" },
              h(
                "summary",
                {},
                h("strong", {}, c.name),
                h("span", { class: `chip t-${c.type}` }, c.type),
                c.idempotent ? h("span", { class: "chip muted" }, "idempotent") : null,
                c.retry_safe === false ? h("span", { class: "chip muted" }, "not retry-safe") : null,
                h("span", { class: "muted small" }, c.description || ""),
              ),
              h("div", { class: "label" }, `POST /plugin/${plugin.name}/${c.name} · input schema`),
              codeBlock(Object.keys(c.input_schema || {}).length ? c.input_schema : null),
              c.output_schema ? [h("div", { class: "label" }, "output schema"), codeBlock(c.output_schema)] : null,
            ),
          ),
        ),
      ],
    ),
  );
  box.scrollIntoView({ behavior: "smooth", block: "start" });
}

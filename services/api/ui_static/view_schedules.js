// Schedules: every configured schedule (GET /scheduler/jobs) with its spec, command, next fire, last
// fire (and the job it made) and the scheduler's last decision about it.

import { get } from "./api.js";
import { badge, card, refresher, h, jobLink, mount, notice, when } from "./dom.js";

export async function render(ctx) {
  const load = async () => {
    const body = await get("/scheduler/jobs");
    if (!ctx.isCurrent()) return;
    mount(
      ctx.root,
      h("div", { class: "view-head" }, h("h1", {}, "Schedules"), h("p", { class: "muted" }, "Cron and interval schedules of the plugins (plugins.<name>.schedules).")),
      card(`Schedules (${body.count})`, scheduleTable(body.jobs)),
    );
  };
  const refresh = refresher(() => load().catch(ctx.fail));
  await load();
  // next fires move with the clock: keep the relative times honest
  const timer = setInterval(() => (ctx.isCurrent() ? refresh() : clearInterval(timer)), 30000);
  return {
    refresh,
    onEvent(env) {
      if (env.data?.submitted_by === "schedule") refresh();
    },
  };
}

function scheduleTable(rows) {
  if (!rows.length) return notice("No schedules are configured.", "info");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "grid" },
      h("thead", {}, h("tr", {}, ["Schedule", "Kind", "Spec", "Command", "Status", "Next fire", "Last fire", "Last job", "Last decision"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        rows.map((s) =>
          h(
            "tr",
            { "data-schedule": `${s.plugin}/${s.id}` },
            h("td", {}, h("strong", {}, s.plugin), h("span", { class: "muted" }, ` / ${s.id}`)),
            h("td", {}, s.kind),
            h("td", { class: "mono" }, String(s.spec ?? "")),
            h("td", {}, s.command),
            h("td", {}, badge(s.enabled ? "scheduled" : "disabled")),
            h("td", {}, s.next_fire_at ? when(s.next_fire_at) : "—"),
            h("td", {}, s.last_fire_at ? when(s.last_fire_at) : "never"),
            h("td", {}, s.last_job_id ? jobLink(s.last_job_id) : "—"),
            h("td", { class: "small" }, s.last_decision ? [s.last_decision.replace("schedule.", ""), " ", h("span", { class: "muted" }, when(s.last_decision_at))] : "—"),
          ),
        ),
      ),
    ),
  );
}

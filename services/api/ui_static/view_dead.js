// Dead letters: the jobs that ended dead (GET /jobs?status=dead) with their last error (GET
// /job-logs?status=dead: the attempts of dead jobs), each with Retry (POST /job/{id}/retry: a new job
// linked to it by retry_of); and what is in flight (queued, running), each with Cancel (POST /job/{id}/cancel).

import * as actions from "./actions.js";
import { get } from "./api.js";
import { badge, card, refresher, h, jobLink, mount, notice, number, span, truncate, when } from "./dom.js";

/** dead job -> the job its retry made, for this browser session */
const retried = new Map();

export async function render(ctx) {
  const load = async () => {
    const [dead, attempts, running, queued] = await Promise.all([
      get("/jobs", { status: "dead", limit: 200 }),
      get("/job-logs", { status: "dead", limit: 200 }),
      get("/jobs", { status: "running", limit: 100 }),
      get("/jobs", { status: "queued", limit: 100 }),
    ]);
    if (!ctx.isCurrent()) return;
    const lastError = new Map();
    for (const a of attempts.logs) {
      const seen = lastError.get(a.job_id);
      if (!seen || a.attempt > seen.attempt) lastError.set(a.job_id, a);
    }
    const inflight = [...running.jobs, ...queued.jobs];
    mount(
      ctx.root,
      h(
        "div",
        { class: "view-head" },
        h("h1", {}, "Dead letters"),
        h("p", { class: "muted" }, "Jobs that used up their retries or failed for good. Retry re-queues one as a new job."),
      ),
      card(`Dead jobs (${number(dead.total)}${dead.total_is_estimate ? "+" : ""})`, deadTable(dead.jobs, lastError, refresh)),
      card(`In flight (${inflight.length})`, inflightTable(inflight, refresh)),
    );
  };
  const refresh = refresher(() => load().catch(ctx.fail));
  await load();
  return {
    refresh,
    onEvent(env) {
      if (["job.dead", "job.queued", "job.started", "job.succeeded", "job.cancelled", "job.skipped"].includes(env.type)) refresh();
    },
  };
}

function deadTable(jobs, lastError, refresh) {
  if (!jobs.length) return notice("No dead jobs. Everything that failed has been retried or succeeded.", "ok");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "grid dead" },
      h("thead", {}, h("tr", {}, ["Job", "Plugin", "Command", "Attempts", "Died", "Last error", ""].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        jobs.map((j) => {
          const err = lastError.get(j.job_id);
          const again = retried.get(j.job_id);
          return h(
            "tr",
            { class: "job-row", "data-job": j.job_id },
            h("td", { class: "c-id" }, jobLink(j.job_id)),
            h("td", {}, j.plugin),
            h("td", {}, j.command),
            h("td", { class: "num" }, j.attempt),
            h("td", {}, when(j.completed_at)),
            h("td", { class: "c-text err-text", title: err?.last_error || "" }, truncate(err?.last_error || "—", 160)),
            h(
              "td",
              { class: "c-actions" },
              again
                ? h("span", { class: "small muted retried" }, "retried → ", jobLink(again))
                : actions.buttons(j, (newId) => {
                    if (newId) retried.set(j.job_id, newId);
                    refresh();
                  }),
            ),
          );
        }),
      ),
    ),
  );
}

function inflightTable(jobs, refresh) {
  if (!jobs.length) return notice("Nothing queued or running.", "info");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "grid" },
      h("thead", {}, h("tr", {}, ["Job", "Plugin", "Command", "Status", "Attempt", "Created", "Running for", ""].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        jobs.map((j) =>
          h(
            "tr",
            { class: "job-row", "data-job": j.job_id },
            h("td", { class: "c-id" }, jobLink(j.job_id)),
            h("td", {}, j.plugin),
            h("td", {}, j.command),
            h("td", {}, badge(j.status)),
            h("td", { class: "num" }, j.attempt),
            h("td", {}, when(j.created_at)),
            h("td", { class: "num" }, j.started_at ? span(j.started_at, new Date().toISOString()) : "—"),
            h("td", { class: "c-actions" }, actions.buttons(j, () => refresh())),
          ),
        ),
      ),
    ),
  );
}

// Retry and cancel, the two commands the dashboard sends about a job (POST /job/{id}/retry and
// POST /job/{id}/cancel, jobs:rw; a retry also needs the scope of what it re-runs).

import { ApiError, post } from "./api.js";
import { RETRYABLE, SETTLED, h, jobLink, toast } from "./dom.js";

/** Retry a job; resolves to the new job's id (null when refused, with a toast saying why). */
export async function retry(jobId) {
  try {
    const body = await post(`/job/${encodeURIComponent(jobId)}/retry`);
    toast(h("span", {}, "Retry queued as ", jobLink(body.job_id), "."), "ok");
    return body.job_id;
  } catch (err) {
    toast(refusal("Retry", err), "error");
    return null;
  }
}

/** Cancel a queued or running job; true when the cancel was sent. */
export async function cancel(jobId) {
  try {
    const body = await post(`/job/${encodeURIComponent(jobId)}/cancel`);
    toast(`Cancelling ${body.job_id} (was ${body.previous_status}).`, "ok");
    return true;
  } catch (err) {
    toast(refusal("Cancel", err), "error");
    return false;
  }
}

function refusal(what, err) {
  if (!(err instanceof ApiError)) return `${what} failed: ${err.message}`;
  if (err.status === 403) {
    const needs = err.body?.required_scopes?.length ? ` (needs ${err.body.required_scopes.join(" and ")})` : "";
    return `${what} refused: this token lacks the scope${needs}.`;
  }
  return `${what} refused (${err.status}): ${err.message}`;
}

/** job id -> until when its Cancel button is armed (a second click within ARM_MS cancels) */
const arming = new Map();
const ARM_MS = 4000;
const armed = (jobId) => (arming.get(jobId) || 0) > Date.now();

/** The buttons that apply to a job in this status; `after()` runs once a command was accepted. */
export function buttons(job, after, { size = "small" } = {}) {
  const out = [];
  if (RETRYABLE.has(job.status)) {
    out.push(
      h(
        "button",
        {
          class: `btn ${size} retry`,
          type: "button",
          "data-job": job.job_id,
          title: "Re-queue as a new job (retry_of this one)",
          onclick: async (ev) => {
            ev.stopPropagation();
            ev.currentTarget.disabled = true;
            const id = await retry(job.job_id);
            after?.(id);
          },
        },
        "Retry",
      ),
    );
  }
  if (!SETTLED.has(job.status) && !RETRYABLE.has(job.status)) {
    out.push(
      h(
        "button",
        {
          class: `btn ${size} danger-ghost cancel`,
          type: "button",
          "data-job": job.job_id,
          title: "Cancel: a queued job never runs, a running one is signalled",
          "data-armed": armed(job.job_id) ? "1" : "",
          onclick: async (ev) => {
            ev.stopPropagation();
            const btn = ev.currentTarget;
            if (!armed(job.job_id)) {
              // the first click arms it (kept across a re-render of the list), the second one cancels
              arming.set(job.job_id, Date.now() + ARM_MS);
              btn.dataset.armed = "1";
              btn.textContent = "Confirm cancel";
              setTimeout(() => {
                if (btn.isConnected && !armed(job.job_id)) {
                  btn.dataset.armed = "";
                  btn.textContent = "Cancel";
                }
              }, ARM_MS + 50);
              return;
            }
            arming.delete(job.job_id);
            btn.disabled = true;
            if (await cancel(job.job_id)) after?.(null);
          },
        },
        armed(job.job_id) ? "Confirm cancel" : "Cancel",
      ),
    );
  }
  return out.length ? h("div", { class: "row-actions" }, out) : null;
}

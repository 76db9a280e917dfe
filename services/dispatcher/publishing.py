"""How the dispatcher stores one batch of decisions: the events first, then the work items, each new job's
work item carrying the EVENTS sequence of its `queued` event (`claim_after`) — for a batch of CLAIM_AFTER_MIN
work items or more (or a large share of events, whose atomic batch must be stored before the work exists); a
small batch is stored at once. A `queued` is stored only as its job's first event to get `claim_after`
(compare-and-set on `evt.job.<id>.>` against none), so a submit decided again, even past the duplicate window,
never gives a second run a claimable `queued`.

With it the runner claims the attempt by storing `job.started` with a compare-and-set on all of the job's
events (services/runner/service.py): it succeeds only while `queued` is still the job's last event — no
cancel requested, no other copy started — so the common first delivery needs no read of the log before the
plugin runs. Anything recorded in between makes the compare-and-set fail and the runner reads and decides as
for any other delivery (services/runner/preflight.py). The events are stored before the work exists, as
before: a crash in between leaves the command unacked, and its redelivery decides it again under the same ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from services.core import bus as bus_mod
from services.core import envelope, subjects
from services.dispatcher.decisions import Published

#: a batch with fewer work items stores everything at once, without `claim_after`: one job at a time (a
#: synchronous caller waiting) would pay a serial round trip to save the runner two reads done at once; under
#: load the batches are large and the two phases cost one round trip per batch
CLAIM_AFTER_MIN = 4


def _is_work(subject: str) -> bool:
    return subjects.stream_of(subject) == subjects.WORK


def _opened_job(env: envelope.Envelope) -> str | None:
    """The job `env` opens (it is that job's `queued`), or None."""
    return env.job_id if env.type == "job.queued" and env.job_id else None


Fence = Callable[[], None]


def unfenced() -> None:
    return None


async def publish_decisions(bus: bus_mod.Bus, out: Published, *, fence: Fence = unfenced) -> None:
    """Store `out`: new jobs' `queued` (each checked to be its job's first event), the other events, then the
    work items with `claim_after` where the `queued` was stored as that first event. `fence()` is called before
    each store and raises when this dispatcher may no longer decide (services/core/leadership.py)."""
    fence()
    events = [(subject, env) for subject, env in out if not _is_work(subject)]
    work = [(subject, env) for subject, env in out if _is_work(subject)]
    if len(work) < CLAIM_AFTER_MIN and len(events) < bus_mod.ATOMIC_MIN:
        await bus.publish_all(out)  # all at once: a serial round trip would cost more than preflight's reads
        return
    firsts = [(subject, env, subjects.job_events(job)) for subject, env in events if (job := _opened_job(env))]
    rest = [(subject, env) for subject, env in events if not _opened_job(env)]
    # only a `queued` stored as its job's first event may be claimed against: a submit decided again after
    # the duplicate window would otherwise store a second `queued` that a second run could claim
    stored_first = await bus.publish_firsts(firsts) if firsts else []
    if rest:
        fence()
        await bus.publish_all(rest)
    if not work:
        return
    fence()
    queued_at = {env.job_id: seq for (_, env, _), seq in zip(firsts, stored_first, strict=True) if seq}
    await bus.publish_all([(subject, with_claim_after(env, queued_at.get(env.job_id))) for subject, env in work])


def with_claim_after(env: envelope.Envelope, seq: int | None) -> envelope.Envelope:
    """The work item with `claim_after` (first attempts only: a retry's work follows other events)."""
    if seq is None or env.type != "job.work" or env.data.get("attempt", 1) != 1:
        return env
    return dataclasses.replace(env, data={**env.data, "claim_after": seq})

"""What the chaos run must not have done, counted from the EVENTS stream (folded by
tests.support.eventlog), the load's record of every 202, and the runs slow_recorder wrote:

- lost: a 202'd job (or a pipeline step it caused) without a final event;
- doubled: two `job.succeeded` for one job, an attempt started after its job succeeded or
  twice under one number, a job no 202 accounts for (a retried request that created a second
  job), two slow_recorder jobs for one submission, or more recorded plugin runs than attempts;
- circuit: a job skipped because a circuit opened — nothing in this run fails by itself, so
  every opening is lost attempts counted as plugin failures;
- failed: any other final status than succeeded, and read-model rows that disagree with the log.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

from tests.chaos.load import Submission
from tests.support.eventlog import JobHistory

RECORDER = "slow_recorder"


@dataclasses.dataclass
class Findings:
    lost: list[str] = dataclasses.field(default_factory=list)
    doubled: list[str] = dataclasses.field(default_factory=list)
    circuit: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    #: kind → final status → count, for the 202'd jobs
    statuses: dict[str, collections.Counter[str]] = dataclasses.field(default_factory=dict)
    recorded_runs: int = 0
    lost_attempts: int = 0

    def violations(self) -> list[str]:
        out = []
        for name in ("lost", "doubled", "circuit", "failed"):
            found = getattr(self, name)
            if found:
                out.append(f"{name}: {len(found)}, e.g. " + "; ".join(found[:8]))
        return out


@dataclasses.dataclass(slots=True)
class Runs:
    """What slow_recorder wrote in one file."""

    starts: int = 0
    ends: int = 0
    #: ends without a start of the same pid
    unmatched: int = 0
    #: "start|end <ns> <pid>" lines
    lines: list[str] = dataclasses.field(default_factory=list)

    def describe(self, t0_ns: int) -> str:
        out = []
        for line in self.lines:
            what, ns, pid = line.split()
            out.append(f"{what} {(int(ns) - t0_ns) / 1e9:.2f}s pid {pid}")
        return ", ".join(out)


def recorded(path: Path) -> Runs:
    if not path.exists():
        return Runs()
    starts: collections.Counter[str] = collections.Counter()
    ends: collections.Counter[str] = collections.Counter()
    lines = path.read_text().splitlines()
    for line in lines:
        what, _, pid = line.split()
        (starts if what == "start" else ends)[pid] += 1
    unmatched = sum(max(0, n - starts[pid]) for pid, n in ends.items())
    return Runs(sum(starts.values()), sum(ends.values()), unmatched, lines)


def audit(
    submissions: list[Submission], jobs: dict[str, JobHistory], rows: dict[str, str], *, t0_ns: int = 0
) -> Findings:
    """`t0_ns`: the CLOCK_MONOTONIC origin of the times in failure messages (the kills' origin)."""
    f = Findings()
    accepted = [s for s in submissions if s.job_id is not None]
    by_id = {s.job_id: s for s in accepted}
    if len(by_id) != len(accepted):
        dup = collections.Counter(s.job_id for s in accepted)
        f.doubled += [f"{j}: answered 202 for {n} different Idempotency-Keys" for j, n in dup.items() if n > 1]
    f.failed += [f"{s.key} ({s.kind}): {s.error}" for s in submissions if s.error]

    for s in accepted:
        job = jobs.get(s.job_id or "")
        if job is None or job.final is None:
            f.lost.append(f"{s.job_id} ({s.kind}, {s.key}): " + (f"last {job.types[-1]}" if job else "not in the log"))
        f.statuses.setdefault(s.kind, collections.Counter())[job.final if job and job.final else "lost"] += 1

    for job in jobs.values():
        f.lost_attempts += len(job.lost)
        if job.final is None and job.job_id not in by_id:
            f.lost.append(f"{job.job_id} ({job.plugin}, step of {job.parent_job_id}): last {job.types[-1]}")
        if len(job.succeeded) > 1:
            f.doubled.append(f"{job.job_id}: job.succeeded for attempts {job.succeeded}")
        if job.started_after_success:
            f.doubled.append(f"{job.job_id}: attempt(s) {job.started_after_success} started after it succeeded")
        if len(job.started) != len(set(job.started)):
            f.doubled.append(f"{job.job_id}: an attempt started twice under one number ({job.started})")
        if job.is_root and job.job_id not in by_id:
            f.doubled.append(f"{job.job_id} ({job.plugin}.{job.command}): a job no 202 accounts for")
        if job.final == "skipped" and (job.reason or "").startswith("circuit open"):
            f.circuit.append(f"{job.job_id} ({job.plugin}): skipped, {job.reason}")
        elif job.final not in (None, "succeeded"):
            f.failed.append(f"{job.job_id} ({job.plugin}.{job.command}): {job.final}: {job.reason or job.error}")
        if job.final is not None and rows.get(job.job_id) != job.final:
            f.failed.append(f"{job.job_id}: the jobs row says {rows.get(job.job_id)!r}, the log {job.final!r}")

    recorders: dict[str, list[JobHistory]] = collections.defaultdict(list)
    for job in jobs.values():
        if job.plugin == RECORDER and job.payload.get("record_file"):
            recorders[str(job.payload["record_file"])].append(job)
    for s in accepted:
        if s.record_file is None:
            continue
        mine = recorders.get(str(s.record_file), [])
        runs = recorded(s.record_file)
        f.recorded_runs += runs.starts
        if len(mine) > 1:
            f.doubled.append(f"{s.key}: {len(mine)} {RECORDER} jobs for one submission")
        attempts = len({a for job in mine for a in job.started})
        if runs.starts > attempts or runs.ends > attempts or runs.unmatched:
            f.doubled.append(
                f"{s.key}: {RECORDER} ran {runs.starts}x (ended {runs.ends}x) in {attempts} attempt(s) "
                f"[runs: {runs.describe(t0_ns)}] [log: " + "; ".join(t for job in mine for t in job.trail) + "]"
            )
        if any(job.final == "succeeded" for job in mine) and runs.ends == 0:
            f.failed.append(f"{s.key}: {RECORDER} succeeded without its run being recorded")
    return f

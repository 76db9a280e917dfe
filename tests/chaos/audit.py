"""What the chaos run must not have done, counted from the EVENTS stream (folded by
tests.support.eventlog), the load's record of every 202, and the runs the recording plugins
(slow_recorder, napper) wrote:

- lost: a 202'd job (or a pipeline step it caused) without a final event;
- doubled: two `job.succeeded` for one job, an attempt started after its job succeeded or
  twice under one number, a job no 202 accounts for (a retried request that created a second
  job), two recording jobs for one submission, or more recorded plugin runs than attempts;
- circuit: a job skipped because a circuit opened — nothing in this run fails by itself, so
  every opening is lost attempts counted as plugin failures;
- failed: any other final status than succeeded, and read-model rows that disagree with the log.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

from tests.chaos.load import RECORDERS, Submission
from tests.support.eventlog import JobHistory


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
    """What a recording plugin wrote in one file."""

    starts: int = 0
    #: slow_recorder only (napper records its start)
    ends: int = 0
    #: ends without a start of the same pid
    unmatched: int = 0
    lines: list[str] = dataclasses.field(default_factory=list)

    def describe(self, t0_ns: int) -> str:
        out = []
        for line in self.lines:
            parts = line.split()
            if len(parts) == 3:  # slow_recorder: what, CLOCK_MONOTONIC ns, pid
                out.append(f"{parts[0]} {(int(parts[1]) - t0_ns) / 1e9:.2f}s pid {parts[2]}")
            else:  # napper: job id, pid
                out.append(f"start pid {parts[-1]}")
        return ", ".join(out)


def recorded(path: Path, plugin: str) -> Runs:
    if not path.exists():
        return Runs()
    lines = path.read_text().splitlines()
    if plugin == "napper":
        return Runs(starts=len(lines), lines=lines)
    starts: collections.Counter[str] = collections.Counter()
    ends: collections.Counter[str] = collections.Counter()
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

    recorders: dict[tuple[str, str], list[JobHistory]] = collections.defaultdict(list)
    for job in jobs.values():
        key = RECORDERS.get(job.plugin or "")
        if key and job.payload.get(key):
            recorders[(str(job.plugin), str(job.payload[key]))].append(job)
    for s in accepted:
        if s.record_file is None or s.recorder is None:
            continue
        plugin = s.recorder
        mine = recorders.get((plugin, str(s.record_file)), [])
        runs = recorded(s.record_file, plugin)
        f.recorded_runs += runs.starts
        if len(mine) > 1:
            f.doubled.append(f"{s.key}: {len(mine)} {plugin} jobs for one submission")
        attempts = len({a for job in mine for a in job.started})
        if runs.starts > attempts or runs.ends > attempts or runs.unmatched:
            f.doubled.append(
                f"{s.key}: {plugin} ran {runs.starts}x (ended {runs.ends}x) in {attempts} attempt(s) "
                f"[runs: {runs.describe(t0_ns)}] [log: " + "; ".join(t for job in mine for t in job.trail) + "]"
            )
        ran = runs.ends if plugin == "slow_recorder" else runs.starts
        if any(job.final == "succeeded" for job in mine) and ran == 0:
            f.failed.append(f"{s.key}: {plugin} succeeded without its run being recorded")
    return f

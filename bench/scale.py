"""`python -m bench --scale`: end-to-end jobs/s as runner and dispatcher processes are added.

One api, one projector and the nats-server of the run stay up throughout; between shapes the
harness starts or stops `python -m services.cli -c <config> runner|dispatcher` processes until
the shape's counts run (the dispatcher that took the lease first stays active all run: extra
dispatchers are its standbys, and only standbys are ever stopped). Per shape: a warm-up batch,
then `--jobs` echo_py jobs POSTed at `--concurrency` connections, timed from the first POST until
the projector's `job_totals` say every one is final; CPU seconds of every process around the
batch from /proc (the Postgres backends of the run's database and the box as a whole included).
The shapes run forward, then backward, … (ABBA over the shapes, `--scale-rounds`), and a short
turn of the bare accept ceiling (`bench/ceiling.py`) runs before the first batch and after each,
so each batch has a reference measured next to it: drift on a shared box falls on every shape
alike. See "Scaling with processes" in bench/README.md.

The pure parts (the shapes, the order, CPU by kind, the capacity figures, the table) are at the
top; `Scale` drives `bench.main.Bench`'s processes and load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import asyncpg
import nats
import orjson

from bench import infra, markdown
from services.core import embedded, leases, subjects

if TYPE_CHECKING:
    from bench.main import Bench

P = TypeVar("P")
PLUGIN = "echo_py"
WARMUP_JOBS = 150
#: a batch that goes slower than this many jobs/s is cut off (and reported INCOMPLETE)
MIN_RATE = 10.0
#: measured seconds of one turn of the bare accept ceiling (one before the first batch and one after each)
CEILING_TURN_S = 1.0
#: warm-up of a ceiling turn (the load generator keeps its connections between turns)
SEGMENT_WARMUP_S = 0.25
#: the process kinds of the table, in its order; `dispatcher` is the lease holder, `standby` the others
KINDS = ("api", "dispatcher", "standby", "runner", "projector", "nats-server", "postgres", "loadgen")
#: the kinds that are Headrace's own work per job (the loadgen is the client; standbys decide nothing)
PIPELINE = ("api", "dispatcher", "runner", "projector", "nats-server", "postgres")
TOTALS_SQL = "SELECT status, sum(n)::bigint AS n FROM headrace.job_totals WHERE plugin = $1 GROUP BY status"
BACKENDS_SQL = "SELECT pid, pid = pg_backend_pid() AS own FROM pg_stat_activity WHERE datname = current_database()"


# --- pure parts --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, order=True)
class Shape:
    runners: int
    dispatchers: int

    @property
    def name(self) -> str:
        r = f"{self.runners} runner{'s' if self.runners != 1 else ''}"
        d = f"{self.dispatchers} dispatcher{'s' if self.dispatchers != 1 else ''}"
        return f"{r}, {d}"


def parse_counts(text: str) -> list[int]:
    """`1,2,4` → [1, 2, 4] (each ≥ 1, duplicates dropped, order kept)."""
    out: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        n = int(part)
        if n < 1:
            raise ValueError(f"a process count must be at least 1, not {n}")
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError(f"no process counts in {text!r}")
    return out


def shapes(runners: list[int], dispatchers: list[int], dispatcher_runners: int) -> list[Shape]:
    """The runner series (1 dispatcher), then the dispatcher series (`dispatcher_runners` runners);
    a shape both series contain is measured once."""
    out: list[Shape] = []
    for shape in [*(Shape(n, 1) for n in runners), *(Shape(dispatcher_runners, n) for n in dispatchers)]:
        if shape not in out:
            out.append(shape)
    return out


def order(shapes_: list[Shape], rounds: int) -> list[list[Shape]]:
    """Forward, backward, forward, …: one list per round (ABBA over the shapes)."""
    return [list(shapes_) if i % 2 == 0 else list(reversed(shapes_)) for i in range(rounds)]


@dataclasses.dataclass
class Plan(Generic[P]):
    """What turns the running processes into a shape: which to stop, how many of each kind to start."""

    stop: list[P]
    runners: int
    dispatchers: int


def plan(runners: list[P], dispatchers: list[P], active: P | None, shape: Shape) -> Plan[P]:
    """Stop the last runners beyond the shape and standbys beyond it (never `active`, the lease holder);
    start what is missing."""
    stop = runners[shape.runners :]
    standbys = [p for p in dispatchers if p != active]
    stop += standbys[: max(0, len(dispatchers) - shape.dispatchers)]
    return Plan(
        stop=stop,
        runners=max(0, shape.runners - len(runners)),
        dispatchers=max(0, shape.dispatchers - len(dispatchers)),
    )


def kind_of(name: str) -> str:
    """`scale-runner-3` → runner; `nats-server`, `loadgen`, `api` as they are."""
    if name.startswith("scale-"):
        return name.removeprefix("scale-").rsplit("-", 1)[0]
    return name


def by_kind(cpu: dict[str, float], active: str | None) -> dict[str, float]:
    """CPU seconds per process name → per kind of KINDS (runners summed; the dispatcher named `active`
    is `dispatcher`, every other one `standby`); names of no kind (the idle ceiling server) are left out."""
    out: dict[str, float] = {}
    for name, seconds in cpu.items():
        kind = kind_of(name)
        if kind == "dispatcher" and name != active:
            kind = "standby"
        if kind in KINDS:
            out[kind] = out.get(kind, 0.0) + seconds
    return out


def delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    """What each key used between two snapshots (a key new in `after` counts from zero)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def capacity(ms_per_job: dict[str, float]) -> dict[str, float]:
    """Jobs/s one fully busy core could take for each kind: 1000 ÷ its CPU ms per job."""
    return {k: 1000.0 / ms for k, ms in ms_per_job.items() if ms > 0}


@dataclasses.dataclass
class Result:
    """One shape's batches added up over the rounds."""

    shape: Shape
    jobs: int = 0
    seconds: float = 0.0
    rates: list[float] = dataclasses.field(default_factory=list)
    #: each batch's jobs/s ÷ the mean of the ceiling turns just before and just after it
    ratios: list[float] = dataclasses.field(default_factory=list)
    #: CPU seconds by kind
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    #: by kind, the largest share of a core one process of it took in a batch
    busiest: dict[str, float] = dataclasses.field(default_factory=dict)
    #: CPU seconds of the whole box (every tenant) during the batches, and what none of the run's processes used
    box: float = 0.0
    others: float = 0.0
    submit_rates: list[float] = dataclasses.field(default_factory=list)
    incomplete: int = 0

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0

    @property
    def ratio(self) -> float | None:
        return sum(self.ratios) / len(self.ratios) if self.ratios else None

    def add(
        self,
        *,
        jobs: int,
        seconds: float,
        cpu: dict[str, float],
        box: float = 0.0,
        others: float = 0.0,
        busiest: dict[str, float] | None = None,
        submit_rate: float | None = None,
    ) -> None:
        self.jobs += jobs
        self.seconds += seconds
        self.rates.append(jobs / seconds if seconds else 0.0)
        for kind, used in cpu.items():
            self.cpu[kind] = self.cpu.get(kind, 0.0) + used
        for kind, share in (busiest or {}).items():
            self.busiest[kind] = max(share, self.busiest.get(kind, 0.0))
        self.box += box
        self.others += others
        if submit_rate is not None:
            self.submit_rates.append(submit_rate)

    def ms_per_job(self) -> dict[str, float]:
        return {k: v * 1000 / self.jobs for k, v in self.cpu.items()} if self.jobs else {}

    def core_share(self) -> dict[str, float]:
        """Each kind's CPU as a share of one core over the batches' wall time (1.0 = a whole core)."""
        return {k: v / self.seconds for k, v in self.cpu.items()} if self.seconds else {}


def busiest_by_kind(cpu: dict[str, float], active: str | None, seconds: float) -> dict[str, float]:
    """By kind, the largest share of a core one process of that kind used over `seconds`."""
    out: dict[str, float] = {}
    for name, used in cpu.items():
        kind = next(iter(by_kind({name: used}, active)), None)
        if kind is not None and seconds > 0:
            out[kind] = max(out.get(kind, 0.0), used / seconds)
    return out


def render(results: list[Result], cores: int) -> str:
    """The scale table: jobs/s, against the first shape, ÷ the neighbouring ceiling turns (and that against the
    first shape), CPU ms per job and share of a core per kind, and what the rest of the box used meanwhile."""
    first = results[0] if results else None
    kinds = [k for k in KINDS if any(k in r.cpu for r in results)]
    header = ["shape", "jobs/s", "per round", "vs first", "÷ ceiling", "÷ ceiling vs first", *kinds, "all", "others"]
    lines = [header]
    for r in results:
        ms = r.ms_per_job()
        share = r.core_share()
        ours = sum(r.cpu.get(k, 0.0) for k in kinds)
        lines.append(
            [
                r.shape.name,
                f"{r.rate:,.0f}" + (" INCOMPLETE" if r.incomplete else ""),
                "/".join(f"{x:.0f}" for x in r.rates),
                f"{r.rate / first.rate:.2f}x" if first and first.rate else "—",
                f"{r.ratio:.1%}" if r.ratio is not None else "—",
                f"{r.ratio / first.ratio:.2f}x" if first and first.ratio and r.ratio is not None else "—",
                *(f"{ms[k]:.2f} ({share[k]:.0%})" if k in ms else "—" for k in kinds),
                f"{ours * 1000 / r.jobs:.2f} ({ours / r.seconds:.0%})" if r.jobs and r.seconds else "—",
                f"{r.others / r.seconds / cores:.0%} of {cores} cores" if r.seconds else "—",
            ]
        )
    return markdown.table(lines)


# --- measurement ---------------------------------------------------------------------------------


def box_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all CPUs, every tenant): /proc/stat minus idle and iowait."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / infra._TICK


class Scale:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.args = bench.args
        self.shapes = shapes(
            parse_counts(self.args.scale_runners),
            parse_counts(self.args.scale_dispatchers),
            self.args.scale_dispatcher_runners,
        )
        self.results = {s: Result(s) for s in self.shapes}
        self.runners: list[infra.Proc] = []
        self.dispatchers: list[infra.Proc] = []
        self.projector: infra.Proc | None = None
        self.ceiling: infra.Proc | None = None
        self.ceiling_url = ""
        self.ceiling_turns: list[dict[str, Any]] = []
        self.incarnations = 0
        self.nc: Any = None
        self.kv: Any = None
        #: the run's echo_py jobs by status at the end
        self.final: dict[str, int] = {}

    # --- processes -------------------------------------------------------------------------

    async def _start(self, kind: str, needle: str) -> infra.Proc:
        self.incarnations += 1
        b = self.bench
        proc = await b._spawn(f"scale-{kind}-{self.incarnations}", b._service_argv(kind), env=b.service_env)
        await proc.wait_log(needle, 60)
        return proc

    async def _stop(self, procs: list[infra.Proc]) -> None:
        await asyncio.gather(*(p.stop() for p in procs))
        for p in procs:
            self.bench.procs.remove(p)

    async def active_dispatcher(self) -> infra.Proc | None:
        """The dispatcher whose pid the `leader.dispatcher` lease names (None while no lease is held)."""
        try:
            entry = await self.kv.get(leases.leader_key("dispatcher"))
        except Exception:
            return None
        if not entry.value:
            return None
        pid = orjson.loads(entry.value).get("pid")
        return next((p for p in self.dispatchers if p.pid == pid), None)

    async def reconcile(self, shape: Shape) -> None:
        """Start or stop runners and dispatchers until `shape` runs; the active dispatcher is never stopped."""
        t0 = time.perf_counter()
        todo = plan(self.runners, self.dispatchers, await self.active_dispatcher(), shape)
        if todo.stop:
            self.runners = [p for p in self.runners if p not in todo.stop]
            self.dispatchers = [p for p in self.dispatchers if p not in todo.stop]
            await self._stop(todo.stop)
        extra_dispatchers = todo.dispatchers
        if not self.dispatchers:
            # the first one must hold the lease before any other starts, so it stays the active one
            # (a lone dispatcher is active when its start returns)
            self.dispatchers.append(await self._start("dispatcher", "headrace dispatcher started"))
            extra_dispatchers -= 1
        starting = [
            *(self._start("runner", "headrace runner started") for _ in range(todo.runners)),
            *(self._start("dispatcher", "headrace dispatcher started") for _ in range(extra_dispatchers)),
        ]
        for proc in await asyncio.gather(*starting):
            (self.runners if kind_of(proc.name) == "runner" else self.dispatchers).append(proc)
        active = await self.active_dispatcher()
        if active is None or active is not self.dispatchers[0]:
            raise RuntimeError(f"scale: the first dispatcher should hold the lease, it is {active and active.name}")
        self.bench.say(f"scale: {shape.name} up ({time.perf_counter() - t0:.1f}s)")

    # --- measurements ----------------------------------------------------------------------

    async def totals(self, plugin: str, pg: asyncpg.Connection | None = None) -> dict[str, int]:
        """Jobs of `plugin` by status as the projector counted them (a few rows, however many jobs)."""
        pg = pg or self.bench.pg
        assert pg is not None
        return {r["status"]: int(r["n"]) for r in await pg.fetch(TOTALS_SQL, plugin)}

    async def snapshot(self) -> dict[str, float]:
        """CPU seconds so far of every child, the nats-server, each Postgres backend of the run's database
        (`scale-postgres-<pid>`; the one polling for this harness `bench-postgres`) and this process (`bench`)."""
        b = self.bench
        assert b.pg is not None
        cpu = b.cpu_snapshot()
        for row in await b.pg.fetch(BACKENDS_SQL):
            used = infra.cpu_seconds(row["pid"])
            if used is not None:
                cpu["bench-postgres" if row["own"] else f"scale-postgres-{row['pid']}"] = used
        used = infra.cpu_seconds(os.getpid())
        if used is not None:
            cpu["bench"] = used
        return cpu

    async def warm_up(self, shape: Shape) -> None:
        r = await self.bench._jobs(PLUGIN, WARMUP_JOBS, counter=self.totals)
        if not r["complete"]:
            raise RuntimeError(f"scale {shape.name}: warm-up did not finish: {r}")

    async def batch(self, shape: Shape) -> float:
        """One measured batch of --jobs jobs, with the CPU every process and the box used meanwhile; its jobs/s."""
        b = self.bench
        cpu_before = await self.snapshot()
        box_before = box_cpu_seconds()
        r = await b._jobs(PLUGIN, self.args.jobs, counter=self.totals, timeout_s=max(60.0, self.args.jobs / MIN_RATE))
        box = box_cpu_seconds() - box_before
        cpu = delta(cpu_before, await self.snapshot())
        active = await self.active_dispatcher()
        active_name = active.name if active else None
        self.results[shape].add(
            jobs=r["finished"],
            seconds=r["elapsed"],
            cpu=by_kind(cpu, active_name),
            box=box,
            others=box - sum(cpu.values()),
            busiest=busiest_by_kind(cpu, active_name, r["elapsed"]),
            submit_rate=r["submitted"] / r["submit_seconds"] if r["submit_seconds"] else None,
        )
        self.results[shape].incomplete += 0 if r["complete"] else 1
        b.say(f"scale: {shape.name}: {r['finished']} jobs in {r['elapsed']:.2f}s = {r['rate']:.0f} jobs/s")
        return float(r["rate"])

    async def ceiling_turn(self) -> float:
        b = self.bench
        reply = await b._loadgen(
            b._request(self.ceiling_url, op="rate", warmup=SEGMENT_WARMUP_S, seconds=CEILING_TURN_S),
            timeout_s=CEILING_TURN_S + 90,
        )
        self.ceiling_turns.append(reply)
        return float(reply["rate"])

    @property
    def ceiling_rate(self) -> float | None:
        seconds = sum(t["seconds"] for t in self.ceiling_turns)
        return sum(t["count"] for t in self.ceiling_turns) / seconds if seconds else None

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> None:
        from bench import ceiling

        b = self.bench
        rounds = order(self.shapes, self.args.scale_rounds)
        b.say(
            f"scale: {len(self.shapes)} shapes x {len(rounds)} rounds, {self.args.jobs} {PLUGIN} jobs per batch "
            f"(+{WARMUP_JOBS} warm-up), parallelism {self.args.py_parallelism}, a {CEILING_TURN_S:g}s ceiling turn "
            "around each batch"
        )
        self.nc = await nats.connect(b.nats.url, name="bench-scale")
        try:
            self.kv = await self.nc.jetstream().key_value(subjects.KV_AGENTS)
            self.projector = await self._start("projector", "headrace projector started")
            port = embedded.free_port()
            self.ceiling = await b._spawn(
                "scale-ceiling", infra.python_argv("bench.ceiling", "--port", str(port), "--nats", b.nats.url)
            )
            await self.ceiling.wait_log("ready", 30)
            self.ceiling_url = f"http://127.0.0.1:{port}/plugin/echo/poll"
            # a first turn with the usual warm-up, not counted: the server's and the client's first requests
            await b._loadgen(
                b._request(self.ceiling_url, op="rate", warmup=self.args.warmup, seconds=CEILING_TURN_S),
                timeout_s=CEILING_TURN_S + self.args.warmup + 90,
            )
            before = await self.ceiling_turn()
            for shapes_ in rounds:
                for shape in shapes_:
                    await self.reconcile(shape)
                    await self.warm_up(shape)
                    rate = await self.batch(shape)
                    after = await self.ceiling_turn()
                    # the batch's jobs/s against the bare ceiling measured just before and just after it, so
                    # that what the box's other tenants take at that moment falls on both
                    self.results[shape].ratios.append(rate / ((before + after) / 2))
                    before = after
            await self._stop([*self.runners, *self.dispatchers])
            self.runners, self.dispatchers = [], []
            self.final = await self.totals(PLUGIN)
        finally:
            leftovers = [p for p in (*self.runners, *self.dispatchers, self.projector, self.ceiling) if p is not None]
            with contextlib.suppress(Exception):
                await self._stop([p for p in leftovers if p in b.procs])
            await self.nc.close()
        # the ceiling's stream must not stay around for later rows
        await b._js_admin(delete=(ceiling.STREAM,))
        self.report()

    def report(self) -> None:
        from bench.main import Row, _fmt

        b = self.bench
        ceiling_rate = self.ceiling_rate
        results = [self.results[s] for s in self.shapes]
        for r in results:
            b.rows.append(
                Row(
                    f"scale · {r.shape.name} ({PLUGIN})",
                    _fmt(r.rate, "jobs/s"),
                    _fmt(ceiling_rate, "req/s (bare accept ceiling)") if ceiling_rate else "—",
                    r.ratio,
                    None,
                    headrace_value=r.rate,
                    baseline_value=ceiling_rate,
                    unit="jobs/s ÷ req/s",
                )
            )
        b.sections.append(
            f"scale: {PLUGIN} parallelism {self.args.py_parallelism} (a cap across all runners), "
            f"{self.args.jobs} jobs x {self.args.scale_rounds} rounds per shape, 1 api, 1 projector, "
            f"nats sync_interval {self.args.nats_sync}. ÷ ceiling: each batch against the bare accept ceiling "
            "measured just before and after it. CPU ms per job (share of one core); others: the box's CPU that "
            "none of the run's processes used (other tenants, steal, Postgres' background processes)\n\n"
            + render(results, b.cores)
        )
        if ceiling_rate:
            rates = [t["rate"] for t in self.ceiling_turns]
            b.details.append(
                f"scale/ceiling: bare accept (bench/ceiling.py) {len(rates)} turns of {CEILING_TURN_S:g}s, "
                f"{min(rates):,.0f}..{max(rates):,.0f} req/s, {ceiling_rate:,.0f} in all"
            )
        b.details.append(
            f"scale/jobs: {sum(self.final.values())} {PLUGIN} jobs in the read model at the end, by status {self.final}"
        )
        for r in results:
            notes = []
            if r.submit_rates:
                notes.append(f"API accepted {min(r.submit_rates):,.0f}..{max(r.submit_rates):,.0f} req/s meanwhile")
            if r.busiest:
                notes.append(
                    "busiest single process "
                    + ", ".join(f"{k} {v:.0%}" for k, v in r.busiest.items() if k in ("runner", "postgres", "standby"))
                )
            if r.incomplete:
                notes.append(f"INCOMPLETE: {r.incomplete} batch(es) hit the deadline")
            notes.append(f"box {r.box / r.seconds / b.cores:.0%} busy")
            b.details.append(f"scale/{r.shape.name}: " + "; ".join(notes))
        # the capacity model's inputs: the first shape, one process of each kind (more runners cost more per job)
        first = results[0]
        ms = first.ms_per_job()
        cap = capacity({k: v for k, v in ms.items() if k in PIPELINE})
        pipeline_ms = sum(ms.get(k, 0.0) for k in PIPELINE)
        if cap:
            b.details.append(
                f"scale/capacity: jobs/s one busy core takes (1000 ÷ CPU ms per job, {first.shape.name}): "
                + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(cap.items(), key=lambda kv: kv[1]))
                + f"; all of them together {pipeline_ms:.2f} ms per job → {b.cores} idle cores would take "
                f"≈ {b.cores * 1000 / pipeline_ms:,.0f} jobs/s"
                + (f" (+ the load generator's {ms['loadgen']:.2f} ms here)" if "loadgen" in ms else "")
            )
        standby = [r for r in results if r.shape.dispatchers > 1 and "standby" in r.cpu]
        if standby:
            b.details.append(
                "scale/standbys: "
                + ", ".join(
                    f"{r.shape.dispatchers - 1} standby(s): {r.cpu['standby'] / r.seconds * 1000 / (r.shape.dispatchers - 1):.1f} "
                    "ms CPU per second each"
                    for r in standby
                )
            )

"""`headrace doctor`: one screen of ok/warn/fail marks — the API, NATS, Postgres, runners, plugins,
the active dispatcher and projector (a warning when a role has none), the config on disk, the queue
and the consumers' lag — from GET /healthz, /system/selfcheck, /system/doctor and /analytics/queue. Exit code 1 when any mark is `fail` (warnings leave it 0).

A route the token may not read is a warning ("not checked") when no token was given, and a failure
when the token was refused (401): a wrong token should not pass for a healthy gateway.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.cli_client import output
from services.cli_client.connection import ClientError
from services.cli_client.http import Api

#: a consumer this many messages behind (or a projector this many events behind) is a warning
WARN_PENDING = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    name: str
    mark: str  # ok | warn | fail
    detail: str


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    doctor = sub.add_parser(
        "doctor",
        parents=[common],
        help="check NATS, Postgres, plugins, config and consumers' lag (exit 1 on a failure)",
    )
    doctor.set_defaults(verb=run)


class Report:
    """The marks found so far and the API's answers they came from."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.checks: list[Check] = []
        self.answers: dict[str, Any] = {}

    def add(self, name: str, mark: str, detail: str) -> None:
        self.checks.append(Check(name, mark, detail))

    async def read(self, key: str, path: str) -> dict[str, Any] | None:
        """The JSON of a 200 (kept under `key`); None after adding the mark that says why not."""
        status, body = await self.api.request("GET", path)
        self.answers[key] = body if isinstance(body, dict) else {"status": status, "body": body}
        if status == 200 and isinstance(body, dict):
            return body
        if status in (401, 403) and (status == 403 or self.api.target.token is None):
            self.add(key, "warn", f"not checked: {self.api.refused(status, body, path)}")
        else:
            self.add(key, "fail", str(self.api.refused(status, body, path)))
        return None

    @property
    def ok(self) -> bool:
        return all(c.mark != "fail" for c in self.checks)


def _component(report: Report, name: str, part: Any, selfchecked: dict[str, Any]) -> None:
    own = selfchecked.get(name)
    if own is not None:
        report.add(name, "ok" if own.get("ok") else "fail", str(own.get("detail") or ""))
        return
    ok = isinstance(part, dict) and part.get("ok") is True
    detail = (
        "reachable" if ok else (part.get("error") if isinstance(part, dict) and part.get("error") else "unreachable")
    )
    report.add(name, "ok" if ok else "fail", str(detail))


#: what a role without a leader means
WITHOUT_LEADER = {
    "dispatcher": "no job is decided, retried or scheduled until one takes over",
    "projector": "the read models (GET /jobs, /job/{id}) fall behind until one takes over",
}


def _leaders(report: Report, leaders: Any) -> None:
    """A mark per role: its leader (instance, since, lease until, standbys), a warning when there is none."""
    if leaders is None:
        report.add("leaders", "warn", "unknown: the leadership records are unreadable (NATS unavailable)")
        return
    if not isinstance(leaders, dict):
        return  # an API from before leadership
    for role in ("dispatcher", "projector"):
        found = leaders.get(role)
        if not isinstance(found, dict):
            continue
        standbys = int(found.get("standbys") or 0)
        waiting = f"{standbys} standby" + ("s" if standbys != 1 else "")
        if found.get("held"):
            who = found.get("holder") or "an instance"
            report.add(
                role, "ok", f"active: {who} since {found.get('since')}, lease until {found.get('until')}; {waiting}"
            )
        else:
            last = f" (the last lease ran out at {found['until']})" if found.get("until") else ""
            report.add(role, "warn", f"no active {role}{last}: {WITHOUT_LEADER[role]}; {waiting}")


def _lag(report: Report, selfcheck: dict[str, Any]) -> list[dict[str, Any]]:
    consumers = selfcheck.get("consumers")
    if not isinstance(consumers, list):
        error = selfcheck.get("consumers_error") or "not reported by this API"
        report.add("lag", "warn", f"consumers' lag unknown: {error}")
        return []
    behind = [c for c in consumers if int(c.get("pending") or 0) >= WARN_PENDING]
    projector = next((c for c in consumers if c.get("name") == "projector"), None)
    durable = [c for c in consumers if c is not projector]
    parts = []
    if projector is not None:
        parts.append(f"projector {projector.get('pending', 0)} event(s) behind (at seq {projector.get('checkpoint')})")
    pending = sum(int(c.get("pending") or 0) for c in durable)
    in_flight = sum(int(c.get("ack_pending") or 0) for c in durable)
    parts.append(f"{len(durable)} consumer(s): {pending} pending, {in_flight} in flight")
    report.add("lag", "warn" if behind else "ok", "; ".join(parts))
    for c in behind:
        report.add("lag", "warn", f"{c.get('name')} ({c.get('stream')}) is {c.get('pending')} message(s) behind")
    return consumers


def _queue(report: Report, queue: dict[str, Any]) -> None:
    runners = queue.get("runners") or {}
    detail = (
        f"{queue.get('queue_depth', 0)} queued, {queue.get('in_flight', 0)} in flight, "
        f"{queue.get('delayed_count', 0)} delayed, {queue.get('dead_count', 0)} dead; "
        f"runners busy {runners.get('busy', 0)}/{runners.get('capacity', 0)}"
    )
    report.add("queue", "warn" if queue.get("dead_count") else "ok", detail)


def _config(report: Report, doctor: dict[str, Any], healthz: dict[str, Any]) -> None:
    where = f" (in {healthz['config_path']})" if healthz.get("config_path") else ""
    problems = doctor.get("checks") or []
    if doctor.get("ok") and not any(p.get("severity") == "error" for p in problems):
        report.add("config", "ok", f"the config on disk is valid{where}")
    for problem in problems:
        mark = "fail" if problem.get("severity") == "error" or problem.get("severity") is None else "warn"
        report.add(str(problem.get("name") or "config"), mark, str(problem.get("detail") or ""))


async def check(api: Api) -> tuple[Report, list[dict[str, Any]]]:
    """Every mark, and the consumers' lag rows (empty when unknown)."""
    report = Report(api)
    try:
        status, healthz = await api.request("GET", "/healthz")
    except ClientError as exc:
        report.add("api", "fail", str(exc))
        return report, []
    report.answers["healthz"] = healthz
    if not isinstance(healthz, dict) or "components" not in healthz:
        report.add("api", "fail", str(api.refused(status, healthz, "/healthz")))
        return report, []
    report.add(
        "api", "ok", f"{api.target.url} answers: version {healthz.get('version')}, up {healthz.get('uptime_seconds')}s"
    )
    selfcheck = await report.read("selfcheck", "/system/selfcheck") or {}
    selfchecked = {str(c.get("name")): c for c in selfcheck.get("checks") or [] if isinstance(c, dict)}
    components = healthz.get("components") or {}
    for name in ("nats", "postgres"):
        _component(report, name, components.get(name), selfchecked)
    for name in ("runners", "plugins"):
        if name in selfchecked:
            _component(report, name, None, selfchecked)
    _leaders(report, selfcheck["leaders"] if "leaders" in selfcheck else healthz.get("leaders", False))
    if healthz.get("plugins_circuit_open"):
        report.add("plugins", "warn", f"{healthz['plugins_circuit_open']} plugin(s) with an open circuit breaker")
    broken = healthz.get("plugin_errors") or []
    for item in broken:
        report.add("plugins", "warn", f"{item.get('path')}: {item.get('error')}")
    doctor = await report.read("doctor", "/system/doctor")
    if doctor is not None:
        _config(report, doctor, healthz)
    if any(c.name == "nats" and c.mark == "ok" for c in report.checks):
        queue = await report.read("queue", "/analytics/queue")
        if queue is not None:
            _queue(report, queue)
    else:  # the queue lives in NATS: asking would only wait out the API's NATS timeout
        report.add("queue", "warn", "not checked: NATS is unavailable")
    consumers = _lag(report, selfcheck) if selfcheck else []
    return report, consumers


async def run(args: argparse.Namespace, api: Api, con: Console) -> int:
    report, consumers = await check(api)
    if args.json:
        output.print_json(
            {
                "ok": report.ok,
                "checks": [dataclasses.asdict(c) for c in report.checks],
                **report.answers,
            }
        )
        return 0 if report.ok else 1
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, style="bold")
    table.add_column()
    for c in report.checks:
        table.add_row(output.mark(c.mark), c.name, c.detail)
    con.print(table)
    if consumers:
        lag = Table(box=None, pad_edge=False, header_style="dim", title_justify="left")
        for name in ("CONSUMER", "STREAM", "PENDING", "IN FLIGHT", "REDELIVERED"):
            lag.add_column(name, no_wrap=True, justify="left" if name in ("CONSUMER", "STREAM") else "right")
        for row in consumers:
            lag.add_row(
                str(row.get("name")),
                str(row.get("stream")),
                str(row.get("pending", 0)),
                str(row.get("ack_pending", "-")),
                str(row.get("redelivered", "-")),
            )
        con.print()
        con.print(lag)
    fails = sum(c.mark == "fail" for c in report.checks)
    warns = sum(c.mark == "warn" for c in report.checks)
    summary = Text()
    summary.append("\n")
    summary.append_text(output.mark("fail" if fails else "warn" if warns else "ok"))
    summary.append(f"  {fails} failure(s), {warns} warning(s)")
    con.print(summary)
    return 0 if report.ok else 1

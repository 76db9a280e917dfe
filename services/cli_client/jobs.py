"""`headrace jobs ls|show|retry|cancel`: GET /jobs (or /job-logs when searching attempts),
GET /job/{id} with its attempts and pipeline tree, POST /job/{id}/retry|cancel."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

import orjson
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from services.cli_client import output
from services.cli_client.http import Api

#: flags that only GET /job-logs knows: with any of them `jobs ls` lists attempts, not jobs
ATTEMPT_FILTERS = ("query", "submitted_by", "since", "until")
#: the API's own bound on `limit` (services/api/listing.py)
MAX_LIMIT = 200


def _path(job_id: str) -> str:
    return "/job/" + quote(job_id, safe="")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    jobs = sub.add_parser("jobs", help="list, show, retry and cancel jobs (over the API)")
    verbs = jobs.add_subparsers(dest="jobs_command", required=True, metavar="{ls,show,retry,cancel}")
    ls_ = verbs.add_parser("ls", parents=[common], help="list jobs, newest first (GET /jobs)")
    ls_.add_argument("--status", help="queued, running, succeeded (ok), failed (error), timed_out, dead, ...")
    ls_.add_argument("--plugin", help="only this plugin's jobs")
    ls_.add_argument("--command", dest="command_name", help="only this command's jobs")
    ls_.add_argument("--query", help="search attempts' errors, stderr and results (lists attempts: GET /job-logs)")
    ls_.add_argument("--submitted-by", help="attempts submitted by: api, route, schedule, retry, ... (GET /job-logs)")
    ls_.add_argument("--since", help="attempts completed at or after this RFC 3339 time (GET /job-logs)")
    ls_.add_argument("--until", help="attempts completed at or before this RFC 3339 time (GET /job-logs)")
    ls_.add_argument("--limit", type=int, default=20, help=f"rows (default 20, at most {MAX_LIMIT})")
    ls_.add_argument("--offset", type=int, default=0, help="skip this many rows")
    ls_.set_defaults(verb=ls)
    show_ = verbs.add_parser("show", parents=[common], help="one job: status, result, attempts, logs, pipeline tree")
    show_.add_argument("job_id")
    show_.set_defaults(verb=show)
    retry_ = verbs.add_parser("retry", parents=[common], help="re-queue a job that ended without success")
    retry_.add_argument("job_id")
    retry_.set_defaults(verb=retry)
    cancel_ = verbs.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    cancel_.add_argument("job_id")
    cancel_.set_defaults(verb=cancel)


def _total(body: dict[str, Any], shown: int, noun: str) -> str:
    total = body.get("total")
    about = "about " if body.get("total_is_estimate") else ""
    return f"{shown} of {about}{total} {noun}" if total is not None else f"{shown} {noun}"


async def ls(args: argparse.Namespace, api: Api, con: Console) -> int:
    attempts = any(getattr(args, name) for name in ATTEMPT_FILTERS)
    params: dict[str, str | int | None] = {
        "status": args.status,
        "plugin": args.plugin,
        "command": args.command_name,
        "limit": args.limit,
        "offset": args.offset or None,
    }
    if attempts:
        params.update(query=args.query, submitted_by=args.submitted_by, **{"from": args.since, "to": args.until})
    body = await api.call("GET", "/job-logs" if attempts else "/jobs", params)
    if args.json:
        output.print_json(body)
        return 0
    rows = body.get("logs" if attempts else "jobs") or []
    if not rows:
        con.print("no attempts match" if attempts else "no jobs match")
        return 0
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("JOB ID", "PLUGIN", "COMMAND", "STATUS", "ATTEMPT"):
        table.add_column(name, no_wrap=True)
    if attempts:
        table.add_column("COMPLETED", no_wrap=True)
        table.add_column("ERROR", overflow="ellipsis", no_wrap=True, max_width=60)
    else:
        table.add_column("CREATED", no_wrap=True)
        table.add_column("DURATION", no_wrap=True, justify="right")
    for row in rows:
        common = [row["job_id"], row["plugin"], row["command"], output.status(row["status"]), str(row["attempt"])]
        if attempts:
            error = output.compact(row["last_error"]) if row.get("last_error") else ""
            table.add_row(*common, output.when(row.get("completed_at")), error)
        else:
            duration = output.duration(row.get("started_at"), row.get("completed_at"))
            table.add_row(*common, output.when(row.get("created_at")), duration)
    con.print(table)
    con.print(Text(_total(body, len(rows), "attempts" if attempts else "jobs"), style="dim"))
    return 0


def _tree(nodes: list[dict[str, Any]], root_id: str) -> Tree | None:
    """The pipeline tree of a job (None when it is a lone job)."""
    if len(nodes) < 2:
        return None
    children: dict[str | None, list[dict[str, Any]]] = {}
    for node in nodes:
        children.setdefault(node.get("parent_job_id"), []).append(node)

    def label(node: dict[str, Any]) -> Text:
        text = Text()
        if node.get("step_id"):
            text.append(f"{node['step_id']}  ", style="bold")
        text.append(f"{node['plugin']}/{node['command']}  ")
        text.append_text(output.status(node["status"]))
        text.append(f"  {node['job_id']}", style="dim" if node["job_id"] != root_id else "bold")
        return text

    top = nodes[0]
    tree = Tree(label(top))
    pending = [(top, tree)]
    seen = {top["job_id"]}
    while pending:
        node, branch = pending.pop(0)
        for child in children.get(node["job_id"], []):
            if child["job_id"] not in seen:
                seen.add(child["job_id"])
                pending.append((child, branch.add(label(child))))
    return tree


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


async def show(args: argparse.Namespace, api: Api, con: Console) -> int:
    job = await api.call("GET", _path(args.job_id))
    logs = await api.call("GET", "/job-logs", {"job_id": job["job_id"], "limit": MAX_LIMIT})
    tree = await api.call("GET", _path(job["job_id"]) + "/tree")
    attempts = sorted(logs.get("logs") or [], key=lambda a: (a.get("attempt") or 0, a.get("completed_at") or ""))
    if args.json:
        output.print_json({"job": job, "attempts": attempts, "tree": tree})
        return 0
    head = Text()
    head.append(f"job {job['job_id']}  ", style="bold")
    head.append_text(output.status(job["status"]))
    con.print(head)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column()
    facts.add_row("plugin", f"{job['plugin']} / {job['command']}")
    facts.add_row("submitted by", f"{job.get('submitted_by') or '-'}, attempt {job.get('attempt')}")
    if job.get("parent_job_id"):
        facts.add_row("parent", job["parent_job_id"])
    facts.add_row("created", output.when(job.get("created_at")))
    facts.add_row("started", output.when(job.get("started_at")))
    took = output.duration(job.get("started_at"), job.get("completed_at"))
    facts.add_row("completed", output.when(job.get("completed_at")) + (f"  ({took})" if took != "-" else ""))
    if job.get("last_error"):
        facts.add_row("error", Text(str(job["last_error"]), style="red"))
    con.print(Padding(facts, (0, 0, 0, 2), expand=False))
    if job.get("result") is not None:
        con.print(Text("result", style="bold"))
        con.print(Padding(Text(_pretty(job["result"])), (0, 0, 0, 2), expand=False))
    if attempts:
        con.print(Text("attempts", style="bold"))
        table = Table(box=None, pad_edge=False, header_style="dim")
        for name in ("#", "STATUS", "BY", "COMPLETED", "ERROR"):
            table.add_column(name, no_wrap=name != "ERROR")
        lines: list[Text] = []
        for attempt in attempts:
            table.add_row(
                str(attempt.get("attempt")),
                output.status(attempt.get("status")),
                attempt.get("submitted_by") or "-",
                output.when(attempt.get("completed_at")),
                output.compact(attempt["last_error"], 100) if attempt.get("last_error") else "",
            )
            for entry in attempt.get("logs") or []:
                level = entry.get("level", "info") if isinstance(entry, dict) else "info"
                message = entry.get("message", "") if isinstance(entry, dict) else str(entry)
                style = "red" if level in ("error", "fatal") else "yellow" if level in ("warn", "warning") else ""
                lines.append(Text(f"#{attempt.get('attempt')} {level:<5} {message}", style=style))
            if attempt.get("stderr"):
                lines.extend(
                    Text(f"#{attempt.get('attempt')} stderr {line}", style="dim")
                    for line in str(attempt["stderr"]).splitlines()
                )
        con.print(Padding(table, (0, 0, 0, 2), expand=False))
        if lines:
            con.print(Text("logs", style="bold"))
            con.print(Padding(Group(*lines), (0, 0, 0, 2), expand=False))
    pipeline = _tree(tree if isinstance(tree, list) else [], job["job_id"])
    if pipeline is not None:
        con.print(Text("pipeline", style="bold"))
        con.print(Padding(pipeline, (0, 0, 0, 2), expand=False))
    return 0


async def retry(args: argparse.Namespace, api: Api, con: Console) -> int:
    body = await api.call("POST", _path(args.job_id) + "/retry")
    if args.json:
        output.print_json(body)
        return 0
    line = Text(f"{body['retry_of']} retried as ")
    line.append(body["job_id"], style="bold")
    line.append(f" ({body['plugin']}/{body['command']}, ")
    line.append_text(output.status(body["status"]))
    line.append(")")
    con.print(line)
    return 0


async def cancel(args: argparse.Namespace, api: Api, con: Console) -> int:
    body = await api.call("POST", _path(args.job_id) + "/cancel")
    if args.json:
        output.print_json(body)
        return 0
    line = Text(f"{body['job_id']} ")
    line.append(body["status"], style="magenta")
    line.append(f" (was {body.get('previous_status')})")
    con.print(line)
    return 0

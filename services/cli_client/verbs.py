"""The operator verbs' place in `headrace`'s parser, and how one runs: resolve the target (flags,
environment, state directory), open the HTTP client, call the verb with a rich Console; the verb's
return value is the exit code."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console

from services.cli_client import connection, doctor, jobs, output, scaffold, tail
from services.cli_client.http import Api
from services.core import environment

NAMES = frozenset({"jobs", "tail", "doctor", "plugin"})

OnlineVerb = Callable[[argparse.Namespace, Api, Console], Awaitable[int]]
OfflineVerb = Callable[[argparse.Namespace, Console], Awaitable[int]]


def common_options() -> argparse.ArgumentParser:
    """--url, --token, --state-dir and --json, accepted by every verb that talks to the API."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("--url", help="the API (env HEADRACE_URL; default: <state-dir>/api.url, which `up` writes)")
    group.add_argument("--token", help="bearer token (env HEADRACE_TOKEN; default: <state-dir>/admin.token)")
    group.add_argument(
        "--state-dir",
        default=None,
        help=f"the `headrace up` state directory (env HEADRACE_STATE_DIR; default {connection.DEFAULT_STATE_DIR})",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    return common


def add_parsers(sub: Any) -> None:
    common = common_options()
    jobs.add_parsers(sub, common)
    tail.add_parsers(sub, common)
    doctor.add_parsers(sub, common)
    scaffold.add_parsers(sub, common)


async def run(args: argparse.Namespace) -> int:
    env = environment.process_env()
    con = output.console(env)
    verb: Any = args.verb
    if getattr(args, "offline", False):
        offline: OfflineVerb = verb
        return await offline(args, con)
    online: OnlineVerb = verb
    async with Api(connection.from_args(args, env)) as api:
        return await online(args, api, con)

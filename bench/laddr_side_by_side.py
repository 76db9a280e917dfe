"""Side by side: the same requests against real Laddr 0.9.6 and against Headrace, both behind the
same fake OpenAI-compatible server, and a markdown report of every difference in status code,
keys and value types (the measuring instrument for "Laddr clients work unchanged").

    python -m bench.laddr_side_by_side --report bench/laddr-side-by-side.md [--laddr-venv DIR] [--keep]

What it stands up (and tears down):
- the fake LLM (`bench/sbs_llm.py`, the tests' FakeLLM with a stateless script);
- Laddr (`bench/sbs_laddr.py`): a scratch venv with laddr==0.9.6 (created if missing), two
  deployments under uvicorn, one with LADDR_API_KEY and one without, SQLite each, a Redis bus and
  one WorkerRunner process per agent (MemoryBus with in-process workers when there is no
  redis-server);
- Headrace: nats-server from the wheel, a fresh Postgres database, the four services in this
  process (tests/support/stack.py), the same agents (`echo`, `slow`) with an `echo_py.poll` tool,
  and a token equal to Laddr's key.

The request list is `bench/sbs_requests.py`; the comparison `bench/sbs_compare.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import infra, sbs_compare, sbs_laddr, sbs_llm, sbs_requests
from bench.sbs_requests import Req, Sleep, Wait
from services.core import logging as hr_logging
from tests.support import laddr as laddr_support
from tests.support import stack

KEY = "sbs-key-" + secrets.token_hex(8)
TRACKED_HEADERS = ("access-control-allow-origin", "access-control-allow-credentials", "www-authenticate")
NOT_FINAL = frozenset({"pending", "running", "queued", "submitted", "started"})
BODY_CHARS = 700


def say(message: str) -> None:
    print(f"[sbs {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Side:
    """One system under test: its base URLs per deployment, and the ids its answers gave."""

    def __init__(self, name: str, urls: dict[str, str]) -> None:
        self.name = name
        self.urls = urls
        self.ctx: dict[str, Any] = {}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def close(self) -> None:
        await self.session.close()

    def fill(self, value: Any, unresolved: list[str]) -> Any:
        if isinstance(value, str):

            def sub(m: re.Match[str]) -> str:
                name = m.group(1)
                if name in self.ctx:
                    return str(self.ctx[name])
                unresolved.append(name)
                return f"missing-{name}"

            return re.sub(r"\{(\w+)\}", sub, value)
        if isinstance(value, dict):
            return {k: self.fill(v, unresolved) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v, unresolved) for v in value]
        return value

    @staticmethod
    def auth_headers(mode: str) -> dict[str, str]:
        return {
            sbs_requests.BEARER: {"Authorization": f"Bearer {KEY}"},
            sbs_requests.X_API_KEY: {"X-API-Key": KEY},
            sbs_requests.WRONG_X: {"X-API-Key": "wrong-key"},
            sbs_requests.WRONG_X_RIGHT_BEARER: {"X-API-Key": "wrong-key", "Authorization": f"Bearer {KEY}"},
            sbs_requests.LOWER_BEARER: {"Authorization": f"bearer {KEY}"},
        }.get(mode, {})

    async def send(self, req: Req) -> dict[str, Any]:
        unresolved: list[str] = []
        path = self.fill(req.path, unresolved)
        body = self.fill(req.json, unresolved)
        if req.auth == sbs_requests.QUERY_KEY:
            path += ("&" if "?" in path else "?") + f"api_key={KEY}"
        headers = {**self.auth_headers(req.auth), **req.headers}
        base = self.urls[req.deployment]
        started = time.monotonic()
        if req.ws:
            result = await self._ws(base, path, headers, req)
        else:
            data: bytes | None = None
            if body is not None:
                data = orjson.dumps(body)
            elif req.data is not None:
                data = req.data.encode()
            if data is not None:
                headers.setdefault("Content-Type", "application/json")
            try:
                async with self.session.request(req.method, base + path, data=data, headers=headers) as resp:
                    raw = await resp.read()
                    result = _decode(resp.status, resp.headers.get("Content-Type", ""), raw)
                    result["headers"] = {h: resp.headers[h] for h in TRACKED_HEADERS if h in resp.headers}
            except (aiohttp.ClientError, TimeoutError) as exc:
                result = {"status": 0, "ctype": "", "json": False, "body": f"request failed: {exc!r}"}
        result["ms"] = int((time.monotonic() - started) * 1000)
        result["unresolved"] = unresolved
        result["sent_path"] = path
        if req.each is not None:
            result["check"] = _check_each(result.get("body"), req.each, self.fill(req.each[2], []))
        for name, dotted in req.save.items():
            value = _dig(result.get("body"), dotted)
            if value is not None:
                self.ctx[name] = value
        return result

    async def _ws(self, base: str, path: str, headers: dict[str, str], req: Req) -> dict[str, Any]:
        url = base.replace("http://", "ws://") + path
        try:
            ws = await self.session.ws_connect(url, headers=headers, heartbeat=None, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            return {"status": exc.status, "ctype": "handshake rejected", "json": False, "body": exc.message}
        except (aiohttp.ClientError, TimeoutError) as exc:
            return {"status": 0, "ctype": "", "json": False, "body": f"connect failed: {exc!r}"}
        trigger: asyncio.Task[Any] | None = None
        if req.ws_trigger:
            trigger = asyncio.create_task(
                self.send(
                    Req("ws", "trigger", path="/api/agents/echo/chat", json={"message": "ws trigger", "wait": False})
                )
            )
        messages: list[Any] = []
        closed: int | None = None
        deadline = time.monotonic() + req.ws_seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await ws.receive(timeout=left)
                except TimeoutError:
                    break
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        messages.append(orjson.loads(msg.data))
                    except orjson.JSONDecodeError:
                        messages.append(msg.data)
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    closed = ws.close_code if ws.close_code is not None else -1
                    break
        finally:
            await ws.close()
            if trigger is not None:
                await trigger
        return {
            "status": 101,
            "ctype": "websocket",
            "json": True,
            "body": {"messages": messages, "server_closed": closed},
        }

    async def wait(self, step: Wait) -> None:
        unresolved: list[str] = []
        path = self.fill(step.path, unresolved)
        if unresolved:
            return
        deadline = time.monotonic() + step.seconds
        while time.monotonic() < deadline:
            async with self.session.get(self.urls["keyed"] + path, headers=self.auth_headers("bearer")) as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
            if resp.status != 200 or not isinstance(body, dict) or body.get("status") not in NOT_FINAL:
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(step.then_sleep)


def _decode(status: int, ctype: str, raw: bytes) -> dict[str, Any]:
    ctype = ctype.split(";")[0].strip()
    if raw:
        try:
            return {"status": status, "ctype": ctype, "json": True, "body": orjson.loads(raw)}
        except orjson.JSONDecodeError:
            pass
    return {"status": status, "ctype": ctype, "json": False, "body": raw.decode("utf-8", "replace")}


def _check_each(body: Any, each: tuple[str, str, str], expected: str) -> dict[str, Any] | None:
    """How many items of list `each[0]` break the filter `each[1] == expected`."""
    items = _dig(body, each[0])
    if not isinstance(items, list):
        return None
    bad = [i.get(each[1]) for i in items if isinstance(i, dict) and str(i.get(each[1])) != expected]
    return {
        "what": f"`{each[0]}[].{each[1]}` == `{each[2]}`",
        "items": len(items),
        "bad": len(bad),
        "seen": sorted({str(b) for b in bad})[:5],
    }


def _dig(body: Any, dotted: str) -> Any:
    """`a.0.b`, or `a[k=v].b` for the first item of list `a` whose `k` is `v`."""
    for part in dotted.split("."):
        m = re.fullmatch(r"(\w+)\[(\w+)=([\w-]+)\]", part)
        if m and isinstance(body, dict):
            items = body.get(m.group(1))
            body = next((i for i in items or [] if isinstance(i, dict) and str(i.get(m.group(2))) == m.group(3)), None)
        elif isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


async def run_side(side: Side) -> list[dict[str, Any]]:
    results = []
    for step in sbs_requests.steps():
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Wait):
            await side.wait(step)
        else:
            results.append(await side.send(step))
    return results


# --- standing the two systems up ---------------------------------------------------------------


def headrace_doc(llm_url: str) -> dict[str, Any]:
    agents = {
        name: {
            **laddr_support.agent(None, name, tools=["echo_py.poll"]),
            "role": f"{name} role",
            "goal": f"{name} goal",
            "instructions": instructions,
            "llm": {"base_url": llm_url, "model": sbs_laddr.MODEL, "api_key": "sk-fake", "timeout": "10s"},
        }
        for name, instructions in sbs_laddr.AGENTS.items()
    }
    doc = stack.config_doc(plugins=laddr_support.plugins(), agents=agents)
    doc["plugin_roots"] = [str(infra.REPO / "plugins")]  # the shipped plugins only, not the tests' fixtures
    doc["api"]["auth"]["tokens"].append({"name": "laddr", "token": KEY, "scopes": ["*"]})
    return doc


async def amain(args: argparse.Namespace, tmp: Path) -> str:
    cleanup: list[tuple[str, Any]] = []
    started = time.monotonic()
    hr_logging.configure(args.log_level, json=False)  # Headrace's services log into this process
    try:
        python = await asyncio.to_thread(sbs_laddr.ensure_venv, args.laddr_venv, say)
        llm = await sbs_llm.ScriptedLLM().start()
        cleanup.append(("fake llm", llm.stop()))
        say(f"fake LLM at {llm.url}")

        redis_url: tuple[str | None, str | None] = (None, None)
        if sbs_laddr.Redis.available() and not args.memory_bus:
            redis = await sbs_laddr.Redis(tmp).start()
            cleanup.append(("redis", redis.stop()))
            redis_url = (redis.url(0), redis.url(1))
        bus = "Redis (one WorkerRunner process per agent)" if redis_url[0] else "MemoryBus (workers in the API process)"
        keyed = sbs_laddr.LaddrDeployment("keyed", python, tmp, llm.url, KEY, redis_url[0])
        open_ = sbs_laddr.LaddrDeployment("open", python, tmp, llm.url, None, redis_url[1], workers=False)
        for dep in (keyed, open_):
            await dep.start()
            cleanup.append((f"laddr {dep.name}", dep.stop()))
        say(f"laddr keyed at {keyed.url}, open at {open_.url}; bus: {bus}")

        nats = infra.Nats(tmp, "2m")
        await nats.start()
        cleanup.append(("nats", nats.stop()))
        db = infra.Database(tmp)
        database_url = await db.create()
        cleanup.append(("database", db.drop()))
        config = stack.write_config(
            tmp / "headrace.yaml", headrace_doc(llm.url), nats_url=nats.url, database_url=database_url
        )
        hr = await stack.Stack(config).start()
        cleanup.append(("headrace", hr.stop()))
        say(f"headrace at {hr.url}")

        laddr_side = Side("laddr", {"keyed": keyed.url, "open": open_.url})
        hr_side = Side("headrace", {"keyed": hr.url, "open": hr.url})
        try:
            say("sending the requests to Laddr")
            laddr_results = await run_side(laddr_side)
            say("sending the requests to Headrace")
            hr_results = await run_side(hr_side)
        finally:
            await laddr_side.close()
            await hr_side.close()
        rows = build_rows(sbs_requests.requests(), laddr_results, hr_results)
        meta = {
            "bus": bus,
            "laddr_python": str(python),
            "seconds": round(time.monotonic() - started),
            "llm_calls": len(llm.requests),
        }
        report = render(rows, meta)
        Path(args.report).write_text(report)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
        counts = _counts(rows)
        return (
            f"{len(rows)} requests: {counts['match']} match, {counts['superset']} superset "
            f"(Headrace adds keys only), {counts['differs']} differ; report: {args.report}"
        )
    finally:
        # in reverse start order: headrace before its database and nats-server
        await infra.clean_up(list(reversed(cleanup)), tmp=tmp, keep=args.keep, say=say)


# --- report -----------------------------------------------------------------------------------


def build_rows(reqs: list[Req], laddr: list[dict[str, Any]], hr: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, (req, lr, hr_) in enumerate(zip(reqs, laddr, hr, strict=True), 1):
        diff = sbs_compare.compare(lr, hr_)
        for h in TRACKED_HEADERS:
            lh, hh = lr.get("headers", {}).get(h), hr_.get("headers", {}).get(h)
            if lh is not None and hh is None:
                diff.major.append(f"header `{h}: {lh}` missing in Headrace")
            elif hh is not None and lh is None:
                diff.minor.append(f"header `{h}: {hh}` only in Headrace")
        for side, res in (("Headrace", hr_), ("Laddr", lr)):
            check = res.get("check")
            if check and check["bad"]:
                text = (
                    f"filter not applied by {side}: {check['bad']} of {check['items']} items break "
                    f"{check['what']} (seen: {', '.join(check['seen'])})"
                )
                (diff.major if side == "Headrace" else diff.notes).append(text)
        if hr_["unresolved"]:
            diff.notes.append(
                f"Headrace had no {', '.join(hr_['unresolved'])} from an earlier answer (sent `missing-…`)"
            )
        if lr["unresolved"]:
            diff.notes.append(f"Laddr had no {', '.join(lr['unresolved'])} from an earlier answer")
        rows.append(
            {
                "n": i,
                "theme": req.theme,
                "name": req.name,
                "method": req.method,
                "auth": req.auth,
                "deployment": req.deployment,
                "laddr": lr,
                "headrace": hr_,
                "verdict": diff.verdict,
                "major": diff.major,
                "minor": diff.minor,
                "notes": diff.notes,
                "issue12": req.issue12,
            }
        )
    return rows


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out = {"match": 0, "superset": 0, "differs": 0}
    for r in rows:
        out[r["verdict"]] += 1
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _answer(res: dict[str, Any]) -> str:
    if res["json"]:
        return f"{res['status']} `{_cell(sbs_compare.shape(res['body']))}`"
    what = res["ctype"] or "empty"
    return f"{res['status']} {what}"


def _body(res: dict[str, Any]) -> str:
    body = res["body"]
    text = json.dumps(body, separators=(",", ":"), default=str) if res["json"] else " ".join(str(body).split())
    if len(text) > BODY_CHARS:
        text = text[:BODY_CHARS] + f"… ({len(text)} chars)"
    return text.replace("`", "'")


THEMES = [
    "auth",
    "errors",
    "status codes",
    "chat",
    "jobs",
    "replay",
    "prompts",
    "traces",
    "agents",
    "metrics",
    "batches",
    "ws",
    "docs",
]


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    counts = _counts(rows)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Laddr 0.9.6 and Headrace, side by side",
        "",
        f"Generated by `python -m bench.laddr_side_by_side --report bench/laddr-side-by-side.md` on {now} "
        f"({meta['seconds']} s, {meta['llm_calls']} calls to the fake LLM).",
        "",
        f"- **Laddr**: `laddr==0.9.6` from PyPI, `laddr.api.main:app` under uvicorn, SQLite, bus: {meta['bus']}; "
        "one deployment with `LADDR_API_KEY` (every row unless it says *keyless*), one without.",
        "- **Headrace**: this branch, the four services in one process, NATS JetStream + Postgres; "
        "a token equal to Laddr's key with scopes `*`.",
        "- Both: agents `echo` and `slow` (whose LLM answers take 3 s) with one echo tool; the fake LLM answers "
        "one tool call (20+8 tokens) and then the final answer `the answer is 5` (30+6), each in its "
        "side's dialect (Laddr: a JSON action in the text; Headrace: native `tool_calls`).",
        "- Compared: status code, key sets at every depth, JSON types of values (not values: ids, times and "
        "texts differ by nature), the CORS/auth headers. Notes list differing words in `status`/`type`/"
        "`event_type` fields. Lists of traces and WebSocket messages are compared per `event_type`/`type`.",
        "- Verdicts: **match**; **superset** = Headrace only adds keys or fills a value Laddr leaves null "
        "(a Laddr client is unaffected); **differs** = anything a Laddr client could trip on.",
        "",
        f"**{len(rows)} requests: {counts['match']} match, {counts['superset']} superset, "
        f"{counts['differs']} differ.**",
        "",
        "| theme | requests | match | superset | differs |",
        "|---|---|---|---|---|",
    ]
    for theme in THEMES:
        t = [r for r in rows if r["theme"] == theme]
        if t:
            c = _counts(t)
            out.append(f"| {theme} | {len(t)} | {c['match']} | {c['superset']} | {c['differs']} |")
    out += [
        "",
        "## Checklist: each distinct difference, by theme",
        "",
        "What a Laddr client trips on, deduplicated (row numbers refer to the table below).",
        "",
    ]
    for theme in THEMES:
        seen: dict[str, list[int]] = {}
        for r in rows:
            if r["theme"] == theme:
                for item in r["major"]:
                    seen.setdefault(item, []).append(r["n"])
        if seen:
            out += [f"**{theme}**", ""]
            out += [f"- {item} — #{', #'.join(map(str, ns))}" for item, ns in seen.items()]
            out.append("")
    out += [
        "## Every request",
        "",
        "| # | theme | request | Laddr | Headrace | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = r["verdict"]
        if r["major"] or r["minor"]:
            verdict += ": " + "; ".join(r["major"] + r["minor"])
        out.append(
            f"| {r['n']} | {r['theme']} | {_cell(r['name'])} | {_answer(r['laddr'])} | "
            f"{_answer(r['headrace'])} | {_cell(verdict)} |"
        )
    out += ["", "## Differences by theme, with both bodies", ""]
    for theme in THEMES:
        t = [r for r in rows if r["theme"] == theme and r["verdict"] != "match"]
        if not t:
            continue
        out += [f"### {theme}", ""]
        for r in t:
            out.append(
                f"**{r['n']}. {r['name']}** — {r['verdict']}"
                f" (auth: {r['auth']}{', keyless deployment' if r['deployment'] == 'open' else ''})"
            )
            out.append("")
            for item in r["major"]:
                out.append(f"- {item}")
            for item in r["minor"]:
                out.append(f"- (superset) {item}")
            for item in r["notes"]:
                out.append(f"- note: {item}")
            if r["issue12"]:
                out.append(f"- issue 12 decides: {r['issue12']}")
            out.append(f"- Laddr ({r['laddr']['ms']} ms): `{r['laddr']['status']} {_body(r['laddr'])}`")
            out.append(f"- Headrace ({r['headrace']['ms']} ms): `{r['headrace']['status']} {_body(r['headrace'])}`")
            out.append("")
    return "\n".join(out) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.laddr_side_by_side", description=__doc__.split("\n")[0])
    p.add_argument("--report", default=str(infra.REPO / "bench" / "laddr-side-by-side.md"), help="markdown out")
    p.add_argument("--json", default=None, help="also write every request's raw answers here")
    p.add_argument(
        "--laddr-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"laddr-{sbs_laddr.LADDR_VERSION}-venv",
        help="venv with laddr==0.9.6 (created if missing, then reused; default: %(default)s)",
    )
    p.add_argument("--memory-bus", action="store_true", help="Laddr on its MemoryBus even if redis-server exists")
    p.add_argument("--log-level", default="error", help="Headrace's log level in this process")
    p.add_argument("--keep", action="store_true", help="keep the temp dir with every process's log")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="hr-sbs-"))
    summary: list[str] = []

    async def wrapped() -> None:
        summary.append(await amain(args, tmp))

    rc = infra.run_main("laddr_side_by_side", wrapped(), tmp=tmp, keep=args.keep)
    if summary:
        print(summary[0])  # after the teardown's log lines, so it is the last thing printed
    return rc


if __name__ == "__main__":
    sys.exit(main())

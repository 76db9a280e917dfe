"""The dashboard's files over real HTTP, without a browser: GET /ui (and /ui/) and every asset the page
and its ES modules load answer 200 without a token with the right content type, security headers and an
ETag (a matching If-None-Match is a 304); any other name under /ui/ is a JSON 404; and the files are
package data (pyproject ships them, so a non-editable install serves them too)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from services.api import dashboard
from tests.support.stack import REPO, Stack

TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
#: what a module imports, what the page links
IMPORT = re.compile(r"""^import\s.*?from\s+"\./([\w.-]+)";""", re.M)
LINKED = re.compile(r"""(?:src|href)="/ui/([\w.-]+)\"""")


async def _get(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str, CIMultiDict[str], bytes]:
    async with session.get(URL(url, encoded=True), headers=headers) as resp:  # the path as written, not normalised
        return resp.status, resp.content_type, resp.headers.copy(), await resp.read()


async def test_the_page_and_every_asset_it_loads_answer_without_a_token(hr: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/ui", "/ui/"):
            status, ctype, headers, body = await _get(session, hr.url + path)
            assert status == 200 and ctype == "text/html", (path, status, ctype)
            assert headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-cache"
        page = body.decode()
        assert '<script type="module" src="/ui/app.js">' in page

        # the module graph from the page down: every file it names is served, with its type
        pending, seen = set(LINKED.findall(page)), set()
        assert {"app.js", "style.css", "icon.svg"} <= pending
        while pending:
            name = pending.pop()
            seen.add(name)
            status, ctype, headers, body = await _get(session, f"{hr.url}/ui/{name}", Authorization="Bearer wrong")
            suffix = Path(name).suffix
            assert status == 200 and ctype == TYPES[suffix], (name, status, ctype)
            assert headers["ETag"] and headers["X-Content-Type-Options"] == "nosniff"
            if suffix == ".js":
                pending |= set(IMPORT.findall(body.decode())) - seen
        assert {"api.js", "dom.js", "view_jobs.js", "view_job.js", "view_dead.js", "view_agents.js"} <= seen
        assert seen | {dashboard.INDEX} == set(dashboard.assets()), (
            "a file of ui_static is loaded by nothing, or one is missing"
        )

        # revalidation: the same ETag is a 304 without a body
        status, _, headers, _ = await _get(session, hr.url + "/ui/app.js")
        status, _, _, body = await _get(session, hr.url + "/ui/app.js", **{"If-None-Match": headers["ETag"]})
        assert status == 304 and body == b""

        async with session.head(hr.url + "/ui") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"


async def test_unknown_names_under_ui_are_json_404s(hr: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        for name in (
            "nope.js",
            "dashboard.py",
            "__init__.py",
            "..%2Fdashboard.py",
            "%2e%2e",
            "app.js.map",
            "INDEX.HTML",
        ):
            status, ctype, _, body = await _get(session, f"{hr.url}/ui/{name}")
            assert status == 404 and ctype == "application/json", (name, status, ctype, body)
            assert b'"code":"not_found"' in body.replace(b" ", b""), body
        status, ctype, _, _ = await _get(session, hr.url + "/ui/sub/app.js")
        assert status == 404 and ctype == "application/json"


async def test_api_calls_the_page_makes_still_need_a_token(hr: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        status, ctype, _, _ = await _get(session, hr.url + "/jobs")
        assert status == 401 and ctype == "application/json"


def test_the_assets_are_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = config["tool"]["setuptools"]["package-data"][dashboard.PACKAGE]
    assert f"{dashboard.DIRECTORY}/*" in shipped
    on_disk = {p.name for p in (REPO / "services" / "api" / dashboard.DIRECTORY).iterdir() if p.is_file()}
    assert on_disk == set(dashboard.assets()), "a file there would not be served (unknown type) or is not there"

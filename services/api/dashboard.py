"""The operator dashboard: GET /ui (and /ui/) is its page, GET /ui/{file} its assets (ES modules, CSS,
icon), all static files of this package (services/api/ui_static/, read with importlib.resources so an
installed wheel serves them as a checkout does). Open like /docs: the files hold no data. The page asks
for an API token once, keeps it in the browser (localStorage) and sends it as `Authorization: Bearer` on
every API call, so each view shows what the token's scopes allow and nothing more.

Only the files in that directory with a known type are served (any other name is a JSON 404), each with
an ETag (a matching If-None-Match is a 304), `Cache-Control: no-cache` (revalidated, so an upgrade shows
at once) and a Content-Security-Policy that lets the page load nothing but its own assets and talk to
nothing but this API.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from importlib import resources

from aiohttp import web

from services.core import errors

routes = web.RouteTableDef()

PACKAGE = "services.api"
DIRECTORY = "ui_static"
INDEX = "index.html"
#: what is served, by file suffix (anything else in the directory is not)
TYPES: Mapping[str, str] = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
TEXT = frozenset({".html", ".js", ".css", ".svg"})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    charset: str | None
    etag: str


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


@functools.cache
def assets() -> Mapping[str, Asset]:
    """Every servable file of the dashboard by name, read once from the package."""
    root = resources.files(PACKAGE).joinpath(DIRECTORY)
    out: dict[str, Asset] = {}
    for entry in root.iterdir():
        suffix = _suffix(entry.name)
        if suffix not in TYPES or entry.name.startswith(".") or not entry.is_file():
            continue
        body = entry.read_bytes()
        out[entry.name] = Asset(
            body=body,
            content_type=TYPES[suffix],
            charset="utf-8" if suffix in TEXT else None,
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        )
    if INDEX not in out:
        raise RuntimeError(
            f"the dashboard's {INDEX} is missing from {PACKAGE}/{DIRECTORY} (package data not installed?)"
        )
    return out


def _serve(request: web.Request, name: str) -> web.Response:
    asset = assets().get(name)
    if asset is None:
        raise errors.NotFound(f"no dashboard asset {name!r}")
    headers = {**HEADERS, "ETag": asset.etag}
    if asset.etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, charset=asset.charset, headers=headers)


@routes.get("/ui")
async def page(request: web.Request) -> web.Response:
    return _serve(request, INDEX)


@routes.get("/ui/")
async def page_slash(request: web.Request) -> web.Response:
    return _serve(request, INDEX)


@routes.get("/ui/{file}")
async def asset(request: web.Request) -> web.Response:
    return _serve(request, request.match_info["file"])

"""The Laddr dialect's documents, open as Laddr's FastAPI built-ins: GET /api/openapi.json (built from
services/api/laddr_openapi.py for the routes this app mounted), GET /docs (Swagger UI over it, its
assets served from the `swagger-ui-py` package at /docs/static/{file}: no CDN), GET /docs/oauth2-redirect
(Swagger UI's OAuth2 redirect page). GET /openapi.json stays Ductile's plugin-command document
(services/api/discovery.py). No /redoc: no maintained package bundles ReDoc without a web framework.
"""

from __future__ import annotations

import html
import mimetypes
from pathlib import Path
from typing import Any

from aiohttp import web
from swagger_ui.utils import SWAGGER_UI_PY_ROOT

from services.api import laddr_openapi, openapi_builder, state, system
from services.core import errors

routes = web.RouteTableDef()

OPENAPI_PATH = "/api/openapi.json"
STATIC = SWAGGER_UI_PY_ROOT / "static"
#: the assets the page loads (nothing else of the package is served)
ASSETS = frozenset(
    {
        "swagger-ui.css",
        "index.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-16x16.png",
        "favicon-32x32.png",
    }
)
CACHE = "public, max-age=86400"
DOCUMENT = web.AppKey("laddr_openapi_document", dict)
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" type="text/css" href="/docs/static/swagger-ui.css">
<link rel="stylesheet" type="text/css" href="/docs/static/index.css">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js" charset="UTF-8"></script>
<script src="/docs/static/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
<script>
window.onload = function () {{
  window.ui = SwaggerUIBundle({{
    url: "{openapi}",
    dom_id: "#swagger-ui",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    oauth2RedirectUrl: window.location.origin + "/docs/oauth2-redirect",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  }});
}};
</script>
</body>
</html>
"""


def laddr_document(app: web.Application) -> dict[str, Any]:
    """The document of the Laddr routes `app` mounted (built once: the router is frozen once serving)."""
    if DOCUMENT not in app:
        registered = [(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None]
        info = {"title": laddr_openapi.TITLE, "version": system.version(), "description": laddr_openapi.DESCRIPTION}
        app[DOCUMENT] = openapi_builder.document(
            laddr_openapi.OPERATIONS,
            registered,
            info=info,
            schemas=laddr_openapi.SCHEMAS,
            security_schemes=laddr_openapi.SECURITY_SCHEMES,
            tags=laddr_openapi.TAGS,
        )
    return app[DOCUMENT]


@routes.get(OPENAPI_PATH)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(laddr_document(request.app), dumps=state.dumps)


@routes.get("/docs")
async def swagger_ui(request: web.Request) -> web.Response:
    page = PAGE.format(title=html.escape(laddr_openapi.TITLE), openapi=OPENAPI_PATH)
    return web.Response(text=page, content_type="text/html")


@routes.get("/docs/oauth2-redirect")
async def oauth2_redirect(request: web.Request) -> web.Response:
    return web.Response(body=(STATIC / "oauth2-redirect.html").read_bytes(), content_type="text/html")


@routes.get("/docs/static/{file}")
async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    if name not in ASSETS:
        raise errors.NotFound(f"no asset {name!r}")
    path: Path = STATIC / name
    return web.FileResponse(
        path,
        headers={"Cache-Control": CACHE, "Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream"},
    )

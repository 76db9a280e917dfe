"""The gateway's OpenAPI document and its browser, open as Laddr's FastAPI built-ins: GET
/api/openapi.json (one OpenAPI 3.1 document of every route this app mounted, both dialects: the rows
of services/api/laddr_openapi.py and services/api/ductile_openapi.py), GET /docs (Swagger UI over it,
its assets served from the `swagger-ui-py` package at /docs/static/{file}: no CDN), GET
/docs/oauth2-redirect (Swagger UI's OAuth2 redirect page). GET /openapi.json stays Ductile's
plugin-command document (services/api/discovery.py). No /redoc: no maintained package bundles ReDoc
without a web framework.

The pages and assets of /docs are not API routes and are not in the document (as FastAPI leaves its
own out): `NOT_DOCUMENTED`.
"""

from __future__ import annotations

import html
import mimetypes
from pathlib import Path
from typing import Any

from aiohttp import web
from swagger_ui.utils import SWAGGER_UI_PY_ROOT

from services.api import ductile_openapi, laddr_openapi, openapi_builder, state
from services.core import errors
from services.core.version import version

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
DOCUMENT = web.AppKey("gateway_openapi_document", dict)
TITLE = "Headrace Gateway"
DESCRIPTION = (
    "Every route of the gateway, both dialects, as this process mounted them: request and response "
    "schemas, and each operation's scopes, as the guard's own table says (services/core/scopes.py): "
    "`x-scopes` names the scopes any one of which admits it, and the security requirements say the same "
    "(one requirement per scope, each enough; `*` admits everything). Answers are supersets: objects "
    "may carry more keys.\n\n" + ductile_openapi.DESCRIPTION + "\n\n" + laddr_openapi.DESCRIPTION
)
#: the routes the document leaves out, and why: pages and assets for a browser, not API
NOT_DOCUMENTED: dict[str, str] = {
    "/docs": "the Swagger UI page over this document (HTML)",
    "/docs/oauth2-redirect": "Swagger UI's OAuth2 redirect page (HTML)",
    "/docs/static/{file}": "Swagger UI's own assets (JavaScript, CSS, icons)",
    "/ui": "the dashboard's page (HTML)",
    "/ui/": "the dashboard's page (HTML)",
    "/ui/{file}": "the dashboard's assets (JavaScript, CSS, icons)",
}
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


def gateway_document(app: web.Application) -> dict[str, Any]:
    """The document of every route `app` mounted (built once: the router is frozen once serving)."""
    if DOCUMENT not in app:
        registered = [(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None]
        config = app[state.STATE].config
        mounted, schemes = ductile_openapi.mounted_operations(app, config.webhooks)
        app[DOCUMENT] = openapi_builder.document(
            [*ductile_openapi.OPERATIONS, *mounted, *laddr_openapi.OPERATIONS],
            registered,
            info={"title": TITLE, "version": version(), "description": DESCRIPTION},
            schemas=openapi_builder.merged(ductile_openapi.SCHEMAS, laddr_openapi.SCHEMAS),
            security_schemes=openapi_builder.merged(
                ductile_openapi.SECURITY_SCHEMES, schemes, laddr_openapi.SECURITY_SCHEMES
            ),
            tags=[*laddr_openapi.TAGS[:1], *ductile_openapi.TAGS, *laddr_openapi.TAGS[1:]],
        )
    return app[DOCUMENT]


@routes.get(OPENAPI_PATH)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(gateway_document(request.app), dumps=state.dumps)


@routes.get("/docs")
async def swagger_ui(request: web.Request) -> web.Response:
    page = PAGE.format(title=html.escape(TITLE), openapi=OPENAPI_PATH)
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

"""API docs pages: Swagger UI for the service's /openapi.json at /docs (API_DOCS), and at /asyncapi.json
the AsyncAPI document of its WebSocket when its package ships one (`<package>/asyncapi.json`).

Swagger UI's files come from the installed swagger-ui-bundle wheel and are served by the service itself
(`/docs/<file>`, an allow-list), so the page works offline and nothing is fetched from a CDN. The page is
ours, not the bundle's `index.html`: its initialiser is a file too, so the Content-Security-Policy allows
scripts and styles from the service only (nothing inline, no eval), and Swagger UI's requests (the
document, "Try it out") go to the service only. "Authorize" takes a bearer token, as the document's
`bearerAuth` scheme says.

Like /openapi.json, these need no token and never wait for admission or count against a rate limit:
they are the app's own routes, not a blueprint's, and only blueprints are authenticated, limited and
admitted.
"""

from __future__ import annotations

import copy
import json
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, jsonify, render_template_string, request, send_file, url_for
from swagger_ui_bundle import swagger_ui_path

from shared.errors import NotFound

PAGE_PATH = "/docs"
ASYNCAPI_PATH = "/asyncapi.json"
ASYNCAPI_FILE = "asyncapi.json"
# The endpoints this module adds: not API operations, so not in the OpenAPI document.
ENDPOINTS = frozenset({"docs", "docs_asset", "asyncapi"})
# The files of the bundle the page uses (the standalone preset and its top bar, which loads any URL
# typed into it, are left out).
BUNDLE_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})
INITIALISER = "docs.js"
ASSET_MAX_AGE_SECONDS = 3600
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        # Swagger UI styles through the DOM (allowed), never with inline <style> or style="..." markup
        # (tests/browser: no refusal); its stylesheet draws its icons as data: URLs.
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{{ title }}: API docs</title>
  <link rel="stylesheet" href="{{ asset('swagger-ui.css') }}">
  <link rel="icon" type="image/png" sizes="32x32" href="{{ asset('favicon-32x32.png') }}">
  <link rel="icon" type="image/png" sizes="16x16" href="{{ asset('favicon-16x16.png') }}">
</head>
<body>
  <header class="swagger-ui"><div class="wrapper information-container">
    <p>Machine-readable:
      <a href="{{ openapi_url }}" data-testid="openapi-link">OpenAPI 3 ({{ openapi_url }})</a>
      {%- if asyncapi_url %};
      the WebSocket protocol:
      <a href="{{ asyncapi_url }}" data-testid="asyncapi-link">AsyncAPI 3 ({{ asyncapi_url }})</a>
      {%- endif %}.
      "Authorize" takes a bearer token (a JWT): "Try it out" then calls as that user.</p>
  </div></header>
  <div id="swagger-ui" data-openapi-url="{{ openapi_url }}"></div>
  <script src="{{ asset('swagger-ui-bundle.js') }}"></script>
  <script src="{{ asset(initialiser) }}"></script>
</body>
</html>
"""

# The page's initialiser: a file, not an inline script, so the CSP needs no 'unsafe-inline' for scripts.
# validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
_INITIALISER_JS = """"use strict";
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""


def page() -> Response:
    """Swagger UI for this service's OpenAPI document (no token needed)."""
    html = render_template_string(
        _PAGE,
        title=current_app.name,
        asset=lambda name: url_for("docs_asset", filename=name),
        initialiser=INITIALISER,
        openapi_url=url_for("openapi"),
        asyncapi_url=url_for("asyncapi") if "asyncapi" in current_app.view_functions else None,
    )
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def asset(filename: str) -> Response:
    """One file of the page: Swagger UI's, from the installed bundle, or the initialiser."""
    if filename == INITIALISER:
        response = Response(_INITIALISER_JS, mimetype="text/javascript")
    elif filename in BUNDLE_FILES:
        path = Path(str(swagger_ui_path)) / filename
        mimetype = "text/javascript" if filename.endswith(".js") else mimetypes.guess_type(filename)[0]
        response = send_file(path, mimetype=mimetype, max_age=ASSET_MAX_AGE_SECONDS, conditional=True)
    else:
        raise NotFound(f"no such file of the docs page: {filename}")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def asyncapi_document(app: Flask) -> dict[str, Any] | None:
    """The AsyncAPI document the app's package ships, or None; a broken file fails at startup."""
    path = Path(app.root_path) / ASYNCAPI_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def asyncapi_view(document: dict[str, Any]) -> Callable[[], Response]:
    def asyncapi_json() -> Response:
        """The AsyncAPI 3 document of this service's WebSocket (no token needed); its server is the one
        that answers (through a gateway: the gateway, as X-Forwarded-Host/-Proto name it)."""
        served = copy.deepcopy(document)
        for server in served.get("servers", {}).values():
            server["host"] = request.host
            server["protocol"] = "wss" if request.scheme == "https" else "ws"
        return jsonify(served)

    return asyncapi_json


def init_app(app: Flask) -> None:
    """Serve Swagger UI at /docs (when API_DOCS is on) and the AsyncAPI document, if any, at
    /asyncapi.json."""
    document = asyncapi_document(app)
    if document is not None:
        app.add_url_rule(ASYNCAPI_PATH, "asyncapi", asyncapi_view(document), methods=["GET"])
    if app.config.get("API_DOCS", True):
        app.add_url_rule(PAGE_PATH, "docs", page, methods=["GET"])
        app.add_url_rule(f"{PAGE_PATH}/<path:filename>", "docs_asset", asset, methods=["GET"])

"""CORS: which browser pages on other origins may call the API (`CORS_ALLOWED_ORIGINS`, none by default).

An origin is `scheme://host[:port]`, as a browser sends it (`https://app.example.com`,
`http://localhost:5173`); `*` allows every origin and is meant for development. We authenticate with
bearer tokens, never cookies, so no response allows credentials and `*` lends a foreign page nothing it
could not do with a token of its own.

- A preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) is answered here, in an app
  before_request: app hooks run before a blueprint's, so before its token check and rate limit, and
  admission is a blueprint hook too (a preflight carries no token, and must not wait for a slot).
  From an allowed origin, to a route that takes the asked method, with only headers we accept: 204 with
  the route's own methods, our headers and `Access-Control-Max-Age`. An origin that is not allowed (or
  is malformed, or CORS is off) is 403 in the envelope; a method the route lacks 405 (with `Allow`); a
  header we do not accept 403 naming it; an unknown path the usual 404. A plain OPTIONS (no `Origin` or
  no `Access-Control-Request-Method`) stays a 405.
- Every other answer to an allowed origin, errors included (401, 404, 429, 5xx), carries
  `Access-Control-Allow-Origin` (the origin itself) and `Access-Control-Expose-Headers`, so the page can
  read the envelope, `X-Trace-Id`, `Retry-After` and the RateLimit headers. flask-cors adds these, in an
  after_request and around Flask's exception handlers, to every response; it cannot answer the
  preflights itself (its extension only decorates Flask's automatic OPTIONS answer, which we keep off
  so that OPTIONS is a 405) nor refuse one in the envelope. With CORS on, every response says
  `Vary: Origin`, so no cache hands one origin's answer to another.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from flask import Flask, Response, current_app, request
from flask_cors import CORS
from werkzeug.exceptions import MethodNotAllowed

from shared.errors import Forbidden

WILDCARD = "*"
# What a browser sends as Origin (RFC 6454 serialisation): scheme://host[:port], no path, no userinfo;
# the host a name, an IPv4 address or a bracketed IPv6 address. `null` is an opaque origin (a sandboxed
# frame, a file: page).
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(?:[a-z0-9._~-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?", re.I)
_OPAQUE = "null"
# Request headers a page may send: the token, JSON bodies, our trace headers (W3C's with tracestate, as
# browser tracing SDKs send them), and the safelisted ones a browser still preflights when their value
# is long or unusual. Not X-User-Id: only a service acts for a user.
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Trace-Id",
    "traceparent",
    "tracestate",
    "Accept",
    "Accept-Language",
    "Content-Language",
)
# Response headers a page may read beyond the safelisted ones (shared.tracing, shared.rate_limits, the
# 405's Allow).
EXPOSED_HEADERS = ("X-Trace-Id", "Retry-After", "RateLimit", "RateLimit-Policy", "Allow")
_KEY = "shared.cors"


def origin_problems(origins: Iterable[str]) -> list[str]:
    """One line for each entry of CORS_ALLOWED_ORIGINS that is not an origin (a trailing slash, a path,
    `null`)."""
    problems = []
    for origin in origins:
        if origin == WILDCARD or _ORIGIN.fullmatch(origin):
            continue
        if origin.lower() == _OPAQUE:
            why = "null is the origin of any sandboxed or file: page; use * for development"
        else:
            why = "an origin is scheme://host[:port], without a path or a trailing slash"
        problems.append(f"CORS_ALLOWED_ORIGINS: {origin!r} is not an origin ({why})")
    return problems


class CorsPolicy:
    """The origins allowed to call this app, matched as browsers send them (scheme and host in any case)."""

    def __init__(self, origins: Iterable[str], max_age_seconds: int) -> None:
        origins = list(origins)
        problems = origin_problems(origins)
        if problems:
            raise ValueError("; ".join(problems))
        self.any_origin = WILDCARD in origins
        self.origins = frozenset(origin.lower() for origin in origins if origin != WILDCARD)
        self.max_age_seconds = max_age_seconds
        # The same decision as compiled patterns, for flask-cors (whose plain strings would be guessed
        # to be regular expressions, and matched unanchored, when they hold `[` or `*`).
        if self.any_origin:
            self.patterns = [re.compile(rf"(?:{_ORIGIN.pattern}|{_OPAQUE})\Z", re.I)]
        else:
            self.patterns = [re.compile(rf"{re.escape(origin)}\Z", re.I) for origin in sorted(self.origins)]

    @property
    def enabled(self) -> bool:
        return bool(self.any_origin or self.origins)

    def allows(self, origin: str | None) -> bool:
        """Whether a page of `origin` may call us; a malformed Origin never is."""
        return bool(origin) and any(pattern.match(origin) for pattern in self.patterns)


def policy(app: Flask | None = None) -> CorsPolicy:
    """The app's CORS policy (also consulted by chat_service's WebSocket origin check)."""
    return (app or current_app).extensions[_KEY]


def _is_preflight() -> bool:
    headers = request.headers
    return request.method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def _answer_preflight() -> Response | None:
    """A preflight's answer, or None for anything else (an unknown path goes on to its 404)."""
    if not _is_preflight():
        return None
    error = request.routing_exception
    if isinstance(error, MethodNotAllowed):
        methods = set(error.valid_methods or ())
    elif error is None and request.url_rule is not None:
        methods = set(request.url_rule.methods or ())
    else:
        return None
    methods.discard("OPTIONS")
    origin = request.headers["Origin"]
    cors = policy()
    if not cors.allows(origin):
        why = "" if cors.enabled else ": CORS is off (CORS_ALLOWED_ORIGINS is empty)"
        raise Forbidden(f"origin {origin!r} is not allowed to call this API{why}")
    # Method names are case-sensitive (fetch upper-cases only the standard ones; "patch" stays "patch").
    method = request.headers["Access-Control-Request-Method"].strip()
    if method not in methods:
        raise MethodNotAllowed(sorted(methods), f"{request.path} does not take {method}")
    accepted = {name.lower() for name in ALLOWED_HEADERS}
    asked = [name.strip() for name in request.headers.get("Access-Control-Request-Headers", "").split(",")]
    refused = [name for name in asked if name and name.lower() not in accepted]
    if refused:
        raise Forbidden(
            f"request header(s) {', '.join(refused)} not allowed; allowed: {', '.join(ALLOWED_HEADERS)}"
        )
    response = current_app.response_class(status=204)
    del response.headers["Content-Type"]  # no body
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = ", ".join(sorted(methods))
    response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOWED_HEADERS)
    response.headers["Access-Control-Max-Age"] = str(cors.max_age_seconds)
    return response


def _vary_on_origin(response: Response) -> Response:
    response.vary.add("Origin")
    return response


def init_app(app: Flask) -> None:
    """Answer preflights and add Access-Control-* headers for the allowed origins; call it before any
    blueprint is registered."""
    cors = CorsPolicy(app.config.get("CORS_ALLOWED_ORIGINS", ()), app.config.get("CORS_MAX_AGE_SECONDS", 600))
    app.extensions[_KEY] = cors
    app.before_request(_answer_preflight)  # also with CORS off: a preflight is told why it is refused
    if not cors.enabled:
        return
    app.after_request(_vary_on_origin)
    CORS(
        app,
        origins=cors.patterns,
        expose_headers=list(EXPOSED_HEADERS),
        methods=None,  # preflights are answered above, with each route's own methods
        supports_credentials=False,
        always_send=False,  # no Origin, no CORS headers (flask-cors would list every origin otherwise)
        vary_header=False,  # _vary_on_origin says it on every response, not only on allowed ones
        allow_private_network=False,
    )

"""Prometheus metrics: requests by route and status with their latency, served at `/metrics`.

Labels stay bounded: `route` is the URL rule (`/api/chat/sessions/<session_id>`), never the raw path,
and `<unmatched>` for a path no rule matches; unusual methods count as `OTHER`.

Under gunicorn each worker is a process with its own counters. With `PROMETHEUS_MULTIPROC_DIR` set
(before prometheus-client is first imported: it reads it then) every worker writes its values to files
there and `/metrics` adds them up, whichever worker answers. Unset, values live in the process. The
gunicorn configs set it whenever they run several workers, and take their hooks from
`shared.gunicorn_metrics`, which does not import prometheus-client. See docs/operations.md.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from shared.gunicorn_metrics import MULTIPROC_ENV

UNMATCHED = "<unmatched>"
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

http_requests_total = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template and status.",
    ["service", "method", "route", "status"],
)
http_request_duration_seconds = Histogram(
    "http_request_duration_seconds",
    "Time from the request's first hook to its response (WebSocket handshakes excluded).",
    ["service", "method", "route"],
)

bp = Blueprint("metrics", __name__)


def init_app(app: Flask) -> None:
    """Count and time every request of `app`, and serve `/metrics` (outside auth; not for the gateway)."""
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics() -> Response:
    """The Prometheus text format; in multiprocess mode, the sum over every worker's files."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def route_label() -> str:
    """The matched URL rule, else `<unmatched>` (404s, 405s): one series per route, not per path."""
    return request.url_rule.rule if request.url_rule is not None else UNMATCHED


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    service = current_app.config["SERVICE_NAME"]
    method = request.method if request.method in _METHODS else "OTHER"
    route = route_label()
    http_requests_total.labels(service, method, route, str(response.status_code)).inc()
    started = g.get("metrics_started")
    # A WebSocket route returns when its socket closes: that is a connection's lifetime, not a latency.
    websocket = request.url_rule is not None and request.url_rule.websocket
    if started is not None and not websocket:
        http_request_duration_seconds.labels(service, method, route).observe(time.perf_counter() - started)
    return response

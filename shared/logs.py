"""JSON log lines, each carrying the request's traceId, and one access line per request."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context, request

from shared.tracing import current_trace_id

access_log = logging.getLogger("access")

# Attributes every LogRecord has; anything else on a record was passed through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, traceId and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "traceId", None)
        if trace_id is None and has_request_context():
            trace_id = current_trace_id()
        if trace_id is not None:
            line["traceId"] = trace_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str) -> None:
    """Send every logger's records to stderr as JSON lines (idempotent: one handler, replaced)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _start_clock() -> None:
    g.started = time.perf_counter()


def _log_access(response: Response) -> Response:
    started = g.get("started")
    duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
    access_log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            # request.path never carries the query string, so a `token` parameter is never logged.
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": duration_ms,
            "user": g.get("user_id"),
            "remote_addr": request.remote_addr,
            "traceId": current_trace_id(),
        },
    )
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start_clock)
    app.after_request(_log_access)

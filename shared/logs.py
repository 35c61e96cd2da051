"""JSON log lines, each carrying the request's traceId, and one access line per request.

Outside a request, a line carries the trace id its work was bound to (`shared.tracing.bound_trace_id`),
if any. An exception nothing caught in a thread or a gevent greenlet is one JSON line too, at ERROR
from `shared.threads`, never a traceback printed as plain text (see `configure_logging`).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context, request

from shared.tracing import bound_trace_id_or_none, current_trace_id

access_log = logging.getLogger("access")
thread_log = logging.getLogger("shared.threads")

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
        if trace_id is None:
            # Formatted in the thread that logs: its request, else what its background work was bound to.
            trace_id = current_trace_id() if has_request_context() else bound_trace_id_or_none()
        if trace_id is not None:
            line["traceId"] = trace_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str) -> None:
    """Send every logger's records to stderr as JSON lines (idempotent: one handler, replaced), and
    log what a thread or greenlet raises and nothing caught instead of printing its traceback."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _install_thread_hook()
    _install_greenlet_hook()


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):  # as Python's own hook: a thread may end with sys.exit()
        return
    name = args.thread.name if args.thread is not None else None
    thread_log.error(
        "Uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"thread_name": name},
    )


def _install_thread_hook() -> None:
    """Replace Python's `threading.excepthook`, which prints a plain-text traceback, once. A hook
    someone else installed (pytest's, which fails the test) still runs, after the JSON line."""
    current = threading.excepthook
    if getattr(current, "json_logs", False):
        return
    previous = None if current is threading.__excepthook__ else current

    def hook(args: threading.ExceptHookArgs) -> None:
        _log_thread_exception(args)
        if previous is not None:
            previous(args)

    hook.json_logs = True
    threading.excepthook = hook


def _log_greenlet_exception(hub, context, exc_type, value, tb) -> None:
    """`gevent.hub.Hub.print_exception`, as one JSON line: a greenlet's uncaught exception."""
    normalize = getattr(hub, "_normalize_exception", None)
    if normalize is not None:  # as gevent does: a str value (from Cython) becomes the exception
        exc_type, value, tb = normalize(exc_type, value, tb)
    try:
        where = context if context is None or isinstance(context, str) else hub.format_context(context)
    except Exception:
        where = repr(context)
    thread_log.error(
        "Uncaught exception in greenlet %s", where, exc_info=(exc_type, value, tb), extra={"greenlet": where}
    )


_log_greenlet_exception.json_logs = True


def _install_greenlet_hook() -> None:
    """With gevent in use (never imported for this), log greenlet errors instead of gevent's printing
    them to stderr: `Hub.handle_error` calls `print_exception` for every error that is one."""
    hub = sys.modules.get("gevent.hub")
    if hub is not None and not getattr(hub.Hub.print_exception, "json_logs", False):
        hub.Hub.print_exception = _log_greenlet_exception


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

"""traceId middleware: take a valid incoming id (X-Trace-Id or W3C traceparent), else make one.

The id is echoed in the `X-Trace-Id` response header and the envelope, put on every log line of the
request, and forwarded by `shared.http` on every outgoing call.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from flask import Flask, Response, g, has_request_context, request

TRACE_HEADER = "X-Trace-Id"
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_NULL_TRACE = "0" * 32
_bound: ContextVar[str | None] = ContextVar("trace_id", default=None)


def new_trace_id() -> str:
    return uuid.uuid4().hex


def trace_id_from_headers(headers) -> str | None:
    """The caller's trace id, if it sent a well-formed one; malformed ids are never trusted."""
    candidate = headers.get(TRACE_HEADER, "").strip()
    if _TRACE_ID.fullmatch(candidate) and candidate != _NULL_TRACE:
        return candidate.lower()
    match = _TRACEPARENT.fullmatch(headers.get("traceparent", "").strip())
    if match and match.group(1) != _NULL_TRACE:
        return match.group(1)
    return None


def current_trace_id() -> str:
    """This request's trace id; in a background task the one it was bound to; else a fresh one."""
    if has_request_context():
        if "trace_id" not in g:
            g.trace_id = trace_id_from_headers(request.headers) or new_trace_id()
        return g.trace_id
    return _bound.get() or new_trace_id()


def bound_trace_id_or_none() -> str | None:
    """The trace id `bound_trace_id` gave this thread's (or greenlet's) context, if any; never a new one."""
    return _bound.get()


@contextmanager
def bound_trace_id(trace_id: str) -> Iterator[None]:
    """Carry a request's trace id into work that outlives it (a thread does not inherit it)."""
    token = _bound.set(trace_id)
    try:
        yield
    finally:
        _bound.reset(token)


def _start_trace() -> None:
    current_trace_id()


def _echo_trace(response: Response) -> Response:
    response.headers[TRACE_HEADER] = current_trace_id()
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start_trace)
    app.after_request(_echo_trace)

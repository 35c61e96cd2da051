"""The unified response body: `{code, message, data, timestamp, traceId}`, built in this one place."""

from __future__ import annotations

import time
from typing import Any

from flask import Response, current_app

from shared.tracing import current_trace_id

SUCCESS = 200


def envelope(data: Any = None, *, code: int = SUCCESS, message: str | None = None) -> dict:
    """The envelope as a dict; `message` defaults to the service's success message."""
    if message is None:
        message = current_app.config["SUCCESS_MESSAGE"]
    return {
        "code": code,
        "message": message,
        "data": data,
        "timestamp": time.time_ns() // 1_000_000,
        "traceId": current_trace_id(),
    }


def envelope_response(
    data: Any = None, *, code: int = SUCCESS, message: str | None = None, status: int = 200
) -> Response:
    """A JSON response whose body is the envelope."""
    response = current_app.json.response(envelope(data, code=code, message=message))
    response.status_code = status
    return response

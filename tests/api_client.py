"""A thin client for the services' public routes, as a user with a real token would call them."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from werkzeug.test import TestResponse

from shared.auth import mint_token

TRACE_ID = re.compile(r"[0-9a-f]{32}")


class ApiClient:
    def __init__(self, app: Flask, default_user: str) -> None:
        self.app = app
        self.client = app.test_client()
        self.default_user = default_user

    def token(self, user: str, **kwargs: Any) -> str:
        return mint_token(user, config=self.app.config, **kwargs)

    def call(
        self,
        method: str,
        path: str,
        *,
        user: str | None = "default",
        json: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        """Call `path` with `user`'s token (`user=None`: with no token at all)."""
        headers = dict(headers or {})
        if user is not None and "Authorization" not in headers:
            user = self.default_user if user == "default" else user
            headers["Authorization"] = f"Bearer {self.token(user)}"
        return self.client.open(path, method=method, json=json, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("PATCH", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("DELETE", path, **kwargs)


def envelope(response: TestResponse, status: int, code: int | None = None) -> Any:
    """Assert `response` is the envelope with this HTTP status and business code; return `data`."""
    body = response.get_json()
    assert response.status_code == status, (response.status_code, body)
    assert body is not None, response.data[:200]
    assert list(body) == ["code", "message", "data", "timestamp", "traceId"], body
    assert body["code"] == (status if code is None else code), body
    assert isinstance(body["timestamp"], int) and body["timestamp"] > 1_700_000_000_000
    assert TRACE_ID.fullmatch(body["traceId"])
    assert response.headers["X-Trace-Id"] == body["traceId"]
    return body["data"]

"""Outbound HTTP on `requests`: a timeout on every call and the traceId forwarded."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import requests

from shared.auth import USER_HEADER, mint_token
from shared.tracing import TRACE_HEADER, current_trace_id

# (connect, read) seconds: a peer that does not answer is given up on, never waited for forever.
DEFAULT_TIMEOUT = (3.05, 10)


def traced_headers(headers: Mapping[str, str] | None = None, trace_id: str | None = None) -> dict:
    """`headers` plus the current traceId, for any outgoing call (another service, an AI provider)."""
    return {**(headers or {}), TRACE_HEADER: trace_id or current_trace_id()}


class ServiceClient:
    """Calls another of our services with a service token, acting for a user when one is named."""

    TOKEN_TTL_SECONDS = 600

    def __init__(
        self,
        base_url: str,
        *,
        service_name: str,
        config: Mapping[str, Any],
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.service_name = service_name
        self.timeout = timeout
        self._config = dict(config)
        self._session = requests.Session()
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def _service_token(self) -> str:
        with self._lock:
            if self._token is None or self._token[1] < time.monotonic():
                token = mint_token(
                    self.service_name,
                    service=True,
                    ttl_seconds=self.TOKEN_TTL_SECONDS,
                    config=self._config,
                )
                self._token = (token, time.monotonic() + self.TOKEN_TTL_SECONDS / 2)
            return self._token[0]

    def request(
        self,
        method: str,
        path: str,
        *,
        user_id: str | None = None,
        trace_id: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        headers = traced_headers(kwargs.pop("headers", None), trace_id)
        headers["Authorization"] = f"Bearer {self._service_token()}"
        if user_id is not None:
            headers[USER_HEADER] = user_id
        kwargs.setdefault("timeout", self.timeout)
        return self._session.request(method, self.base_url + path, headers=headers, **kwargs)

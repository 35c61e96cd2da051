"""Any OpenAI-compatible `/chat/completions` stream, with the session's history as context."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from chat_service.providers.base import Delta, Event, Finished, ProviderError, TurnRequest
from chat_service.providers.http_stream import (
    Call,
    HttpFailure,
    HttpStream,
    StreamCut,
    json_object,
    provider_timeout,
)
from chat_service.providers.retry import RetryPolicy
from chat_service.providers.sse import SSEEvent
from shared.http import traced_headers

# A 429 naming a quota will not pass by waiting: never retried.
_QUOTA_CODES = {"insufficient_quota"}


def decode_openai(frames: Iterator[SSEEvent]) -> Iterator[Event]:
    """`data: {chunk}` frames as our events; ends at `data: [DONE]`, or at EOF after a `finish_reason`."""
    finished = False
    usage: dict | None = None
    try:
        for frame in frames:
            if frame.data is None:
                continue
            if frame.data.strip() == "[DONE]":
                yield Finished(usage)
                return
            try:
                chunk = json.loads(frame.data)
            except ValueError:
                raise ProviderError("the provider sent a chunk that is not JSON") from None
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                raise _error_of(chunk, None)
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            choices = chunk.get("choices")
            choice = choices[0] if isinstance(choices, list) and choices else None
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                yield Delta(content)
            if choice.get("finish_reason"):
                finished = True
    except StreamCut:
        if not finished:
            raise
    if not finished:
        raise StreamCut()
    yield Finished(usage)


def _error_of(parsed: dict, status: int | None) -> ProviderError:
    error = parsed.get("error")
    if isinstance(error, dict):
        message, code = error.get("message"), error.get("code") or error.get("type")
    else:
        message, code = error, None
    reason = message if isinstance(message, str) and message else "the provider reported an error"
    return ProviderError(reason, status=status, code=code if isinstance(code, str) else None)


def read_openai_error(status: int, body: bytes) -> HttpFailure:
    """`{"error": {"message", "type", "code"}}`; 429 (unless a quota) and 5xx may be retried."""
    parsed = json_object(body)
    if "error" in parsed:
        error = _error_of(parsed, status)
    else:
        text = body.decode("utf-8", errors="replace").strip()[:200]
        error = ProviderError(f"the provider answered HTTP {status}" + (f": {text}" if text else ""), status)
    retryable = status >= 500 or (status == 429 and error.code not in _QUOTA_CODES)
    return HttpFailure(error, retryable)


class OpenAIProvider:
    """`POST {OPENAI_BASE_URL}/chat/completions` with `stream: true`."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
        policy: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.model = model
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.session = requests.Session()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OpenAIProvider:
        """The provider from `OPENAI_BASE_URL`, `OPENAI_API_KEY` (may be empty locally), `OPENAI_MODEL`."""
        if not config.get("OPENAI_BASE_URL") or not config.get("OPENAI_MODEL"):
            raise ValueError("AI_PROVIDER=openai needs OPENAI_BASE_URL and OPENAI_MODEL")
        return cls(
            config["OPENAI_BASE_URL"],
            config.get("OPENAI_API_KEY", ""),
            config["OPENAI_MODEL"],
            timeout=provider_timeout(config),
            policy=RetryPolicy.from_config(config),
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider({self.base_url!r}, model={self.model!r})"

    def start(self, turn: TurnRequest) -> HttpStream:
        """A stream for the turn: the history plus the new user message; sent when first iterated."""
        messages = [{"role": m["role"], "content": m["content"]} for m in turn.history]
        messages.append({"role": "user", "content": turn.query})
        body = {"model": self.model, "stream": True, "messages": messages}
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        call = Call(
            f"{self.base_url}/chat/completions", traced_headers(headers, turn.trace_id), body, self.timeout
        )
        return HttpStream(self.session, call, decode_openai, read_openai_error, self.policy)

    def close(self) -> None:
        self.session.close()

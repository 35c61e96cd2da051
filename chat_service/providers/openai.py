"""Any OpenAI-compatible `/chat/completions` stream, with the history the server trusts as context."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from chat_service.providers.base import (
    Delta,
    Event,
    Finished,
    ProviderError,
    TurnRequest,
    normalize_usage,
)
from chat_service.providers.context import model_messages, parse_client_roles
from chat_service.providers.http_stream import (
    Call,
    HttpFailure,
    HttpStream,
    StreamCut,
    json_object,
    max_line_bytes,
    provider_timeout,
)
from chat_service.providers.retry import RetryPolicy
from chat_service.providers.sse import MAX_LINE_BYTES, SSEEvent
from shared.http import traced_headers

# A 429 naming a quota will not pass by waiting: never retried.
_QUOTA_CODES = {"insufficient_quota"}
# Reasoning models' thinking, which is no part of an answer: closed blocks, and one left open at the end.
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)


def decode_openai(frames: Iterator[SSEEvent]) -> Iterator[Event]:
    """`data: {chunk}` frames as our events; ends at `data: [DONE]`, or at EOF after a `finish_reason`.

    The usage chunk `stream_options.include_usage` asks for (empty `choices`, after the last
    `finish_reason`) becomes `Finished.usage`, normalized."""
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
                message = "the provider sent a chunk that is not JSON"
                raise ProviderError(message, reason_code="internal") from None
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                raise _error_of(chunk, None)
            if isinstance(chunk.get("usage"), dict):
                usage = normalize_usage(chunk["usage"]) or usage
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
    text = message if isinstance(message, str) and message else "the provider reported an error"
    return ProviderError(text, status=status, code=code if isinstance(code, str) else None)


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
        max_line_bytes: int = MAX_LINE_BYTES,
        system_prompt: str = "",
        client_roles: frozenset[str] = frozenset({"user"}),
        max_tokens: int = 0,
        context_tokens: int = 0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.model = model
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.max_line_bytes = max_line_bytes
        self.system_prompt = system_prompt
        self.client_roles = client_roles
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens
        self.session = requests.Session()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OpenAIProvider:
        """The provider from `OPENAI_BASE_URL`, `OPENAI_API_KEY` (may be empty locally), `OPENAI_MODEL`."""
        if not config.get("OPENAI_BASE_URL") or not config.get("OPENAI_MODEL"):
            raise ValueError("AI_PROVIDER=openai needs OPENAI_BASE_URL and OPENAI_MODEL")
        roles = config.get("AI_CLIENT_ROLES") or "user"  # parsed by Config, or a raw setting
        return cls(
            config["OPENAI_BASE_URL"],
            config.get("OPENAI_API_KEY", ""),
            config["OPENAI_MODEL"],
            timeout=provider_timeout(config),
            policy=RetryPolicy.from_config(config),
            max_line_bytes=max_line_bytes(config),
            system_prompt=str(config.get("AI_SYSTEM_PROMPT") or ""),
            client_roles=parse_client_roles(roles if isinstance(roles, str) else ",".join(roles)),
            max_tokens=int(config.get("OPENAI_MAX_TOKENS") or 0),
            context_tokens=int(config.get("AI_CONTEXT_TOKENS") or 0),
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider({self.base_url!r}, model={self.model!r})"

    def start(self, turn: TurnRequest) -> HttpStream:
        """A stream for the turn: the server's system prompt, the history it trusts and the new user
        message (`context.model_messages`); sent when first iterated."""
        messages = model_messages(turn, self.system_prompt, self.client_roles, self.context_tokens)
        body: dict[str, Any] = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},  # the last chunk then carries the usage
            "messages": messages,
        }
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens  # without it a model writes until its window is full
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        call = Call(
            f"{self.base_url}/chat/completions",
            traced_headers(headers, turn.trace_id),
            body,
            self.timeout,
            self.max_line_bytes,
        )
        return HttpStream(self.session, call, decode_openai, read_openai_error, self.policy)

    def complete(self, messages: list[dict], max_tokens: int | None = None) -> str:
        """One short, non-streamed completion of `messages` (`[{"role", "content"}]`), e.g. a title:
        its text with reasoning (`<think>...</think>`) removed and whitespace trimmed (possibly empty).
        A ProviderError (our `reason`, as for a turn) when the call fails or answers no message; the
        call is never retried and waits at most the provider's (connect, read) timeout."""
        body: dict[str, Any] = {
            "model": self.model,
            "stream": False,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            response = self.session.post(
                f"{self.base_url}/chat/completions",
                json=body,
                headers=traced_headers(headers),
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise ProviderError("the provider did not answer in time", reason_code="unavailable") from None
        except requests.RequestException as exc:
            message = f"cannot reach the provider: {type(exc).__name__}"
            raise ProviderError(message, reason_code="unavailable") from None
        with response:
            if response.status_code != 200:
                raise read_openai_error(response.status_code, response.content).error
            parsed = json_object(response.content)
        if "error" in parsed:
            raise _error_of(parsed, None)
        choices = parsed.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise ProviderError("the provider answered without a message", reason_code="internal")
        return strip_reasoning(content)

    def close(self) -> None:
        self.session.close()


def strip_reasoning(text: str) -> str:
    """`text` without `<think>...</think>` blocks (an unclosed one runs to the end), trimmed."""
    return _THINK.sub("", text).strip()

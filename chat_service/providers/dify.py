"""Dify's chat API in streaming mode (see shared/DIFY.md for the wire format we honour)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import requests

from chat_service.providers.base import (
    Delta,
    Event,
    Finished,
    Linked,
    ProviderError,
    Replace,
    Started,
    TurnRequest,
)
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
from shared.tracing import current_trace_id

log = logging.getLogger(__name__)

_REPLY_EVENTS = {"message", "agent_message"}
# 429 `too_many_requests` is a momentary limit; `rate_limit_error` is a quota and is never retried.
_RETRYABLE_429_CODES = {"too_many_requests"}


def decode_dify(frames: Iterator[SSEEvent]) -> Iterator[Event]:
    """Dify's SSE frames as our events; pings, workflow progress and unknown events are skipped."""
    linked = started = False
    for frame in frames:
        if frame.data is None:
            continue  # `event: ping`
        try:
            payload = json.loads(frame.data)
        except ValueError:
            raise ProviderError("Dify sent a frame that is not JSON") from None
        if not isinstance(payload, dict):
            continue
        conversation_id, task_id = payload.get("conversation_id"), payload.get("task_id")
        if not linked and isinstance(conversation_id, str) and conversation_id:
            linked = True
            yield Linked(conversation_id)
        if not started and isinstance(task_id, str) and task_id:
            started = True
            yield Started(task_id)
        kind = payload.get("event")
        if kind in _REPLY_EVENTS:
            answer = payload.get("answer")
            if isinstance(answer, str) and answer:
                yield Delta(answer)
        elif kind == "message_replace":
            answer = payload.get("answer")
            yield Replace(answer if isinstance(answer, str) else "")
        elif kind == "message_end":
            metadata = payload.get("metadata")
            usage = metadata.get("usage") if isinstance(metadata, dict) else None
            yield Finished(usage if isinstance(usage, dict) else None)
            return
        elif kind == "error":
            raise ProviderError(
                str(payload.get("message") or "Dify reported an error"),
                status=_int_or_none(payload.get("status")),
                code=payload.get("code"),
            )
        elif kind == "workflow_finished":
            data = payload.get("data")
            if isinstance(data, dict) and data.get("status") == "failed":
                reason = str(data.get("error") or "the Dify workflow failed")
                raise ProviderError(reason, code="workflow_failed")
    raise StreamCut()


def read_dify_error(status: int, body: bytes) -> HttpFailure:
    """Dify's `{"code", "message", "status"}` answer; 429 `too_many_requests` and 5xx may be retried."""
    parsed = json_object(body)
    code = parsed.get("code") if isinstance(parsed.get("code"), str) else None
    message = parsed.get("message")
    if not isinstance(message, str) or not message:
        text = body.decode("utf-8", errors="replace").strip()[:200]
        message = f"Dify answered HTTP {status}" + (f": {text}" if text else "")
    retryable = status >= 500 or (status == 429 and code in _RETRYABLE_429_CODES)
    return HttpFailure(ProviderError(message, status=status, code=code), retryable)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class DifyStream(HttpStream):
    """A Dify turn; `stop()` also asks Dify to stop generating, as the same `user`."""

    def __init__(self, provider: DifyProvider, turn: TurnRequest, call: Call) -> None:
        super().__init__(provider.session, call, decode_dify, read_dify_error, provider.policy)
        self._provider = provider
        self._turn = turn
        self.task_id: str | None = None

    def _observe(self, event: Event) -> None:
        if isinstance(event, Started):
            self.task_id = event.task_id

    def stop(self) -> bool:
        """Cancel now, then `POST /chat-messages/{task_id}/stop`; False if no task id yet or it failed."""
        self.cancel()
        if self.task_id is None:
            return False
        return self._provider.stop_task(self.task_id, self._turn)


class DifyProvider:
    """`POST {DIFY_API_URL}/chat-messages`, streaming, continuing the session's conversation."""

    name = "dify"

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
        policy: RetryPolicy | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.session = requests.Session()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DifyProvider:
        """The provider from `DIFY_API_URL`, `DIFY_API_KEY` and the `PROVIDER_*` knobs."""
        if not config.get("DIFY_API_KEY"):
            raise ValueError("AI_PROVIDER=dify needs DIFY_API_KEY")
        if not config.get("DIFY_API_URL"):
            raise ValueError("AI_PROVIDER=dify needs DIFY_API_URL (ending in /v1)")
        return cls(
            config["DIFY_API_URL"],
            config["DIFY_API_KEY"],
            timeout=provider_timeout(config),
            policy=RetryPolicy.from_config(config),
        )

    def __repr__(self) -> str:
        return f"DifyProvider({self.api_url!r})"

    def _headers(self, turn: TurnRequest) -> dict:
        return traced_headers({"Authorization": f"Bearer {self._api_key}"}, turn.trace_id)

    def start(self, turn: TurnRequest) -> DifyStream:
        """A stream for the turn; the request is sent when it is first iterated."""
        turn = replace(turn, trace_id=turn.trace_id or current_trace_id())  # the same id on its stop call
        body = {
            "query": turn.query,
            "inputs": {},
            "user": turn.user_id,
            "response_mode": "streaming",
            "conversation_id": turn.conversation_id or "",
            "auto_generate_name": True,
        }
        headers = {**self._headers(turn), "Accept": "text/event-stream", "Accept-Encoding": "identity"}
        return DifyStream(self, turn, Call(f"{self.api_url}/chat-messages", headers, body, self.timeout))

    def stop_task(self, task_id: str, turn: TurnRequest) -> bool:
        """Ask Dify to stop generating `task_id`; it only obeys the turn's own `user`."""
        try:
            response = self.session.post(
                f"{self.api_url}/chat-messages/{task_id}/stop",
                json={"user": turn.user_id},
                headers=self._headers(turn),
                timeout=(self.timeout[0], 10.0),
            )
            with response:
                ok = response.status_code == 200
                if not ok:
                    log.warning("Dify refused to stop task %s: HTTP %d", task_id, response.status_code)
                return ok
        except requests.RequestException as exc:
            log.warning("Dify stop of task %s failed: %s", task_id, type(exc).__name__)
            return False

    def close(self) -> None:
        self.session.close()

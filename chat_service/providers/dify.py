"""Dify's chat API in streaming mode (see shared/DIFY.md for the wire format we honour)."""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import requests

from chat_service.providers.base import (
    Delta,
    Event,
    Finished,
    Linked,
    Paused,
    ProviderError,
    Replace,
    Started,
    TurnRequest,
    normalize_usage,
)
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
from shared.tracing import current_trace_id

log = logging.getLogger(__name__)

# 429 `too_many_requests` is a momentary limit; `rate_limit_error` is a quota and is never retried.
_RETRYABLE_429_CODES = {"too_many_requests"}
# The one-shot JSON calls (parameters, delete, stop): a read timeout of their own, well under a turn's.
_CALL_READ_TIMEOUT = 10.0
# Naming a conversation runs a model call inside Dify: allow it longer.
_NAME_READ_TIMEOUT = 30.0
MAX_SUGGESTIONS = 5  # follow-up questions shown after a reply
HUMAN_INPUT_REQUIRED = "human_input_required"


def decode_dify(frames: Iterator[SSEEvent]) -> Iterator[Event]:
    """Dify's SSE frames as our events; pings, workflow progress and unknown events are skipped.

    - `message`, `agent_message`, and `message_file` with a string `answer`: the next piece (Delta);
      but once an `agent_message` was seen (a New Agent app), a `message` is the closing chunk that
      repeats the whole answer: it replaces the reply (Replace), it is not appended.
    - `message_replace`: Replace. `message_file` with a `url`: a file, carried in `Finished.files`.
    - `message_end`: Finished (Dify's message id, normalized usage). `error`, and a failed
      `workflow_finished`: ProviderError. `human_input_required` then `workflow_paused`: Paused, and
      the stream ends (also when it ends right after `human_input_required`).
    """
    linked = started = agent = False
    files: list[dict] = []
    pause: Paused | None = None
    for frame in frames:
        if frame.data is None:
            continue  # `event: ping`
        try:
            payload = json.loads(frame.data)
        except ValueError:
            raise ProviderError("Dify sent a frame that is not JSON", reason_code="internal") from None
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
        answer = payload.get("answer")
        if kind == "agent_message":
            agent = True
            if isinstance(answer, str) and answer:
                yield Delta(answer)
        elif kind == "message":
            if isinstance(answer, str) and answer:
                yield Replace(answer) if agent else Delta(answer)
        elif kind == "message_file":
            if isinstance(answer, str):
                if answer:
                    yield Delta(answer)
            elif isinstance(payload.get("url"), str) and payload["url"]:
                files.append(_file_of(payload))
        elif kind == "message_replace":
            yield Replace(answer if isinstance(answer, str) else "")
        elif kind == "message_end":
            message_id = payload.get("id") or payload.get("message_id")
            metadata = payload.get("metadata")
            usage = normalize_usage(metadata.get("usage")) if isinstance(metadata, dict) else None
            yield Finished(usage, message_id if isinstance(message_id, str) else None, tuple(files))
            return
        elif kind == "error":
            raise ProviderError(
                str(payload.get("message") or "Dify reported an error"),
                status=_int_or_none(payload.get("status")),
                code=payload.get("code") if isinstance(payload.get("code"), str) else None,
            )
        elif kind == "workflow_finished":
            data = payload.get("data")
            if isinstance(data, dict) and data.get("status") == "failed":
                message = str(data.get("error") or "the Dify workflow failed")
                raise ProviderError(message, code="workflow_failed", reason_code="internal")
        elif kind == HUMAN_INPUT_REQUIRED:
            pause = _pause_of(payload, pause, HUMAN_INPUT_REQUIRED)
        elif kind == "workflow_paused":
            yield _pause_of(payload, pause, None)
            return
    if pause is not None:
        yield pause  # the stream ended at the pause's first frame: still a pause, not a cut
        return
    raise StreamCut()


def _file_of(payload: dict) -> dict:
    keys = ("id", "type", "url", "belongs_to")
    return {key: payload[key] for key in keys if isinstance(payload.get(key), str)}


def _pause_of(payload: dict, earlier: Paused | None, reason: str | None) -> Paused:
    """The pause a `human_input_required` or `workflow_paused` frame describes, over what was known."""
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    token = data.get("form_token")
    reasons = data.get("reasons") if isinstance(data.get("reasons"), list) else []
    for item in reasons:
        if isinstance(item, dict) and item.get("TYPE") == HUMAN_INPUT_REQUIRED:
            reason = HUMAN_INPUT_REQUIRED
            token = token or item.get("form_token")
    run_id = payload.get("workflow_run_id") or data.get("workflow_run_id")
    earlier = earlier or Paused(reason="paused")
    return Paused(
        reason=reason or earlier.reason,
        form_token=token if isinstance(token, str) and token else earlier.form_token,
        workflow_run_id=run_id if isinstance(run_id, str) and run_id else earlier.workflow_run_id,
    )


def read_dify_error(status: int, body: bytes, conversation_id: str | None = None) -> HttpFailure:
    """Dify's `{"code", "message", "status"}` answer; 429 `too_many_requests` and 5xx may be retried.

    A 404 `not_found` about the conversation, for a call that named one (`conversation_id`), and a
    400 `conversation_completed` mean the conversation is gone (`ProviderError.conversation_gone`)."""
    parsed = json_object(body)
    code = parsed.get("code") if isinstance(parsed.get("code"), str) else None
    message = parsed.get("message")
    if not isinstance(message, str) or not message:
        text = body.decode("utf-8", errors="replace").strip()[:200]
        message = f"Dify answered HTTP {status}" + (f": {text}" if text else "")
    gone = code == "conversation_completed" or (
        status == 404 and code == "not_found" and bool(conversation_id) and "conversation" in message.lower()
    )
    reason_code = "conversation_gone" if gone else None
    error = ProviderError(message, status=status, code=code, reason_code=reason_code)
    retryable = not gone and (status >= 500 or (status == 429 and code in _RETRYABLE_429_CODES))
    return HttpFailure(error, retryable)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_inputs(value: Any, name: str = "DIFY_INPUTS") -> dict:
    """A JSON object setting (a dict, or its JSON text; empty text is `{}`); a ValueError otherwise."""
    if isinstance(value, Mapping):
        return dict(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a JSON object, got {type(value).__name__}")
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        where = f"{exc.msg} at position {exc.pos}"
        raise ValueError(f"{name} is not valid JSON ({where}): {value[:80]!r}") from None
    if not isinstance(parsed, dict):
        kind = type(parsed).__name__
        raise ValueError(f'{name} must be a JSON object like {{"name": "value"}}, got {kind}')
    return parsed


def _blank(value: Any) -> bool:
    """Absent, or nothing in it: None, whitespace, an empty list or object."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | dict):
        return not value
    return False


class DifyStream(HttpStream):
    """A Dify turn; `stop()` also asks Dify to stop generating, as the same `user`."""

    def __init__(self, provider: DifyProvider, turn: TurnRequest, call: Call) -> None:
        read_error = functools.partial(read_dify_error, conversation_id=turn.conversation_id)
        super().__init__(provider.session, call, decode_dify, read_error, provider.policy)
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
    """`POST {DIFY_API_URL}/chat-messages`, streaming, continuing the session's conversation.

    Also Dify's other calls a chat needs: the app's parameters (`parameters`, `missing_inputs`), a
    conversation's generated name (`generate_name`) and its deletion (`delete_conversation`)."""

    name = "dify"

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
        policy: RetryPolicy | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        inputs: Mapping[str, Any] | None = None,
        parameters_ttl: float = 300.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.max_line_bytes = max_line_bytes
        self.inputs = dict(inputs or {})  # `DIFY_INPUTS`: under every turn's own inputs
        self.parameters_ttl = parameters_ttl
        self.session = requests.Session()
        self._parameters: tuple[float, dict] | None = None  # (monotonic time fetched, answer)
        self._parameters_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DifyProvider:
        """The provider from `DIFY_API_URL`, `DIFY_API_KEY`, `DIFY_INPUTS`,
        `DIFY_PARAMETERS_CACHE_SECONDS` and the `PROVIDER_*` knobs."""
        if not config.get("DIFY_API_KEY"):
            raise ValueError("AI_PROVIDER=dify needs DIFY_API_KEY")
        if not config.get("DIFY_API_URL"):
            raise ValueError("AI_PROVIDER=dify needs DIFY_API_URL (ending in /v1)")
        return cls(
            config["DIFY_API_URL"],
            config["DIFY_API_KEY"],
            timeout=provider_timeout(config),
            policy=RetryPolicy.from_config(config),
            max_line_bytes=max_line_bytes(config),
            inputs=parse_inputs(config.get("DIFY_INPUTS")),
            parameters_ttl=float(config.get("DIFY_PARAMETERS_CACHE_SECONDS", 300.0)),
        )

    def __repr__(self) -> str:
        return f"DifyProvider({self.api_url!r})"

    def _headers(self, trace_id: str | None = None) -> dict:
        return traced_headers({"Authorization": f"Bearer {self._api_key}"}, trace_id)

    def merged_inputs(self, inputs: Mapping[str, Any] | None = None) -> dict:
        """What Dify is sent as `inputs`: `DIFY_INPUTS` with `inputs` over it (theirs win)."""
        return {**self.inputs, **(inputs or {})}

    def start(self, turn: TurnRequest) -> DifyStream:
        """A stream for the turn; the request is sent when it is first iterated."""
        turn = replace(turn, trace_id=turn.trace_id or current_trace_id())  # the same id on its stop call
        body = {
            "query": turn.query,
            "inputs": self.merged_inputs(turn.inputs),
            "user": turn.user_id,
            "response_mode": "streaming",
            "conversation_id": turn.conversation_id or "",
            # Naming is asked for explicitly (`generate_name`), and its answer is read.
            "auto_generate_name": False,
        }
        headers = self._headers(turn.trace_id)
        headers.update({"Accept": "text/event-stream", "Accept-Encoding": "identity"})
        call = Call(f"{self.api_url}/chat-messages", headers, body, self.timeout, self.max_line_bytes)
        return DifyStream(self, turn, call)

    def stop_task(self, task_id: str, turn: TurnRequest) -> bool:
        """Ask Dify to stop generating `task_id`; it only obeys the turn's own `user`."""
        try:
            response = self.session.post(
                f"{self.api_url}/chat-messages/{task_id}/stop",
                json={"user": turn.user_id},
                headers=self._headers(turn.trace_id),
                timeout=(self.timeout[0], _CALL_READ_TIMEOUT),
            )
            with response:
                ok = response.status_code == 200
                if not ok:
                    log.warning("Dify refused to stop task %s: HTTP %d", task_id, response.status_code)
                return ok
        except requests.RequestException as exc:
            log.warning("Dify stop of task %s failed: %s", task_id, type(exc).__name__)
            return False

    # -- the app's parameters and input form ------------------------------------------------------

    def parameters(self, *, refresh: bool = False) -> dict:
        """Dify's `GET /parameters` (opening statement, suggested questions, `user_input_form`, ...),
        cached for `parameters_ttl` seconds. When Dify fails, the last answer is returned if there is
        one; with none, a ProviderError."""
        with self._parameters_lock:
            cached = self._parameters
            if not refresh and cached is not None and time.monotonic() - cached[0] < self.parameters_ttl:
                return cached[1]
            try:
                answer = self._call_json("GET", "/parameters", read_timeout=_CALL_READ_TIMEOUT)
            except ProviderError as error:
                if cached is None:
                    raise
                log.warning("Dify parameters unavailable, using the cached ones: %s", error.upstream_message)
                return cached[1]
            self._parameters = (time.monotonic(), answer)
            return answer

    def missing_inputs(self, inputs: Mapping[str, Any] | None = None) -> list[str]:
        """The variables the app's input form requires that are absent or blank in `inputs` merged over
        `DIFY_INPUTS`, in the form's order (Dify would refuse the turn with 400 `invalid_param`).
        Raises ProviderError when the parameters cannot be had."""
        merged = self.merged_inputs(inputs)
        form = self.parameters().get("user_input_form")
        missing: list[str] = []
        for item in form if isinstance(form, list) else []:
            if not isinstance(item, dict):
                continue
            for spec in item.values():  # one key: the control's type ("text-input", "select", ...)
                if not isinstance(spec, dict):
                    continue
                variable = spec.get("variable")
                if not isinstance(variable, str) or not variable or not spec.get("required"):
                    continue
                if _blank(merged.get(variable)):
                    missing.append(variable)
        return missing

    # -- conversations -----------------------------------------------------------------------------

    def generate_name(self, conversation_id: str, user_id: str) -> str:
        """Have Dify name the conversation (`POST /conversations/{id}/name` with `auto_generate`, as
        the same `user`) and return the name; a ProviderError when it fails or names it nothing
        (`conversation_gone` when Dify no longer knows the conversation)."""
        answer = self._call_json(
            "POST",
            f"/conversations/{quote(conversation_id, safe='')}/name",
            body={"auto_generate": True, "user": user_id},
            read_timeout=_NAME_READ_TIMEOUT,
            conversation_id=conversation_id,
        )
        name = answer.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ProviderError("Dify answered the naming call without a name", reason_code="internal")
        return name.strip()

    def delete_conversation(self, conversation_id: str, user_id: str) -> bool:
        """`DELETE /conversations/{id}` as the same `user`: True when it is gone (200, 204, or 404:
        already gone); False when Dify refused or could not be reached (logged)."""
        url = f"{self.api_url}/conversations/{quote(conversation_id, safe='')}"
        try:
            response = self.session.delete(
                url,
                json={"user": user_id},
                headers=self._headers(),
                timeout=(self.timeout[0], _CALL_READ_TIMEOUT),
            )
        except requests.RequestException as exc:
            log.warning("Dify delete of conversation %s failed: %s", conversation_id, type(exc).__name__)
            return False
        with response:
            if response.status_code in (200, 204, 404):
                return True
            failure = read_dify_error(response.status_code, response.content)
            log.warning(
                "Dify refused to delete conversation %s: HTTP %d: %s",
                conversation_id,
                response.status_code,
                failure.error.upstream_message,
            )
            return False

    # -- messages ----------------------------------------------------------------------------------

    def send_feedback(self, message_id: str, user_id: str, rating: str | None, content: str | None) -> None:
        """`POST /messages/{id}/feedbacks` as the same `user` (`rating` None withdraws it); a
        ProviderError when Dify refuses or cannot be reached."""
        body: dict[str, Any] = {"rating": rating, "user": user_id}
        if content:
            body["content"] = content
        self._call_json(
            "POST",
            f"/messages/{quote(message_id, safe='')}/feedbacks",
            body=body,
            read_timeout=_CALL_READ_TIMEOUT,
        )

    def suggested(self, message_id: str, user_id: str) -> list[str]:
        """`GET /messages/{id}/suggested`: the follow-up questions Dify suggests after a reply (an app
        without "suggested questions after answer" answers an error: a ProviderError)."""
        answer = self._call_json(
            "GET",
            f"/messages/{quote(message_id, safe='')}/suggested?user={quote(user_id, safe='')}",
            read_timeout=_CALL_READ_TIMEOUT,
        )
        questions = answer.get("data")
        if not isinstance(questions, list):
            return []
        return [q.strip() for q in questions if isinstance(q, str) and q.strip()][:MAX_SUGGESTIONS]

    def _call_json(
        self,
        method: str,
        path: str,
        *,
        body: dict | None = None,
        read_timeout: float,
        conversation_id: str | None = None,
    ) -> dict:
        """One JSON call to Dify: its answer as a dict, or a ProviderError (never retried here)."""
        try:
            response = self.session.request(
                method,
                f"{self.api_url}{path}",
                json=body,
                headers=self._headers(),
                timeout=(self.timeout[0], read_timeout),
            )
        except requests.Timeout:
            message = f"Dify did not answer {method} {path} in time"
            raise ProviderError(message, reason_code="unavailable") from None
        except requests.RequestException as exc:
            message = f"cannot reach Dify for {method} {path}: {type(exc).__name__}"
            raise ProviderError(message, reason_code="unavailable") from None
        with response:
            if response.status_code != 200:
                raise read_dify_error(response.status_code, response.content, conversation_id).error
            try:
                answer = response.json()
            except ValueError:
                answer = None
        if not isinstance(answer, dict):
            raise ProviderError(f"Dify answered {method} {path} with no JSON object", reason_code="internal")
        return answer

    def close(self) -> None:
        self.session.close()

"""The provider interface: a turn goes in, a cancellable stream of reply events comes out.

A stream yields, in order: `Linked` and `Started` (Dify, from its first frame), `Delta`/`Replace`
pieces of the reply, then exactly one ending: `Finished` (the reply is complete) or `Paused` (the
provider paused the run for a person's input; the reply so far is partial), or it raises
`ProviderError`. A cancelled stream just stops yielding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol


@dataclass(frozen=True)
class TurnRequest:
    """What a provider needs for one turn: who asks, what, and the context to continue."""

    user_id: str
    query: str
    history: list[dict] = field(default_factory=list)  # [{"role", "content"}], oldest first
    conversation_id: str | None = None  # Dify's conversation to continue; None starts one
    trace_id: str | None = None
    # Dify's `inputs` (the app's input form), merged over the `DIFY_INPUTS` defaults; the request wins.
    inputs: dict = field(default_factory=dict)
    # How many times the model refused the prompt as too long: each halves the history's budget.
    trimmed: int = 0


@dataclass(frozen=True)
class Delta:
    """The next piece of the reply: append it."""

    text: str


@dataclass(frozen=True)
class Replace:
    """The whole reply so far is replaced by `text` (Dify's `message_replace`, e.g. moderation, and
    the closing `message` of a New Agent app, which repeats the complete answer)."""

    text: str


@dataclass(frozen=True)
class Linked:
    """The provider named its conversation (Dify): link it to the chat session at once."""

    conversation_id: str


@dataclass(frozen=True)
class Started:
    """The provider's task id for this turn, which `Stream.stop()` uses (Dify)."""

    task_id: str


@dataclass(frozen=True)
class Finished:
    """The reply is complete.

    `usage`: the provider's accounting, normalized by `normalize_usage` (None when it sent none).
    `message_id`: the provider's id of the reply (Dify's `message_end.id`, for feedback and
    suggested questions); None for providers without one.
    `files`: files of the reply (Dify's `message_file` events with a `url`), each
    `{"id", "type", "url", "belongs_to"}` as far as Dify sent them."""

    usage: dict | None = None
    message_id: str | None = None
    files: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Paused:
    """The provider paused the run and the stream ends here, before the reply is complete.

    Dify's Chatflow Human Input node: `human_input_required` then `workflow_paused`. `reason` is
    `"human_input_required"` (or `"paused"` for a pause Dify gave no reason for); `form_token` drives
    Dify's form (`POST /form/human_input/{token}`) and `workflow_run_id` re-attaches to the run. A turn
    keeps the text so far as a stopped reply and tells clients with an error frame whose
    `data.reason` is `reason`."""

    reason: str = "human_input_required"
    form_token: str | None = None
    workflow_run_id: str | None = None


Event = Delta | Replace | Linked | Started | Finished | Paused


# Our own table of why a provider call failed: `ProviderError.reason_code` -> the short English text
# users see (`ProviderError.reason`). The provider's own words never reach users: they can hold
# plan-upgrade prose, HTML or host names, and are kept in `ProviderError.upstream_message` for the log.
REASONS: dict[str, str] = {
    "quota_exceeded": "the AI service's usage quota is used up; try again later",
    "rate_limited": "the AI service is busy; try again in a moment",
    "unavailable": "the AI service is unavailable right now; try again later",
    "bad_request": "the AI service could not process this message",
    "unauthorized": "the AI service refused this app's credentials",
    "conversation_gone": "the AI service no longer knows this conversation",
    "content_filtered": "the AI service's content filter blocked the reply",
    "stream_cut": "the reply was cut off before it was complete",
    "context_too_long": "this conversation is too long for the AI model: shorten the message or start anew",
    "bad_response": "the AI service sent a reply this service cannot read",
    "internal": "the AI service failed to produce a reply",
}

# Provider error codes with a reason of their own, whatever the HTTP status.
_CODE_REASONS = {
    # Quotas: waiting a moment does not help (Dify's daily cap is `rate_limit_error`).
    "provider_quota_exceeded": "quota_exceeded",
    "rate_limit_error": "quota_exceeded",
    "insufficient_quota": "quota_exceeded",
    "too_many_requests": "rate_limited",
    "rate_limit_exceeded": "rate_limited",
    # The app or its model is misconfigured or switched off: nothing the user can change.
    "app_unavailable": "unavailable",
    "provider_not_initialize": "unavailable",
    "model_currently_not_support": "unavailable",
    "not_chat_app": "unavailable",
    "agent_not_published": "unavailable",
    "internal_server_error": "unavailable",
    "server_error": "unavailable",
    "unauthorized": "unauthorized",
    "invalid_api_key": "unauthorized",
    "conversation_completed": "conversation_gone",
    # The prompt does not fit the model's window (OpenAI, llama.cpp's server): trimmed once, then this.
    "context_length_exceeded": "context_too_long",
    "content_filter": "content_filtered",
    "content_policy_violation": "content_filtered",
    "invalid_param": "bad_request",
    "completion_request_error": "bad_request",
}


def reason_code_for(status: int | None, code: str | None) -> str:
    """The `REASONS` key for a provider's error `code` and HTTP `status` (either may be missing)."""
    if code in _CODE_REASONS:
        return _CODE_REASONS[code]
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "unauthorized"
    if status is not None and status >= 500:
        return "unavailable"
    if status is not None and 400 <= status < 500:
        return "bad_request"
    return "internal"


class ProviderError(Exception):
    """The provider failed the turn.

    `reason_code`: a key of `REASONS` (given, or read from `status` and `code`); `reason` and
    `str(error)`: its user-facing text from our table; `upstream_message`: the provider's (or our
    transport's) own words, for the log only; `status`: the provider's HTTP status; `code`: its error
    code; `conversation_gone`: the provider no longer knows the conversation the turn continued
    (Dify's 404 "Conversation Not Exists." or 400 `conversation_completed`): start a new one."""

    def __init__(
        self,
        upstream_message: str = "",
        status: int | None = None,
        code: str | None = None,
        *,
        reason_code: str | None = None,
    ) -> None:
        if reason_code is None:
            reason_code = reason_code_for(status, code)
        elif reason_code not in REASONS:
            raise ValueError(f"unknown provider error reason_code {reason_code!r}")
        self.reason_code = reason_code
        self.upstream_message = upstream_message or self.reason
        self.status = status
        self.code = code
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """The short English text users see: from our table, never the provider's words."""
        return REASONS[self.reason_code]

    @property
    def context_too_long(self) -> bool:
        """The model refused the prompt as longer than its window."""
        return self.reason_code == "context_too_long"

    @property
    def conversation_gone(self) -> bool:
        """The provider lost the conversation: clear its id and start a new one (never retried here)."""
        return self.reason_code == "conversation_gone"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.reason_code!r}, status={self.status!r}, code={self.code!r}, "
            f"upstream_message={self.upstream_message!r})"
        )


_TOKEN_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def normalize_usage(usage: Any) -> dict | None:
    """A provider's usage as `{"prompt_tokens", "completion_tokens", "total_tokens", "total_price",
    "currency", "latency"}`, keeping only what it sent in a usable form: tokens as ints, the price as
    the decimal string it gave (Dify: `"0.0000150"`), the currency as a string, latency as float
    seconds. None when nothing usable is left."""
    if not isinstance(usage, Mapping):
        return None
    out: dict[str, Any] = {}
    for key in _TOKEN_KEYS:
        tokens = _number(usage.get(key))
        if tokens is not None and tokens >= 0:
            out[key] = int(tokens)
    price = usage.get("total_price")
    if isinstance(price, str | int | float) and not isinstance(price, bool):
        try:
            decimal = Decimal(str(price).strip())
        except InvalidOperation:
            decimal = None
        if decimal is not None and decimal.is_finite():
            out["total_price"] = price.strip() if isinstance(price, str) else str(decimal)
    currency = usage.get("currency")
    if isinstance(currency, str) and currency.strip():
        out["currency"] = currency.strip()
    latency = _number(usage.get("latency"))
    if latency is not None and latency >= 0:
        out["latency"] = float(latency)
    return out or None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return None


class Stream(Protocol):
    """One turn's reply: iterate it in one thread; `cancel`/`stop` may come from any other."""

    def __iter__(self) -> Iterator[Event]: ...

    @property
    def cancelled(self) -> bool: ...

    def cancel(self) -> None:
        """End iteration promptly without error and drop the connection; the provider is not told."""

    def stop(self) -> bool:
        """Cancel, and ask the provider to stop generating (Dify); True when it acknowledged."""

    def close(self) -> None:
        """Release the connection; call it from the iterating thread (or use `with`)."""

    def __enter__(self) -> Stream: ...

    def __exit__(self, *exc_info: object) -> None: ...


class Provider(Protocol):
    """An AI backend chosen by `AI_PROVIDER`."""

    name: str

    def start(self, turn: TurnRequest) -> Stream:
        """A stream for this turn; no network call happens until it is iterated."""

    def close(self) -> None:
        """Release pooled connections (at shutdown, and in tests)."""

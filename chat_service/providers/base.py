"""The provider interface: a turn goes in, a cancellable stream of reply events comes out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class TurnRequest:
    """What a provider needs for one turn: who asks, what, and the context to continue."""

    user_id: str
    query: str
    history: list[dict] = field(default_factory=list)  # [{"role", "content"}], oldest first
    conversation_id: str | None = None  # Dify's conversation to continue; None starts one
    trace_id: str | None = None


@dataclass(frozen=True)
class Delta:
    """The next piece of the reply: append it."""

    text: str


@dataclass(frozen=True)
class Replace:
    """The whole reply so far is replaced by `text` (Dify's `message_replace`, e.g. moderation)."""

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
    """The reply is complete; `usage` is the provider's token accounting when it sends one."""

    usage: dict | None = None


Event = Delta | Replace | Linked | Started | Finished


class ProviderError(Exception):
    """The provider failed the turn; `reason` is its own message, fit for the user's error frame."""

    def __init__(self, reason: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code

    def __repr__(self) -> str:
        return f"ProviderError({self.reason!r}, status={self.status!r}, code={self.code!r})"


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

"""The offline default: the user's own text streamed back in pieces, slowly enough to watch."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from chat_service.providers.base import Delta, Event, Finished, TurnRequest

_WORDS = re.compile(r"\s*\S+\s*|\s+")
_MIN_PIECES = 4


def pieces(text: str) -> list[str]:
    """`text` cut into several pieces that join back to it: words, or equal slices for short texts."""
    words = _WORDS.findall(text)
    if len(words) >= _MIN_PIECES:
        return words
    size = max(1, len(text) // _MIN_PIECES)
    return [text[i : i + size] for i in range(0, len(text), size)]


class EchoStream:
    """Pieces of the query, one every `delay` seconds; `cancel` ends it between pieces at once."""

    def __init__(self, text: str, delay: float) -> None:
        self._pieces = pieces(text)
        self._delay = delay
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def __iter__(self) -> Iterator[Event]:
        for piece in self._pieces:
            # With no delay, no wait: under gevent even `wait(0)` arms a timer and yields.
            if self._cancel.wait(self._delay) if self._delay > 0 else self._cancel.is_set():
                return
            yield Delta(piece)
        if not self.cancelled:
            yield Finished(None)

    def __enter__(self) -> EchoStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def cancel(self) -> None:
        self._cancel.set()

    def stop(self) -> bool:
        """Cancel; there is no upstream to tell."""
        self.cancel()
        return False

    def close(self) -> None:
        """Nothing to release."""


class EchoProvider:
    """`AI_PROVIDER=echo`: no network, so `make run` streams replies out of the box."""

    name = "echo"

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EchoProvider:
        """The provider with `ECHO_DELAY_SECONDS` between pieces."""
        return cls(float(config.get("ECHO_DELAY_SECONDS", 0.05)))

    def start(self, turn: TurnRequest) -> EchoStream:
        return EchoStream(turn.query, self.delay)

    def close(self) -> None:
        """Nothing to release."""

"""A provider's stream read by a reader of its own, and handed to the turn in batches: each batch is
every event that arrived while the turn was relaying the one before, taken without waiting for more.

A provider slower than the relay (a model generating tokens one by one) gives one batch per event, as
soon as it arrives. A provider faster than the relay (a burst of events in one network read, a fast
local model, the echo provider with no delay) gives a few batches of many events, which the turn sends
as a few larger deltas instead of one frame per token: a frame costs a send per socket whatever its
size. Nothing is held back to wait for more, so no delta is later than it would have been alone: the
reader yields at least every `MAX_HOLD_SECONDS`, so a batch cannot grow while the relay waits for it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType

from chat_service.live.background import Running, spawn
from chat_service.providers.base import Event, Stream
from shared.tracing import bound_trace_id

MAX_HOLD_SECONDS = 0.01  # the longest the reader runs without letting the relay take what it read


class Arrivals:
    """Iterate once, from the turn's thread: lists of events, in order; the stream's failure is raised
    after the events that came before it. Leaving the `with` block cancels a stream still being read
    and waits for its reader, which closes the stream."""

    def __init__(self, stream: Stream, *, trace_id: str, name: str = "provider-reader") -> None:
        self._stream = stream
        self._trace_id = trace_id
        self._name = name
        self._events: deque[Event] = deque()
        self._ready = threading.Event()
        self._done = False
        self._error: BaseException | None = None
        self._reader: Running | None = None

    def __enter__(self) -> Arrivals:
        self._reader = spawn(self._read, self._name)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._done:
            self._stream.cancel()
        if self._reader is not None:
            self._reader.join()

    def __iter__(self) -> Iterator[list[Event]]:
        while True:
            self._ready.wait()
            self._ready.clear()
            done = self._done  # read first: every event appended before the reader ended is taken below
            batch: list[Event] = []
            while self._events:
                batch.append(self._events.popleft())
            if batch:
                yield batch
            if done:
                if self._error is not None:
                    raise self._error
                return

    def _read(self) -> None:
        try:
            with bound_trace_id(self._trace_id), self._stream:
                held_since = time.monotonic()
                for event in self._stream:
                    self._events.append(event)
                    self._ready.set()
                    if time.monotonic() - held_since >= MAX_HOLD_SECONDS:
                        time.sleep(0)  # under gevent the relay runs only when this reader lets it
                        held_since = time.monotonic()
        except BaseException as error:  # the turn raises it in its own thread, after what came before
            self._error = error
        finally:
            self._done = True
            self._ready.set()

"""64-bit snowflake ids: 41 bits of milliseconds since EPOCH_MS, 10 bits of worker id, 12 of sequence.

Ids from one generator strictly increase. Two processes never collide while their worker ids differ:
the id is `SNOWFLAKE_WORKER_ID` when configured, else derived from the host name and the process id
(consecutive pids, as a server's workers get, map to different worker ids). The generator notices a
fork and starts afresh in the child, so a forked worker never repeats its parent's ids.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib
from collections.abc import Callable

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z; 41 bits of milliseconds last until 2093
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER_ID = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_TIMESTAMP = (1 << (63 - WORKER_BITS - SEQUENCE_BITS)) - 1
MAX_BACKWARDS_MS = 50  # a clock stepped back this far is waited out; further back refuses


class ClockMovedBackwards(RuntimeError):
    """The wall clock went back further than the generator is willing to wait."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def derive_worker_id(hostname: str | None = None, pid: int | None = None) -> int:
    """A worker id for this process: the host name's hash plus the pid, modulo 1024."""
    host = socket.gethostname() if hostname is None else hostname
    return (zlib.crc32(host.encode()) + (os.getpid() if pid is None else pid)) & MAX_WORKER_ID


def parse_worker_id(value: str | int | None) -> int | None:
    """The configured worker id (None when unset); outside 0..1023 is a configuration error."""
    if value is None or value == "":
        return None
    worker_id = int(value)
    if not 0 <= worker_id <= MAX_WORKER_ID:
        raise ValueError(f"SNOWFLAKE_WORKER_ID must be between 0 and {MAX_WORKER_ID}, not {worker_id}")
    return worker_id


class Snowflake:
    """A thread-safe id generator; `worker_id=None` derives one per process."""

    def __init__(
        self,
        worker_id: int | None = None,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        sleep: Callable[[float], None] = time.sleep,
        max_backwards_ms: int = MAX_BACKWARDS_MS,
    ) -> None:
        if worker_id is not None and not 0 <= worker_id <= MAX_WORKER_ID:
            raise ValueError(f"worker_id must be between 0 and {MAX_WORKER_ID}")
        self._configured = worker_id
        self._clock = clock
        self._sleep = sleep
        self._max_backwards_ms = max_backwards_ms
        self._lock = threading.Lock()
        self._start_in_this_process()
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        with self._lock:
            if self._pid != os.getpid():
                self._start_in_this_process()
            now = self._tick()
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & MAX_SEQUENCE
                if self._sequence == 0:  # 4096 ids this millisecond: wait for the next one
                    now = self._wait_past(self._last_ms)
            else:
                self._sequence = 0
            self._last_ms = now
            return (now << (WORKER_BITS + SEQUENCE_BITS)) | (self.worker_id << SEQUENCE_BITS) | self._sequence

    def _start_in_this_process(self) -> None:
        """Take this process's worker id (at creation, and again in a forked child)."""
        self._pid = os.getpid()
        self.worker_id = self._configured if self._configured is not None else derive_worker_id()

    def _tick(self) -> int:
        """Milliseconds since EPOCH_MS, never before the last id's (a small step back is waited out)."""
        now = self._clock() - EPOCH_MS
        if now < self._last_ms:
            behind = self._last_ms - now
            if behind > self._max_backwards_ms:
                raise ClockMovedBackwards(f"clock moved back {behind} ms; refusing to generate ids")
            now = self._wait_past(self._last_ms - 1)
        if not 0 <= now <= MAX_TIMESTAMP:
            raise ClockMovedBackwards(f"clock is outside the id range ({now} ms since the epoch)")
        return now

    def _wait_past(self, last_ms: int) -> int:
        now = self._clock() - EPOCH_MS
        while now <= last_ms:
            self._sleep((last_ms - now + 1) / 1000 if now < last_ms else 0.0001)
            now = self._clock() - EPOCH_MS
        return now


def parts(snowflake_id: int) -> tuple[int, int, int]:
    """(epoch milliseconds, worker id, sequence) of an id."""
    timestamp = (snowflake_id >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS
    return timestamp, (snowflake_id >> SEQUENCE_BITS) & MAX_WORKER_ID, snowflake_id & MAX_SEQUENCE

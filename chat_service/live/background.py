"""Work that runs beside the caller: a greenlet under gevent, else a thread."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Protocol


class Running(Protocol):
    def join(self, timeout: float | None = None) -> object: ...


def spawn(work: Callable[[], object], name: str) -> Running:
    """Start `work` now. Under gevent a greenlet: cheap, and the caller does not wait for it to run
    (`Thread.start` waits for the new thread, which for a frame to 1,000 sockets is 1,000 switches)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        return gevent.spawn(work)
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread

"""Admission control: a bound on the requests in flight in one worker, sized to its database pool.

Without it, a gevent worker under more requests than its pool has connections starts them all; each
takes a connection on its first query and keeps it to its teardown, the rest queue inside the pool,
and those that wait longer than the pool's timeout (5 s) answer 503 after the fact
(bench/mixed_load.py on PostgreSQL: 198 and 341 in two 60 s runs). Here a request waits for a slot
after its blueprint's own checks and before its view (`ADMISSION_MAX_IN_FLIGHT`, default
`DB_POOL_SIZE + DB_MAX_OVERFLOW`), so an admitted request finds a connection free, and one that waits
`ADMISSION_TIMEOUT_SECONDS` answers 503 (12001) with `Retry-After` without ever having held a
connection (0 in the same runs).

Slots are handed over first come, first served. A request's body is read before it waits, so a client
that trickles its body holds no slot (and under gevent gets a 408 after REQUEST_BODY_TIMEOUT_SECONDS).
Not admitted (they never queue): the probes and `/metrics` (a busy worker must still answer them),
`/openapi.json`, paths no route matches, and the blueprints a service names (chat_service's
WebSocket: a socket holds no connection while open, it queries once to check its session, and a slot
held for the socket's life would starve REST). The slot is released after the request's database
session was removed (`appcontext_tearing_down` is sent after every `teardown_appcontext` function).
Works alike under gevent (patched `threading`: the waits are greenlet waits) and gthread.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from collections.abc import Iterable

from flask import Flask, appcontext_tearing_down, current_app, g, request
from werkzeug.exceptions import RequestTimeout

from shared.errors import DatabaseUnavailable

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
EXEMPT_BLUEPRINTS = frozenset({"health", "metrics"})
_KEY = "shared.admission"
log = logging.getLogger(__name__)


class ServiceBusy(DatabaseUnavailable):
    """No slot came free in time: try again after `retry_after` seconds (503, 12001, `Retry-After`)."""

    def __init__(self, retry_after: int) -> None:
        detail = f"the service is busy: retry after {retry_after} s"
        super().__init__(detail, data={"detail": detail, "retry_after": retry_after})
        self.headers = {"Retry-After": str(retry_after)}


class Slots:
    """A counting semaphore that hands a freed slot to the longest waiter (no barging)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._lock = threading.Lock()
        self._waiters: collections.deque[threading.Event] = collections.deque()

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting up to `timeout` seconds; False when none came free."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            waiter = threading.Event()
            self._waiters.append(waiter)
        if waiter.wait(timeout):
            return True
        with self._lock:
            if waiter.is_set():  # handed over just as the wait ended
                return True
            self._waiters.remove(waiter)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes straight to the first waiter
            else:
                self._free += 1

    @property
    def in_flight(self) -> int:
        return self.size - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)


class Admission:
    """The worker's slots and how long a request may wait for one."""

    def __init__(self, max_in_flight: int, timeout: float, retry_after: int) -> None:
        self.slots = Slots(max_in_flight)
        self.timeout = timeout
        self.retry_after = retry_after

    def admit(self) -> None:
        """Take a slot for this request or refuse it with `ServiceBusy`."""
        if not self.slots.acquire(self.timeout):
            log.warning(
                "request not admitted: no slot came free",
                extra={"waited_s": self.timeout, "in_flight": self.slots.in_flight},
            )
            raise ServiceBusy(self.retry_after)
        g._admission_slot = self


def current() -> Admission | None:
    """The app's admission control, or None when it is off (`ADMISSION_MAX_IN_FLIGHT=0`)."""
    return current_app.extensions.get(_KEY)


def _needs_slot() -> bool:
    return not ("_admission_slot" in g or request.path in EXEMPT_PATHS or request.url_rule is None)


def _read_body() -> None:
    """The whole body, before the request waits (at most MAX_CONTENT_LENGTH bytes). Under gevent it must
    arrive within REQUEST_BODY_TIMEOUT_SECONDS, else 408: gunicorn itself has no body timeout, and a
    client trickling a body would keep its connection for as long as it likes."""
    seconds = current_app.config["REQUEST_BODY_TIMEOUT_SECONDS"]
    if seconds <= 0 or not _gevent_patched():
        request.get_data(cache=True)
        return
    import gevent

    with gevent.Timeout(seconds, RequestTimeout(f"the request body did not arrive within {seconds:g} s")):
        request.get_data(cache=True)


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


def _admit() -> None:
    admission = current()
    if admission is None or not _needs_slot():
        return
    if request.content_length or request.headers.get("Transfer-Encoding"):
        _read_body()
    admission.admit()


def _release(_app: Flask, **_extra) -> None:
    admission = g.pop("_admission_slot", None)
    if admission is not None:
        admission.slots.release()


def init_app(app: Flask, *, unadmitted: Iterable[str] = ()) -> None:
    """Admit each request of `app`'s blueprints after the blueprint's own checks (token, rate limits:
    a request they refuse never queues), but those of the blueprints named in `unadmitted` (e.g. the
    WebSocket's). Call it after every blueprint is registered."""
    size = app.config["ADMISSION_MAX_IN_FLIGHT"]
    if size <= 0:
        return
    app.extensions[_KEY] = Admission(
        size, app.config["ADMISSION_TIMEOUT_SECONDS"], app.config["ADMISSION_RETRY_AFTER_SECONDS"]
    )
    for name in app.blueprints:  # a blueprint's hooks run after the app's and in their order: last
        if name not in EXEMPT_BLUEPRINTS and name.split(".")[0] not in unadmitted:
            app.before_request_funcs.setdefault(name, []).append(_admit)
    appcontext_tearing_down.connect(_release, app, weak=False)

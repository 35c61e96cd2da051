"""Per-user rate limits: how much one user may ask of a service in a window of time.

Each limit is a rule in the `limits` library's notation (`"600/minute"`, `"20 per minute"`,
`"100000/day"`; empty, `0` or `off` turns it off), counted per user in a sliding window: in Redis
when `REDIS_URL` is set, so every worker and instance shares one count, else in the process. A Redis
that fails is left for the process's own count for `FALLBACK_SECONDS`, so a Redis outage neither fails
requests nor slows each one by a timeout.

Rules by name (each service reads the ones it has; `RATE_LIMITS=false` turns them all off):
- `requests` (`LIMIT_REQUESTS`): REST requests per user, every authenticated route (`limit_requests`,
  a blueprint's `before_request` after authentication; a service token counts for the user it acts for);
- `sessions_created`, `records_created`, `turns`, `tokens`: named by the code that spends them
  (`@limited("sessions_created")`, `current().hit("turns", user)`).

A refusal is `TooManyRequests` (429 in the envelope, `data.retry_after` and `data.limit`, a
`Retry-After` header) and every counted answer carries the IETF `RateLimit-Policy` and `RateLimit`
headers (draft-ietf-httpapi-ratelimit-headers).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Flask, Response, current_app, g
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from limits.util import WindowStats

from shared.errors import TooManyRequests

log = logging.getLogger(__name__)

_KEY = "shared.rate_limits"
OFF_WORDS = ("", "0", "off", "false", "none", "no")
FALLBACK_SECONDS = 5.0


def parse_rule(name: str, value: str | None) -> RateLimitItem | None:
    """A setting's rule, or None when it is off; a rule that does not parse fails at startup."""
    text = (value or "").strip().lower()
    if text in OFF_WORDS:
        return None
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a rate such as '600/minute' or 'off'") from None


@dataclass(frozen=True)
class Count:
    """Where a user stands against one rule after a request was counted."""

    name: str
    rule: RateLimitItem
    remaining: int
    reset_after: int  # seconds until the window lets at least one more through

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"{self.name}";q={self.rule.amount};w={self.rule.get_expiry()}',
            "RateLimit": f'"{self.name}";r={self.remaining};t={self.reset_after}',
        }


class RateLimits:
    """The app's rules and their counts."""

    def __init__(
        self,
        rules: Mapping[str, RateLimitItem | None],
        redis_url: str = "",
        *,
        timeout: float = 1.0,
        key_prefix: str = "limits",
    ) -> None:
        self.rules = {name: rule for name, rule in rules.items() if rule is not None}
        self._local = ProcessCounts()
        self._shared = None
        if redis_url and self.rules:
            storage = storage_from_string(
                redis_url,
                key_prefix=key_prefix,
                wrap_exceptions=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            self._shared = SlidingWindowCounterRateLimiter(storage)
        self._shared_down_until = 0.0
        self._lock = threading.Lock()

    def enabled(self, name: str) -> bool:
        return name in self.rules

    def hit(self, name: str, user_id: str, cost: int = 1) -> Count | None:
        """Count `cost` against the user's `name` rule; 429 when it would go over (nothing is counted
        then). None when the rule is off."""
        rule = self.rules.get(name)
        if rule is None:
            return None
        allowed = self._run(lambda limiter: limiter.hit(rule, name, user_id, cost=cost))
        count = self._count(rule, name, user_id)
        if not allowed:
            raise TooManyRequests(
                retry_after=max(1, count.reset_after),
                limit=str(rule),
                name=name,
                headers=count.headers(),
            )
        return count

    def spend(self, name: str, user_id: str, cost: int) -> None:
        """Count what was already used (e.g. tokens a reply took), even past the limit: the next
        `check` refuses then."""
        rule = self.rules.get(name)
        if rule is None or cost <= 0:
            return
        if not self._run(lambda limiter: limiter.hit(rule, name, user_id, cost=cost)):
            # Over the rule: fill the window, so it stays refused until it slides on.
            self._run(lambda limiter: limiter.hit(rule, name, user_id, cost=self._left(rule, name, user_id)))

    def forget(self, user_id: str) -> None:
        """Clear every count of the user (an erased account starts afresh), shared and in-process."""
        for name, rule in self.rules.items():
            self._local.clear(rule, name, user_id)
            if self._shared is not None:
                self._shared.clear(rule, name, user_id)

    def check(self, name: str, user_id: str) -> None:
        """429 when the user has nothing left of `name` (counting nothing)."""
        rule = self.rules.get(name)
        if rule is None:
            return
        count = self._count(rule, name, user_id)
        if count.remaining <= 0:
            raise TooManyRequests(
                retry_after=max(1, count.reset_after), limit=str(rule), name=name, headers=count.headers()
            )

    def close(self) -> None:
        for limiter in (self._shared, self._local):
            storage = getattr(limiter, "storage", None)
            timer = getattr(storage, "timer", None)
            if timer is not None:
                timer.cancel()

    # -- storage ----------------------------------------------------------------------------------------

    def _left(self, rule: RateLimitItem, name: str, user_id: str) -> int:
        return max(0, self._count(rule, name, user_id).remaining)

    def _count(self, rule: RateLimitItem, name: str, user_id: str) -> Count:
        stats = self._run(lambda limiter: limiter.get_window_stats(rule, name, user_id))
        reset_after = max(0, math.ceil(stats.reset_time - time.time()))
        return Count(name, rule, max(0, stats.remaining), reset_after)

    def _run(self, work: Callable[[Limiter], Any]) -> Any:
        """`work` on the shared (Redis) counts while they answer, else on this process's own."""
        if self._shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                return work(self._shared)
            except StorageError as error:
                with self._lock:
                    self._shared_down_until = time.monotonic() + FALLBACK_SECONDS
                log.warning(
                    "rate limits: Redis failed, counting in this process for %.0f s: %s",
                    FALLBACK_SECONDS,
                    error.storage_error.__class__.__name__,
                )
        return work(self._local)


class ProcessCounts:
    """The `limits` library's sliding window counter, counted in this process, with the same arithmetic
    (a window's count weighted by how much of it is still inside the rule's period, plus the current
    window's) and the same answers (tests/shared/test_rate_limits.py holds the two equal).

    The library's MemoryStorage started a timer thread every 10 ms to expire its keys and took a lock
    per key per call: 12 % of a GET-session request under gevent (py-spy, bench/rest_overhead.py).
    Here two windows per key live in one dict entry, expired as they are read; a sweep every
    SWEEP_EVERY hits drops the keys of users no longer seen, so memory follows the active users."""

    SWEEP_EVERY = 10_000

    def __init__(self) -> None:
        # key -> [the current window's index, its count, the previous window's count, the period]
        self._windows: dict[str, list] = {}
        self._lock = threading.Lock()
        self._hits = 0

    def _entry(self, key: str, expiry: int, now: float) -> list:
        """The key's entry moved on to the window of `now` (the library's window keys, as it computes
        them: `int(now / expiry)` and `int((now - expiry) / expiry)`)."""
        index, before = int(now / expiry), int((now - expiry) / expiry)
        entry = self._windows.get(key)
        if entry is None:
            entry = self._windows[key] = [index, 0, 0, expiry]
        elif entry[0] != index:
            entry[2] = entry[1] if entry[0] == before else 0
            entry[0], entry[1] = index, 0
        return entry

    @staticmethod
    def _previous_ttl(previous: int, expiry: int, now: float) -> float:
        return (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        if cost > item.amount:
            return False
        expiry, key, now = item.get_expiry(), item.key_for(*identifiers), time.time()
        with self._lock:
            entry = self._entry(key, expiry, now)
            weighted = entry[2] * self._previous_ttl(entry[2], expiry, now) / expiry + entry[1]
            if math.floor(weighted) + cost > item.amount:
                return False
            entry[1] += cost
            self._hits += 1
            if self._hits % self.SWEEP_EVERY == 0:
                self._sweep(now)
        return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        expiry, key, now = item.get_expiry(), item.key_for(*identifiers), time.time()
        with self._lock:
            entry = self._entry(key, expiry, now)
            previous, current = entry[2], entry[1]
        previous_ttl = self._previous_ttl(previous, expiry, now)
        remaining = max(0, item.amount - math.floor(previous * previous_ttl / expiry + current))
        if not (previous or current):
            return WindowStats(now, remaining)
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        previous_reset_in = previous_ttl % (expiry / previous) if previous else math.inf
        current_reset_in = current_ttl % expiry if current else math.inf
        return WindowStats(now + min(previous_reset_in, current_reset_in), remaining)

    def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        with self._lock:
            self._windows.pop(item.key_for(*identifiers), None)

    def _sweep(self, now: float) -> None:
        """Drop the entries whose two windows have both ended: they count nothing any more."""
        stale = [
            key for key, (index, _, _, expiry) in self._windows.items() if int(now / expiry) - index >= 2
        ]
        for key in stale:
            del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)


Limiter = SlidingWindowCounterRateLimiter | ProcessCounts


def init_app(app: Flask, rules: Mapping[str, str]) -> RateLimits:
    """The app's limits from `rules` (name -> setting name); all off with RATE_LIMITS false."""
    config = app.config
    on = config.get("RATE_LIMITS", True)
    parsed = {
        name: parse_rule(setting, config.get(setting)) if on else None for name, setting in rules.items()
    }
    limits = RateLimits(
        parsed,
        config.get("REDIS_URL", ""),
        timeout=float(config.get("REDIS_TIMEOUT_SECONDS", 1)),
        key_prefix=f"{config.get('LIMITS_KEY_PREFIX', 'limits')}:{config.get('SERVICE_NAME', 'service')}",
    )
    app.extensions[_KEY] = limits
    app.after_request(_add_headers)
    return limits


def of(app: Flask) -> RateLimits:
    return app.extensions[_KEY]


def current() -> RateLimits:
    return of(current_app)


def limit_requests() -> None:
    """`before_request` of an authenticated blueprint (after authentication): count the request."""
    count = current().hit("requests", g.user_id)
    if count is not None:
        g.rate_limit = count


def limited(name: str) -> Callable:
    """A view that spends one of the user's `name` rule before it runs (429 when none is left)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            current().hit(name, g.user_id)
            return view(*args, **kwargs)

        return wrapper

    return decorator


def _add_headers(response: Response) -> Response:
    count = g.get("rate_limit")
    if count is not None:
        for header, value in count.headers().items():
            response.headers.setdefault(header, value)
    return response

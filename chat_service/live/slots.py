"""Per-user limits on things open at once: AI turns in flight (`LIMIT_TURNS_IN_FLIGHT`) and open
sockets (`LIMIT_SOCKETS`).

Each user's holders are a Redis sorted set `<LIMITS_KEY_PREFIX>:chat_service:<kind>:<user>` scored
by when each expires (Redis's clock), shared by every instance; this process refreshes its own
holders every third of `TTL_SECONDS`, so the slots of a worker that dies are free again within that
time. Without Redis, or while the bus says it is down, the process counts its own holders alone.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

from shared.errors import TooManyRequests

if TYPE_CHECKING:
    from chat_service.live.bus import Bus

log = logging.getLogger(__name__)

TTL_SECONDS = 30.0
RETRY_AFTER_SECONDS = 1

# KEYS: the user's set; ARGV: member, limit, ttl ms. Drop expired holders, then take a slot if one is free.
_ACQUIRE = """
local now = redis.call('time')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('zremrangebyscore', KEYS[1], '-inf', ms)
if not redis.call('zscore', KEYS[1], ARGV[1]) and redis.call('zcard', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('zadd', KEYS[1], ms + tonumber(ARGV[3]), ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[3])
return 1
"""
# KEYS: sets; ARGV: ttl ms, then one member per key. Push each holder's expiry on.
_REFRESH = """
local now = redis.call('time')
local expires = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('zadd', key, 'XX', expires, ARGV[i + 1]) redis.call('pexpire', key, ARGV[1])
end
return #KEYS
"""


class Slots:
    """At most `limit` holders per user of one `kind` (0: no limit)."""

    def __init__(
        self, bus: Bus, kind: str, limit: int, *, key_prefix: str = "limits", ttl: float = TTL_SECONDS
    ) -> None:
        self.kind = kind
        self._key_prefix = f"{key_prefix}:chat_service:{kind}:"
        self.limit = limit
        self._bus = bus
        self._ttl_ms = int(ttl * 1000)
        self._held: dict[str, set[str]] = defaultdict(set)  # this process's holders, per user
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._acquire_script = self._refresh_script = None
        if bus.configured and limit > 0:
            self._acquire_script = bus.script(_ACQUIRE)
            self._refresh_script = bus.script(_REFRESH)
            threading.Thread(target=self._beat, name=f"slots-{kind}", daemon=True).start()

    def acquire(self, user_id: str, holder: str) -> None:
        """Take a slot for `holder` (a turn or socket id), or 429 when the user holds `limit` already."""
        if self.limit <= 0:
            return
        with self._lock:
            mine = self._held[user_id]
            if len(mine) >= self.limit and holder not in mine:
                self._refuse()
            mine.add(holder)
        taken = True
        if self._acquire_script is not None:
            key = self._key(user_id)
            args = [holder, self.limit, self._ttl_ms]
            taken = bool(
                self._bus.call(lambda redis: self._acquire_script(keys=[key], args=args, client=redis), 1)
            )
        if not taken:
            self._forget(user_id, holder)
            self._refuse()

    def release(self, user_id: str, holder: str) -> None:
        if self.limit <= 0:
            return
        self._forget(user_id, holder)
        if self._acquire_script is not None:
            key = self._key(user_id)
            self._bus.call(lambda redis: redis.zrem(key, holder), None)

    def held(self, user_id: str) -> int:
        """How many slots this process holds for the user."""
        with self._lock:
            return len(self._held.get(user_id, ()))

    def close(self) -> None:
        self._stopped.set()

    def _refuse(self) -> None:
        limit = f"{self.limit} at once"
        raise TooManyRequests(retry_after=RETRY_AFTER_SECONDS, limit=limit, name=self.kind)

    def _forget(self, user_id: str, holder: str) -> None:
        with self._lock:
            mine = self._held.get(user_id)
            if mine is not None:
                mine.discard(holder)
                if not mine:
                    del self._held[user_id]

    def _key(self, user_id: str) -> str:
        return self._key_prefix + user_id

    def _beat(self) -> None:
        while not self._stopped.wait(self._ttl_ms / 3000):
            try:
                self._refresh()
            except Exception:
                log.exception("refreshing %s slots failed", self.kind)

    def _refresh(self) -> None:
        """Push this process's holders' expiry on, in one call."""
        with self._lock:
            pairs = [(self._key(user), holder) for user, holders in self._held.items() for holder in holders]
        if pairs:
            keys, args = [key for key, _ in pairs], [self._ttl_ms, *(holder for _, holder in pairs)]
            self._bus.call(lambda redis: self._refresh_script(keys=keys, args=args, client=redis), None)

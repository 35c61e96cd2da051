"""Fan-out: every frame of a session reaches every socket open on it, in this process or, with
`REDIS_URL`, in every worker and instance through Redis pub/sub.

A frame is serialised once per publish, not once per socket. Frames whose type starts with `_` are
control messages (a `stop` for a turn running elsewhere): they reach the hub's control handlers,
never a socket. When Redis is unreachable, publishing degrades to this process and says so in the log.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "chat:session:"
GOING_AWAY = "_going_away"  # a Frame type only this process's sockets see, at shutdown


@dataclass(frozen=True)
class Frame:
    """One server frame: its type, its turn sequence number (deltas), and its JSON text."""

    session_id: str
    type: str
    text: str
    seq: int | None = None


@dataclass(eq=False)
class Subscription:
    """One socket's inbox of frames."""

    session_id: str
    inbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)

    def get(self, timeout: float | None = None) -> Frame | None:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None


ControlHandler = Callable[[str, dict[str, Any]], None]


class Hub:
    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._control_handlers: list[ControlHandler] = []
        self._bridge: RedisBridge | None = None

    def init_app(self, app: Flask) -> None:
        app.extensions["hub"] = self
        if app.config.get("REDIS_URL"):
            self._bridge = RedisBridge(app.config["REDIS_URL"], self._deliver)

    @property
    def redis(self):
        """The Redis client when `REDIS_URL` is set, whatever its state."""
        return self._bridge.redis if self._bridge else None

    @property
    def live_redis(self):
        """The Redis client while fan-out spans instances (the listener is subscribed), else None: callers
        then keep to this process instead of waiting on a Redis that is down or not yet listened to."""
        return self._bridge.redis if self._bridge and self._bridge.subscribed else None

    def check_redis(self) -> None:
        """Readiness: Redis answers, and this process's listener is subscribed to it."""
        self._bridge.redis.ping()
        if not self._bridge.subscribed:
            raise ConnectionError("the fan-out listener is not subscribed to Redis yet")

    def subscribe(self, session_id: str) -> Subscription:
        subscription = Subscription(session_id)
        with self._lock:
            self._subscriptions.setdefault(session_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscriptions.get(subscription.session_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[subscription.session_id]

    def subscriber_count(self, session_id: str | None = None) -> int:
        with self._lock:
            if session_id is not None:
                return len(self._subscriptions.get(session_id, ()))
            return sum(len(s) for s in self._subscriptions.values())

    def on_control(self, handler: ControlHandler) -> None:
        self._control_handlers.append(handler)

    def publish(self, session_id: str, payload: dict[str, Any]) -> None:
        """Send `payload` (a frame with a `type`) to every socket of the session, everywhere."""
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        if self._bridge is not None and self._bridge.publish(session_id, text):
            return
        self._deliver(session_id, text, payload)

    def _deliver(self, session_id: str, text: str, payload: dict[str, Any] | None = None) -> None:
        if payload is None:
            payload = json.loads(text)
        kind = payload.get("type", "")
        if kind.startswith("_"):
            for handler in self._control_handlers:
                handler(session_id, payload)
            return
        seq = (payload.get("data") or {}).get("seq") if isinstance(payload.get("data"), dict) else None
        frame = Frame(session_id, kind, text, seq)
        with self._lock:
            subscribers = list(self._subscriptions.get(session_id, ()))
        for subscription in subscribers:
            subscription.inbox.put(frame)

    def going_away(self) -> None:
        """Tell every socket of this process that the server is shutting down (they close with 1001)."""
        with self._lock:
            subscribers = [s for group in self._subscriptions.values() for s in group]
        for subscription in subscribers:
            subscription.inbox.put(Frame(subscription.session_id, GOING_AWAY, ""))

    def close(self) -> None:
        if self._bridge is not None:
            self._bridge.close()


class RedisBridge:
    """Publishes to Redis and delivers what any instance published back to this process's sockets."""

    RECONNECT_DELAY_SECONDS = 1.0

    def __init__(self, url: str, deliver: Callable[[str, str], None]) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One retry (a pooled connection the server closed), not redis-py's ten with backoff: while Redis
        # is down each call fails in one connect attempt, and the bridge stops calling it (below).
        self.redis = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 1)
        )
        self._deliver = deliver
        self._stopped = threading.Event()
        self._degraded = False
        self._listening = threading.Event()
        # Set while the listener is subscribed: only then does a frame published to Redis come back to
        # this process's sockets. Cleared when the listener or a publish loses Redis; set again only by
        # the listener, once subscribed again.
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="hub-redis-listener", daemon=True)
        self._thread.start()
        self._listening.wait(timeout=3)

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def publish(self, session_id: str, text: str) -> bool:
        """True once Redis took the frame; False (deliver locally) while it is unreachable."""
        import redis

        if not self._subscribed.is_set():
            # Redis is down, or back but not yet listened to: a frame sent there would not reach this
            # process's sockets. Deliver here, without waiting on Redis for every frame.
            self._degrade("the listener is not subscribed")
            return False
        try:
            self.redis.publish(CHANNEL_PREFIX + session_id, text)
        except redis.RedisError as error:
            self._subscribed.clear()  # the listener resubscribes, and says when fan-out spans instances
            self._degrade(error)
            return False
        return True

    def _degrade(self, reason: object) -> None:
        if not self._degraded:
            log.warning("redis unreachable, fan-out is local to this process: %s", reason)
        self._degraded = True

    def _listen(self) -> None:
        import redis

        while not self._stopped.is_set():
            pubsub = self.redis.pubsub()
            try:
                pubsub.psubscribe(CHANNEL_PREFIX + "*")
                # Subscribed once Redis confirms it: from then on, what this process publishes comes back.
                confirmation = pubsub.get_message(timeout=3.0)
                if not confirmation or confirmation["type"] != "psubscribe":
                    raise redis.ConnectionError("no answer to PSUBSCRIBE")
                self._subscribed.set()
                if self._degraded:
                    log.info("redis reachable again, fan-out spans instances")
                    self._degraded = False
                self._listening.set()
                while not self._stopped.is_set() and self._subscribed.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "pmessage":
                        channel = message["channel"].decode()
                        self._deliver(channel[len(CHANNEL_PREFIX) :], message["data"].decode())
            except redis.RedisError as error:
                self._subscribed.clear()
                log.warning("redis listener lost its connection, retrying: %s", error)
                self._listening.set()
                time.sleep(self.RECONNECT_DELAY_SECONDS)
            finally:
                pubsub.close()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=3)
        self.redis.close()

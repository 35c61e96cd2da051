"""The bus: frames of a session reach every instance's hub, and turn control messages every instance's
turns, through Redis pub/sub when `REDIS_URL` is set, else (and while Redis is unreachable) in this
process. The bus alone owns the Redis connection, its subscription and the fallback.

Redis counts as live only while this process's listener is subscribed: only then does a frame published
there come back to this process's own sockets. A silent Redis is noticed within about a second (calls
time out after `REDIS_TIMEOUT_SECONDS`; the listener pings its connection every half second), and
the bus then delivers in-process until the listener is subscribed again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

FRAME_CHANNEL_PREFIX = "chat:session:"
CONTROL_CHANNEL = "chat:turns"
_HEALTH_INTERVAL = 0.5  # silence on the subscription after which the listener pings
_RECONNECT_DELAY = 0.5

T = TypeVar("T")
FrameHandler = Callable[[str, str, "dict | None"], None]  # (session_id, text, payload if already parsed)
ControlHandler = Callable[[dict], None]


class Bus:
    def __init__(self, redis_url: str = "", *, timeout: float = 1.0) -> None:
        self._on_frame: FrameHandler = lambda *_: None
        self._on_control: ControlHandler = lambda _: None
        self._redis = None
        self._timeout = timeout
        self._subscribed = threading.Event()
        self._stopped = threading.Event()
        self._degraded = False
        self._listener: threading.Thread | None = None
        if redis_url:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # One retry (a pooled connection the server closed) and short timeouts: while Redis is down
            # a call fails fast, and the bus stops making them until the listener is subscribed again.
            self._redis = redis.Redis.from_url(
                redis_url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                retry=Retry(NoBackoff(), 1),
            )

    @property
    def configured(self) -> bool:
        """Whether `REDIS_URL` is set, whatever Redis's state."""
        return self._redis is not None

    @property
    def live(self) -> bool:
        """True while frames and control messages span instances."""
        return self._subscribed.is_set()

    def start(self, on_frame: FrameHandler, on_control: ControlHandler) -> None:
        """Deliver what arrives to these handlers; with Redis, start listening (waits up to 3 s for it)."""
        self._on_frame, self._on_control = on_frame, on_control
        if self._redis is not None and self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="bus-listener", daemon=True)
            self._listener.start()
            self._subscribed.wait(timeout=3)

    def publish(
        self,
        session_id: str,
        payload: dict[str, Any],
        *,
        record: Callable[[Any], None] | None = None,
    ) -> None:
        """Send a frame to every socket of the session, on every instance. `record(pipeline)` adds
        commands that must land in Redis with the frame, in the same round trip (a turn's progress)."""
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

        def send(redis) -> bool:
            with redis.pipeline(transaction=record is not None) as pipe:
                if record is not None:
                    record(pipe)
                pipe.publish(FRAME_CHANNEL_PREFIX + session_id, text)
                pipe.execute()
            return True

        if not self.call(send, default=False):
            self._on_frame(session_id, text, payload)

    def deliver_here(self, session_id: str, payload: dict[str, Any]) -> None:
        """Send a frame to this process's sockets of the session only."""
        self._on_frame(session_id, json.dumps(payload, ensure_ascii=False, separators=(",", ":")), payload)

    def control(self, message: dict[str, Any]) -> None:
        """Send a turn control message (`stop`, `started`, `ended`) to every instance, this one included."""
        text = json.dumps(message, separators=(",", ":"))
        if not self.call(lambda redis: redis.publish(CONTROL_CHANNEL, text) or True, default=False):
            self._on_control(message)

    def call(self, work: Callable[[Any], T], default: T) -> T:
        """`work(redis)` while Redis is live; `default` when it is not, or when the call fails."""
        import redis

        if not self._subscribed.is_set():
            if self._redis is not None:
                self._degrade("the listener is not subscribed")
            return default
        try:
            return work(self._redis)
        except redis.RedisError as error:
            self._subscribed.clear()  # the listener resubscribes, and says when Redis is live again
            self._degrade(error)
            return default

    def script(self, lua: str) -> Callable[..., Any]:
        """A Lua script to run through `call` (`script(keys=[...], args=[...], client=redis)`)."""
        if self._redis is None:
            raise RuntimeError("scripts need REDIS_URL")
        return self._redis.register_script(lua)

    def check(self) -> None:
        """Readiness: Redis answers, and this process's listener is subscribed to it."""
        self._redis.ping()
        if not self._subscribed.is_set():
            raise ConnectionError("the bus listener is not subscribed to Redis yet")

    def close(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.join(timeout=3)
        if self._redis is not None:
            self._redis.close()

    def _degrade(self, reason: object) -> None:
        if not self._degraded:
            log.warning("redis unreachable, fan-out is local to this process: %s", reason)
        self._degraded = True

    def _listen(self) -> None:
        import redis

        while not self._stopped.is_set():
            pubsub = self._redis.pubsub()
            try:
                pubsub.psubscribe(FRAME_CHANNEL_PREFIX + "*")
                pubsub.subscribe(CONTROL_CHANNEL)
                self._await_confirmations(pubsub, {"psubscribe", "subscribe"})
                self._subscribed.set()
                if self._degraded:
                    log.info("redis reachable again, fan-out spans instances")
                    self._degraded = False
                self._pump(pubsub)
            except (redis.RedisError, OSError) as error:
                self._subscribed.clear()
                self._degrade(f"the listener lost its connection: {error}")
                self._stopped.wait(_RECONNECT_DELAY)
            finally:
                self._subscribed.clear()
                pubsub.close()

    def _await_confirmations(self, pubsub, kinds: set[str]) -> None:
        import redis

        deadline = time.monotonic() + 3 * self._timeout
        while kinds:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is None:
                raise redis.ConnectionError("no answer to SUBSCRIBE")
            kinds.discard(message["type"])

    def _pump(self, pubsub) -> None:
        """Deliver messages until Redis goes quiet past a ping's answer time, or a call saw it fail."""
        import redis

        heard = time.monotonic()
        pinged: float | None = None
        while not self._stopped.is_set() and self._subscribed.is_set():
            message = pubsub.get_message(timeout=_HEALTH_INTERVAL / 2)
            now = time.monotonic()
            if message is not None:
                heard, pinged = now, None
                self._dispatch(message)
            elif pinged is None and now - heard >= _HEALTH_INTERVAL:
                pubsub.ping()
                pinged = now
            elif pinged is not None and now - pinged > self._timeout:
                raise redis.ConnectionError(f"no answer to PING within {self._timeout}s")

    def _dispatch(self, message: dict) -> None:
        kind = message["type"]
        if kind == "pmessage":
            channel = message["channel"].decode()
            self._on_frame(channel[len(FRAME_CHANNEL_PREFIX) :], message["data"].decode(), None)
        elif kind == "message":
            try:
                self._on_control(json.loads(message["data"]))
            except ValueError:
                log.warning("ignored a control message that is not JSON")

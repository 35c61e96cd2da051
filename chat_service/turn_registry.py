"""Which sessions have an AI turn in flight, and the reply so far: one turn per session at a time.

In this process by default; with `REDIS_URL` the claim and the reply so far live in Redis too, so a
second message on another instance is refused and a socket opening anywhere gets `turn_state`. A `stop`
travels as a hub control frame to whichever process runs the turn.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chat_service.hub import Hub
    from chat_service.providers.base import Stream

log = logging.getLogger(__name__)

KEY_PREFIX = "chat:turn:"
TTL_MS = 15 * 60 * 1000  # a crashed process's claim expires; a live turn refreshes it on every piece


@dataclass(eq=False)
class Turn:
    """One AI reply being generated for a session."""

    turn_id: str
    session_id: str
    user_id: str
    trace_id: str
    user_message_id: int | None = None
    content: str = ""
    seq: int = 0
    stop_requested: threading.Event = field(default_factory=threading.Event)
    stream: Stream | None = None
    started_at: float = field(default_factory=time.monotonic)
    # The session's Dify conversation when the turn began, and whether conversation_service has it.
    dify_conversation_id: str | None = None
    linked: bool = False

    def snapshot(self) -> dict[str, Any]:
        return {
            "turn_id": self.turn_id,
            "user_message_id": self.user_message_id,
            "content": self.content,
            "seq": self.seq,
        }


class TurnRegistry:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._local: dict[str, Turn] = {}
        self._lock = threading.Lock()
        hub.on_control(self._on_control)

    def begin(self, turn: Turn) -> bool:
        """Claim the session for `turn`; False when a turn is already running there."""
        with self._lock:
            if turn.session_id in self._local:
                return False
            if not self._redis_call("set", turn, nx=True, default=True):
                return False
            self._local[turn.session_id] = turn
            return True

    def progress(self, turn: Turn) -> None:
        """Record the reply so far (before its piece is published, so snapshots never miss one)."""
        self._redis_call("set", turn, xx=True)

    def end(self, turn: Turn) -> None:
        with self._lock:
            if self._local.get(turn.session_id) is turn:
                del self._local[turn.session_id]
        current = self.snapshot(turn.session_id, local_first=False)
        if current is not None and current.get("turn_id") == turn.turn_id:
            self._redis_call("delete", turn)

    def snapshot(self, session_id: str, *, local_first: bool = True) -> dict[str, Any] | None:
        """The turn in flight on the session (anywhere), or None."""
        if local_first:
            with self._lock:
                turn = self._local.get(session_id)
            if turn is not None:
                return turn.snapshot()
        redis = self._hub.live_redis
        if redis is None:
            return None
        try:
            raw = redis.get(KEY_PREFIX + session_id)
        except Exception as error:
            log.warning("redis unreachable reading turn state: %s", error)
            return None
        return json.loads(raw) if raw else None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no turn runs in this process (at shutdown); False if some still run at `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._local:
                    return True
            time.sleep(0.1)
        return False

    def request_stop(self, session_id: str) -> None:
        """Stop the session's turn, wherever it runs."""
        self._hub.publish(session_id, {"type": "_stop"})

    def _on_control(self, session_id: str, payload: dict[str, Any]) -> None:
        if payload.get("type") != "_stop":
            return
        with self._lock:
            turn = self._local.get(session_id)
        if turn is not None:
            turn.stop_requested.set()
            if turn.stream is not None:
                turn.stream.cancel()

    def _redis_call(self, op: str, turn: Turn, *, default: bool = True, **kwargs: Any) -> bool:
        redis = self._hub.live_redis
        if redis is None:
            return default
        key = KEY_PREFIX + turn.session_id
        try:
            if op == "delete":
                redis.delete(key)
                return True
            return bool(redis.set(key, json.dumps(turn.snapshot()), px=TTL_MS, **kwargs))
        except Exception as error:
            log.warning("redis unreachable for turn state, local only: %s", error)
            return default

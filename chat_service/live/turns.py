"""AI turns: one per session at a time, each run in its own thread so it outlives the socket that asked.

A turn reads as a straight line: claim the session, store the user's message, run it (`runner.py`:
stream the provider's events to every socket, each delta recorded with its frame; store the reply),
release the claim once, announce the reply. With Redis the claim and the reply so far are shared by
every instance:

- the claim `chat:turn:<session>` holds the turn id with a short TTL that a heartbeat refreshes while
  the turn runs, so a crashed worker frees the session within `TURN_CLAIM_TTL_SECONDS`;
- the reply so far is appended to `chat:turn:<session>:text` (linear traffic) with `:state` holding
  the user message id and the last `seq`, written in the same transaction as the delta's frame;
- `stop` travels on the control channel to whichever instance runs the turn, and `started`/`ended`
  let the others tell their sockets when a turn's instance dies mid-reply.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from flask import Flask

from chat_service import crud, events
from chat_service.extensions import db
from chat_service.live.runner import Runner, with_retries
from chat_service.live.slots import Slots
from chat_service.providers.base import Provider, Stream, TurnRequest
from chat_service.services import asks, inputs
from shared import rate_limits
from shared.errors import Forbidden, OperationFailed, SessionNotFound, UpstreamFailed
from shared.tracing import current_trace_id

if TYPE_CHECKING:
    from chat_service.live.bus import Bus
    from chat_service.live.hub import Hub

log = logging.getLogger(__name__)

KEY_PREFIX = "chat:turn:"
INTERRUPTED = "the reply was interrupted: the instance generating it stopped"

# KEYS: claim, state, text; ARGV: turn id, ttl ms. Refresh (or release) only the caller's own claim.
_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2]) redis.call('pexpire', KEYS[2], ARGV[2])
  redis.call('pexpire', KEYS[3], ARGV[2]) return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1], KEYS[2], KEYS[3]) end
return 0
"""


def _keys(session_id: str) -> tuple[str, str, str]:
    claim = KEY_PREFIX + session_id
    return claim, claim + ":state", claim + ":text"


@dataclass(eq=False)
class Turn:
    """One AI reply being generated for a session."""

    session_id: str
    user_id: str
    trace_id: str
    turn_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    user_message_id: int | None = None
    content: str = ""
    seq: int = 0
    stop_requested: threading.Event = field(default_factory=threading.Event)
    stream: Stream | None = None
    started_at: float = field(default_factory=time.monotonic)
    # The session's Dify conversation (as the turn began; then the one the provider named).
    dify_conversation_id: str | None = None
    dify_message_id: str | None = None  # Dify's id of the stored reply (feedback, suggestions)
    linking: threading.Thread | None = None  # storing the Dify conversation id (services.links)

    def snapshot(self) -> dict[str, Any]:
        return {
            "turn_id": self.turn_id,
            "user_message_id": self.user_message_id,
            "content": self.content,
            "seq": self.seq,
        }

    def stop(self) -> None:
        """Make the stream end now (from any thread); the runner then stores what came."""
        self.stop_requested.set()
        if self.stream is not None:
            self.stream.cancel()


@dataclass
class _Watched:
    """A turn running on another instance, watched so this one's sockets hear if that instance dies."""

    turn_id: str
    misses: int = 0


class Turns:
    def __init__(self, app: Flask, bus: Bus, hub: Hub, provider: Provider) -> None:
        self._app = app
        self._bus = bus
        self._hub = hub
        self._provider = provider
        self._ttl_ms = int(float(app.config["TURN_CLAIM_TTL_SECONDS"]) * 1000)
        self._store_retry_seconds = float(app.config["STORE_RETRY_SECONDS"])
        self._instance = uuid.uuid4().hex
        self._runner = Runner(app, bus, provider, keys=_keys, release=self._release)
        self._in_flight = Slots(
            bus,
            "turns_in_flight",
            int(app.config["LIMIT_TURNS_IN_FLIGHT"]),
            key_prefix=app.config["LIMITS_KEY_PREFIX"],
        )
        self._local: dict[str, Turn] = {}
        self._watched: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if bus.configured:
            self._refresh_script = bus.script(_REFRESH)
            self._release_script = bus.script(_RELEASE)
            self._heartbeat = threading.Thread(target=self._beat, name="turn-heartbeat", daemon=True)
            self._heartbeat.start()

    # -- starting, stopping, looking -----------------------------------------------------------------

    def start(self, user_id: str, session_id: str, content: str) -> Turn:
        """Store the user's message and start the reply; 1004 while another reply is in flight, 429
        past one of the user's limits (nothing stored then)."""
        return self._begin(user_id, session_id, lambda session: asks.new_message(session, content))

    def regenerate(self, user_id: str, session_id: str) -> Turn:
        """A new reply to the session's last question; the replies it had are deleted."""
        return self._begin(user_id, session_id, asks.regenerate)

    def edit(self, user_id: str, session_id: str, message_id: int, content: str) -> Turn:
        """Edit a question and answer it anew; every message after it is deleted."""
        return self._begin(
            user_id, session_id, lambda session: asks.edit(session, user_id, message_id, content)
        )

    def _begin(self, user_id: str, session_id: str, plan: Callable[[crud.TurnSession], asks.Ask]) -> Turn:
        """Admit a turn (limits, the session's claim), plan what it asks with nothing written, then
        write it and start the reply; any refusal leaves the session as it was."""
        turn = Turn(session_id, user_id, current_trace_id())
        limits = rate_limits.of(self._app)
        limits.check("tokens", user_id)
        self._in_flight.acquire(user_id, turn.turn_id)
        if not self._claim(turn):
            self._in_flight.release(user_id, turn.turn_id)
            raise OperationFailed("a reply is still being generated in this session: wait, or stop it")
        try:
            with db.engine.connect() as connection:  # a row on a Core connection: no ORM session
                session = crud.turn_session(connection, session_id)
            if session is None:
                raise SessionNotFound()
            if session.user_id != user_id:  # the socket checked it as it opened; both stores rely on it
                raise Forbidden("the session belongs to another user")
            ask = plan(session)
            turn_inputs = inputs.for_turn(session)  # a 1001 before anything is stored or sent
            turn.dify_conversation_id = session.dify_conversation_id
            limits.hit("turns", user_id)  # last: a turn refused for another reason is not counted
            turn.user_message_id = message_id = with_retries(
                "storing the user message",
                lambda: asks.apply(ask, user_id, session_id),
                self._store_retry_seconds,
            )
            state = _keys(session_id)[1]
            self._bus.call(lambda redis: redis.hset(state, "user_message_id", message_id), None)
        except BaseException:
            self._release(turn)
            raise
        finally:
            db.session.remove()  # no turn holds a database connection while the reply streams
        request = TurnRequest(
            user_id, ask.query, ask.history, turn.dify_conversation_id, turn.trace_id, inputs=turn_inputs
        )
        self._runner.start(turn, request, fork=ask.fork)
        return turn

    def stop(self, session_id: str) -> None:
        """Stop the session's turn, wherever it runs (within a second; nothing more is generated)."""
        if not self._stop_local(session_id):
            self._bus.control({"op": "stop", "session_id": session_id, "origin": self._instance})

    def snapshot(self, session_id: str) -> dict[str, Any] | None:
        """The turn in flight on the session, anywhere, or None."""
        with self._lock:
            turn = self._local.get(session_id)
        if turn is not None:
            return turn.snapshot()
        claim, state, text = _keys(session_id)

        def read(redis):
            with redis.pipeline(transaction=True) as pipe:
                return pipe.get(claim).hgetall(state).get(text).execute()

        found = self._bus.call(read, None)
        if not found or found[0] is None:
            return None
        turn_id, fields, reply = found[0].decode(), found[1], found[2]
        self._watch(session_id, turn_id)
        user_message_id = fields.get(b"user_message_id")
        return {
            "turn_id": turn_id,
            "user_message_id": int(user_message_id) if user_message_id else None,
            "content": (reply or b"").decode("utf-8", errors="replace"),
            "seq": int(fields.get(b"seq", 0)),
        }

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no turn runs in this process (at shutdown); False if some still run at `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._local:
                    return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self._stopped.set()
        self._in_flight.close()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=3)

    def on_control(self, message: dict[str, Any]) -> None:
        """A control message from any instance (this one's own included)."""
        session_id = message.get("session_id")
        if not isinstance(session_id, str):
            return
        op = message.get("op")
        if op == "stop":
            self._stop_local(session_id)
        elif message.get("origin") == self._instance:
            return
        elif op == "started" and isinstance(message.get("turn_id"), str):
            self._watch(session_id, message["turn_id"])
        elif op == "ended":
            with self._lock:
                watched = self._watched.get(session_id)
                if watched is not None and watched.turn_id == message.get("turn_id"):
                    del self._watched[session_id]

    # -- the claim -------------------------------------------------------------------------------------

    def _claim(self, turn: Turn) -> bool:
        with self._lock:
            if turn.session_id in self._local:
                return False
            self._local[turn.session_id] = turn
        claim, state, reply = _keys(turn.session_id)

        def take(redis) -> bool:
            if not redis.set(claim, turn.turn_id, nx=True, px=self._ttl_ms):
                return False
            with redis.pipeline(transaction=False) as pipe:
                pipe.delete(state, reply).hset(state, "seq", 0).pexpire(state, self._ttl_ms).execute()
            return True

        if not self._bus.call(take, default=True):
            with self._lock:
                del self._local[turn.session_id]
            return False
        self._bus.control(
            {
                "op": "started",
                "session_id": turn.session_id,
                "turn_id": turn.turn_id,
                "origin": self._instance,
            }
        )
        return True

    def _release(self, turn: Turn) -> None:
        """Free the session for its next turn: called exactly once per claimed turn."""
        with self._lock:
            if self._local.get(turn.session_id) is turn:
                del self._local[turn.session_id]
        self._in_flight.release(turn.user_id, turn.turn_id)
        keys = _keys(turn.session_id)
        self._bus.call(lambda redis: self._release_script(keys=keys, args=[turn.turn_id], client=redis), None)
        self._announce("ended", turn)

    def _announce(self, op: str, turn: Turn) -> None:
        """Tell the other instances a turn started or ended here (they watch it for its sockets)."""
        message = {"op": op, "session_id": turn.session_id, "turn_id": turn.turn_id}
        self._bus.control(message | {"origin": self._instance})

    def _stop_local(self, session_id: str) -> bool:
        with self._lock:
            turn = self._local.get(session_id)
        if turn is None:
            return False
        turn.stop()
        return True

    def _watch(self, session_id: str, turn_id: str) -> None:
        with self._lock:
            if session_id not in self._local:
                self._watched[session_id] = _Watched(turn_id)

    def _beat(self) -> None:
        """Every third of the TTL: keep this instance's claims alive, and check other instances' turns."""
        interval = self._ttl_ms / 3000
        while not self._stopped.wait(interval):
            try:
                self._refresh_claims()
                self._check_watched()
            except Exception:
                log.exception("turn heartbeat failed")

    def _refresh_claims(self) -> None:
        with self._lock:
            turns = list(self._local.values())
        for turn in turns:
            kept = self._bus.call(partial(self._refresh, turn), None)
            if kept == 0:
                log.warning("lost the claim on session %s while its turn runs", turn.session_id)

    def _refresh(self, turn: Turn, redis) -> int:
        """Extend the turn's keys' TTL, if the claim is still this turn's (1), else 0."""
        return self._refresh_script(
            keys=_keys(turn.session_id), args=[turn.turn_id, self._ttl_ms], client=redis
        )

    def _check_watched(self) -> None:
        """A watched turn whose claim is gone or held by another turn (twice in a row, to let its `ended`
        arrive) died with its instance: tell this instance's sockets of that session."""
        with self._lock:
            watched = dict(self._watched)
        if not watched:
            return
        sessions = list(watched)
        claims = self._bus.call(lambda redis: redis.mget([KEY_PREFIX + s for s in sessions]), None)
        if claims is None:
            return
        for session_id, claim in zip(sessions, claims, strict=True):
            entry = watched[session_id]
            if claim is not None and claim.decode() == entry.turn_id:
                entry.misses = 0
                continue
            entry.misses += 1
            if entry.misses < 2:
                continue
            with self._lock:
                if self._watched.get(session_id) is entry:
                    del self._watched[session_id]
            if self._hub.count(session_id):
                error = UpstreamFailed(INTERRUPTED, data={"detail": INTERRUPTED, "turn_id": entry.turn_id})
                with self._app.app_context():
                    self._bus.deliver_here(session_id, events.error_frame(error))

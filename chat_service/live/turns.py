"""AI turns: one per session at a time, each run in its own thread so it outlives the socket that asked.

A turn reads as a straight line: claim the session, store the user's message, stream the provider's
events to every socket (each delta recorded with its frame), store the reply, release the claim once,
announce the reply. With Redis the claim and the reply so far are shared by every instance:

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
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from chat_service import crud, events, metrics
from chat_service.extensions import db
from chat_service.providers.base import (
    Delta,
    Finished,
    Linked,
    Provider,
    ProviderError,
    Replace,
    Started,
    Stream,
    TurnRequest,
)
from chat_service.services import links, messages
from shared.errors import DatabaseUnavailable, OperationFailed, SessionNotFound, UpstreamFailed
from shared.tracing import bound_trace_id, current_trace_id

if TYPE_CHECKING:
    from chat_service.live.bus import Bus
    from chat_service.live.hub import Hub

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 20
KEY_PREFIX = "chat:turn:"
_STORE_FIRST_DELAY, _STORE_MAX_DELAY = 0.2, 2.0
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
        """Store the user's message and start the reply; 1004 while another reply is in flight."""
        turn = Turn(session_id, user_id, current_trace_id())
        if not self._claim(turn):
            raise OperationFailed("a reply is still being generated in this session: wait, or stop it")
        try:
            session = crud.get_session(db.session, session_id)
            if session is None:
                raise SessionNotFound()
            history = [
                {"role": m.role, "content": m.content}
                for m in crud.list_messages(db.session, session_id, 1, HISTORY_MESSAGES, order="desc")[::-1]
            ]
            turn.dify_conversation_id = session.dify_conversation_id
            turn.linked = session.conversation_record_id is not None
            message = self._with_retries(
                "storing the user message", lambda: messages.store_message(session_id, content)
            )
            turn.user_message_id = message.message_id
            state = _keys(session_id)[1]
            self._bus.call(lambda redis: redis.hset(state, "user_message_id", message.message_id), None)
        except BaseException:
            self._release(turn)
            raise
        finally:
            db.session.remove()  # no turn holds a database connection while the reply streams
        request = TurnRequest(user_id, content, history, turn.dify_conversation_id, turn.trace_id)
        threading.Thread(
            target=self._run, args=(turn, request), name=f"turn-{session_id}", daemon=True
        ).start()
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

    # -- running a turn --------------------------------------------------------------------------------

    def _run(self, turn: Turn, request: TurnRequest) -> None:
        with self._app.app_context(), bound_trace_id(turn.trace_id):
            announce = None
            try:
                finished, failure = self._relay(turn, request)
                announce = self._settle(turn, finished, failure)
            except Exception:
                log.exception("AI turn failed unexpectedly", extra={"session_id": turn.session_id})
                announce = events.error_frame(UpstreamFailed("internal error while finishing the reply"))
            finally:
                self._release(turn)
                db.session.remove()
            if announce is not None:
                self._bus.publish(turn.session_id, announce)

    def _relay(self, turn: Turn, request: TurnRequest) -> tuple[bool, ProviderError | None]:
        """Stream the provider's events to the sockets: whether the provider finished the reply, and
        the failure that ended it early, if any."""
        stream = self._provider.start(request)
        turn.stream = stream
        finished = False
        try:
            with stream:
                if turn.stop_requested.is_set():
                    stream.cancel()
                for event in stream:
                    finished = self._apply(turn, event) or finished
        except ProviderError as error:
            return False, error
        return finished, None

    def _apply(self, turn: Turn, event: object) -> bool:
        """Relay one provider event; True when it ends the reply."""
        match event:
            case Delta(text=text) | Replace(text=text):
                self._progress(turn, text, replace=isinstance(event, Replace))
            case Linked(conversation_id=conversation_id):
                links.remember(turn, conversation_id)
            case Started(task_id=task_id):
                log.info("AI turn started", extra={"task_id": task_id, "session_id": turn.session_id})
            case Finished():
                return True
        return False

    def _progress(self, turn: Turn, text: str, *, replace: bool) -> None:
        """One piece: recorded (for `turn_state`) in the same Redis round trip as its frame."""
        if turn.seq == 0:
            metrics.first_token(self._provider.name, time.monotonic() - turn.started_at)
        turn.content = text if replace else turn.content + text
        turn.seq += 1
        seq, (_, state, reply) = turn.seq, _keys(turn.session_id)
        data = {"content": text, "seq": seq, "turn_id": turn.turn_id} | ({"replace": True} if replace else {})

        def record(pipe) -> None:
            pipe.set(reply, text) if replace else pipe.append(reply, text)
            pipe.hset(state, "seq", seq)
            if seq == 1 or replace:
                pipe.pexpire(reply, self._ttl_ms)

        self._bus.publish(turn.session_id, events.frame("delta", data), record=record)
        time.sleep(0)  # under gevent, let the sockets' writers run now, not at the next blocking read

    def _settle(self, turn: Turn, finished: bool, failure: ProviderError | None) -> dict | None:
        """Store the reply (or say why there is none); the frame that announces the outcome."""
        stopped = turn.stop_requested.is_set()
        provider = self._provider.name
        if stopped:
            metrics.turn_finished(provider, "stopped")
            try:
                turn.stream.stop()  # tells Dify to stop generating; the others just drop the connection
            except Exception as error:
                log.warning("provider stop call failed: %s", error)
        elif failure is not None or not finished or not turn.content:
            metrics.turn_finished(provider, "failed")
            reason = failure.reason if failure else "the provider ended the reply without content"
            log.warning("AI turn failed: %s", reason, extra={"session_id": turn.session_id})
            return events.error_frame(UpstreamFailed(reason))
        else:
            metrics.turn_finished(provider, "completed")
        if not turn.content:
            if crud.get_session(db.session, turn.session_id) is None:
                return None  # stopped by deleting the session: nothing to store or tell
            empty = {"message_id": None, "session_id": turn.session_id, "role": "assistant", "content": ""}
            return events.frame("assistant_message", empty | {"stopped": True})
        try:
            message = self._with_retries(
                "storing the reply",
                lambda: crud.create_message(db.session, turn.session_id, turn.content, "assistant"),
            )
        except SQLAlchemyError:
            log.error(
                "the reply could not be stored; it was sent to the session's sockets",
                extra={"session_id": turn.session_id, "turn_id": turn.turn_id},
            )
            data = {
                "detail": "the reply could not be stored",
                "turn_id": turn.turn_id,
                "content": turn.content,
            }
            return events.error_frame(DatabaseUnavailable(data=data))
        if message is None:
            return None  # the session was deleted meanwhile: nothing is stored
        return events.message_frame(message, stopped=stopped)

    def _with_retries(self, what: str, work):
        """`work()`, retried with backoff while the database fails, for up to `STORE_RETRY_SECONDS`."""
        deadline = time.monotonic() + self._store_retry_seconds
        delay = _STORE_FIRST_DELAY
        while True:
            try:
                return work()
            except SQLAlchemyError as error:
                db.session.remove()
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("%s failed, retrying in %.1fs: %s", what, delay, error.__class__.__name__)
                time.sleep(delay)
                delay = min(delay * 2, _STORE_MAX_DELAY)

"""Running one AI turn, in its own thread: stream the provider's events to the session's sockets as
deltas, store the reply, announce it. Nothing here raises: every outcome ends in frames.

- A Dify conversation Dify no longer knows (404 `not_found`, 400 `conversation_completed`) is cleared
  from the session and the turn retried once as a new conversation, told with `conversation_reset`.
- A run paused for human input keeps its text as a stopped reply and ends with an `error` frame whose
  `data.reason` is the pause's reason.
- A failure is an `error` frame (5000) with our own words (`data.detail`) and reason code
  (`data.reason`); the provider's own message goes to the log only.
- Storing is retried while the database fails; if it never comes back, the reply goes to the sockets
  in a 12001 `error` frame, so the client can keep it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from chat_service import crud, events, metrics
from chat_service.extensions import db
from chat_service.live.arrivals import Arrivals
from chat_service.models import ChatMessage
from chat_service.providers.base import (
    Delta,
    Event,
    Finished,
    Linked,
    Paused,
    Provider,
    ProviderError,
    Replace,
    Started,
    TurnRequest,
)
from chat_service.services import links, suggestions, titles
from shared import rate_limits
from shared.errors import DatabaseUnavailable, UpstreamFailed
from shared.tracing import bound_trace_id

if TYPE_CHECKING:
    from chat_service.live.bus import Bus
    from chat_service.live.turns import Turn

log = logging.getLogger(__name__)

T = TypeVar("T")
NO_CONTENT = "the provider ended the reply without content"
# How long a turn's end waits for its Dify conversation id to be stored (services.links retries it).
LINK_WAIT_SECONDS = 10
PAUSED = "the AI is waiting for input this chat cannot give; the reply so far was kept"
_FIRST_DELAY, _MAX_DELAY = 0.2, 2.0


def with_retries(what: str, work: Callable[[], T], seconds: float) -> T:
    """`work()`, retried with backoff while the database fails, for up to `seconds`."""
    deadline = time.monotonic() + seconds
    delay = _FIRST_DELAY
    while True:
        try:
            return work()
        except SQLAlchemyError as error:
            db.session.remove()
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, error.__class__.__name__)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)


class Runner:
    def __init__(
        self,
        app: Flask,
        bus: Bus,
        provider: Provider,
        *,
        keys: Callable[[str], tuple[str, str, str]],
        release: Callable[[Turn], None],
    ) -> None:
        self._app = app
        self._bus = bus
        self._provider = provider
        self._keys = keys
        self._release = release
        self._ttl_ms = int(float(app.config["TURN_CLAIM_TTL_SECONDS"]) * 1000)
        self._store_retry_seconds = float(app.config["STORE_RETRY_SECONDS"])

    def start(self, turn: Turn, request: TurnRequest, *, fork: bool = False) -> None:
        """Run the turn in its own thread; `fork`: in a new Dify conversation (an edit rewound it)."""
        threading.Thread(
            target=self._run, args=(turn, request, fork), name=f"turn-{turn.session_id}", daemon=True
        ).start()

    def _run(self, turn: Turn, request: TurnRequest, fork: bool = False) -> None:
        with self._app.app_context(), bound_trace_id(turn.trace_id):
            announce: list[dict] = []
            completed = False
            try:
                if fork and request.conversation_id is not None:
                    log.info("an edit rewound the conversation: continuing in a new Dify conversation")
                    request = self._reset_conversation(turn, request, "rewound")
                ending, failure = self._relay(turn, request)
                if self._conversation_gone(turn, request, failure):
                    log.warning(
                        "Dify no longer knows conversation %s (%s): continuing in a new one",
                        request.conversation_id,
                        failure.upstream_message or failure.code,
                    )
                    request = self._reset_conversation(turn, request, "conversation_gone")
                    ending, failure = self._relay(turn, request)
                if self._retry_shorter(turn, failure):
                    log.warning("the model refused the prompt as too long: sending a shorter history")
                    request = replace(request, trimmed=request.trimmed + 1)
                    ending, failure = self._relay(turn, request)
                announce, completed = self._settle(turn, ending, failure)
            except Exception:
                log.exception("AI turn failed unexpectedly", extra={"session_id": turn.session_id})
                announce = [_failure("internal error while finishing the reply", "internal")]
            finally:
                self._release(turn)
                db.session.remove()
            for frame in announce:
                self._bus.publish(turn.session_id, frame)
            if completed:
                suggestions.after_reply(turn, announce)
                titles.after_reply(turn, request)

    # -- streaming -----------------------------------------------------------------------------------

    def _relay(
        self, turn: Turn, request: TurnRequest
    ) -> tuple[Finished | Paused | None, ProviderError | None]:
        """Stream the provider's events to the sockets, a delta per batch of what arrived together
        (`arrivals.py`): the event that ended the reply (None if it stopped short), and the failure
        that ended it early, if any."""
        stream = self._provider.start(request)
        turn.stream = stream
        if turn.stop_requested.is_set():
            stream.cancel()
        ending = None
        try:
            with Arrivals(stream, trace_id=turn.trace_id, name=f"reader-{turn.session_id}") as arrivals:
                for batch in arrivals:
                    if turn.stop_requested.is_set():
                        break  # what the sockets were sent is what is stored
                    ending = self._apply(turn, batch) or ending
        except ProviderError as error:
            return None, error
        return ending, None

    def _apply(self, turn: Turn, batch: list[Event]) -> Finished | Paused | None:
        """Relay a batch of provider events, its pieces as one delta; the event that ends the reply,
        if the batch holds it."""
        pieces: list[str] = []
        replace = False
        ending = None
        for event in batch:
            match event:
                case Delta(text=text):
                    pieces.append(text)
                case Replace(text=text):
                    pieces, replace = [text], True  # the reply so far, this batch's pieces included
                case Linked(conversation_id=conversation_id):
                    turn.linking = links.remember(turn, conversation_id) or turn.linking
                    turn.dify_conversation_id = conversation_id
                case Started(task_id=task_id):
                    log.info("AI turn started", extra={"task_id": task_id, "session_id": turn.session_id})
                case Finished() | Paused():
                    ending = event
        if pieces:
            self._progress(turn, "".join(pieces), replace=replace)
        return ending

    def _progress(self, turn: Turn, text: str, *, replace: bool) -> None:
        """One delta: recorded (for `turn_state`) in the same Redis round trip as its frame."""
        if turn.seq == 0:
            metrics.first_token(self._provider.name, time.monotonic() - turn.started_at)
        turn.content = text if replace else turn.content + text
        turn.seq += 1
        seq, (_, state, reply) = turn.seq, self._keys(turn.session_id)
        data = {"content": text, "seq": seq, "turn_id": turn.turn_id} | ({"replace": True} if replace else {})

        def record(pipe) -> None:
            pipe.set(reply, text) if replace else pipe.append(reply, text)
            pipe.hset(state, "seq", seq)
            if seq == 1 or replace:
                pipe.pexpire(reply, self._ttl_ms)

        self._bus.publish(turn.session_id, events.frame("delta", data), record=record)
        time.sleep(0)  # under gevent, let the sockets' writers run now, not at the next blocking read

    @staticmethod
    def _retry_shorter(turn: Turn, failure: ProviderError | None) -> bool:
        """A prompt refused as too long, before any piece: worth one more try with half the history."""
        return (
            failure is not None
            and failure.context_too_long
            and turn.seq == 0
            and not turn.stop_requested.is_set()
        )

    # -- a conversation Dify forgot ------------------------------------------------------------------

    @staticmethod
    def _conversation_gone(turn: Turn, request: TurnRequest, failure: ProviderError | None) -> bool:
        return (
            failure is not None
            and failure.conversation_gone
            and request.conversation_id is not None
            and turn.seq == 0
            and not turn.stop_requested.is_set()
        )

    def _reset_conversation(self, turn: Turn, request: TurnRequest, reason: str) -> TurnRequest:
        """Leave the session's Dify conversation (Dify forgot it, or an edit rewound past its memory) and
        tell the sockets the AI's memory starts over."""
        try:
            links.forget(turn.session_id, request.conversation_id)
        except SQLAlchemyError as error:
            log.warning("clearing the dead Dify conversation id failed: %s", error.__class__.__name__)
        finally:
            db.session.remove()
        turn.dify_conversation_id = None
        data = {
            "session_id": turn.session_id,
            "turn_id": turn.turn_id,
            "reason": reason,
            "previous_conversation_id": request.conversation_id,
        }
        self._bus.publish(turn.session_id, events.frame("conversation_reset", data))
        return replace(request, conversation_id=None)

    # -- the outcome ---------------------------------------------------------------------------------

    def _settle(
        self, turn: Turn, ending: Finished | Paused | None, failure: ProviderError | None
    ) -> tuple[list[dict], bool]:
        """Store the reply (or say why there is none): the frames that announce the outcome, and
        whether the reply was completed."""
        if turn.linking is not None:  # the next turn must find the Dify conversation on the session
            turn.linking.join(LINK_WAIT_SECONDS)
        stopped, paused = turn.stop_requested.is_set(), isinstance(ending, Paused)
        provider = self._provider.name
        if stopped:
            metrics.turn_finished(provider, "stopped")
            try:
                turn.stream.stop()  # tells Dify to stop generating; the others just drop the connection
            except Exception as error:
                log.warning("provider stop call failed: %s", error)
        elif paused:
            metrics.turn_finished(provider, "stopped")
            log.info("AI turn paused: %s", ending.reason, extra={"session_id": turn.session_id})
        elif failure is not None or ending is None or not turn.content:
            metrics.turn_finished(provider, "failed")
            if failure is None:
                log.warning("AI turn failed: %s", NO_CONTENT, extra={"session_id": turn.session_id})
                return [_failure(NO_CONTENT, "internal")], False
            log.warning(
                "AI turn failed: %s",
                failure.upstream_message or failure.reason,
                extra={
                    "session_id": turn.session_id,
                    "reason": failure.reason_code,
                    "status": failure.status,
                },
            )
            return [_failure(failure.reason, failure.reason_code)], False
        else:
            metrics.turn_finished(provider, "completed")
        finished = ending if isinstance(ending, Finished) else None
        if finished is not None and finished.usage:
            metrics.tokens_used(provider, finished.usage)
            tokens = finished.usage.get("total_tokens")
            if isinstance(tokens, int):
                rate_limits.of(self._app).spend("tokens", turn.user_id, tokens)
        turn.dify_message_id = finished.message_id if finished is not None else None
        announce = self._store(turn, finished, stopped or paused)
        if paused:
            announce.append(_failure(PAUSED, ending.reason))
        return announce, not (stopped or paused) and bool(announce)

    def _store(self, turn: Turn, finished: Finished | None, stopped: bool) -> list[dict]:
        if not turn.content:
            if crud.get_session(db.session, turn.session_id) is None:
                return []  # stopped by deleting the session: nothing to store or tell
            empty = {"message_id": None, "session_id": turn.session_id, "role": "assistant", "content": ""}
            return [events.frame("assistant_message", empty | {"stopped": True})]
        details: dict[str, Any] = {}
        if finished is not None:
            details = {
                "dify_message_id": finished.message_id,
                "usage": json.dumps(finished.usage) if finished.usage else None,
            }

        def store() -> ChatMessage | None:
            # On a Core connection of its own: this thread reads nothing else, so no ORM session to set up.
            with db.engine.connect() as connection:
                return crud.create_message(
                    connection,
                    turn.session_id,
                    turn.content,
                    "assistant",
                    is_generated=True,
                    user_id=turn.user_id,  # the session's owner (Turns checked it)
                    **details,
                )

        try:
            message = with_retries("storing the reply", store, self._store_retry_seconds)
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
            return [events.error_frame(DatabaseUnavailable(data=data))]
        if message is None:
            return []  # the session was deleted meanwhile: nothing is stored
        return [events.message_frame(message, stopped=stopped)]


def _failure(detail: str, reason: str) -> dict:
    return events.error_frame(UpstreamFailed(data={"detail": detail, "reason": reason}))

"""An AI turn: store the user's message, stream the provider's reply to every socket of the session,
store the reply. The reply runs in its own thread, so it outlives the socket that asked for it."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from flask import Flask, current_app

from chat_service import crud, events, metrics
from chat_service.extensions import db
from chat_service.providers.base import Delta, Finished, Linked, ProviderError, Replace, Started, TurnRequest
from chat_service.services import links, messages
from chat_service.services.sessions import owned_session
from chat_service.turn_registry import Turn, TurnRegistry
from shared.errors import OperationFailed, UpstreamFailed
from shared.tracing import bound_trace_id, current_trace_id

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 20


def start_turn(user_id: str, session_id: str, content: str) -> Turn:
    """Store the user's message and start the reply; 1004 while another reply is in flight."""
    app = current_app._get_current_object()
    registry: TurnRegistry = app.extensions["turns"]
    session = owned_session(user_id, session_id)
    turn = Turn(uuid.uuid4().hex, session.session_id, user_id, current_trace_id())
    if not registry.begin(turn):
        raise OperationFailed("a reply is still being generated in this session: wait, or stop it")
    try:
        history = [
            {"role": m.role, "content": m.content}
            for m in crud.list_messages(db.session, session.session_id, 1, HISTORY_MESSAGES, order="desc")[
                ::-1
            ]
        ]
        request = TurnRequest(
            user_id=user_id,
            query=content,
            history=history,
            conversation_id=session.dify_conversation_id,
            trace_id=turn.trace_id,
        )
        turn.dify_conversation_id = session.dify_conversation_id
        turn.linked = session.conversation_record_id is not None
        turn.user_message_id = messages.post_message(user_id, session.session_id, content).message_id
        registry.progress(turn)
    except BaseException:
        registry.end(turn)
        raise
    finally:
        db.session.remove()  # a socket holds no database connection while the reply streams
    threading.Thread(
        target=_run, args=(app, turn, request), name=f"turn-{turn.session_id}", daemon=True
    ).start()
    return turn


def _run(app: Flask, turn: Turn, request: TurnRequest) -> None:
    with app.app_context(), bound_trace_id(turn.trace_id):
        registry: TurnRegistry = app.extensions["turns"]
        failure: ProviderError | None = None
        finished = False
        stream = app.extensions["ai_provider"].start(request)
        turn.stream = stream
        try:
            with stream:
                if turn.stop_requested.is_set():
                    stream.cancel()
                for event in stream:
                    finished = _apply(app, turn, event) or finished
        except ProviderError as error:
            failure = error
        except Exception:
            log.exception("AI turn failed unexpectedly")
            failure = ProviderError("internal error while relaying the reply")
        stopped = turn.stop_requested.is_set()
        try:
            _conclude(registry, turn, stream, stopped, finished, failure)
        finally:
            registry.end(turn)
            db.session.remove()


def _apply(app: Flask, turn: Turn, event: object) -> bool:
    """Relay one provider event; True when it ends the reply."""
    match event:
        case Delta(text=text) | Replace(text=text):
            if turn.seq == 0:
                metrics.first_token(app.extensions["ai_provider"].name, time.monotonic() - turn.started_at)
            replace = isinstance(event, Replace)
            turn.content = text if replace else turn.content + text
            turn.seq += 1
            app.extensions["turns"].progress(turn)
            data = {"content": text, "seq": turn.seq, "turn_id": turn.turn_id}
            events.publish(turn.session_id, "delta", data | ({"replace": True} if replace else {}))
            # Yield: under gevent the sockets' senders run now, not at this turn's next blocking read.
            time.sleep(0)
        case Linked(conversation_id=conversation_id):
            links.remember(turn, conversation_id)
        case Started(task_id=task_id):
            log.info("AI turn started", extra={"task_id": task_id, "session_id": turn.session_id})
        case Finished():
            return True
    return False


def _conclude(
    registry: TurnRegistry,
    turn: Turn,
    stream,
    stopped: bool,
    finished: bool,
    failure: ProviderError | None,
) -> None:
    """Store and announce the reply, or announce why there is none (no half reply is ever stored)."""
    provider = current_app.extensions["ai_provider"].name
    if stopped:
        metrics.turn_finished(provider, "stopped")
        try:
            stream.stop()  # tells Dify to stop generating; the other providers just drop the connection
        except Exception as error:
            log.warning("provider stop call failed: %s", error)
    elif failure is not None or not finished or not turn.content:
        metrics.turn_finished(provider, "failed")
        reason = failure.reason if failure is not None else "the provider ended the reply without content"
        log.warning("AI turn failed: %s", reason, extra={"session_id": turn.session_id})
        registry.end(turn)
        error = UpstreamFailed(reason)
        events.publish(turn.session_id, "error", error.data, code=error.code, message=error.message)
        return
    else:
        metrics.turn_finished(provider, "completed")
    message = (
        crud.create_message(db.session, turn.session_id, turn.content, "assistant") if turn.content else None
    )
    registry.end(turn)  # free the session before announcing, so the next message is accepted at once
    if message is not None:
        events.message_posted(message, stopped=stopped)
    elif crud.get_session(db.session, turn.session_id) is not None:
        empty = {"message_id": None, "session_id": turn.session_id, "role": "assistant", "content": ""}
        events.publish(turn.session_id, "assistant_message", empty | {"stopped": True})

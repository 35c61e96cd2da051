"""The Dify link: a session remembers the Dify conversation it continues, and its record in
conversation_service gets the id through the outbox (chat_service.sync), durably. The relay of a reply
never waits for either: the id is stored in the background."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa
from flask import Flask, current_app

from chat_service import crud
from chat_service.extensions import db
from chat_service.models import ChatSession, epoch_ms
from shared.tracing import bound_trace_id

if TYPE_CHECKING:
    from chat_service.live.turns import Turn

log = logging.getLogger(__name__)

STORE_TRIES = 3


def remember(turn: Turn, dify_conversation_id: str) -> threading.Thread | None:
    """Store the Dify conversation id on the session (with its version) and have the session's record
    follow, beside the stream; the thread that does it (the turn waits for it before it ends, so the
    next turn continues this conversation), or None when the session already has this id."""
    if dify_conversation_id == turn.dify_conversation_id:
        return None
    thread = threading.Thread(
        target=_remember,
        args=(current_app._get_current_object(), turn, dify_conversation_id),
        name=f"link-{turn.session_id}",
        daemon=True,
    )
    thread.start()
    return thread


def _remember(app: Flask, turn: Turn, dify_id: str) -> None:
    with app.app_context(), bound_trace_id(turn.trace_id):
        for attempt in range(1, STORE_TRIES + 1):
            try:
                store(turn.session_id, dify_id)
                return
            except Exception as error:
                db.session.rollback()
                log.warning("storing the Dify conversation id failed (attempt %d): %s", attempt, error)
                time.sleep(0.5 * attempt)
            finally:
                db.session.remove()
        log.error("gave up storing Dify conversation %s of session %s", dify_id, turn.session_id)


def forget(session_id: str, dify_conversation_id: str) -> bool:
    """Clear the session's Dify conversation id if it is still `dify_conversation_id` (Dify no longer
    knows it), versioned now, so the record drops it too; synchronous, one transaction."""
    session = db.session
    current = session.scalar(
        sa.select(ChatSession.dify_conversation_id)
        .where(ChatSession.session_id == session_id)
        .with_for_update()
    )
    if current != dify_conversation_id:
        session.rollback()
        return False
    return store(session_id, None)


def store(session_id: str, dify_id: str | None) -> bool:
    """Set the session's Dify conversation id, versioned now, and enqueue its record's update; one
    transaction. False if the session is gone. Stored on a deleted session too: a restore continues
    that conversation, and the purge deletes it in Dify (chat_service.purge)."""
    session = db.session
    # The session row first, as every writer of a session (crud: no deadlock on MariaDB).
    deleted = session.scalar(
        sa.select(ChatSession.is_deleted).where(ChatSession.session_id == session_id).with_for_update()
    )
    if deleted is None:
        session.rollback()
        return False
    session.execute(
        sa.update(ChatSession)
        .where(ChatSession.session_id == session_id)
        .values(
            dify_conversation_id=dify_id,
            dify_version=crud.next_version(ChatSession.dify_version, epoch_ms()),
        )
    )
    crud.mirror(session, session_id)
    session.commit()
    return True

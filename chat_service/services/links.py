"""The Dify link: a session remembers its Dify conversation, and conversation_service gets a record of
it. The record is made in the background with retries, so a slow or failing conversation_service never
breaks or slows the chat."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa
from flask import Flask, current_app

from chat_service import live
from chat_service.extensions import db
from chat_service.models import ChatSession
from shared.tracing import bound_trace_id

if TYPE_CHECKING:
    from chat_service.live.turns import Turn

log = logging.getLogger(__name__)


def remember(turn: Turn, dify_conversation_id: str) -> None:
    """Store the Dify conversation id on the session and link it, in the background: the relay of the
    reply never waits on the database or on conversation_service. Nothing to do when both are done."""
    store = dify_conversation_id != turn.dify_conversation_id
    if not store and turn.linked:
        return
    threading.Thread(
        target=_remember,
        args=(current_app._get_current_object(), turn, dify_conversation_id, store),
        name=f"link-{turn.session_id}",
        daemon=True,
    ).start()


def _remember(app: Flask, turn: Turn, dify_id: str, store: bool) -> None:
    with app.app_context(), bound_trace_id(turn.trace_id):
        if store:
            db.session.execute(
                sa.update(ChatSession)
                .where(ChatSession.session_id == turn.session_id)
                .values(dify_conversation_id=dify_id)
            )
            db.session.commit()
        title = db.session.scalar(
            sa.select(ChatSession.title).where(ChatSession.session_id == turn.session_id)
        )
        db.session.remove()
        if not turn.linked:
            _link(app, turn.user_id, turn.session_id, dify_id, title, turn.trace_id)


def _link(app: Flask, user_id: str, session_id: str, dify_id: str, title: str | None, trace_id: str) -> None:
    client = live.of(app).conversations
    for attempt, delay in enumerate((0, *app.config["LINK_RETRY_DELAYS"]), start=1):
        time.sleep(delay)
        try:
            response = client.request(
                "PUT",
                f"/internal/ai/conversation/dify/{dify_id}",
                user_id=user_id,
                trace_id=trace_id,
                json={"title": title or dify_id},
            )
            if response.ok:
                record_id = str(response.json()["data"]["id"])
                db.session.execute(
                    sa.update(ChatSession)
                    .where(ChatSession.session_id == session_id)
                    .values(conversation_record_id=record_id)
                )
                db.session.commit()
                db.session.remove()
                return
            if response.status_code < 500 and response.status_code != 429:
                log.error(
                    "conversation_service refused the link (%s): %s",
                    response.status_code,
                    response.text[:300],
                )
                return
            reason = f"HTTP {response.status_code}"
        except Exception as error:
            reason = str(error)
        log.warning("linking Dify conversation failed (attempt %d): %s", attempt, reason)
    log.error("gave up linking Dify conversation %s of session %s", dify_id, session_id)

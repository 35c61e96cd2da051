"""Follow-up questions after a reply: with Dify, its `GET /messages/{id}/suggested`, sent to the
session's sockets as a `suggestions` frame `{"message_id", "questions"}` after `assistant_message`.

Only for a completed reply with Dify's message id, when `SUGGESTED_QUESTIONS` is on (the default) and
the app has "suggested questions after answer" enabled (otherwise Dify answers an error, which is
logged and ignored). The other providers suggest nothing. Never fails the turn.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import current_app

from chat_service import events, live

if TYPE_CHECKING:
    from chat_service.live.turns import Turn

log = logging.getLogger(__name__)


def after_reply(turn: Turn, announced: list[dict]) -> None:
    """Send the suggestions for the reply just announced, if there are any (never raises)."""
    if not current_app.config["SUGGESTED_QUESTIONS"] or not turn.dify_message_id:
        return
    reply = next((f["data"] for f in announced if f.get("type") == "assistant_message"), None)
    provider = live.current().provider
    if reply is None or reply.get("message_id") is None or provider.name != "dify":
        return
    try:
        questions = provider.suggested(turn.dify_message_id, turn.user_id)
    except Exception as error:
        log.info("no suggested questions: %s: %s", error.__class__.__name__, str(error)[:200])
        return
    if questions:
        data = {"session_id": turn.session_id, "message_id": reply["message_id"], "questions": questions}
        live.current().bus.publish(turn.session_id, events.frame("suggestions", data))

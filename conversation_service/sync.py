"""A record and its chat session kept equal: conversation_service's outbox handler.

Topic `session` (key: record id), written by conversation_service.services.conversations in the
transaction of a public change to a linked record (a title, a deletion, a restore; pinning is the
record's own): PUT the record's current title and deletion state (with its version) to chat_service's
`/internal/chat/sessions/{id}/sync`, and
take back what the answer says is newer on the session. chat_service's 404 (7001: the session never
existed there) counts as done.
"""

from __future__ import annotations

from flask import Flask, current_app

from conversation_service.config import Config
from conversation_service.extensions import db
from conversation_service.models import OUTBOX, AiConversation
from shared import outbox
from shared.http import ServiceClient

SESSION_PATH = "/internal/chat/sessions/{}/sync"
SESSION_NOT_FOUND = 7001


class DeliveryError(Exception):
    """chat_service refused or failed: the outbox retries later."""


def deliver_session(key: str) -> None:
    """The `session` handler."""
    from conversation_service.services import conversations

    record = db.session.get(AiConversation, int(key), populate_existing=True)
    if record is None or record.chat_session_id is None:
        db.session.remove()
        return
    user_id, session_id = record.user_id, record.chat_session_id
    body: dict = {
        "deleted": bool(record.is_deleted),
        "deletedVersion": conversations.lifecycle_version(record),
    }
    if record.title_version > 0:
        body |= {"title": record.title, "titleVersion": int(record.title_version)}
    db.session.remove()  # no connection held across the call
    client: ServiceClient = current_app.extensions["chat_service"]
    response = client.request("PUT", SESSION_PATH.format(session_id), user_id=user_id, json=body)
    if response.status_code == 404 and _code(response) == SESSION_NOT_FOUND:
        return
    if not response.ok:
        raise DeliveryError(f"chat_service answered {response.status_code}: {response.text[:300]}")
    session = response.json()["data"]
    # What the session knows newer (its own delivery to us may still be pending): take it now.
    conversations.mirror_chat_session(
        user_id,
        session_id,
        {
            "title": session.get("title"),
            "title_version": int(session.get("titleVersion") or 0),
            "dify_conversation_id": session.get("difyConversationId"),
            "dify_version": int(session.get("difyVersion") or 0),
            "activity_time": session.get("activityTime"),
            "created_time": session.get("createdTime"),
            "deleted": bool(session.get("deleted")),
            "deleted_version": int(session.get("deletedVersion") or 0),
        },
    )
    db.session.remove()


def _code(response) -> int | None:
    try:
        return response.json().get("code")
    except ValueError:
        return None


def init_app(app: Flask) -> None:
    """The client for chat_service and the outbox worker (started unless OUTBOX_WORKER is false, or in a
    CLI command)."""
    app.extensions["chat_service"] = ServiceClient(
        app.config["CHAT_SERVICE_URL"], service_name=Config.SERVICE_NAME, config=app.config
    )
    app.extensions["outbox"] = worker = outbox.OutboxWorker(
        app,
        db,
        OUTBOX,
        {"session": deliver_session},
        interval=app.config["OUTBOX_INTERVAL_SECONDS"],
        max_backoff=app.config["OUTBOX_MAX_BACKOFF_SECONDS"],
    )
    if app.config["OUTBOX_WORKER"] and not outbox.in_cli_command():
        worker.start()

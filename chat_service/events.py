"""What open sockets are told when a session changes: frame builders and the publishing calls the
service layer makes after each committed change."""

from __future__ import annotations

from typing import Any

from flask import current_app

from chat_service.models import ChatMessage, ChatSession
from chat_service.schemas import MessageSchema, SessionSchema
from shared.envelope import SUCCESS, envelope

_message = MessageSchema()
_session = SessionSchema()


def frame(kind: str, data: Any = None, *, code: int = SUCCESS, message: str | None = None) -> dict:
    """A server frame: the envelope plus its `type`."""
    return {"type": kind, **envelope(data, code=code, message=message)}


def publish(session_id: str, kind: str, data: Any = None, **kwargs: Any) -> None:
    current_app.extensions["hub"].publish(session_id, frame(kind, data, **kwargs))


def message_posted(message: ChatMessage, *, stopped: bool | None = None) -> None:
    data = _message.dump(message)
    kind = "user_message" if message.role == "user" else "assistant_message"
    if stopped is not None:
        data["stopped"] = stopped
    publish(message.session_id, kind, data)


def message_updated(message: ChatMessage) -> None:
    publish(message.session_id, "message_updated", _message.dump(message))


def message_deleted(session_id: str, message_id: int) -> None:
    publish(session_id, "message_deleted", {"session_id": session_id, "message_id": message_id})


def session_updated(session: ChatSession) -> None:
    publish(session.session_id, "session_updated", _session.dump(session))


def session_deleted(session_id: str) -> None:
    publish(session_id, "session_deleted", {"session_id": session_id})

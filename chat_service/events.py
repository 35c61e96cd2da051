"""What open sockets are told when a session changes: the frames, and the publishing calls the service
layer makes after each committed change."""

from __future__ import annotations

import json
from typing import Any

from chat_service import live
from chat_service.models import ChatMessage, ChatSession
from chat_service.schemas import MessageSchema, SessionSchema
from shared.dumping import dumper
from shared.envelope import SUCCESS, envelope
from shared.errors import ApiError

_message = MessageSchema()
_dump_message = dumper(_message)
_session = SessionSchema()


def frame(kind: str, data: Any = None, *, code: int = SUCCESS, message: str | None = None) -> dict:
    """A server frame: the envelope plus its `type`."""
    return {"type": kind, **envelope(data, code=code, message=message)}


def encode(payload: dict) -> str:
    """A frame's JSON text, as every socket receives it."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def error_frame(error: ApiError) -> dict:
    """An `error` frame: the same code, message and data as the REST answer to the same error."""
    return frame("error", error.data, code=error.code, message=error.message)


def message_frame(message: ChatMessage, *, stopped: bool | None = None) -> dict:
    """`user_message` or `assistant_message` with the whole stored message (and `stopped` for replies)."""
    data = _dump_message(message)
    if stopped is not None:
        data["stopped"] = stopped
    return frame("user_message" if message.role == "user" else "assistant_message", data)


def publish(session_id: str, payload: dict) -> None:
    """Send a frame to every socket of the session, on every instance."""
    live.current().bus.publish(session_id, payload)


def message_posted(message: ChatMessage) -> None:
    publish(message.session_id, message_frame(message))


def message_updated(message: ChatMessage) -> None:
    publish(message.session_id, frame("message_updated", _dump_message(message)))


def message_deleted(session_id: str, message_id: int) -> None:
    publish(session_id, frame("message_deleted", {"session_id": session_id, "message_id": message_id}))


def session_updated(session: ChatSession) -> None:
    publish(session.session_id, frame("session_updated", _session.dump(session)))


def session_deleted(session_id: str) -> None:
    publish(session_id, frame("session_deleted", {"session_id": session_id}))

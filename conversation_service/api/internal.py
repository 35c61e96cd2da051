"""/internal/ai/conversation: what other services call with a service token (never through the gateway)."""

import uuid

from marshmallow import Schema, fields

from conversation_service import purge
from conversation_service.api import internal_bp
from conversation_service.schemas import (
    ChatSessionStateBody,
    ConversationSchema,
    EpochMs,
    LinkBody,
    RecordStateSchema,
)
from conversation_service.services import conversations
from conversation_service.services.conversations import parse_dify_path_id
from shared.auth import current_user_id
from shared.decorators import body, response
from shared.errors import BadRequest


class ChatSessionSyncBody(ChatSessionStateBody):
    """A chat session's state, with the version of its deletion state (ms; 0: unversioned)."""

    deleted_version = EpochMs(data_key="deletedVersion", load_default=0)


class RecordSyncSchema(RecordStateSchema):
    """A chat session's record, with the version of its deletion state."""

    deleted_version = fields.Function(conversations.lifecycle_version, data_key="deletedVersion")


class PurgedSchema(Schema):
    purged = fields.Boolean()


def parse_chat_session_id(raw: str) -> str:
    """A chat session id is a UUID (answered in canonical lowercase form); anything else is a 400."""
    try:
        return str(uuid.UUID(raw))
    except (ValueError, TypeError, AttributeError):
        raise BadRequest(f"malformed chat session id: {raw!r} is not a UUID") from None


@internal_bp.put("/dify/<dify_conversation_id>")
@body(LinkBody)
@response(ConversationSchema)
def link_dify_conversation(data, dify_conversation_id):
    """The user's record for this Dify conversation, created with `title` the first time (idempotent)."""
    dify_id = parse_dify_path_id(dify_conversation_id)
    return conversations.link(current_user_id(), dify_id, data["title"])


@internal_bp.put("/chat/<chat_session_id>")
@body(ChatSessionSyncBody)
@response(RecordSyncSchema)
def mirror_chat_session(data, chat_session_id):
    """The record of a chat session follows the session's state (chat_service's outbox delivers it):
    created the first time, a deletion or restore only with a higher `deletedVersion`, a deleted record
    takes nothing else, a title or Dify id only with a higher version. Idempotent; a replayed or
    reordered delivery changes nothing. Answers the record's state."""
    session_id = parse_chat_session_id(chat_session_id)
    return conversations.mirror_chat_session(current_user_id(), session_id, data)


@internal_bp.get("/chat/<chat_session_id>")
@response(RecordSyncSchema)
def get_chat_session_record(chat_session_id):
    """The record of a chat session, deleted or not, with its versions (for reconcile); 7002 if none."""
    return conversations.owned_chat_record(current_user_id(), parse_chat_session_id(chat_session_id))


@internal_bp.delete("/chat/<chat_session_id>")
@response(PurgedSchema)
def purge_chat_session_record(chat_session_id):
    """A purged chat session's record, removed for good (chat_service's purge cascade): `purged` true
    when it was deleted and is now gone, or there was none (idempotent); a live record (the views
    disagreed) is kept as a standalone record, `purged` false."""
    session_id = parse_chat_session_id(chat_session_id)
    return {"purged": purge.purge_chat_record(current_user_id(), session_id)}

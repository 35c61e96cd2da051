"""/internal/ai/conversation: the records of chat sessions for chat_service's export and import.

- `POST /chat-records`: the records of up to 1,000 chat sessions in one call (the export asks once per
  page of sessions, never once per session).
- `PUT /chat/<chat_session_id>/import`: an imported session's record, created from the session's state
  as the sync would (idempotent), with the pin it had where it was exported (pinning is the record's
  own, so the sync never carries it).
"""

from marshmallow import Schema, fields, validate

from conversation_service.api import internal_bp
from conversation_service.api.internal import parse_chat_session_id
from conversation_service.schemas import MAX_BATCH, Body, ChatSessionStateBody, PinFlag, RecordStateSchema
from conversation_service.services import chat_records
from shared.auth import current_user_id
from shared.decorators import body, response


class ChatRecordsBody(Body):
    chat_session_ids = fields.List(
        fields.UUID(), data_key="chatSessionIds", required=True, validate=validate.Length(max=MAX_BATCH)
    )


class ChatRecordsPageSchema(Schema):
    records = fields.List(fields.Nested(RecordStateSchema))


class ImportedRecordBody(ChatSessionStateBody):
    is_pinned = PinFlag(required=True)


@internal_bp.post("/chat-records")
@body(ChatRecordsBody)
@response(ChatRecordsPageSchema)
def chat_session_records(data):
    """The user's records of the listed chat sessions (deleted ones too, with `deleted`); sessions
    without a record, or whose record is another user's, are left out."""
    ids = [str(session_id) for session_id in data["chat_session_ids"]]
    return {"records": chat_records.of_sessions(current_user_id(), ids)}


@internal_bp.put("/chat/<chat_session_id>/import")
@body(ImportedRecordBody)
@response(RecordStateSchema)
def import_chat_session_record(data, chat_session_id):
    """The record of an imported chat session: created from its state the first time, then pinned as
    `isPinned` says (a deleted record stays deleted and unpinned). Idempotent."""
    session_id = parse_chat_session_id(chat_session_id)
    return chat_records.imported(current_user_id(), session_id, data, bool(data.pop("is_pinned")))

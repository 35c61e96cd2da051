"""/internal/chat: what conversation_service calls with a service token naming the user (never through
the gateway): a change made to a session's record, applied to the session."""

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from chat_service import crud
from chat_service.api import internal_bp
from chat_service.models import TITLE_MAX, epoch_ms
from chat_service.services import sessions
from shared.auth import current_user_id
from shared.decorators import body, response

MAX_VERSION = 2**63 - 1


def _text(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be blank")
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


class StrictBoolean(fields.Boolean):
    """`true` or `false` as JSON booleans only (not 1, "true")."""

    def _deserialize(self, value, attr, data, **kwargs) -> bool:
        if type(value) is not bool:
            raise ValidationError("must be a boolean: true or false")
        return value


def Version(**kwargs) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(0, MAX_VERSION), **kwargs)


class SessionSyncBody(Schema):
    """The record's side of what a session and its record share. Unknown fields are refused."""

    class Meta:
        unknown = RAISE

    title = fields.String(validate=[validate.Length(max=TITLE_MAX), _text], load_default=None)
    title_version = Version(data_key="titleVersion", load_default=0)
    deleted = StrictBoolean(load_default=False)
    # The version of the deletion state (ms; 0: unversioned): a newer restore or deletion applies.
    deleted_version = Version(data_key="deletedVersion", load_default=0)

    @validates_schema
    def _versioned_title(self, data, **kwargs):
        if data.get("title") is not None and data["title_version"] <= 0:
            raise ValidationError("a title comes with its titleVersion (> 0)", "titleVersion")


class SessionStateSchema(Schema):
    """A session as its record mirrors it (deleted sessions included)."""

    session_id = fields.String(data_key="sessionId")
    title = fields.String()
    title_version = fields.Integer(data_key="titleVersion")
    dify_conversation_id = fields.String(data_key="difyConversationId", allow_none=True)
    dify_version = fields.Integer(data_key="difyVersion")
    conversation_record_id = fields.String(data_key="conversationRecordId", allow_none=True)
    activity_time = fields.Function(lambda s: epoch_ms(s.updated_at), data_key="activityTime")
    created_time = fields.Function(lambda s: epoch_ms(s.created_at), data_key="createdTime")
    deleted = fields.Function(lambda s: bool(s.is_deleted))
    deleted_version = fields.Function(crud.lifecycle_version, data_key="deletedVersion")


@internal_bp.put("/sessions/<session_id>/sync")
@body(SessionSyncBody)
@response(SessionStateSchema)
def sync_session(data, session_id):
    """Apply the record's title if its version is newer, its deletion or restore if its `deletedVersion`
    is newer than the session's (a deleted session takes no title); answer the session's state.
    Idempotent: a replay changes nothing."""
    return sessions.apply_synced(
        session_id,
        current_user_id(),
        title=data["title"],
        title_version=data["title_version"],
        deleted=data["deleted"],
        deleted_version=data["deleted_version"],
    )

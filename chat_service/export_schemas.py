"""The export's lines (docs/export.md) as marshmallow schemas: the import validates every line with them,
and the routes' arguments and answers.

Line shapes, one JSON object per line: `export` (first), `session`, `message` (after its session),
`end` (last, with the counts: a file without it was cut off).
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from chat_service.models import FEEDBACK_MAX, RATINGS, ROLES
from chat_service.schemas import Content, Title, _inputs
from shared.fields import JsonInteger

FORMAT = "chat_service.export"
VERSION = 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
USAGE_MAX_CHARS = 4000  # a reply's usage as JSON text (providers report a few hundred characters)
DIFY_ID_MAX = 100
TOKENS_MAX = 2**63 - 1
EXPORT_FORMATS = ("markdown", "ndjson")


def format_time(moment: datetime | None) -> str | None:
    """A naive UTC time as the export writes it: ISO 8601 with microseconds and `Z` (exact round trip)."""
    return moment.strftime(TIME_FORMAT) if moment is not None else None


class UtcTime(fields.Field):
    """A time as the export writes it (`2025-01-01T00:00:00.000000Z`; the fraction may be left out),
    loaded as a naive UTC datetime."""

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        if isinstance(value, str) and value.isascii() and value.endswith("Z"):
            for layout in (TIME_FORMAT, "%Y-%m-%dT%H:%M:%SZ"):
                try:
                    return datetime.strptime(value, layout)
                except ValueError:
                    continue
        raise ValidationError("must be a UTC time: YYYY-MM-DDTHH:MM:SS[.ffffff]Z")

    def _serialize(self, value, attr, obj, **kwargs):
        return format_time(value)


class StrictBoolean(fields.Boolean):
    """`true` or `false` as JSON booleans only."""

    def _deserialize(self, value, attr, data, **kwargs) -> bool:
        if type(value) is not bool:
            raise ValidationError("must be a boolean: true or false")
        return value


def _no_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


def _decimal_string(value: str) -> None:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValidationError("must be a decimal number as a string") from None
    if not number.is_finite() or number < 0 or len(value) > 30:
        raise ValidationError("must be a non-negative decimal number as a string")


def _usage_object(value: dict) -> None:
    if len(json.dumps(value, ensure_ascii=False)) > USAGE_MAX_CHARS:
        raise ValidationError(f"at most {USAGE_MAX_CHARS} characters as JSON")


class Line(Schema):
    """Every line refuses fields it does not know: a line of another version is not guessed at."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True)


class HeaderLine(Line):
    format = fields.String(required=True, validate=validate.Equal(FORMAT, error=f"must be {FORMAT!r}"))
    version = JsonInteger(required=True)
    exported_at = UtcTime(required=True)
    user_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    scope = fields.String(load_default="all", validate=validate.OneOf(("all", "session")))

    @validates_schema
    def _readable_version(self, data, **kwargs):
        if data.get("version") != VERSION:
            raise ValidationError(
                f"version {data.get('version')} cannot be read here: this server reads version {VERSION}",
                "version",
            )


class SessionUsage(Schema):
    class Meta:
        unknown = RAISE

    prompt_tokens = JsonInteger(required=True, validate=validate.Range(0, TOKENS_MAX))
    completion_tokens = JsonInteger(required=True, validate=validate.Range(0, TOKENS_MAX))
    total_tokens = JsonInteger(required=True, validate=validate.Range(0, TOKENS_MAX))
    total_price = fields.String(required=True, allow_none=True, validate=_decimal_string)
    currency = fields.String(required=True, allow_none=True, validate=[validate.Length(max=8), _no_nul])


class RecordPart(Schema):
    """The session's record in conversation_service where it was exported (null: it had none yet)."""

    class Meta:
        unknown = RAISE

    id = fields.String(required=True, allow_none=True, validate=validate.Length(max=20))
    title = Title(required=True)
    pinned = StrictBoolean(required=True)


class SessionLine(Line):
    session_id = fields.UUID(required=True)
    title = Title(required=True)
    created_at = UtcTime(required=True)
    updated_at = UtcTime(required=True)
    usage = fields.Nested(SessionUsage, required=True)
    inputs = fields.Dict(keys=fields.String(), required=True, allow_none=True, validate=_inputs)
    dify_conversation_id = fields.String(
        required=True, allow_none=True, validate=[validate.Length(max=DIFY_ID_MAX), _no_nul]
    )
    record = fields.Nested(RecordPart, required=True, allow_none=True)


class FeedbackPart(Schema):
    class Meta:
        unknown = RAISE

    rating = fields.String(required=True, allow_none=True, validate=validate.OneOf(RATINGS))
    content = fields.String(
        required=True, allow_none=True, validate=[validate.Length(max=FEEDBACK_MAX), _no_nul]
    )


class MessageLine(Line):
    session_id = fields.UUID(required=True)
    message_id = JsonInteger(required=True, validate=validate.Range(min=1))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = Content(required=True)
    created_at = UtcTime(required=True)
    updated_at = UtcTime(required=True)
    is_generated = StrictBoolean(required=True)
    usage = fields.Dict(keys=fields.String(), required=True, allow_none=True, validate=_usage_object)
    feedback = fields.Nested(FeedbackPart, required=True, allow_none=True)
    dify_message_id = fields.String(
        required=True, allow_none=True, validate=[validate.Length(max=64), _no_nul]
    )


class EndLine(Line):
    sessions = JsonInteger(required=True, validate=validate.Range(min=0))
    messages = JsonInteger(required=True, validate=validate.Range(min=0))
    records_unavailable = JsonInteger(required=True, validate=validate.Range(min=0))


LINES: dict[str, Schema] = {
    "export": HeaderLine(),
    "session": SessionLine(),
    "message": MessageLine(),
    "end": EndLine(),
}


# --- the routes -------------------------------------------------------------------------------------


class SessionExportArgs(Schema):
    format = fields.String(load_default="markdown", validate=validate.OneOf(EXPORT_FORMATS))


class ImportedSessionSchema(Schema):
    line = fields.Integer()
    from_session_id = fields.String()
    session_id = fields.String()
    status = fields.String()  # "imported" or "duplicate"
    messages = fields.Integer()
    detail = fields.String()


class ImportSummarySchema(Schema):
    """What an import did: sessions imported (new ids), their messages, and the duplicates it skipped."""

    sessions_imported = fields.Integer()
    messages_imported = fields.Integer()
    duplicates_skipped = fields.Integer()
    sessions = fields.List(fields.Nested(ImportedSessionSchema))
    pins_not_applied = fields.List(fields.String())

"""What chat_service's routes accept and return: the seed's fields, one schema per shape."""

from __future__ import annotations

import json
import math

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from chat_service.models import CONTENT_MAX, FEEDBACK_MAX, RATINGS, ROLES, TITLE_MAX
from shared.paging import page_schema

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_MESSAGE_ID = 2**63 - 1
CURSOR_ARGS = ("before_id", "after_id")


def _text(value: str) -> None:
    """A non-blank string without NUL characters (no database stores those in text)."""
    if not value.strip():
        raise ValidationError("must not be blank")
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


def Title(**kwargs) -> fields.String:
    return fields.String(validate=[validate.Length(max=TITLE_MAX), _text], **kwargs)


def Content(**kwargs) -> fields.String:
    return fields.String(validate=[validate.Length(max=CONTENT_MAX), _text], **kwargs)


def UserId(**kwargs) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=64), allow_none=True, **kwargs)


class Body(Schema):
    """Request bodies refuse unknown fields: a client cannot slip in `is_deleted` or counts."""

    class Meta:
        unknown = RAISE


# --- requests ---------------------------------------------------------------------------------


class CreateSessionBody(Body):
    user_id = UserId()
    title = Title(allow_none=True)


class ListSessionsBody(page_schema(20, json=True)):
    class Meta:
        unknown = RAISE

    user_id = UserId()


class RenameSessionBody(Body):
    new_title = Title(required=True)


class CreateMessageBody(Body):
    session_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    content = Content(required=True)
    role = fields.String(load_default="user", validate=validate.OneOf(ROLES))


INPUTS_MAX = 50
INPUT_VALUE_MAX = 4000


def _inputs(value: dict) -> None:
    """Dify's inputs: at most 50 variables, each a string (at most 4,000 characters), number or bool."""
    if len(value) > INPUTS_MAX:
        raise ValidationError(f"at most {INPUTS_MAX} variables")
    for name, item in value.items():
        if not 0 < len(name) <= 64 or "\x00" in name:
            raise ValidationError(f"{name!r}: a variable name has 1 to 64 characters")
        if isinstance(item, str):
            if len(item) > INPUT_VALUE_MAX or "\x00" in item:
                raise ValidationError(f"{name!r}: at most {INPUT_VALUE_MAX} characters, no NUL")
        elif not isinstance(item, int | float | bool) or not _finite(item):
            raise ValidationError(f"{name!r}: a string, a number or a boolean")


def _finite(number: float) -> bool:
    """A number a float can hold: a JSON integer of 400 digits is not (`math.isfinite` would raise)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


class InputsBody(Body):
    inputs = fields.Dict(keys=fields.String(), required=True, validate=_inputs)


class EditMessageBody(Body):
    new_content = Content(required=True)


class FeedbackBody(Body):
    """A reply's rating (`null` withdraws it) and an optional comment."""

    rating = fields.String(required=True, allow_none=True, validate=validate.OneOf(RATINGS))
    content = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=FEEDBACK_MAX))

    @validates_schema
    def _no_nul(self, data, **kwargs):
        if "\x00" in (data.get("content") or ""):
            raise ValidationError("must not contain NUL characters", "content")


class MessageCursor(fields.Field):
    """A message id as a cursor: a positive integer in ASCII digits (no sign, spaces, `_` or `1.0`)."""

    def _deserialize(self, value, attr, data, **kwargs) -> int:
        if (
            isinstance(value, str)
            and value.isascii()
            and value.isdigit()
            and 0 < int(value) <= MAX_MESSAGE_ID
        ):
            return int(value)
        raise ValidationError("must be a message id: a positive integer")


class MessageListArgs(page_schema(50)):
    """Page-number paging (`page`, `order`), or cursor paging (`before_id` or `after_id`) with `page_size`."""

    order = fields.String(load_default="asc", validate=validate.OneOf(("asc", "desc")))
    before_id = MessageCursor(load_default=None)
    after_id = MessageCursor(load_default=None)

    @validates_schema(pass_original=True)
    def _one_way_of_paging(self, data, original, **kwargs):
        given = [name for name in CURSOR_ARGS if name in original]
        if len(given) > 1:
            raise ValidationError("give before_id or after_id, not both", "after_id")
        for name in ("page", "order"):
            if given and name in original:
                raise ValidationError(f"{name} cannot be combined with {given[0]}", name)


SessionListArgs = page_schema(20)


# --- responses --------------------------------------------------------------------------------


class SessionUsageSchema(Schema):
    """What a session's replies cost, as the providers reported it (deleted replies included)."""

    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()
    total_price = fields.String(allow_none=True)  # a decimal string, as Dify gives it
    currency = fields.String(allow_none=True)


class FeedbackSchema(Schema):
    rating = fields.String(allow_none=True)
    content = fields.String(allow_none=True)


class SessionSchema(Schema):
    """The whole ChatSession object of the seed's model structure, plus its `usage` totals."""

    session_id = fields.String()
    user_id = fields.String()
    title = fields.String()
    message_count = fields.Integer()
    created_at = fields.DateTime(format=UTC_FORMAT)
    updated_at = fields.DateTime(format=UTC_FORMAT)
    is_deleted = fields.Boolean()
    usage = fields.Nested(SessionUsageSchema)


class SeedSessionSchema(SessionSchema):
    """POST /api/chat/session: the seed's seven fields, exactly (the view routes add `usage`)."""

    class Meta:
        exclude = ("usage",)


class SessionDetailSchema(SessionSchema):
    """GET /api/chat/sessions/:session_id, as the seed shows it."""

    class Meta:
        exclude = ("user_id", "usage")


class SessionSummarySchema(SessionSchema):
    """An item of POST /api/chat/sessions, as the seed shows it."""

    class Meta:
        fields = ("session_id", "title", "message_count", "created_at")


class JsonText(fields.Dict):
    """A JSON object stored as text (a reply's `usage`), answered as the object; null when none."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return super()._serialize(json.loads(value) if isinstance(value, str) else value, attr, obj, **kwargs)


class MessageSchema(Schema):
    """The whole ChatMessage object of the seed's model structure, plus the provider's `usage` of a
    reply (tokens, and with Dify price, currency and latency; null when the provider gave none)."""

    message_id = fields.Integer()
    session_id = fields.String()
    role = fields.String()
    content = fields.String()
    created_at = fields.DateTime(format=UTC_FORMAT)
    updated_at = fields.DateTime(format=UTC_FORMAT)
    is_deleted = fields.Boolean()
    usage = JsonText(allow_none=True, dump_default=None)
    feedback = fields.Nested(FeedbackSchema, allow_none=True)


class InputsSchema(Schema):
    session_id = fields.String()
    inputs = fields.Dict()


class ParametersSchema(Schema):
    """The AI app's parameters (Dify's `GET /parameters`, the parts a client shows)."""

    opening_statement = fields.String(allow_none=True)
    suggested_questions = fields.List(fields.String())
    suggested_questions_after_answer = fields.Dict()
    user_input_form = fields.List(fields.Dict())


class MessageBriefSchema(MessageSchema):
    """A message in the REST routes' responses, as the seed shows it."""

    class Meta:
        fields = ("message_id", "content", "role", "created_at")


class MessagePageSchema(Schema):
    """A page of messages: `page` with page numbers, `has_more` with a cursor (`before_id`/`after_id`)."""

    items = fields.List(fields.Nested(MessageBriefSchema))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()
    has_more = fields.Boolean()


class SessionPageSchema(Schema):
    items = fields.List(fields.Nested(SessionSchema))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


class SessionWithMessagesSchema(Schema):
    """A session and its newest messages (shown oldest first)."""

    session = fields.Nested(SessionSchema)
    messages = fields.List(fields.Nested(MessageSchema))


class FirstScreenSchema(SessionPageSchema):
    """The session list plus the most recently updated session and its newest messages."""

    session = fields.Nested(SessionSchema, allow_none=True)
    messages = fields.List(fields.Nested(MessageSchema))


class ViewMessagePageSchema(Schema):
    items = fields.List(fields.Nested(MessageSchema))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()
    has_more = fields.Boolean()

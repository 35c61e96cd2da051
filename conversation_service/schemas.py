"""What conversation_service's routes accept and return: the seed's camelCase fields."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates_schema

from conversation_service.models import DIFY_ID_MAX, TITLE_MAX, epoch_ms
from shared.fields import JsonInteger, QueryInteger
from shared.paging import MAX_PAGE, MAX_PAGE_SIZE

LOCAL_FORMAT = "%Y-%m-%dT%H:%M:%S"
MAX_ID = 2**63 - 1
MAX_BATCH = 1000
SORT_COLUMNS = ("createdTime", "updatedTime", "title")
SORT_ORDERS = ("ASC", "DESC")
OPTIONAL_ARGS = ("sortBy", "sortOrder", "keyword")
CURSOR_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
CURSOR_MAX = 200
START = ()  # the cursor of the first page: `cursor=` given empty


def parse_id(raw: object) -> int | None:
    """A conversation id given as a string of digits, as an int; None when it is not one."""
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_ID:
        return int(raw)
    return None


def _text(value: str) -> None:
    """A non-blank string without NUL characters (no database stores those in text)."""
    if not value.strip():
        raise ValidationError("must not be blank")
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


class ConversationId(fields.String):
    """An id in a body: a string of digits (a number loses precision in JavaScript, so it is refused)."""

    def _deserialize(self, value, attr, data, **kwargs) -> int:
        parsed = parse_id(super()._deserialize(value, attr, data, **kwargs))
        if parsed is None:
            raise ValidationError("must be a conversation id: a string of digits")
        return parsed


def response_zone() -> ZoneInfo:
    """The configured TIMEZONE, in which times are shown."""
    return ZoneInfo(current_app.config["TIMEZONE"])


UTC_ZONE = ZoneInfo("UTC")


def local_time(value: datetime | None, zone: ZoneInfo) -> str | None:
    """LocalTime's text of a naive UTC datetime in `zone`, faster: no conversion for UTC, `isoformat`
    (the same text from the year 1000 on) rather than `strftime` (py-spy: 13 % of a page request)."""
    if value is None:
        return None
    if zone is not UTC_ZONE:
        value = value.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") if value.year >= 1000 else value.strftime(LOCAL_FORMAT)


class LocalTime(fields.Field):
    """A naive UTC datetime shown as `YYYY-MM-DDTHH:MM:SS` in the configured TIMEZONE."""

    def _serialize(self, value: datetime | None, attr, obj, **kwargs) -> str | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC).astimezone(response_zone()).strftime(LOCAL_FORMAT)


def Title(**kwargs) -> fields.String:
    return fields.String(validate=[validate.Length(max=TITLE_MAX), _text], **kwargs)


def DifyId(**kwargs) -> fields.String:
    return fields.String(
        data_key="difyConversationId", validate=[validate.Length(max=DIFY_ID_MAX), _text], **kwargs
    )


def PinFlag(**kwargs) -> fields.Integer:
    """0 or 1, as a JSON number: `true`, `"1"` and `1.0` are refused."""
    return JsonInteger(data_key="isPinned", validate=validate.OneOf((0, 1)), **kwargs)


class Body(Schema):
    """Request bodies refuse unknown fields: a client cannot slip in `userId` or `is_deleted`."""

    class Meta:
        unknown = RAISE


# --- requests ---------------------------------------------------------------------------------


class CreateBody(Body):
    title = Title(required=True)
    dify_conversation_id = DifyId(load_default=None, allow_none=True)
    is_pinned = PinFlag(load_default=0)


class UpdateBody(Body):
    """Only the fields present change; `difyConversationId: null` unlinks the record."""

    id = ConversationId(required=True)
    title = Title()
    dify_conversation_id = DifyId(allow_none=True)
    is_pinned = PinFlag()


def encode_cursor(record) -> str:
    """The opaque cursor that follows `record` in the default order: base64url of its sort key
    `[isPinned, createdTime with microseconds (UTC), id]`."""
    key = [int(record.is_pinned), record.created_time.strftime(CURSOR_TIME_FORMAT), str(record.id)]
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[bool, datetime, int] | tuple[()]:
    """The sort key `(is_pinned, created_time, id)` in a cursor (`START` for an empty one); else raises."""
    if cursor == "":
        return START
    if len(cursor) > CURSOR_MAX or not cursor.isascii():
        raise ValueError("cursor too long or not ASCII")
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    pinned, created, record_id = json.loads(raw)
    if type(pinned) is not int or pinned not in (0, 1) or not isinstance(created, str):
        raise ValueError("bad cursor key")
    parsed_id = parse_id(record_id)
    if parsed_id is None:
        raise ValueError("bad cursor id")
    return bool(pinned), datetime.strptime(created, CURSOR_TIME_FORMAT), parsed_id


class Cursor(fields.String):
    """An opaque cursor from a previous page's `nextCursor` (empty: the first page)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return decode_cursor(text)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValidationError("invalid cursor: pass a nextCursor as it was returned") from None


class PageArgs(Schema):
    page_no = QueryInteger(data_key="pageNo", load_default=1, validate=validate.Range(1, MAX_PAGE))
    page_size = QueryInteger(data_key="pageSize", load_default=10, validate=validate.Range(1, MAX_PAGE_SIZE))
    sort_by = fields.String(
        data_key="sortBy", load_default="createdTime", validate=validate.OneOf(SORT_COLUMNS)
    )
    sort_order = fields.String(
        data_key="sortOrder", load_default="DESC", validate=validate.OneOf(SORT_ORDERS)
    )
    keyword = fields.String(load_default=None, validate=validate.Length(max=TITLE_MAX))
    # Cursor paging (keyset over the default order); None: page-number paging.
    cursor = Cursor(load_default=None)

    @validates_schema(pass_original=True)
    def _cursor_paging(self, data, original, **kwargs):
        """A cursor goes with `pageSize` and `keyword` only, in the default sort (createdTime DESC)."""
        if data.get("cursor") is None:
            return
        if "pageNo" in original:
            raise ValidationError("pageNo cannot be combined with cursor", "pageNo")
        if data["sort_by"] != "createdTime" or data["sort_order"] != "DESC":
            raise ValidationError("cursor paging supports only sortBy=createdTime, sortOrder=DESC", "sortBy")

    @pre_load
    def _normalise(self, data, **kwargs):
        """`sortOrder` in any case; an empty `sortBy`, `sortOrder` or `keyword` counts as absent."""
        data = {key: value for key, value in data.items() if not (key in OPTIONAL_ARGS and value == "")}
        order = data.get("sortOrder")
        if order is not None and order.isascii():  # ASCII only: "ſ".upper() is "S"
            data["sortOrder"] = order.upper()
        return data


class BatchBody(Schema):
    """A JSON array of id strings, 1 to MAX_BATCH of them."""

    ids = fields.List(ConversationId(), required=True, validate=validate.Length(min=1, max=MAX_BATCH))

    @pre_load
    def _array(self, data, **kwargs):
        if not isinstance(data, list):
            raise ValidationError("the body must be a JSON array of conversation id strings", "ids")
        return {"ids": data}


class PinArgs(Schema):
    is_pinned = fields.String(data_key="isPinned", required=True, validate=validate.OneOf(("0", "1")))


class LinkBody(Body):
    title = Title(load_default=None, allow_none=True)


class StrictBoolean(fields.Boolean):
    """`true` or `false` as JSON booleans only (not 1, "true")."""

    def _deserialize(self, value, attr, data, **kwargs) -> bool:
        if type(value) is not bool:
            raise ValidationError("must be a boolean: true or false")
        return value


MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def EpochMs(**kwargs) -> fields.Integer:
    """Milliseconds since the epoch, a JSON integer (a version, or a time)."""
    return JsonInteger(validate=validate.Range(0, MAX_EPOCH_MS), **kwargs)


class ChatSessionStateBody(Body):
    """A chat session's state, as chat_service delivers it (every field optional but the versioned)."""

    title = Title(load_default=None, allow_none=True)
    title_version = EpochMs(data_key="titleVersion", load_default=0)
    dify_conversation_id = DifyId(load_default=None, allow_none=True)
    dify_version = EpochMs(data_key="difyVersion", load_default=0)
    activity_time = EpochMs(data_key="activityTime", load_default=None)
    created_time = EpochMs(data_key="createdTime", load_default=None)
    deleted = StrictBoolean(load_default=False)


# --- responses --------------------------------------------------------------------------------


class ConversationFields(Schema):
    """An AI conversation exactly as the seed shows it."""

    id = fields.String()
    user_id = fields.String(data_key="userId")
    title = fields.String()
    dify_conversation_id = fields.String(data_key="difyConversationId", allow_none=True)
    is_pinned = fields.Function(lambda record: int(record.is_pinned), data_key="isPinned")
    created_time = LocalTime(data_key="createdTime")
    updated_time = LocalTime(data_key="updatedTime")
    # The chat session this record mirrors; null for a standalone record.
    chat_session_id = fields.String(data_key="chatSessionId", allow_none=True)


def conversation_json(record: Any, zone: ZoneInfo) -> dict[str, Any]:
    """ConversationSchema's dump of one record (an ORM object or a row of its columns), field by field
    as marshmallow would (tests/conversation/test_output_schemas.py holds the two equal)."""
    return {
        "id": str(record.id),
        "userId": record.user_id,
        "title": record.title,
        "difyConversationId": record.dify_conversation_id,
        "isPinned": int(record.is_pinned),
        "createdTime": local_time(record.created_time, zone),
        "updatedTime": local_time(record.updated_time, zone),
        "chatSessionId": record.chat_session_id,
    }


class ConversationSchema(ConversationFields):
    """An AI conversation exactly as the seed shows it. Dumped by `conversation_json`, not marshmallow's
    per-field dump (a third of a page request's time, py-spy: docs/benchmarks.md); the fields document
    it (OpenAPI)."""

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        zone = response_zone()
        if self.many if many is None else many:
            return [conversation_json(record, zone) for record in obj]
        return conversation_json(obj, zone)


class RecordStateSchema(ConversationFields):
    """A chat session's record as the internal routes show it: deleted ones too, with versions."""

    title_version = fields.Integer(data_key="titleVersion")
    dify_version = fields.Integer(data_key="difyVersion")
    activity_time = fields.Function(lambda record: epoch_ms(record.updated_time), data_key="activityTime")
    deleted = fields.Function(lambda record: bool(record.is_deleted))


class ConversationPageSchema(Schema):
    """Page-number paging: `records, total, current, size, pages`; cursor paging: `records, size,
    hasMore, nextCursor` (null on the last page)."""

    records = fields.List(fields.Nested(ConversationSchema))
    total = fields.Integer()
    current = fields.Integer()
    size = fields.Integer()
    pages = fields.Integer()
    has_more = fields.Boolean(data_key="hasMore")
    next_cursor = fields.String(data_key="nextCursor", allow_none=True)

    def dump(self, obj: dict[str, Any], *, many: bool | None = None) -> dict[str, Any]:
        """The keys present, in the fields' order, the records by `conversation_json` (as marshmallow
        would dump them; tests/conversation/test_output_schemas.py)."""
        zone = response_zone()
        data: dict[str, Any] = {"records": [conversation_json(record, zone) for record in obj["records"]]}
        for key, data_key, kind in PAGE_KEYS:
            if key in obj:
                value = obj[key]
                data[data_key] = value if value is None else kind(value)
        return data


PAGE_KEYS = (
    ("total", "total", int),
    ("current", "current", int),
    ("size", "size", int),
    ("pages", "pages", int),
    ("has_more", "hasMore", bool),
    ("next_cursor", "nextCursor", str),
)

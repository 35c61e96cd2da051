"""GET /api/chat/search: the user's messages and session titles, Chinese and English (issue 14)."""

from marshmallow import Schema, ValidationError, fields, post_load, validate

from chat_service.api import bp
from chat_service.schemas import UTC_FORMAT
from chat_service.services import search
from shared.auth import current_user_id
from shared.decorators import arguments, response
from shared.fields import QueryInteger
from shared.paging import MAX_PAGE_SIZE
from shared.search_text import QUERY_MAX, parse_query

DEFAULT_PAGE_SIZE = 20


def _query_text(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be blank")
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


class SearchArgs(Schema):
    """`q` (1-200 characters with a word or CJK character in it), `page_size`, the previous page's
    `next_cursor`, and optionally one `session_id` to search in."""

    q = fields.String(required=True, validate=[validate.Length(min=1, max=QUERY_MAX), _query_text])
    page_size = QueryInteger(
        load_default=DEFAULT_PAGE_SIZE, validate=validate.Range(min=1, max=MAX_PAGE_SIZE)
    )
    cursor = fields.String(load_default=None, validate=validate.Length(max=1000))
    session_id = fields.String(load_default=None, validate=validate.Length(min=1, max=64))

    @post_load
    def _parse(self, data, **kwargs):
        data["query"] = parse_query(data["q"])
        if data["query"] is None:
            raise ValidationError("has no word, digit or CJK character to search for", "q")
        data["cursor"] = search.Cursor.decode(data["cursor"])
        return data


class SearchHitSchema(Schema):
    """A hit: a message (`kind` "message") or a session's title (`kind` "title", no message id or role).
    `snippet` is plain text (cut with `…`); `highlights` are the matches in it as `[start, end)` offsets
    in Unicode code points."""

    kind = fields.String()
    session_id = fields.String()
    session_title = fields.String()
    message_id = fields.Integer(allow_none=True)
    role = fields.String(allow_none=True)
    time = fields.DateTime(format=UTC_FORMAT)
    snippet = fields.String()
    highlights = fields.List(fields.List(fields.Integer()))


class SearchPageSchema(Schema):
    items = fields.List(fields.Nested(SearchHitSchema))
    page_size = fields.Integer()
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)


@bp.get("/search")
@arguments(SearchArgs)
@response(SearchPageSchema)
def search_messages(args):
    """The caller's live messages and session titles holding every term of `q`, newest first."""
    return search.search(
        current_user_id(), args["query"], args["page_size"], args["cursor"], args["session_id"]
    )

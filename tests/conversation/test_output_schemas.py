"""ConversationSchema and ConversationPageSchema dump by hand-written functions, not marshmallow's
per-field dump: what they answer is exactly what marshmallow's dump of the same schema gives, for ORM
records and for the rows the listings read, in UTC and in another TIMEZONE."""

from __future__ import annotations

from datetime import datetime

import pytest
from marshmallow import Schema

from conversation_service import create_app
from conversation_service.extensions import db
from conversation_service.models import AiConversation
from conversation_service.schemas import (
    ConversationPageSchema,
    ConversationSchema,
    LocalTime,
    encode_cursor,
    local_time,
    response_zone,
)
from conversation_service.services import conversations
from shared.paging import Page
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ
from tests.conversation.helpers import BASE, new_conversation, service_headers


def marshmallow_dump(schema: Schema, obj, many: bool | None = None):
    """What marshmallow's own dump of `schema` answers."""
    return Schema.dump(schema, obj, many=many)


@pytest.fixture(params=["UTC", "Asia/Shanghai"])
def varied(request, conversation_database):
    """Records of every shape: pinned or not, linked to Dify or not, mirroring a chat session or not."""
    app = create_app(base_environ(conversation_database, TIMEZONE=request.param))
    app.config["TESTING"] = True
    conv = ApiClient(app, default_user=ALICE)
    new_conversation(conv, "plain")
    new_conversation(conv, "pinned, linked", isPinned=1, difyConversationId="dify-1")
    session = "6f1c1c1e-7b7a-4b8e-9a59-2f0d6b3c2a10"
    state = {"title": "a chat session's", "titleVersion": 1, "difyConversationId": "dify-2", "difyVersion": 1}
    envelope(
        conv.put(f"/internal/ai/conversation/chat/{session}", json=state, headers=service_headers(conv)), 200
    )
    yield conv
    with app.app_context():
        from tests.databases import clear_tables

        clear_tables(db, ["ai_conversations", "conversation_sync_outbox", "conversation_user_counts"])
        db.engine.dispose()


def test_a_record_dumps_as_marshmallow_would(varied):
    with varied.app.app_context():
        records = db.session.query(AiConversation).order_by(AiConversation.id).all()
        rows = conversations.list_all(ALICE, 100)
        schema, many = ConversationSchema(), ConversationSchema(many=True)
        assert len(records) == len(rows) == 3
        for record in [*records, *rows]:
            assert schema.dump(record) == marshmallow_dump(schema, record)
        assert many.dump(rows) == marshmallow_dump(many, rows) == marshmallow_dump(schema, rows, many=True)
        db.session.remove()


def test_both_kinds_of_page_dump_as_marshmallow_would(varied):
    schema = ConversationPageSchema()
    with varied.app.app_context():
        rows, total = conversations.page(ALICE, Page(1, 2))
        numbered = {"records": rows, "total": total, "current": 1, "size": 2, "pages": 2}
        scrolled, has_more = conversations.scroll(ALICE, 2)
        for last in (True, False):
            cursor = {"records": scrolled, "size": 2, "has_more": has_more and not last}
            cursor["next_cursor"] = None if last else encode_cursor(scrolled[-1])
            assert schema.dump(cursor) == marshmallow_dump(schema, cursor)
        assert schema.dump(numbered) == marshmallow_dump(schema, numbered)
        assert list(schema.dump(numbered)) == ["records", "total", "current", "size", "pages"]
        db.session.remove()


def test_the_routes_answer_marshmallows_dump_of_their_records(varied):
    page = envelope(varied.get(f"{BASE}/page?pageSize=2&pageNo=2"), 200)
    listed = envelope(varied.get(f"{BASE}/list"), 200)
    with varied.app.app_context():
        records = conversations.list_all(ALICE, 100)
        many = ConversationSchema(many=True)
        assert listed == marshmallow_dump(many, records)
        assert page["records"] == marshmallow_dump(many, records[2:])
        db.session.remove()


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai", "America/St_Johns"])
@pytest.mark.parametrize(
    "moment", [datetime(2026, 12, 3, 23, 59, 59, 999999), datetime(1000, 1, 1, 12), datetime(999, 6, 1), None]
)
def test_local_time_is_the_text_of_the_local_time_field(zone, moment):
    app = create_app(base_environ("sqlite://", TIMEZONE=zone))
    with app.app_context():
        reference = LocalTime()._serialize(moment, "createdTime", None)
        assert local_time(moment, response_zone()) == reference

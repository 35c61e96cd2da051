"""GET /api/ai/conversation/list answers at most LIST_MAX_RECORDS records: pinned first, then newest."""

from __future__ import annotations

import pytest

from conversation_service import create_app
from conversation_service.extensions import db
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ
from tests.conversation.helpers import BASE, new_conversation
from tests.databases import clear_tables


@pytest.fixture
def bounded(conversation_database) -> ApiClient:
    app = create_app(base_environ(conversation_database, LIST_MAX_RECORDS="4"))
    app.config["TESTING"] = True
    yield ApiClient(app, default_user=ALICE)
    with app.app_context():
        clear_tables(db, ["ai_conversations", "conversation_sync_outbox", "conversation_user_counts"])
        db.engine.dispose()


def test_list_answers_at_most_the_bound_pinned_first_then_newest(bounded):
    created = [new_conversation(bounded, f"r{n}") for n in range(7)]
    envelope(bounded.put(f"{BASE}/{created[0]['id']}/pinned?isPinned=1"), 200)
    listed = envelope(bounded.get(f"{BASE}/list"), 200)
    assert [record["title"] for record in listed] == ["r0", "r6", "r5", "r4"]


def test_the_default_bound_is_1000(conv):
    assert conv.app.config["LIST_MAX_RECORDS"] == 1000


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_a_bad_bound_refuses_to_start(tmp_path, value):
    with pytest.raises(ValueError, match="LIST_MAX_RECORDS"):
        create_app(base_environ(f"sqlite:///{tmp_path}/c.sqlite3", LIST_MAX_RECORDS=value))

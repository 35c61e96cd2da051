"""`keyword` on GET /page and the cursor listing: the search rules of chat_service, for titles."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conversation_service.extensions import db
from conversation_service.models import AiConversation
from conversation_service.search import title_matches
from tests.api_client import envelope
from tests.conftest import ALICE, BOB
from tests.conversation.helpers import BASE, new_conversation

TITLES = (
    "关于项目管理的讨论",
    "项目很多，目管得好，管理也好",
    "Deployment plan",
    "planning 会议",
    "東京タワー",
    "ＡＢＣ 全角",
    "100% 完成",
)


@pytest.fixture
def titled(conv) -> dict[str, str]:
    """Alice's records with TITLES (oldest first) and one of Bob's; returns title -> id."""
    made = {title: new_conversation(conv, title)["id"] for title in TITLES}
    new_conversation(conv, "项目 plan of Bob", user=BOB)
    return made


def listed(conv, keyword: str, user: str = ALICE) -> list[str]:
    """Titles the page route and the cursor route list for `keyword` (asserted equal), newest first."""
    data = envelope(
        conv.get(f"{BASE}/page", user=user, query_string={"keyword": keyword, "pageSize": 100}), 200
    )
    by_page = [record["title"] for record in data["records"]]
    assert data["total"] == len(by_page)
    by_cursor, cursor = [], ""
    while True:
        query = {"keyword": keyword, "pageSize": 2, "cursor": cursor}
        data = envelope(conv.get(f"{BASE}/page", user=user, query_string=query), 200)
        by_cursor += [record["title"] for record in data["records"]]
        if not data["hasMore"]:
            break
        cursor = data["nextCursor"]
    assert by_cursor == by_page
    return by_page


def test_a_two_character_word_and_one_character_find_titles_holding_them(conv, titled):
    assert listed(conv, "项目") == ["项目很多，目管得好，管理也好", "关于项目管理的讨论"]
    assert listed(conv, "讨") == ["关于项目管理的讨论"]


def test_a_longer_run_must_occur_as_written(conv, titled):
    assert listed(conv, "项目管理") == ["关于项目管理的讨论"]
    assert listed(conv, "目管") == ["项目很多，目管得好，管理也好", "关于项目管理的讨论"]


def test_english_matches_whole_words_in_any_case(conv, titled):
    assert listed(conv, "PLAN") == ["Deployment plan"]
    assert listed(conv, "planning") == ["planning 会议"]
    assert listed(conv, "deploy") == []


def test_a_mixed_keyword_needs_every_term(conv, titled):
    assert listed(conv, "plan 会议") == []
    assert listed(conv, "planning 会议") == ["planning 会议"]


def test_kana_and_full_width_forms(conv, titled):
    assert listed(conv, "ﾀﾜｰ") == ["東京タワー"]
    assert listed(conv, "abc") == ["ＡＢＣ 全角"]


def test_a_renamed_record_is_found_by_its_new_title_only(conv, titled):
    record_id = titled["关于项目管理的讨论"]
    envelope(conv.put(BASE, json={"id": record_id, "title": "预算审批"}), 200)
    assert listed(conv, "管理") == ["项目很多，目管得好，管理也好"]
    assert listed(conv, "预算") == ["预算审批"]


def test_a_deleted_record_is_not_found(conv, titled):
    envelope(conv.delete(f"{BASE}/{titled['東京タワー']}"), 200)
    assert listed(conv, "タワー") == []


def test_another_users_records_are_never_found(conv, titled):
    assert listed(conv, "bob") == []
    assert listed(conv, "项目 bob", user=BOB) == ["项目 plan of Bob"]


def test_a_keyword_of_punctuation_only_is_matched_literally(conv, titled):
    assert listed(conv, "%") == ["100% 完成"]
    assert listed(conv, "，") == ["项目很多，目管得好，管理也好"]


def test_the_condition_uses_the_index_tokens_not_the_title(conversation_app, conv, titled):
    """The tokens decide (not a LIKE on the title): a row whose tokens were emptied is no longer found."""
    with conversation_app.app_context():
        record_id = int(titled["Deployment plan"])
        db.session.execute(
            sa.text("UPDATE ai_conversations SET search_tokens = '' WHERE id = :id"), {"id": record_id}
        )
        db.session.commit()
        mine = sa.and_(AiConversation.user_id == ALICE, title_matches("plan"))
        found = db.session.scalars(sa.select(AiConversation.id).where(mine)).all()
    assert found == []

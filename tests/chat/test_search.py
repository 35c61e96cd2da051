"""GET /api/chat/search: Chinese and English over the user's live messages and titles, on every backend."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from chat_service.extensions import db
from chat_service.models import ChatMessage
from chat_service.services import search as search_service
from tests.api_client import envelope
from tests.chat.helpers import new_message, new_session
from tests.conftest import ALICE, BOB

UNKNOWN_SESSION = "123e4567-e89b-12d3-a456-426614174000"


WALKS = {  # (RECENT, COMMON, WALK_LIMIT) of chat_service.services.search
    "recent-rows": (search_service.RECENT, search_service.COMMON, search_service.WALK_LIMIT),
    "walked-in-windows": (1, 0.0, search_service.WALK_LIMIT),
    "walk-then-index": (1, 0.0, 3),
    "through-the-index": (2, float("inf"), search_service.WALK_LIMIT),
}


@pytest.fixture(autouse=True, params=list(WALKS))
def walk(request, monkeypatch):
    """Every test four ways: the few messages here all in the first window of the walk; walked in
    windows of 1, 2, 4, ... rows (every term common); two windows walked, the rest through the index;
    only the newest two walked, the rest through the index (every term rare), as in a long history."""
    recent, common, limit = WALKS[request.param]
    monkeypatch.setattr(search_service, "RECENT", recent)
    monkeypatch.setattr(search_service, "COMMON", common)
    monkeypatch.setattr(search_service, "WALK_LIMIT", limit)


def search(chat, q, status=200, code=None, user=ALICE, **query) -> dict:
    return envelope(chat.get("/api/chat/search", user=user, query_string={"q": q, **query}), status, code)


def found(chat, q, user=ALICE, **query) -> list:
    """(kind, message id or session id, marked text) of every hit, over all pages."""
    hits, cursor = [], None
    while True:
        data = search(chat, q, user=user, **({"cursor": cursor} if cursor else {}), **query)
        for item in data["items"]:
            marked = [item["snippet"][start:end] for start, end in item["highlights"]]
            key = item["message_id"] if item["kind"] == "message" else item["session_id"]
            hits.append((item["kind"], key, marked))
        cursor = data["next_cursor"]
        if not data["has_more"]:
            return hits


def message_ids(chat, q, **query) -> list[int]:
    return [key for kind, key, _ in found(chat, q, **query) if kind == "message"]


@pytest.fixture
def corpus(chat):
    """Alice's session with five messages; returns (session_id, {name: message_id})."""
    sid = new_session(chat, title="周会记录")
    texts = {
        "project": "我们讨论了项目管理的进度",
        "plan": "The deployment Plan for next week",
        "mixed": "项目 plan 已经确认",
        "planning": "planning 会议改到明天",
        "kana": "東京タワーへ行きます",
    }
    return sid, {name: new_message(chat, sid, text)["message_id"] for name, text in texts.items()}


def test_a_two_character_chinese_word_finds_the_message_holding_it(chat, corpus):
    _sid, ids = corpus
    assert message_ids(chat, "项目") == [ids["mixed"], ids["project"]]  # newest first
    hits = found(chat, "项目")
    assert [marked for _, _, marked in hits] == [["项目"], ["项目"]]


def test_one_chinese_character_finds_every_word_it_is_part_of(chat, corpus):
    _sid, ids = corpus
    assert message_ids(chat, "目") == [ids["mixed"], ids["project"]]
    assert message_ids(chat, "理") == [ids["project"]]


def test_a_longer_run_must_occur_as_written_not_just_its_bigrams(chat, corpus):
    sid, ids = corpus
    scattered = new_message(chat, sid, "项目很多，目管得好，管理也好")["message_id"]  # every bigram, apart
    assert message_ids(chat, "项目管理") == [ids["project"]]
    assert message_ids(chat, "目管") == [scattered, ids["project"]]
    assert message_ids(chat, "项目管理的进度") == [ids["project"]]


def test_english_words_match_whole_words_in_any_case(chat, corpus):
    _sid, ids = corpus
    assert message_ids(chat, "plan") == [ids["mixed"], ids["plan"]]  # not "planning"
    assert message_ids(chat, "PLAN") == [ids["mixed"], ids["plan"]]
    assert message_ids(chat, "Planning") == [ids["planning"]]
    assert message_ids(chat, "plann") == []


def test_a_mixed_query_needs_every_term(chat, corpus):
    _sid, ids = corpus
    assert message_ids(chat, "项目 plan") == [ids["mixed"]]
    assert message_ids(chat, "plan 项目") == [ids["mixed"]]
    assert message_ids(chat, "项目 deployment") == []


def test_japanese_kana_and_full_width_forms_match(chat, corpus):
    sid, ids = corpus
    assert message_ids(chat, "タワー") == [ids["kana"]]
    assert message_ids(chat, "ﾀﾜｰ") == [ids["kana"]]  # half-width katakana, NFKC
    wide = new_message(chat, sid, "ＤＥＰＬＯＹ 完成")["message_id"]
    assert message_ids(chat, "deploy") == [wide]


def test_titles_are_found_too_with_no_message_id(chat, corpus):
    sid, _ids = corpus
    data = search(chat, "周会")
    assert [
        (item["kind"], item["session_id"], item["message_id"], item["role"]) for item in data["items"]
    ] == [("title", sid, None, None)]
    assert data["items"][0]["snippet"] == "周会记录" and data["items"][0]["highlights"] == [[0, 2]]
    envelope(chat.patch(f"/api/chat/sessions/{sid}", json={"new_title": "Weekly sync"}), 200)
    assert found(chat, "周会") == []
    assert found(chat, "SYNC") == [("title", sid, ["sync"])]


def test_a_hit_carries_its_session_role_time_and_a_marked_snippet(chat, corpus):
    sid, _ids = corpus
    long_text = "开头" * 100 + "这里提到 Plan 一次" + "结尾" * 100
    mid = new_message(chat, sid, long_text, role="assistant")["message_id"]
    item = search(chat, "plan")["items"][0]
    assert (item["kind"], item["session_id"], item["session_title"], item["message_id"], item["role"]) == (
        "message",
        sid,
        "周会记录",
        mid,
        "assistant",
    )
    assert item["time"].endswith("Z")
    assert item["snippet"].startswith("…") and item["snippet"].endswith("…") and len(item["snippet"]) < 200
    [[start, end]] = item["highlights"]
    assert item["snippet"][start:end] == "Plan"


def test_an_edited_message_is_found_by_its_new_words_only(chat, corpus):
    _sid, ids = corpus
    edit = {"new_content": "改成了预算审批 budget"}
    envelope(chat.patch(f"/api/chat/messages/{ids['project']}", json=edit), 200)
    assert message_ids(chat, "项目管理") == []
    assert message_ids(chat, "项目") == [ids["mixed"]]
    assert message_ids(chat, "预算") == [ids["project"]]
    assert message_ids(chat, "budget") == [ids["project"]]


def test_a_deleted_message_is_not_found_and_a_restored_one_is_again(chat, corpus):
    _sid, ids = corpus
    envelope(chat.delete(f"/api/chat/messages/{ids['project']}"), 200)
    assert message_ids(chat, "管理") == []
    with chat.app.app_context():  # restored as the restore path does it: the flag flipped back
        db.session.execute(
            sa.update(ChatMessage).where(ChatMessage.message_id == ids["project"]).values(is_deleted=False)
        )
        db.session.commit()
    assert message_ids(chat, "管理") == [ids["project"]]


def test_a_deleted_session_hides_its_messages_and_title(chat, corpus):
    sid, _ids = corpus
    envelope(chat.delete(f"/api/chat/sessions/{sid}"), 200)
    assert found(chat, "项目") == [] and found(chat, "周会") == []


def test_another_users_messages_are_never_found(chat, corpus):
    _sid, ids = corpus
    bobs = new_session(chat, user=BOB, title="项目 Bob")
    new_message(chat, bobs, "项目 plan from Bob", user=BOB)
    assert message_ids(chat, "项目 plan") == [ids["mixed"]]
    assert [kind for kind, _, _ in found(chat, "bob")] == []
    assert sorted(kind for kind, _, _ in found(chat, "项目 bob", user=BOB)) == ["message", "title"]


def test_pages_go_newest_first_across_messages_and_titles_without_repeats(chat):
    sid = new_session(chat, title="预算 title")
    ids = [new_message(chat, sid, f"预算 第{i}条")["message_id"] for i in range(7)]
    other = new_session(chat, title="预算 second")
    later = new_message(chat, other, "预算 last")["message_id"]
    seen, cursor, pages = [], None, 0
    while True:
        data = search(chat, "预算", page_size=3, **({"cursor": cursor} if cursor else {}))
        assert len(data["items"]) <= 3
        seen += [(item["kind"], item["message_id"] or item["session_id"]) for item in data["items"]]
        pages += 1
        cursor = data["next_cursor"]
        if not data["has_more"]:
            assert cursor is None
            break
    assert pages == 4
    messages = [key for kind, key in seen if kind == "message"]
    assert messages == [later, *reversed(ids)]
    assert sorted(key for kind, key in seen if kind == "title") == sorted([sid, other])
    assert len(seen) == len(set(seen)) == 10


def test_a_session_id_searches_that_session_only(chat, corpus):
    sid, ids = corpus
    other = new_session(chat)
    new_message(chat, other, "项目 elsewhere")
    assert message_ids(chat, "项目", session_id=sid) == [ids["mixed"], ids["project"]]


# --- errors -------------------------------------------------------------------------------------


def test_no_token_is_401(chat):
    envelope(chat.get("/api/chat/search", user=None, query_string={"q": "x"}), 401, 401)


def test_another_users_session_is_403(chat, corpus):
    sid, _ids = corpus
    search(chat, "项目", 403, 403, user=BOB, session_id=sid)


def test_an_unknown_session_is_7001(chat):
    search(chat, "项目", 404, 7001, session_id=UNKNOWN_SESSION)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 201},
        {"q": "😀 !!"},
        {"q": "a\x00b"},
        {"q": "项目", "page_size": "0"},
        {"q": "项目", "page_size": "101"},
        {"q": "项目", "page_size": "1.5"},
        {"q": "项目", "cursor": "not-a-cursor"},
        {"q": "项目", "cursor": "eyJtIjotMSwidCI6bnVsbH0"},  # {"m":-1,"t":null}
    ],
    ids=[
        "missing",
        "empty",
        "blank",
        "too-long",
        "emoji-only",
        "nul",
        "size-0",
        "size-101",
        "size-float",
        "bad-cursor",
        "negative-cursor",
    ],
)
def test_invalid_input_is_1001(chat, query):
    response = chat.get("/api/chat/search", query_string=query)
    data = envelope(response, 400, 1001)
    assert set(data["errors"]) <= {"q", "page_size", "cursor"} and data["errors"]


def test_a_malformed_session_id_is_400(chat):
    search(chat, "项目", 400, 400, session_id="not-a-uuid")


def test_200_characters_are_accepted(chat, corpus):
    assert search(chat, "项" * 200)["items"] == []

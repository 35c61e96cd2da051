"""GET /page and GET /list: the caller's live records, pinned first, sorted, paged and searched."""

from __future__ import annotations

import pytest

from tests.api_client import envelope
from tests.conftest import ALICE, BOB
from tests.conversation.helpers import BASE, FIELDS, new_conversation, service_headers


def titles(records: list[dict]) -> list[str]:
    return [record["title"] for record in records]


def page(conv, query: str = "", **kwargs) -> dict:
    return envelope(conv.get(f"{BASE}/page{query}", **kwargs), 200)


@pytest.fixture
def three(conv) -> dict[str, dict]:
    """b (oldest), a (pinned), c (newest, but updated before the others were)."""
    created = {title: new_conversation(conv, title) for title in ("b", "c", "a")}
    envelope(conv.put(f"{BASE}/{created['a']['id']}/pinned?isPinned=1"), 200)
    envelope(conv.put(BASE, json={"id": created["b"]["id"], "title": "b"}), 200)
    new_conversation(conv, "not mine", user=BOB)
    return created


# --- GET /api/ai/conversation/page -------------------------------------------------------------


def test_page_returns_the_seed_fields_pinned_first_then_newest(conv, three):
    data = page(conv)
    assert list(data) == ["records", "total", "current", "size", "pages"]
    assert list(data["records"][0]) == FIELDS
    assert titles(data["records"]) == ["a", "c", "b"]
    assert (data["total"], data["current"], data["size"], data["pages"]) == (3, 1, 10, 1)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?sortBy=createdTime&sortOrder=DESC", ["a", "c", "b"]),
        ("?sortBy=createdTime&sortOrder=ASC", ["a", "b", "c"]),
        ("?sortBy=updatedTime&sortOrder=DESC", ["a", "b", "c"]),
        ("?sortBy=updatedTime&sortOrder=ASC", ["a", "c", "b"]),
        ("?sortBy=title&sortOrder=ASC", ["a", "b", "c"]),
        ("?sortBy=title", ["a", "c", "b"]),
        ("?sortOrder=asc", ["a", "b", "c"]),
        ("?sortBy=&sortOrder=", ["a", "c", "b"]),
    ],
)
def test_page_sorts_pinned_first_then_by_the_chosen_field(conv, three, query, expected):
    assert titles(page(conv, query)["records"]) == expected


def test_page_sorts_by_title_with_several_pinned(conv, three):
    envelope(conv.put(f"{BASE}/{three['c']['id']}/pinned?isPinned=1"), 200)
    assert titles(page(conv, "?sortBy=title&sortOrder=DESC")["records"]) == ["c", "a", "b"]


def test_page_pages(conv):
    for i in range(12):
        new_conversation(conv, f"t{i:02}")
    first = page(conv, "?pageNo=1&pageSize=5")
    assert titles(first["records"]) == ["t11", "t10", "t09", "t08", "t07"]
    assert (first["total"], first["current"], first["size"], first["pages"]) == (12, 1, 5, 3)
    last = page(conv, "?pageNo=3&pageSize=5")
    assert titles(last["records"]) == ["t01", "t00"]
    assert (last["total"], last["current"], last["size"], last["pages"]) == (12, 3, 5, 3)
    beyond = page(conv, "?pageNo=4&pageSize=5")
    assert (beyond["records"], beyond["total"], beyond["current"]) == ([], 12, 4)
    assert page(conv, "?pageSize=100")["size"] == 100


def test_page_of_nothing(conv):
    assert page(conv) == {"records": [], "total": 0, "current": 1, "size": 10, "pages": 0}


def test_page_keyword_matches_titles(conv, three):
    new_conversation(conv, "关于项目管理的讨论")
    new_conversation(conv, "技术问题咨询")
    data = page(conv, "?pageNo=1&pageSize=10&keyword=项目")
    assert titles(data["records"]) == ["关于项目管理的讨论"]
    assert data["total"] == 1
    assert titles(page(conv, "?keyword=")["records"]) == ["a", "技术问题咨询", "关于项目管理的讨论", "c", "b"]


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("%", ["100% 完成"]),
        ("0%", []),  # `0` is a word of its own: a whole-word match (docs/search.md), not in "100%"
        ("_", ["a_b"]),
        ("a_b", ["a_b"]),
        ("/", ["path/to"]),
        ("\\", ["back\\slash"]),
        ("[a]", ["[a]", "a_b"]),  # the word `a`
        ("'", ["it's"]),
        ("A_B", ["a_b"]),
    ],
)
def test_page_keyword_is_literal(conv, keyword, expected):
    for title in ("100% 完成", "1000 完成", "a_b", "axb", "path/to", "pathxto", "back\\slash", "[a]", "it's"):
        new_conversation(conv, title)
    assert titles(page(conv, "", query_string={"keyword": keyword})["records"]) == expected


def test_page_shows_only_the_callers_live_records(conv, three):
    envelope(conv.delete(f"{BASE}/{three['c']['id']}"), 200)
    assert titles(page(conv)["records"]) == ["a", "b"]
    assert titles(page(conv, user=BOB)["records"]) == ["not mine"]


def test_page_needs_a_token(conv):
    envelope(conv.get(f"{BASE}/page", user=None), 401)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?pageNo=0", "pageNo"),
        ("?pageNo=-1", "pageNo"),
        ("?pageNo=x", "pageNo"),
        ("?pageNo=1.5", "pageNo"),
        ("?pageNo=", "pageNo"),
        ("?pageNo=1000001", "pageNo"),
        ("?pageSize=0", "pageSize"),
        ("?pageSize=101", "pageSize"),
        ("?pageSize=x", "pageSize"),
        ("?sortBy=id", "sortBy"),
        ("?sortBy=created_time", "sortBy"),
        ("?sortBy=isPinned", "sortBy"),
        ("?sortBy=title;DROP TABLE ai_conversations", "sortBy"),
        ("?sortOrder=up", "sortOrder"),
        ("?sortOrder=ASCENDING", "sortOrder"),
        ("?keyword=" + "k" * 256, "keyword"),
    ],
)
def test_page_rejects_invalid_parameters(conv, query, field):
    data = envelope(conv.get(f"{BASE}/page{query}"), 400, 1001)
    assert field in data["errors"]


# --- GET /api/ai/conversation/list -------------------------------------------------------------


def test_list_returns_all_live_records_pinned_first_then_newest(conv, three):
    for i in range(12):
        new_conversation(conv, f"t{i:02}")
    data = envelope(conv.get(f"{BASE}/list"), 200)
    assert titles(data) == ["a", *[f"t{i:02}" for i in reversed(range(12))], "c", "b"]
    assert list(data[0]) == FIELDS
    assert {record["userId"] for record in data} == {ALICE}


def test_list_of_nothing(conv):
    assert envelope(conv.get(f"{BASE}/list"), 200) == []


def test_list_needs_a_token(conv):
    envelope(conv.get(f"{BASE}/list", user=None), 401)


# --- a service acting for a user -------------------------------------------------------------


def test_a_service_token_naming_a_user_acts_for_them(conv, three):
    headers = service_headers(conv, BOB)
    assert titles(envelope(conv.get(f"{BASE}/list", headers=headers), 200)) == ["not mine"]
    created = envelope(conv.post(BASE, json={"title": "from chat"}, headers=headers), 200)
    assert created["userId"] == BOB
    envelope(conv.get(f"{BASE}/{three['a']['id']}", headers=headers), 403)


def test_a_service_token_naming_nobody_is_refused(conv):
    envelope(conv.get(f"{BASE}/list", headers=service_headers(conv, None)), 403)


def test_a_user_token_cannot_act_for_another_user(conv):
    envelope(conv.get(f"{BASE}/list", headers={"X-User-Id": BOB}), 403)

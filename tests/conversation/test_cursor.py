"""GET /page?cursor=...: keyset paging of the caller's records in the default order."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest
import sqlalchemy as sa

from conversation_service.extensions import db
from conversation_service.models import AiConversation
from tests.api_client import envelope
from tests.conftest import BOB
from tests.conversation.helpers import BASE, FIELDS, new_conversation


def scroll(conv, status=200, code=None, user="default", **query):
    query.setdefault("cursor", "")
    return envelope(conv.get(f"{BASE}/page", user=user, query_string=query), status, code)


def titles(data) -> list[str]:
    return [record["title"] for record in data["records"]]


def flat(pages: list[list[str]]) -> list[str]:
    return [title for page in pages for title in page]


def every_page(conv, **query) -> list[list[str]]:
    pages, cursor = [], ""
    while True:
        data = scroll(conv, cursor=cursor, **query)
        pages.append(titles(data))
        assert data["hasMore"] is (data["nextCursor"] is not None)
        if not data["hasMore"]:
            return pages
        cursor = data["nextCursor"]


@pytest.fixture
def seven(conv) -> list[dict]:
    """t0 (oldest) .. t6 (newest); t2 and t5 pinned; and a record of BOB's."""
    made = [new_conversation(conv, f"t{i}", isPinned=int(i in (2, 5))) for i in range(7)]
    new_conversation(conv, "bob", user=BOB)
    return made


def test_the_first_page_has_the_default_order_and_a_cursor(conv, seven):
    data = scroll(conv, pageSize=3)
    assert list(data) == ["records", "size", "hasMore", "nextCursor"]
    assert list(data["records"][0]) == FIELDS
    assert (titles(data), data["size"], data["hasMore"]) == (["t5", "t2", "t6"], 3, True)


@pytest.mark.parametrize("size", [1, 2, 3, 6, 7, 100])
def test_following_the_cursors_lists_every_record_once_as_page_numbers_do(conv, seven, size):
    pages = every_page(conv, pageSize=size)
    expected = titles(envelope(conv.get(f"{BASE}/page?pageSize=100"), 200))
    assert expected == ["t5", "t2", "t6", "t4", "t3", "t1", "t0"]
    assert flat(pages) == expected
    assert all(len(page) == size for page in pages[:-1])


def test_records_with_the_same_time_are_ordered_by_id(conv, conversation_app, seven):
    with conversation_app.app_context():  # every record created at the same microsecond
        db.session.execute(sa.update(AiConversation).values(created_time=datetime(2025, 1, 1)))
        db.session.commit()
    by_id = sorted(seven, key=lambda record: (-record["isPinned"], -int(record["id"])))
    assert flat(every_page(conv, pageSize=2)) == [record["title"] for record in by_id]


def test_the_keyword_filters_cursor_pages(conv, seven):
    new_conversation(conv, "x 100% t")
    assert every_page(conv, keyword="%", pageSize=1) == [["x 100% t"]]
    assert every_page(conv, keyword="t1", pageSize=1) == [["t1"]]


def test_a_user_without_records_gets_an_empty_page(conv, seven):
    data = scroll(conv, user="someone-else")
    assert (data["records"], data["hasMore"], data["nextCursor"]) == ([], False, None)


def test_a_cursor_never_shows_another_users_records(conv, seven):
    cursor = scroll(conv, pageSize=6)["nextCursor"]
    data = scroll(conv, user=BOB, cursor=cursor)
    assert titles(data) == []  # BOB's only record is newer than the cursor
    assert titles(scroll(conv, user=BOB)) == ["bob"]


def test_deleted_records_are_skipped(conv, seven):
    envelope(conv.delete(f"{BASE}/{seven[6]['id']}"), 200)
    assert flat(every_page(conv, pageSize=2)) == ["t5", "t2", "t4", "t3", "t1", "t0"]


def test_the_cursor_of_a_record_deleted_meanwhile_still_works(conv, seven):
    first = scroll(conv, pageSize=3)
    envelope(conv.delete(f"{BASE}/{first['records'][-1]['id']}"), 200)
    assert titles(scroll(conv, pageSize=3, cursor=first["nextCursor"])) == ["t4", "t3", "t1"]


def test_the_sort_may_be_named_when_it_is_the_default(conv, seven):
    assert titles(scroll(conv, pageSize=2, sortBy="createdTime", sortOrder="desc")) == ["t5", "t2"]


def test_page_numbers_answer_as_before_without_a_cursor(conv, seven):
    data = envelope(conv.get(f"{BASE}/page?pageSize=2"), 200)
    assert list(data) == ["records", "total", "current", "size", "pages"]


def test_a_cursor_needs_a_token(conv, seven):
    envelope(conv.get(f"{BASE}/page?cursor=", user=None), 401)


def _cursor(key) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "!!!!"}, "cursor"),
        ({"cursor": "x" * 201}, "cursor"),
        ({"cursor": "é"}, "cursor"),
        ({"cursor": _cursor([1, "2025-01-01T00:00:00.000000"])}, "cursor"),
        ({"cursor": _cursor([2, "2025-01-01T00:00:00.000000", "5"])}, "cursor"),
        ({"cursor": _cursor([True, "2025-01-01T00:00:00.000000", "5"])}, "cursor"),
        ({"cursor": _cursor([1, "yesterday", "5"])}, "cursor"),
        ({"cursor": _cursor([1, "2025-01-01T00:00:00.000000", 5])}, "cursor"),
        ({"cursor": _cursor([1, "2025-01-01T00:00:00.000000", "-5"])}, "cursor"),
        ({"cursor": _cursor({"a": 1})}, "cursor"),
        ({"pageNo": "1"}, "pageNo"),
        ({"sortBy": "title"}, "sortBy"),
        ({"sortBy": "updatedTime"}, "sortBy"),
        ({"sortOrder": "ASC"}, "sortBy"),
        ({"pageSize": "0"}, "pageSize"),
        ({"pageSize": "101"}, "pageSize"),
    ],
)
def test_bad_cursor_queries_are_1001(conv, seven, query, field):
    data = scroll(conv, 400, 1001, **query)
    assert field in data["errors"], data


def test_a_well_formed_foreign_cursor_pages_from_that_key(conv, seven):
    key = [0, "2999-01-01T00:00:00.000000", "9223372036854775807"]
    assert titles(scroll(conv, cursor=_cursor(key), pageSize=100)) == ["t6", "t4", "t3", "t1", "t0"]


@pytest.mark.parametrize("sort", ["createdTime", "updatedTime", "title"])
@pytest.mark.parametrize("order", ["DESC", "ASC"])
def test_every_page_number_is_the_same_from_either_end(conv, seven, sort, order):
    """The far half of the pages is read from the other end of the order: the same rows."""
    envelope(conv.put(BASE, json={"id": seven[3]["id"], "title": "t0"}), 200)  # equal titles: id decides
    query = f"{BASE}/page?sortBy={sort}&sortOrder={order}"
    everything = titles(envelope(conv.get(f"{query}&pageSize=100"), 200))
    for size in (1, 2, 3, 4, 6, 7):
        for number in range(1, 9):
            data = envelope(conv.get(f"{query}&pageSize={size}&pageNo={number}"), 200)
            assert titles(data) == everything[(number - 1) * size : number * size], (size, number)
            assert (data["total"], data["current"]) == (7, number)

"""Cursor paging of a session's messages (`before_id` / `after_id`), and page numbers read from the end."""

from __future__ import annotations

import uuid

import pytest

from chat_service import crud
from chat_service.extensions import db
from tests.api_client import envelope
from tests.chat.helpers import new_message, new_session
from tests.conftest import BOB

UNKNOWN_SESSION = "123e4567-e89b-12d3-a456-426614174000"
ROUTES = ["/api/chat/sessions/{}/messages", "/aichat/sessions/{}/messages"]


@pytest.fixture(params=ROUTES, ids=["api", "aichat"])
def route(request):
    return request.param


@pytest.fixture
def seven(chat):
    """A session with seven messages; returns (session_id, their ids oldest first)."""
    sid = new_session(chat)
    return sid, [new_message(chat, sid, f"m{i}")["message_id"] for i in range(7)]


def cursor_page(chat, route, sid, status=200, code=None, **query):
    return envelope(chat.get(route.format(sid), query_string=query), status, code)


def ids(data) -> list[int]:
    return [item["message_id"] for item in data["items"]]


# --- success ------------------------------------------------------------------------------------


def test_before_id_pages_back_through_the_history_oldest_first(chat, route, seven):
    sid, all_ids = seven
    data = cursor_page(chat, route, sid, before_id=all_ids[-1] + 1, page_size=3)
    assert list(data) == ["items", "total", "page_size", "has_more"]
    assert (ids(data), data["total"], data["page_size"], data["has_more"]) == (all_ids[4:], 7, 3, True)
    data = cursor_page(chat, route, sid, before_id=ids(data)[0], page_size=3)
    assert (ids(data), data["has_more"]) == (all_ids[1:4], True)
    data = cursor_page(chat, route, sid, before_id=ids(data)[0], page_size=3)
    assert (ids(data), data["has_more"]) == (all_ids[:1], False)


def test_after_id_pages_forward_oldest_first(chat, route, seven):
    sid, all_ids = seven
    data = cursor_page(chat, route, sid, after_id=all_ids[0], pageSize=3)
    assert (ids(data), data["has_more"]) == (all_ids[1:4], True)
    data = cursor_page(chat, route, sid, after_id=ids(data)[-1], pageSize=3)
    assert (ids(data), data["has_more"]) == (all_ids[4:7], False)


def test_the_view_route_answers_whole_message_objects(chat, seven):
    sid, all_ids = seven
    data = cursor_page(chat, ROUTES[1], sid, before_id=all_ids[1])
    assert data["items"][0]["message_id"] == all_ids[0]
    assert data["items"][0]["session_id"] == sid
    assert "is_deleted" in data["items"][0]
    brief = cursor_page(chat, ROUTES[0], sid, before_id=all_ids[1])["items"][0]
    assert list(brief) == ["message_id", "content", "role", "created_at"]


def test_page_size_defaults_to_50(chat, route, seven):
    sid, all_ids = seven
    data = cursor_page(chat, route, sid, after_id=all_ids[0])
    assert (ids(data), data["page_size"], data["has_more"]) == (all_ids[1:], 50, False)


def test_a_page_exactly_as_long_as_what_is_left_has_no_more(chat, route, seven):
    sid, all_ids = seven
    assert cursor_page(chat, route, sid, before_id=all_ids[3], page_size=3)["has_more"] is False
    assert cursor_page(chat, route, sid, before_id=all_ids[3], page_size=2)["has_more"] is True
    assert cursor_page(chat, route, sid, after_id=all_ids[3], page_size=3)["has_more"] is False


# --- empty and boundaries -----------------------------------------------------------------------


def test_an_empty_session_has_an_empty_page(chat, route):
    sid = new_session(chat)
    for query in ({"before_id": 1}, {"after_id": 1}):
        data = cursor_page(chat, route, sid, **query)
        assert (data["items"], data["total"], data["has_more"]) == ([], 0, False)


def test_nothing_before_the_first_or_after_the_last(chat, route, seven):
    sid, all_ids = seven
    assert ids(cursor_page(chat, route, sid, before_id=all_ids[0])) == []
    assert ids(cursor_page(chat, route, sid, after_id=all_ids[-1])) == []
    assert ids(cursor_page(chat, route, sid, before_id=2**63 - 1, page_size=1)) == all_ids[-1:]


def test_deleted_messages_are_skipped_and_still_work_as_cursors(chat, route, seven):
    sid, all_ids = seven
    for message_id in (all_ids[2], all_ids[3]):
        envelope(chat.delete(f"/api/chat/messages/{message_id}"), 200)
    data = cursor_page(chat, route, sid, before_id=all_ids[3], page_size=2)
    assert (ids(data), data["total"], data["has_more"]) == ([all_ids[0], all_ids[1]], 5, False)
    assert ids(cursor_page(chat, route, sid, after_id=all_ids[2], page_size=1)) == [all_ids[4]]


def test_other_sessions_messages_never_appear(chat, route, seven):
    sid, all_ids = seven
    other = new_session(chat)
    other_ids = [new_message(chat, other)["message_id"] for _ in range(2)]
    assert ids(cursor_page(chat, route, sid, after_id=all_ids[-1])) == []
    assert ids(cursor_page(chat, route, other, after_id=1)) == other_ids


@pytest.mark.parametrize("size", [1, 100])
def test_page_size_limits_are_accepted(chat, route, seven, size):
    sid, all_ids = seven
    assert len(ids(cursor_page(chat, route, sid, after_id=all_ids[0], page_size=size))) == min(size, 6)


# --- refusals -----------------------------------------------------------------------------------


def test_a_cursor_needs_a_token(chat, route, seven):
    sid, all_ids = seven
    envelope(chat.get(route.format(sid), user=None, query_string={"before_id": all_ids[3]}), 401)


def test_another_users_session_is_forbidden(chat, route, seven):
    sid, all_ids = seven
    envelope(chat.get(route.format(sid), user=BOB, query_string={"before_id": all_ids[3]}), 403)


def test_an_unknown_or_deleted_session_is_7001(chat, route, seven):
    sid, _ = seven
    cursor_page(chat, route, UNKNOWN_SESSION, 404, 7001, before_id=5)
    envelope(chat.delete(f"/api/chat/sessions/{sid}"), 200)
    cursor_page(chat, route, sid, 404, 7001, after_id=1)


def test_a_malformed_session_id_is_400(chat, route):
    cursor_page(chat, route, "abc", 400, 400, before_id=5)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"before_id": "abc"}, "before_id"),
        ({"before_id": "0"}, "before_id"),
        ({"after_id": "-1"}, "after_id"),
        ({"after_id": " 1"}, "after_id"),
        ({"before_id": "1.0"}, "before_id"),
        ({"before_id": "1_000"}, "before_id"),
        ({"before_id": "١٢"}, "before_id"),
        ({"after_id": str(2**63)}, "after_id"),
        ({"after_id": ""}, "after_id"),
        ({"before_id": "5", "after_id": "1"}, "after_id"),
        ({"before_id": "5", "page": "1"}, "page"),
        ({"after_id": "5", "order": "asc"}, "order"),
        ({"before_id": "5", "page_size": "0"}, "page_size"),
        ({"before_id": "5", "page_size": "101"}, "page_size"),
        ({"before_id": "5", "page_size": "2", "pageSize": "3"}, "page_size"),
    ],
)
def test_bad_cursor_queries_are_1001(chat, route, seven, query, field):
    sid, _ = seven
    data = cursor_page(chat, route, sid, 400, 1001, **query)
    assert field in data["errors"], data


# --- page numbers: the far half is read from the end, with identical results --------------------


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_every_page_is_the_same_from_either_end(chat, seven, order):
    sid, all_ids = seven
    envelope(chat.delete(f"/api/chat/messages/{all_ids[1]}"), 200)  # a gap in the ids
    live = [i for i in all_ids if i != all_ids[1]]
    expected_all = live if order == "asc" else live[::-1]
    for size in (1, 2, 3, 4, 6, 7):
        for page in range(1, 9):
            data = envelope(
                chat.get(
                    f"/api/chat/sessions/{sid}/messages",
                    query_string={"page": page, "page_size": size, "order": order},
                ),
                200,
            )
            assert ids(data) == expected_all[(page - 1) * size : page * size], (size, page)
            assert (data["total"], data["page"], data["page_size"]) == (6, page, size)


def test_crud_from_end_matches_list_messages(chat_app):
    with chat_app.app_context():
        session = db.session
        sid = str(uuid.uuid4())
        crud.create_session(session, sid, "u1")
        for i in range(5):
            crud.create_message(session, sid, f"m{i}", "user")
        for order in ("asc", "desc"):
            for size in range(1, 7):
                for page in range(1, 8):
                    forward = crud.list_messages(session, sid, page, size, order)
                    backward = crud.list_messages_from_end(session, sid, page, size, order, 5)
                    assert [m.message_id for m in backward] == [m.message_id for m in forward]


def test_crud_cursor_without_a_cursor_is_the_newest(chat_app):
    with chat_app.app_context():
        session = db.session
        sid = str(uuid.uuid4())
        crud.create_session(session, sid, "u1")
        made = [crud.create_message(session, sid, f"m{i}", "user").message_id for i in range(4)]
        assert [m.message_id for m in crud.list_messages_by_cursor(session, sid, limit=2)] == made[2:]

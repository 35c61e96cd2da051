"""/aichat/...: the view routes of the seed, each a screen of the chat UI."""

from __future__ import annotations

import pytest

from tests.api_client import envelope
from tests.chat.helpers import new_message, new_session
from tests.conftest import ALICE, BOB

UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"
SESSION_FIELDS = [
    "session_id",
    "user_id",
    "title",
    "message_count",
    "created_at",
    "updated_at",
    "is_deleted",
    "usage",
]
MESSAGE_FIELDS = [
    "message_id",
    "session_id",
    "role",
    "content",
    "created_at",
    "updated_at",
    "is_deleted",
    "usage",
    "feedback",
]


# --- GET /aichat/getsessionlist/:user_id ----------------------------------------------------------


def test_session_list_has_paging_info(chat):
    ids = [new_session(chat, title=f"s{i}") for i in range(3)]
    new_session(chat, user=BOB)
    data = envelope(chat.get(f"/aichat/getsessionlist/{ALICE}?page=1&page_size=2"), 200)
    assert list(data) == ["items", "total", "page", "page_size"]
    assert (data["total"], data["page"], data["page_size"]) == (3, 1, 2)
    assert [s["session_id"] for s in data["items"]] == [ids[2], ids[1]]
    assert list(data["items"][0]) == SESSION_FIELDS


def test_session_list_defaults_to_page_1_of_20(chat):
    data = envelope(chat.get(f"/aichat/getsessionlist/{ALICE}"), 200)
    assert (data["items"], data["total"], data["page"], data["page_size"]) == ([], 0, 1, 20)


def test_session_list_needs_a_token(chat):
    envelope(chat.get(f"/aichat/getsessionlist/{ALICE}", user=None), 401)


def test_session_list_of_another_user_is_forbidden(chat):
    new_session(chat, user=BOB)
    envelope(chat.get(f"/aichat/getsessionlist/{BOB}"), 403)


@pytest.mark.parametrize("query", ["page=0", "page_size=101", "page=x"])
def test_session_list_rejects_invalid_paging(chat, query):
    envelope(chat.get(f"/aichat/getsessionlist/{ALICE}?{query}"), 400, 1001)


def test_session_list_of_an_unknown_path_is_404(chat):
    envelope(chat.get("/aichat/getsessionlist/"), 404, 404)


# --- GET /aichat/getsessionlistshow/:user_id ------------------------------------------------------


def test_first_screen_has_the_list_and_the_latest_sessions_newest_50_messages(chat):
    older = new_session(chat, title="older")
    latest = new_session(chat, title="latest")
    new_message(chat, older, content="not shown")
    ids = [new_message(chat, latest, content=f"m{i}")["message_id"] for i in range(55)]
    data = envelope(chat.get(f"/aichat/getsessionlistshow/{ALICE}"), 200)
    assert list(data) == ["items", "total", "page", "page_size", "session", "messages"]
    assert [s["session_id"] for s in data["items"]] == [latest, older]
    assert data["total"] == 2
    assert data["session"]["session_id"] == latest
    assert list(data["session"]) == SESSION_FIELDS
    assert [m["message_id"] for m in data["messages"]] == ids[-50:]
    assert list(data["messages"][0]) == MESSAGE_FIELDS


def test_first_screen_of_a_user_without_sessions(chat):
    data = envelope(chat.get(f"/aichat/getsessionlistshow/{ALICE}"), 200)
    assert data["items"] == [] and data["session"] is None and data["messages"] == []


def test_first_screen_needs_a_token(chat):
    envelope(chat.get(f"/aichat/getsessionlistshow/{ALICE}", user=None), 401)


def test_first_screen_of_another_user_is_forbidden(chat):
    envelope(chat.get(f"/aichat/getsessionlistshow/{BOB}"), 403)


def test_first_screen_rejects_invalid_paging(chat):
    envelope(chat.get(f"/aichat/getsessionlistshow/{ALICE}?page_size=1000"), 400, 1001)


# --- GET /aichat/sessions/:session_id ---------------------------------------------------------------


def test_session_view_has_the_session_and_its_newest_50_messages_oldest_first(chat):
    sid = new_session(chat, title="技术讨论")
    ids = [new_message(chat, sid, content=f"m{i}")["message_id"] for i in range(52)]
    data = envelope(chat.get(f"/aichat/sessions/{sid}"), 200)
    assert data["session"]["title"] == "技术讨论"
    assert data["session"]["message_count"] == 52
    assert [m["message_id"] for m in data["messages"]] == ids[2:]


def test_session_view_needs_a_token(chat):
    sid = new_session(chat)
    envelope(chat.get(f"/aichat/sessions/{sid}", user=None), 401)


def test_session_view_of_another_users_session_is_forbidden(chat):
    sid = new_session(chat)
    envelope(chat.get(f"/aichat/sessions/{sid}", user=BOB), 403)


def test_session_view_of_unknown_or_malformed_session(chat):
    envelope(chat.get(f"/aichat/sessions/{UNKNOWN}"), 404, 7001)
    envelope(chat.get("/aichat/sessions/nope"), 400, 400)


# --- POST /aichat/createsession ---------------------------------------------------------------------


def test_create_session_view(chat):
    data = envelope(chat.post("/aichat/createsession", json={"user_id": ALICE, "title": "会话标题"}), 200)
    assert list(data) == SESSION_FIELDS
    assert data["title"] == "会话标题"
    assert envelope(chat.post("/aichat/createsession", json={}), 200)["title"] == "新会话"


def test_create_session_view_needs_a_token(chat):
    envelope(chat.post("/aichat/createsession", user=None, json={}), 401)


def test_create_session_view_for_another_user_is_forbidden(chat):
    envelope(chat.post("/aichat/createsession", json={"user_id": BOB}), 403)


@pytest.mark.parametrize("body", [{"title": ""}, {"title": "x" * 256}, {"user_id": 7}, {"owner": "x"}])
def test_create_session_view_rejects_invalid_fields(chat, body):
    envelope(chat.post("/aichat/createsession", json=body), 400, 1001)


# --- PATCH /aichat/sessions/:session_id ---------------------------------------------------------------


def test_rename_session_view(chat):
    sid = new_session(chat)
    assert (
        envelope(chat.patch(f"/aichat/sessions/{sid}", json={"new_title": "新标题"}), 200) == "标题更新成功"
    )
    assert envelope(chat.get(f"/aichat/sessions/{sid}"), 200)["session"]["title"] == "新标题"


def test_rename_session_view_needs_a_token(chat):
    sid = new_session(chat)
    envelope(chat.patch(f"/aichat/sessions/{sid}", user=None, json={"new_title": "x"}), 401)


def test_rename_session_view_of_another_user_is_forbidden(chat):
    sid = new_session(chat)
    envelope(chat.patch(f"/aichat/sessions/{sid}", user=BOB, json={"new_title": "x"}), 403)


def test_rename_session_view_of_unknown_session(chat):
    envelope(chat.patch(f"/aichat/sessions/{UNKNOWN}", json={"new_title": "x"}), 404, 7001)


def test_rename_session_view_rejects_invalid_title(chat):
    sid = new_session(chat)
    envelope(chat.patch(f"/aichat/sessions/{sid}", json={"new_title": ""}), 400, 1001)


# --- DELETE /aichat/deletesession/:session_id ---------------------------------------------------------


def test_delete_session_view(chat):
    sid = new_session(chat)
    assert envelope(chat.delete(f"/aichat/deletesession/{sid}"), 200) == "会话删除成功"
    envelope(chat.get(f"/aichat/sessions/{sid}"), 404, 7001)


def test_delete_session_view_needs_a_token(chat):
    sid = new_session(chat)
    envelope(chat.delete(f"/aichat/deletesession/{sid}", user=None), 401)


def test_delete_session_view_of_another_user_is_forbidden(chat):
    sid = new_session(chat)
    envelope(chat.delete(f"/aichat/deletesession/{sid}", user=BOB), 403)
    envelope(chat.get(f"/aichat/sessions/{sid}"), 200)


def test_delete_session_view_of_unknown_or_malformed_session(chat):
    envelope(chat.delete(f"/aichat/deletesession/{UNKNOWN}"), 404, 7001)
    envelope(chat.delete("/aichat/deletesession/zzz"), 400, 400)


# --- GET /aichat/sessions/:session_id/messages ----------------------------------------------------------


def test_session_messages_view_pages_with_pagesize(chat):
    sid = new_session(chat)
    ids = [new_message(chat, sid)["message_id"] for _ in range(3)]
    data = envelope(chat.get(f"/aichat/sessions/{sid}/messages?page=2&pageSize=2"), 200)
    assert [m["message_id"] for m in data["items"]] == ids[2:]
    assert (data["total"], data["page"], data["page_size"]) == (3, 2, 2)
    assert list(data["items"][0]) == MESSAGE_FIELDS


def test_session_messages_view_defaults_to_50(chat):
    sid = new_session(chat)
    assert envelope(chat.get(f"/aichat/sessions/{sid}/messages"), 200)["page_size"] == 50


def test_session_messages_view_needs_a_token(chat):
    sid = new_session(chat)
    envelope(chat.get(f"/aichat/sessions/{sid}/messages", user=None), 401)


def test_session_messages_view_of_another_user_is_forbidden(chat):
    sid = new_session(chat)
    envelope(chat.get(f"/aichat/sessions/{sid}/messages", user=BOB), 403)


def test_session_messages_view_of_unknown_session(chat):
    envelope(chat.get(f"/aichat/sessions/{UNKNOWN}/messages"), 404, 7001)


def test_session_messages_view_rejects_invalid_paging(chat):
    sid = new_session(chat)
    envelope(chat.get(f"/aichat/sessions/{sid}/messages?pageSize=0"), 400, 1001)

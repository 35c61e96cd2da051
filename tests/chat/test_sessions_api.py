"""/api/chat/session(s) as the seed describes them."""

from __future__ import annotations

import uuid

import pytest

from tests.api_client import envelope
from tests.conftest import ALICE, BOB

UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"
UTC_Z = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def create(chat, user=ALICE, **body):
    return envelope(chat.post("/api/chat/session", user=user, json=body), 200)


# --- POST /api/chat/session ------------------------------------------------------------------


def test_create_session_returns_the_seed_object(chat):
    response = chat.post("/api/chat/session", json={"user_id": ALICE, "title": "技术讨论"})
    data = envelope(response, 200)
    assert response.get_json()["message"] == "success"
    assert list(data) == [
        "session_id", "user_id", "title", "message_count", "created_at", "updated_at", "is_deleted",
    ]  # fmt: skip
    assert str(uuid.UUID(data["session_id"])) == data["session_id"]
    assert data["user_id"] == ALICE
    assert data["title"] == "技术讨论"
    assert data["message_count"] == 0
    assert data["is_deleted"] is False
    assert data["created_at"] == data["updated_at"]
    assert __import__("re").fullmatch(UTC_Z, data["created_at"])


def test_create_session_defaults_title_and_user_to_the_token(chat):
    data = create(chat)
    assert data["title"] == "新会话"
    assert data["user_id"] == ALICE


def test_create_session_needs_a_token(chat):
    envelope(chat.post("/api/chat/session", user=None, json={}), 401)


def test_create_session_for_another_user_is_forbidden(chat):
    envelope(chat.post("/api/chat/session", json={"user_id": BOB}), 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x" * 256}, "title"),
        ({"title": "   "}, "title"),
        ({"title": 5}, "title"),
        ({"title": "a\x00b"}, "title"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": 542738228948500480}, "user_id"),
        ({"is_deleted": True}, "is_deleted"),
        ({"message_count": 9}, "message_count"),
    ],
)
def test_create_session_rejects_invalid_fields(chat, body, field):
    data = envelope(chat.post("/api/chat/session", json=body), 400, 1001)
    assert field in data["errors"]


def test_create_session_accepts_a_title_of_255_characters(chat):
    assert create(chat, title="题" * 255)["title"] == "题" * 255


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2"])
def test_create_session_rejects_a_body_that_is_not_json(chat, raw):
    response = chat.post("/api/chat/session", data=raw, headers={"Content-Type": "application/json"})
    envelope(response, 400, 400)


def test_create_session_rejects_a_json_body_that_is_not_an_object(chat):
    envelope(chat.post("/api/chat/session", json=["title"]), 400, 1001)


# --- GET /api/chat/sessions/:session_id ---------------------------------------------------------


def test_get_session_returns_the_seed_fields(chat):
    created = create(chat, title="技术讨论")
    data = envelope(chat.get(f"/api/chat/sessions/{created['session_id']}"), 200)
    assert data == {key: value for key, value in created.items() if key != "user_id"}


def test_get_session_accepts_an_uppercase_uuid(chat):
    created = create(chat)
    data = envelope(chat.get(f"/api/chat/sessions/{created['session_id'].upper()}"), 200)
    assert data["session_id"] == created["session_id"]


def test_get_session_needs_a_token(chat):
    created = create(chat)
    envelope(chat.get(f"/api/chat/sessions/{created['session_id']}", user=None), 401)


def test_get_another_users_session_is_forbidden_and_leaks_nothing(chat):
    created = create(chat, title="私密")
    response = chat.get(f"/api/chat/sessions/{created['session_id']}", user=BOB)
    envelope(response, 403)
    assert "私密" not in response.get_data(as_text=True)


def test_get_unknown_session_is_7001(chat):
    envelope(chat.get(f"/api/chat/sessions/{UNKNOWN}"), 404, 7001)


def test_get_session_with_a_malformed_id_is_400(chat):
    envelope(chat.get("/api/chat/sessions/not-a-uuid"), 400, 400)


def test_a_deleted_session_is_gone_everywhere(chat):
    sid = create(chat)["session_id"]
    envelope(chat.delete(f"/api/chat/sessions/{sid}"), 200)
    envelope(chat.get(f"/api/chat/sessions/{sid}"), 404, 7001)
    envelope(chat.patch(f"/api/chat/sessions/{sid}", json={"new_title": "x"}), 404, 7001)
    envelope(chat.delete(f"/api/chat/sessions/{sid}"), 404, 7001)
    envelope(chat.get(f"/api/chat/sessions/{sid}/messages"), 404, 7001)
    body = {"session_id": sid, "content": "hi"}
    envelope(chat.post("/api/chat/message", json=body), 404, 7001)
    assert envelope(chat.post("/api/chat/sessions", json={}), 200) == []


# --- POST /api/chat/sessions ------------------------------------------------------------------


def test_list_sessions_pages_the_users_sessions_most_recent_first(chat):
    ids = [create(chat, title=f"s{i}")["session_id"] for i in range(3)]
    create(chat, user=BOB)
    chat.post("/api/chat/message", json={"session_id": ids[0], "content": "bump"})
    data = envelope(chat.post("/api/chat/sessions", json={"user_id": ALICE}), 200)
    assert [item["session_id"] for item in data] == [ids[0], ids[2], ids[1]]
    assert list(data[0]) == ["session_id", "title", "message_count", "created_at"]
    assert data[0]["message_count"] == 1
    page = envelope(chat.post("/api/chat/sessions", json={"page": 2, "page_size": 2}), 200)
    assert [item["session_id"] for item in page] == [ids[1]]


def test_list_sessions_needs_a_token(chat):
    envelope(chat.post("/api/chat/sessions", user=None, json={}), 401)


def test_list_another_users_sessions_is_forbidden(chat):
    envelope(chat.post("/api/chat/sessions", json={"user_id": BOB}), 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"page": 0}, "page"),
        ({"page": "x"}, "page"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"pageSize": 101}, "page_size"),
        ({"page_size": 10, "pageSize": 20}, "page_size"),
        ({"sort": "title"}, "sort"),
    ],
)
def test_list_sessions_rejects_invalid_paging(chat, body, field):
    data = envelope(chat.post("/api/chat/sessions", json=body), 400, 1001)
    assert field in data["errors"]


def test_list_sessions_beyond_the_last_page_is_empty(chat):
    create(chat)
    assert envelope(chat.post("/api/chat/sessions", json={"page": 99}), 200) == []


# --- DELETE /api/chat/sessions/:session_id ------------------------------------------------------


def test_delete_session_answers_the_seed_string(chat):
    sid = create(chat)["session_id"]
    assert envelope(chat.delete(f"/api/chat/sessions/{sid}"), 200) == "会话删除成功"


def test_delete_session_needs_a_token(chat):
    sid = create(chat)["session_id"]
    envelope(chat.delete(f"/api/chat/sessions/{sid}", user=None), 401)


def test_delete_another_users_session_is_forbidden_and_keeps_it(chat):
    sid = create(chat)["session_id"]
    envelope(chat.delete(f"/api/chat/sessions/{sid}", user=BOB), 403)
    envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)


def test_delete_unknown_or_malformed_session(chat):
    envelope(chat.delete(f"/api/chat/sessions/{UNKNOWN}"), 404, 7001)
    envelope(chat.delete("/api/chat/sessions/123"), 400, 400)


# --- PATCH /api/chat/sessions/:session_id -------------------------------------------------------


def test_rename_session_answers_the_seed_string_and_renames(chat):
    created = create(chat)
    sid = created["session_id"]
    response = chat.patch(f"/api/chat/sessions/{sid}", json={"new_title": "更新后的标题"})
    assert envelope(response, 200) == "标题更新成功"
    data = envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)
    assert data["title"] == "更新后的标题"
    assert data["updated_at"] >= created["updated_at"]


def test_rename_session_needs_a_token(chat):
    sid = create(chat)["session_id"]
    envelope(chat.patch(f"/api/chat/sessions/{sid}", user=None, json={"new_title": "x"}), 401)


def test_rename_another_users_session_is_forbidden(chat):
    sid = create(chat, title="mine")["session_id"]
    envelope(chat.patch(f"/api/chat/sessions/{sid}", user=BOB, json={"new_title": "x"}), 403)
    assert envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)["title"] == "mine"


def test_rename_unknown_session_is_7001(chat):
    envelope(chat.patch(f"/api/chat/sessions/{UNKNOWN}", json={"new_title": "x"}), 404, 7001)


@pytest.mark.parametrize(
    "body", [{}, {"new_title": ""}, {"new_title": "x" * 256}, {"new_title": None}, {"title": "x"}]
)
def test_rename_session_rejects_invalid_titles(chat, body):
    sid = create(chat)["session_id"]
    envelope(chat.patch(f"/api/chat/sessions/{sid}", json=body), 400, 1001)

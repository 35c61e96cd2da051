"""/api/chat/message(s) as the seed describes them."""

from __future__ import annotations

import pytest

from tests.api_client import envelope
from tests.chat.helpers import new_message, new_session
from tests.conftest import BOB

UNKNOWN_SESSION = "123e4567-e89b-12d3-a456-426614174000"


def session_data(chat, sid):
    return envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)


# --- POST /api/chat/message -------------------------------------------------------------------


def test_post_message_returns_the_seed_fields_and_counts_it(chat):
    sid = new_session(chat)
    before = session_data(chat, sid)
    response = chat.post(
        "/api/chat/message", json={"session_id": sid, "content": "如何学习Python？", "role": "user"}
    )
    data = envelope(response, 200)
    assert list(data) == ["message_id", "content", "role", "created_at"]
    assert isinstance(data["message_id"], int)
    assert data["content"] == "如何学习Python？"
    assert data["role"] == "user"
    after = session_data(chat, sid)
    assert after["message_count"] == 1
    assert after["updated_at"] >= before["updated_at"]


@pytest.mark.parametrize("role", ["user", "assistant", "system"])
def test_post_message_accepts_each_role(chat, role):
    sid = new_session(chat)
    assert new_message(chat, sid, role=role)["role"] == role


def test_post_message_role_defaults_to_user(chat):
    sid = new_session(chat)
    data = envelope(chat.post("/api/chat/message", json={"session_id": sid, "content": "hi"}), 200)
    assert data["role"] == "user"


def test_post_message_needs_a_token(chat):
    sid = new_session(chat)
    envelope(chat.post("/api/chat/message", user=None, json={"session_id": sid, "content": "x"}), 401)


def test_post_message_into_another_users_session_is_forbidden(chat):
    sid = new_session(chat)
    envelope(chat.post("/api/chat/message", user=BOB, json={"session_id": sid, "content": "x"}), 403)
    assert session_data(chat, sid)["message_count"] == 0


def test_post_message_into_an_unknown_session_is_7001(chat):
    body = {"session_id": UNKNOWN_SESSION, "content": "x"}
    envelope(chat.post("/api/chat/message", json=body), 404, 7001)


def test_post_message_with_a_malformed_session_id_is_400(chat):
    envelope(chat.post("/api/chat/message", json={"session_id": "abc", "content": "x"}), 400, 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": "x"}, "session_id"),
        ({"content": ""}, "content"),
        ({"content": "  \n "}, "content"),
        ({"content": None}, "content"),
        ({"content": 42}, "content"),
        ({"content": "x" * 32_001}, "content"),
        ({"content": "a\x00b"}, "content"),
        ({}, "content"),
        ({"content": "x", "role": "robot"}, "role"),
        ({"content": "x", "role": "USER"}, "role"),
        ({"content": "x", "message_id": 5}, "message_id"),
        ({"content": "x", "is_deleted": True}, "is_deleted"),
    ],
)
def test_post_message_rejects_invalid_fields(chat, body, field):
    sid = new_session(chat)
    payload = body if field == "session_id" else {"session_id": sid, **body}
    data = envelope(chat.post("/api/chat/message", json=payload), 400, 1001)
    assert field in data["errors"]
    assert session_data(chat, sid)["message_count"] == 0


def test_post_message_accepts_32000_characters_of_any_script(chat):
    sid = new_session(chat)
    content = "题😀" * 16_000
    assert new_message(chat, sid, content=content)["content"] == content


# --- GET /api/chat/sessions/:session_id/messages/:message_id -----------------------------------


def test_get_message(chat):
    sid = new_session(chat)
    created = new_message(chat, sid, content="你好！")
    data = envelope(chat.get(f"/api/chat/sessions/{sid}/messages/{created['message_id']}"), 200)
    assert data == created


def test_get_message_needs_a_token(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid)["message_id"]
    envelope(chat.get(f"/api/chat/sessions/{sid}/messages/{mid}", user=None), 401)


def test_get_another_users_message_is_forbidden(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid, content="secret")["message_id"]
    response = chat.get(f"/api/chat/sessions/{sid}/messages/{mid}", user=BOB)
    envelope(response, 403)
    assert "secret" not in response.get_data(as_text=True)


def test_get_message_of_another_session_is_7003(chat):
    first, second = new_session(chat), new_session(chat)
    mid = new_message(chat, first)["message_id"]
    envelope(chat.get(f"/api/chat/sessions/{second}/messages/{mid}"), 404, 7003)


def test_get_unknown_or_deleted_message_is_7003(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid)["message_id"]
    envelope(chat.get(f"/api/chat/sessions/{sid}/messages/{mid + 1000}"), 404, 7003)
    chat.delete(f"/api/chat/messages/{mid}")
    envelope(chat.get(f"/api/chat/sessions/{sid}/messages/{mid}"), 404, 7003)


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "1.5", "99999999999999999999", "١٢"])
def test_get_message_with_a_malformed_id_is_400(chat, raw):
    sid = new_session(chat)
    envelope(chat.get(f"/api/chat/sessions/{sid}/messages/{raw}"), 400, 400)


# --- GET /api/chat/sessions/:session_id/messages ------------------------------------------------


def test_list_messages_pages_oldest_first_with_the_seed_fields(chat):
    sid = new_session(chat)
    ids = [new_message(chat, sid, content=f"m{i}")["message_id"] for i in range(5)]
    data = envelope(chat.get(f"/api/chat/sessions/{sid}/messages?page=1&pageSize=2"), 200)
    assert list(data) == ["items", "total", "page", "page_size"]
    assert [m["message_id"] for m in data["items"]] == ids[:2]
    assert list(data["items"][0]) == ["message_id", "content", "role", "created_at"]
    assert (data["total"], data["page"], data["page_size"]) == (5, 1, 2)
    last = envelope(chat.get(f"/api/chat/sessions/{sid}/messages?page=3&page_size=2"), 200)
    assert [m["message_id"] for m in last["items"]] == ids[4:]


def test_list_messages_defaults_to_pages_of_50(chat):
    sid = new_session(chat)
    data = envelope(chat.get(f"/api/chat/sessions/{sid}/messages"), 200)
    assert (data["items"], data["total"], data["page"], data["page_size"]) == ([], 0, 1, 50)


def test_list_messages_desc_pages_from_the_newest(chat):
    sid = new_session(chat)
    ids = [new_message(chat, sid)["message_id"] for _ in range(3)]
    data = envelope(chat.get(f"/api/chat/sessions/{sid}/messages?order=desc&page_size=2"), 200)
    assert [m["message_id"] for m in data["items"]] == [ids[2], ids[1]]


def test_list_messages_leaves_out_deleted_ones(chat):
    sid = new_session(chat)
    ids = [new_message(chat, sid)["message_id"] for _ in range(3)]
    chat.delete(f"/api/chat/messages/{ids[1]}")
    data = envelope(chat.get(f"/api/chat/sessions/{sid}/messages"), 200)
    assert [m["message_id"] for m in data["items"]] == [ids[0], ids[2]]
    assert data["total"] == 2


def test_list_messages_needs_a_token(chat):
    sid = new_session(chat)
    envelope(chat.get(f"/api/chat/sessions/{sid}/messages", user=None), 401)


def test_list_another_users_messages_is_forbidden(chat):
    sid = new_session(chat)
    envelope(chat.get(f"/api/chat/sessions/{sid}/messages", user=BOB), 403)


def test_list_messages_of_an_unknown_session_is_7001(chat):
    envelope(chat.get(f"/api/chat/sessions/{UNKNOWN_SESSION}/messages"), 404, 7001)


@pytest.mark.parametrize(
    "query",
    ["page=0", "page=abc", "pageSize=0", "pageSize=101", "page_size=-1", "order=sideways",
     "page_size=5&pageSize=6"],
)  # fmt: skip
def test_list_messages_rejects_invalid_query_values(chat, query):
    sid = new_session(chat)
    envelope(chat.get(f"/api/chat/sessions/{sid}/messages?{query}"), 400, 1001)


# --- DELETE /api/chat/messages/:message_id ------------------------------------------------------


def test_delete_message_answers_the_seed_string_and_uncounts_it(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid)["message_id"]
    assert envelope(chat.delete(f"/api/chat/messages/{mid}"), 200) == "消息删除成功"
    assert session_data(chat, sid)["message_count"] == 0
    envelope(chat.delete(f"/api/chat/messages/{mid}"), 404, 7003)
    assert session_data(chat, sid)["message_count"] == 0


def test_delete_message_needs_a_token(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid)["message_id"]
    envelope(chat.delete(f"/api/chat/messages/{mid}", user=None), 401)


def test_delete_another_users_message_is_forbidden_and_keeps_it(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid)["message_id"]
    envelope(chat.delete(f"/api/chat/messages/{mid}", user=BOB), 403)
    assert session_data(chat, sid)["message_count"] == 1


def test_delete_unknown_or_malformed_message(chat):
    envelope(chat.delete("/api/chat/messages/987654"), 404, 7003)
    envelope(chat.delete("/api/chat/messages/x"), 400, 400)


def test_messages_of_a_deleted_session_are_gone(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid)["message_id"]
    chat.delete(f"/api/chat/sessions/{sid}")
    envelope(chat.delete(f"/api/chat/messages/{mid}"), 404, 7003)
    envelope(chat.patch(f"/api/chat/messages/{mid}", json={"new_content": "x"}), 404, 7003)


# --- PATCH /api/chat/messages/:message_id -------------------------------------------------------


def test_edit_message_answers_the_seed_string_and_edits(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid, content="old")["message_id"]
    response = chat.patch(f"/api/chat/messages/{mid}", json={"new_content": "更新后的消息内容"})
    assert envelope(response, 200) == "消息编辑成功"
    data = envelope(chat.get(f"/api/chat/sessions/{sid}/messages/{mid}"), 200)
    assert data["content"] == "更新后的消息内容"


@pytest.mark.parametrize("role", ["assistant", "system"])
def test_only_user_messages_can_be_edited(chat, role):
    sid = new_session(chat)
    mid = new_message(chat, sid, content="old", role=role)["message_id"]
    envelope(chat.patch(f"/api/chat/messages/{mid}", json={"new_content": "new"}), 409, 1004)
    assert envelope(chat.get(f"/api/chat/sessions/{sid}/messages/{mid}"), 200)["content"] == "old"


def test_edit_message_needs_a_token(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid)["message_id"]
    envelope(chat.patch(f"/api/chat/messages/{mid}", user=None, json={"new_content": "x"}), 401)


def test_edit_another_users_message_is_forbidden(chat):
    sid = new_session(chat)
    mid = new_message(chat, sid, content="mine")["message_id"]
    envelope(chat.patch(f"/api/chat/messages/{mid}", user=BOB, json={"new_content": "x"}), 403)
    assert envelope(chat.get(f"/api/chat/sessions/{sid}/messages/{mid}"), 200)["content"] == "mine"


def test_edit_unknown_message_is_7003(chat):
    envelope(chat.patch("/api/chat/messages/987654", json={"new_content": "x"}), 404, 7003)


@pytest.mark.parametrize(
    "body",
    [{}, {"new_content": ""}, {"new_content": " "}, {"new_content": "x" * 32_001}, {"content": "x"},
     {"new_content": ["x"]}],
)  # fmt: skip
def test_edit_message_rejects_invalid_content(chat, body):
    sid = new_session(chat)
    mid = new_message(chat, sid)["message_id"]
    envelope(chat.patch(f"/api/chat/messages/{mid}", json=body), 400, 1001)

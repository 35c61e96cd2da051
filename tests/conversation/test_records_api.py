"""Create, update, detail, delete and pin one AI conversation, as the seed describes them."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from conversation_service import create_app
from conversation_service.extensions import db
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, BOB, base_environ
from tests.conversation.helpers import BASE, FIELDS, LOCAL_TIME, UNKNOWN, new_conversation

# --- POST /api/ai/conversation -----------------------------------------------------------------


def test_create_returns_the_seed_object(conv):
    body = {"title": "关于项目管理的讨论", "difyConversationId": "conv-123456", "isPinned": 0}
    response = conv.post(BASE, json=body)
    data = envelope(response, 200)
    assert response.get_json()["message"] == "操作成功"
    assert list(data) == FIELDS
    assert data["id"].isdigit() and int(data["id"]) > 2**40
    assert data["userId"] == ALICE
    assert data["title"] == "关于项目管理的讨论"
    assert data["difyConversationId"] == "conv-123456"
    assert data["isPinned"] == 0
    assert LOCAL_TIME.fullmatch(data["createdTime"])
    assert data["createdTime"] == data["updatedTime"]


def test_create_defaults_to_unpinned_and_unlinked(conv):
    data = new_conversation(conv, "技术问题咨询")
    assert data["isPinned"] == 0
    assert data["difyConversationId"] is None


def test_create_pinned(conv):
    assert new_conversation(conv, isPinned=1)["isPinned"] == 1


def test_create_accepts_limits(conv):
    data = new_conversation(conv, "题" * 255, difyConversationId="d" * 100)
    assert data["title"] == "题" * 255
    assert data["difyConversationId"] == "d" * 100


def test_create_needs_a_token(conv):
    envelope(conv.post(BASE, user=None, json={"title": "x"}), 401)


def test_create_with_a_bad_token_is_401(conv):
    envelope(conv.post(BASE, json={"title": "x"}, headers={"Authorization": "Bearer nope"}), 401)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": None}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 256}, "title"),
        ({"title": 5}, "title"),
        ({"title": "a\x00b"}, "title"),
        ({"title": "x", "difyConversationId": "d" * 101}, "difyConversationId"),
        ({"title": "x", "difyConversationId": ""}, "difyConversationId"),
        ({"title": "x", "difyConversationId": 123}, "difyConversationId"),
        ({"title": "x", "isPinned": 2}, "isPinned"),
        ({"title": "x", "isPinned": -1}, "isPinned"),
        ({"title": "x", "isPinned": True}, "isPinned"),
        ({"title": "x", "isPinned": "1"}, "isPinned"),
        ({"title": "x", "isPinned": 1.0}, "isPinned"),
        ({"title": "x", "isPinned": None}, "isPinned"),
        ({"title": "x", "userId": BOB}, "userId"),
        ({"title": "x", "id": "1"}, "id"),
        ({"title": "x", "is_deleted": 1}, "is_deleted"),
    ],
)
def test_create_rejects_invalid_fields(conv, body, field):
    data = envelope(conv.post(BASE, json=body), 400, 1001)
    assert field in data["errors"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2"])
def test_create_rejects_a_body_that_is_not_json(conv, raw):
    envelope(conv.post(BASE, data=raw, headers={"Content-Type": "application/json"}), 400, 400)


def test_create_rejects_a_json_body_that_is_not_an_object(conv):
    envelope(conv.post(BASE, json=["title"]), 400, 1001)


def test_create_refuses_a_second_record_for_the_same_dify_conversation(conv):
    first = new_conversation(conv, difyConversationId="conv-1")
    data = envelope(conv.post(BASE, json={"title": "again", "difyConversationId": "conv-1"}), 409, 1004)
    assert first["id"] in data["detail"]
    # Another user may link the same Dify id (Dify scopes conversations by user).
    new_conversation(conv, user=BOB, difyConversationId="conv-1")


def test_times_are_shown_in_the_configured_timezone(conversation_database, conv):
    utc = new_conversation(conv)
    app = create_app(base_environ(conversation_database, TIMEZONE="Asia/Shanghai"))
    data = envelope(ApiClient(app, ALICE).get(f"{BASE}/{utc['id']}"), 200)
    with app.app_context():
        db.engine.dispose()
    assert (int(data["createdTime"][11:13]) - int(utc["createdTime"][11:13])) % 24 == 8


def test_an_unknown_timezone_fails_at_start(conversation_database):
    with pytest.raises(Exception, match="Mars"):
        create_app(base_environ(conversation_database, TIMEZONE="Mars/Olympus"))


# --- PUT /api/ai/conversation ------------------------------------------------------------------


def test_update_changes_every_given_field(conv):
    created = new_conversation(conv, difyConversationId="conv-123456")
    time.sleep(1.01)
    body = {"id": created["id"], "title": "更新后的会话标题", "difyConversationId": "conv-123456-updated"}
    data = envelope(conv.put(BASE, json={**body, "isPinned": 1}), 200)
    assert list(data) == FIELDS
    assert data["title"] == "更新后的会话标题"
    assert data["difyConversationId"] == "conv-123456-updated"
    assert data["isPinned"] == 1
    assert data["createdTime"] == created["createdTime"]
    assert data["updatedTime"] > created["updatedTime"]
    assert envelope(conv.get(f"{BASE}/{created['id']}"), 200) == data


def test_update_changes_only_the_fields_present(conv):
    created = new_conversation(conv, "原标题", difyConversationId="conv-1", isPinned=1)
    data = envelope(conv.put(BASE, json={"id": created["id"], "title": "新标题"}), 200)
    assert data["title"] == "新标题"
    assert (data["difyConversationId"], data["isPinned"]) == ("conv-1", 1)
    data = envelope(conv.put(BASE, json={"id": created["id"], "isPinned": 0}), 200)
    assert (data["title"], data["difyConversationId"], data["isPinned"]) == ("新标题", "conv-1", 0)


def test_update_with_only_an_id_changes_nothing(conv):
    created = new_conversation(conv)
    assert envelope(conv.put(BASE, json={"id": created["id"]}), 200) == created


def test_update_with_a_null_dify_id_unlinks(conv):
    created = new_conversation(conv, difyConversationId="conv-1")
    data = envelope(conv.put(BASE, json={"id": created["id"], "difyConversationId": None}), 200)
    assert data["difyConversationId"] is None


def test_update_keeping_its_own_dify_id_is_fine_but_taking_anothers_is_1004(conv):
    mine = new_conversation(conv, difyConversationId="conv-1")
    other = new_conversation(conv, difyConversationId="conv-2")
    envelope(conv.put(BASE, json={"id": mine["id"], "difyConversationId": "conv-1"}), 200)
    envelope(conv.put(BASE, json={"id": mine["id"], "difyConversationId": "conv-2"}), 409, 1004)
    assert envelope(conv.get(f"{BASE}/{other['id']}"), 200) == other


def test_update_needs_an_id(conv):
    new_conversation(conv)
    assert "id" in envelope(conv.put(BASE, json={"title": "x"}), 400, 1001)["errors"]


def test_update_needs_a_token(conv):
    created = new_conversation(conv)
    envelope(conv.put(BASE, user=None, json={"id": created["id"], "title": "x"}), 401)


def test_update_another_users_record_is_forbidden(conv):
    created = new_conversation(conv, "mine")
    envelope(conv.put(BASE, user=BOB, json={"id": created["id"], "title": "x"}), 403)
    assert envelope(conv.get(f"{BASE}/{created['id']}"), 200)["title"] == "mine"


def test_update_unknown_record_is_7002(conv):
    envelope(conv.put(BASE, json={"id": UNKNOWN, "title": "x"}), 404, 7002)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": "abc"}, "id"),
        ({"id": "-1"}, "id"),
        ({"id": "0"}, "id"),
        ({"id": str(2**63)}, "id"),
        ({"id": 1}, "id"),
        ({"title": ""}, "title"),
        ({"title": None}, "title"),
        ({"title": "x" * 256}, "title"),
        ({"difyConversationId": "d" * 101}, "difyConversationId"),
        ({"difyConversationId": " "}, "difyConversationId"),
        ({"isPinned": 3}, "isPinned"),
        ({"isPinned": False}, "isPinned"),
        ({"isPinned": "0"}, "isPinned"),
        ({"isPinned": None}, "isPinned"),
        ({"userId": BOB}, "userId"),
        ({"createdTime": "2025-11-14T10:00:00"}, "createdTime"),
    ],
)
def test_update_rejects_invalid_fields(conv, body, field):
    created = new_conversation(conv)
    data = envelope(conv.put(BASE, json={"id": created["id"], **body}), 400, 1001)
    assert field in data["errors"]


# --- GET /api/ai/conversation/{id} ---------------------------------------------------------------


def test_detail_returns_the_seed_object(conv):
    created = new_conversation(conv, difyConversationId="conv-123456")
    assert envelope(conv.get(f"{BASE}/{created['id']}"), 200) == created


def test_detail_needs_a_token(conv):
    created = new_conversation(conv)
    envelope(conv.get(f"{BASE}/{created['id']}", user=None), 401)


def test_detail_of_another_users_record_is_forbidden_and_leaks_nothing(conv):
    created = new_conversation(conv, "私密")
    response = conv.get(f"{BASE}/{created['id']}", user=BOB)
    envelope(response, 403)
    assert "私密" not in response.get_data(as_text=True)


def test_detail_of_unknown_record_is_7002(conv):
    envelope(conv.get(f"{BASE}/{UNKNOWN}"), 404, 7002)


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "1.5", "１２", str(2**63), "12a"])
def test_detail_with_a_malformed_id_is_400(conv, raw):
    envelope(conv.get(f"{BASE}/{raw}"), 400, 400)


# --- DELETE /api/ai/conversation/{id} ------------------------------------------------------------


def test_delete_answers_null_and_hides_the_record_everywhere(conv):
    created = new_conversation(conv)
    rid = created["id"]
    assert envelope(conv.delete(f"{BASE}/{rid}"), 200) is None
    envelope(conv.get(f"{BASE}/{rid}"), 404, 7002)
    envelope(conv.put(BASE, json={"id": rid, "title": "x"}), 404, 7002)
    envelope(conv.put(f"{BASE}/{rid}/pinned?isPinned=1"), 404, 7002)
    envelope(conv.delete(f"{BASE}/{rid}"), 404, 7002)
    envelope(conv.delete(f"{BASE}/batch", json=[rid]), 404, 7002)
    assert envelope(conv.get(f"{BASE}/list"), 200) == []
    assert envelope(conv.get(f"{BASE}/page"), 200)["total"] == 0


def test_delete_is_soft(conv, conversation_app):
    rid = new_conversation(conv)["id"]
    envelope(conv.delete(f"{BASE}/{rid}"), 200)
    with conversation_app.app_context():
        row = db.session.execute(sa.text("SELECT is_deleted FROM ai_conversations")).one()
    assert bool(row.is_deleted) is True


def test_delete_needs_a_token(conv):
    rid = new_conversation(conv)["id"]
    envelope(conv.delete(f"{BASE}/{rid}", user=None), 401)


def test_delete_another_users_record_is_forbidden_and_keeps_it(conv):
    rid = new_conversation(conv)["id"]
    envelope(conv.delete(f"{BASE}/{rid}", user=BOB), 403)
    envelope(conv.get(f"{BASE}/{rid}"), 200)


def test_delete_unknown_or_malformed(conv):
    envelope(conv.delete(f"{BASE}/{UNKNOWN}"), 404, 7002)
    envelope(conv.delete(f"{BASE}/abc"), 400, 400)


# --- PUT /api/ai/conversation/{id}/pinned ------------------------------------------------------


def test_pin_and_unpin(conv):
    created = new_conversation(conv)
    time.sleep(1.01)
    data = envelope(conv.put(f"{BASE}/{created['id']}/pinned?isPinned=1"), 200)
    assert list(data) == FIELDS
    assert data["isPinned"] == 1
    assert data["updatedTime"] > created["updatedTime"]
    assert {**data, "isPinned": 0, "updatedTime": created["updatedTime"]} == created
    assert envelope(conv.put(f"{BASE}/{created['id']}/pinned?isPinned=0"), 200)["isPinned"] == 0


def test_pin_needs_a_token(conv):
    rid = new_conversation(conv)["id"]
    envelope(conv.put(f"{BASE}/{rid}/pinned?isPinned=1", user=None), 401)


def test_pin_another_users_record_is_forbidden(conv):
    rid = new_conversation(conv)["id"]
    envelope(conv.put(f"{BASE}/{rid}/pinned?isPinned=1", user=BOB), 403)
    assert envelope(conv.get(f"{BASE}/{rid}"), 200)["isPinned"] == 0


def test_pin_unknown_or_malformed(conv):
    envelope(conv.put(f"{BASE}/{UNKNOWN}/pinned?isPinned=1"), 404, 7002)
    envelope(conv.put(f"{BASE}/abc/pinned?isPinned=1"), 400, 400)


@pytest.mark.parametrize(
    "query", ["", "?isPinned=", "?isPinned=2", "?isPinned=true", "?isPinned=01", "?pinned=1"]
)
def test_pin_rejects_a_missing_or_invalid_flag(conv, query):
    rid = new_conversation(conv)["id"]
    data = envelope(conv.put(f"{BASE}/{rid}/pinned{query}"), 400, 1001)
    assert "isPinned" in data["errors"]


# --- the fixed names are never an {id} -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "page"), ("DELETE", "list"), ("GET", "batch"), ("PUT", "page/pinned")],
)
def test_fixed_names_are_never_taken_for_an_id(conv, method, path):
    response = conv.call(method, f"{BASE}/{path}?isPinned=1")
    assert response.status_code in (404, 405)
    envelope(response, response.status_code)

"""Restore: a deleted session (with the messages deleted along with it) and a deleted record come back
within RESTORE_WINDOW_DAYS, each bringing the other view back through the outbox, once; the list of
restorable sessions; the Dify conversation kept for a restore. Live on both services, then in process."""

from __future__ import annotations

import sqlalchemy as sa

from chat_service.models import ChatMessage, ChatSession, epoch_ms
from tests.api_client import envelope
from tests.conftest import ALICE, BOB
from tests.lifecycle import restore_fixtures
from tests.lifecycle.restore_fixtures import (
    CHAT_OUTBOX,
    CONVERSATION_OUTBOX,
    WINDOW_DAYS,
    call,
    chat_rows,
    create_session,
    deleted_at_ago,
    link_dify,
    message_ids,
    outbox_pending,
    post_message,
    record_of_session,
    record_state,
    session_of,
    set_record_deleted_at,
    set_session_deleted_at,
    wait_for,
)

RECORDS = "/api/ai/conversation"
# The fixtures this module uses, from the helper module (no conftest of ours in this directory).
fake_dify = restore_fixtures.fake_dify
lifecycle_stack = restore_fixtures.lifecycle_stack
lifecycle = restore_fixtures.lifecycle


def session_version(app, session_id: str) -> int:
    """The session's deletion-state version (its `deleted_at` in ms), as it is mirrored."""
    [(moment,)] = chat_rows(
        app, sa.select(ChatSession.deleted_at).where(ChatSession.session_id == session_id)
    )
    return epoch_ms(moment)


def settled(stack) -> bool:
    """Both outboxes empty: every change delivered, nothing bouncing back and forth."""
    chat, conversation = stack.chat.app, stack.conversation.app
    return not outbox_pending(chat, CHAT_OUTBOX) and not outbox_pending(conversation, CONVERSATION_OUTBOX)


# -- live: both services, both directions --------------------------------------------------------------


def test_a_restored_session_comes_back_with_its_messages_and_its_record(lifecycle):
    sid = create_session(lifecycle, "恢复我")
    first, second, third = (post_message(lifecycle, sid, text) for text in ("一", "二", "三"))
    call("DELETE", f"{lifecycle.chat_url}/api/chat/messages/{second}")  # deleted before, on its own
    record = wait_for(lambda: record_of_session(lifecycle, sid))
    call("DELETE", f"{lifecycle.chat_url}/api/chat/sessions/{sid}")
    wait_for(lambda: (r := record_state(lifecycle, sid)) and r["deleted"])

    restored = call("POST", f"{lifecycle.chat_url}/api/chat/sessions/{sid}/restore")
    assert restored["session_id"] == sid and restored["is_deleted"] is False
    assert restored["title"] == "恢复我" and restored["message_count"] == 2
    assert message_ids(lifecycle, sid) == [first, third]  # the one deleted before stays deleted
    back = wait_for(lambda: record_of_session(lifecycle, sid))
    assert back["id"] == record["id"] and back["title"] == "恢复我"
    wait_for(lambda: settled(lifecycle))  # exactly once: nothing bounces back
    assert record_state(lifecycle, sid)["deletedVersion"] == session_version(lifecycle.chat.app, sid) > 0


def test_a_restored_record_brings_its_session_back(lifecycle):
    sid = create_session(lifecycle, "从记录恢复")
    kept = post_message(lifecycle, sid, "留下")
    record = wait_for(lambda: record_of_session(lifecycle, sid))
    call("DELETE", f"{lifecycle.conversation_url}{RECORDS}/{record['id']}")
    wait_for(lambda: session_of(lifecycle, sid)["code"] == 7001)

    body = call("PUT", f"{lifecycle.conversation_url}{RECORDS}/{record['id']}/restore", expect=None)
    assert body["message"] == "操作成功" and body["code"] == 200
    assert body["data"]["id"] == record["id"] and body["data"]["chatSessionId"] == sid
    session = wait_for(lambda: (s := session_of(lifecycle, sid)) and s["code"] == 200 and s["data"])
    assert session["title"] == "从记录恢复" and session["message_count"] == 1
    assert message_ids(lifecycle, sid) == [kept]
    wait_for(lambda: settled(lifecycle))
    assert record_of_session(lifecycle, sid)["id"] == record["id"]


def test_delete_restore_delete_converges_to_the_last_change_on_both_sides(lifecycle):
    sid = create_session(lifecycle)
    record = wait_for(lambda: record_of_session(lifecycle, sid))
    chat, records = f"{lifecycle.chat_url}/api/chat/sessions/{sid}", f"{lifecycle.conversation_url}{RECORDS}"
    call("DELETE", chat)
    wait_for(lambda: record_of_session(lifecycle, sid) is None)
    call("POST", f"{chat}/restore")
    wait_for(lambda: record_of_session(lifecycle, sid))
    call("DELETE", f"{records}/{record['id']}")
    wait_for(lambda: session_of(lifecycle, sid)["code"] == 7001)
    call("PUT", f"{records}/{record['id']}/restore")
    wait_for(lambda: session_of(lifecycle, sid)["code"] == 200)
    wait_for(lambda: settled(lifecycle))
    state = record_state(lifecycle, sid)
    assert state["deleted"] is False and state["deletedVersion"] == session_version(lifecycle.chat.app, sid)


def test_the_dify_conversation_is_kept_for_a_restore(lifecycle):
    sid = create_session(lifecycle)
    link_dify(lifecycle.chat.app, sid, "dify-keep")
    wait_for(lambda: (r := record_state(lifecycle, sid)) and r["difyConversationId"] == "dify-keep")
    call("DELETE", f"{lifecycle.chat_url}/api/chat/sessions/{sid}")
    wait_for(lambda: (r := record_state(lifecycle, sid)) and r["deleted"])
    wait_for(lambda: settled(lifecycle))
    assert lifecycle.dify.delete_requests == []  # deleted in Dify only when purged
    call("POST", f"{lifecycle.chat_url}/api/chat/sessions/{sid}/restore")
    [(dify_id,)] = chat_rows(
        lifecycle.chat.app, sa.select(ChatSession.dify_conversation_id).where(ChatSession.session_id == sid)
    )
    assert dify_id == "dify-keep"
    wait_for(lambda: (r := record_state(lifecycle, sid)) and not r["deleted"])
    assert record_state(lifecycle, sid)["difyConversationId"] == "dify-keep"


# -- in process: the window, the list, the refusals -------------------------------------------------------


def new_session(chat, title: str = "t", user: str = ALICE) -> str:
    return envelope(chat.post("/api/chat/session", json={"title": title}, user=user), 200)["session_id"]


def deleted_session(chat, title: str = "t", user: str = ALICE) -> str:
    sid = new_session(chat, title, user)
    envelope(chat.delete(f"/api/chat/sessions/{sid}", user=user), 200)
    return sid


def test_restore_just_inside_the_window_and_not_just_outside(chat):
    inside, outside = deleted_session(chat, "inside"), deleted_session(chat, "outside")
    set_session_deleted_at(chat.app, inside, deleted_at_ago(WINDOW_DAYS - 1 / 1440))  # a minute inside
    set_session_deleted_at(chat.app, outside, deleted_at_ago(WINDOW_DAYS + 1 / 1440))  # a minute outside
    assert envelope(chat.post(f"/api/chat/sessions/{inside}/restore"), 200)["title"] == "inside"
    envelope(chat.post(f"/api/chat/sessions/{outside}/restore"), 404, 7001)
    envelope(chat.get(f"/api/chat/sessions/{outside}"), 404, 7001)
    assert envelope(chat.get(f"/api/chat/sessions/{inside}"), 200)["is_deleted"] is False


def test_restoring_a_live_session_changes_nothing(chat):
    sid = new_session(chat, "live")
    before = envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)
    assert envelope(chat.post(f"/api/chat/sessions/{sid}/restore"), 200) == before


def test_restore_refusals(chat):
    sid = deleted_session(chat)
    envelope(chat.post(f"/api/chat/sessions/{sid}/restore", user=None), 401)
    envelope(chat.post(f"/api/chat/sessions/{sid}/restore", user=BOB), 403)
    envelope(chat.post("/api/chat/sessions/0b8e8d3c-0000-4000-8000-000000000000/restore"), 404, 7001)
    envelope(chat.post("/api/chat/sessions/not-a-uuid/restore"), 400)
    envelope(chat.get(f"/api/chat/sessions/{sid}"), 404, 7001)  # still deleted after the refusals


def test_messages_deleted_with_the_session_take_its_deletion_time(chat):
    sid = new_session(chat)
    ids = [
        envelope(chat.post("/api/chat/message", json={"session_id": sid, "content": c}), 200)["message_id"]
        for c in ("a", "b", "c")
    ]
    envelope(chat.delete(f"/api/chat/messages/{ids[0]}"), 200)
    envelope(chat.delete(f"/api/chat/sessions/{sid}"), 200)
    rows = dict(chat_rows(chat.app, sa.select(ChatMessage.message_id, ChatMessage.deleted_at)))
    [(session_deleted_at,)] = chat_rows(chat.app, sa.select(ChatSession.deleted_at))
    assert rows[ids[1]] == rows[ids[2]] == session_deleted_at
    assert rows[ids[0]] is not None and rows[ids[0]] < session_deleted_at
    envelope(chat.post(f"/api/chat/sessions/{sid}/restore"), 200)
    page = envelope(chat.get(f"/api/chat/sessions/{sid}/messages"), 200)
    assert [m["message_id"] for m in page["items"]] == ids[1:] and page["total"] == 2


def test_the_deleted_list_pages_restorable_sessions_newest_deletion_first(chat):
    older, newer, expired = (
        deleted_session(chat, "older"),
        deleted_session(chat, "newer"),
        deleted_session(chat),
    )
    new_session(chat, "live")
    deleted_session(chat, "bob's", user=BOB)
    set_session_deleted_at(chat.app, older, deleted_at_ago(2))
    set_session_deleted_at(chat.app, newer, deleted_at_ago(1))
    set_session_deleted_at(chat.app, expired, deleted_at_ago(WINDOW_DAYS + 1))
    page = envelope(chat.get("/api/chat/sessions/deleted"), 200)
    assert [s["session_id"] for s in page["items"]] == [newer, older]
    assert page["total"] == 2 and page["page"] == 1 and page["page_size"] == 20
    item = page["items"][0]
    assert item["is_deleted"] is True and item["title"] == "newer" and "user_id" not in item
    assert item["deleted_at"].endswith("Z") and item["restorable_until"] > item["deleted_at"]
    second = envelope(chat.get("/api/chat/sessions/deleted", query_string={"page": 2, "page_size": 1}), 200)
    assert [s["session_id"] for s in second["items"]] == [older] and second["total"] == 2
    envelope(chat.post(f"/api/chat/sessions/{newer}/restore"), 200)
    assert [s["session_id"] for s in envelope(chat.get("/api/chat/sessions/deleted"), 200)["items"]] == [
        older
    ]


def test_the_deleted_list_refusals(chat):
    envelope(chat.get("/api/chat/sessions/deleted", user=None), 401)
    envelope(chat.get("/api/chat/sessions/deleted", query_string={"page_size": 101}), 400, 1001)
    envelope(chat.get("/api/chat/sessions/deleted", query_string={"page": 0}), 400, 1001)
    assert envelope(chat.get("/api/chat/sessions/deleted", user=BOB), 200)["items"] == []


def test_versions_order_deletes_and_restores(chat):
    """A delivery from the record carries the version of its deletion state: an older one is ignored, a
    newer one applies, a replay changes nothing."""
    sid = deleted_session(chat)
    [(deleted_at,)] = chat_rows(chat.app, sa.select(ChatSession.deleted_at))
    version = epoch_ms(deleted_at)
    headers = {
        "Authorization": f"Bearer {chat.token('conversation_service', service=True)}",
        "X-User-Id": ALICE,
    }
    sync = f"/internal/chat/sessions/{sid}/sync"
    stale = envelope(
        chat.put(sync, json={"deleted": False, "deletedVersion": version - 1}, headers=headers), 200
    )
    assert stale["deleted"] is True and stale["deletedVersion"] == version
    restored = envelope(
        chat.put(sync, json={"deleted": False, "deletedVersion": version + 5}, headers=headers), 200
    )
    assert restored["deleted"] is False and restored["deletedVersion"] == version + 5
    replay = envelope(chat.put(sync, json={"deleted": True, "deletedVersion": version}, headers=headers), 200)
    assert replay["deleted"] is False  # the deletion that was undone, delivered again
    deleted = envelope(
        chat.put(sync, json={"deleted": True, "deletedVersion": version + 9}, headers=headers), 200
    )
    assert deleted["deleted"] is True and deleted["deletedVersion"] == version + 9


# -- conversation_service's restore route -------------------------------------------------------------------


def new_record(conv, title: str = "r", user: str = ALICE) -> str:
    return envelope(conv.post(RECORDS, json={"title": title}, user=user), 200, 200)["id"]


def test_a_record_restores_within_the_window_only(conv):
    inside, outside = new_record(conv, "inside"), new_record(conv, "outside")
    for record_id in (inside, outside):
        envelope(conv.delete(f"{RECORDS}/{record_id}"), 200)
    set_record_deleted_at(conv.app, int(inside), deleted_at_ago(WINDOW_DAYS - 1 / 1440))
    set_record_deleted_at(conv.app, int(outside), deleted_at_ago(WINDOW_DAYS + 1 / 1440))
    response = conv.put(f"{RECORDS}/{inside}/restore")
    assert response.get_json()["message"] == "操作成功"
    assert envelope(response, 200)["title"] == "inside"
    assert envelope(conv.get(f"{RECORDS}/{inside}"), 200)["id"] == inside
    envelope(conv.put(f"{RECORDS}/{outside}/restore"), 404, 7002)
    envelope(conv.get(f"{RECORDS}/{outside}"), 404, 7002)


def test_record_restore_refusals_and_a_live_record(conv):
    record_id = new_record(conv)
    live = envelope(conv.put(f"{RECORDS}/{record_id}/restore"), 200)
    assert live["id"] == record_id  # a live record is answered as it is
    envelope(conv.delete(f"{RECORDS}/{record_id}"), 200)
    envelope(conv.put(f"{RECORDS}/{record_id}/restore", user=None), 401)
    envelope(conv.put(f"{RECORDS}/{record_id}/restore", user=BOB), 403)
    envelope(conv.put(f"{RECORDS}/123456789/restore"), 404, 7002)
    envelope(conv.put(f"{RECORDS}/abc/restore"), 400)
    envelope(conv.get(f"{RECORDS}/{record_id}"), 404, 7002)


def test_a_record_whose_dify_conversation_was_relinked_is_not_restored(conv):
    record_id = envelope(conv.post(RECORDS, json={"title": "a", "difyConversationId": "d-1"}), 200)["id"]
    envelope(conv.delete(f"{RECORDS}/{record_id}"), 200)
    envelope(conv.post(RECORDS, json={"title": "b", "difyConversationId": "d-1"}), 200)
    envelope(conv.put(f"{RECORDS}/{record_id}/restore"), 409, 1004)

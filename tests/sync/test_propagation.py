"""One conversation, three views: a session and its record stay equal whichever side changes, with both
services live on loopback and their outbox workers delivering (default interval and backoff)."""

from __future__ import annotations

import time

import pytest
import requests

from chat_service import crud
from chat_service.extensions import db as chat_db
from chat_service.models import ChatSession
from chat_service.services import links
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE
from tests.sync.conftest import (
    call,
    create_session,
    record_state,
    service_headers,
    session_of,
    wait_for,
)

RECORDS = "/api/ai/conversation"


def records(stack, user: str = ALICE) -> list[dict]:
    return call("GET", f"{stack.conversation_url}{RECORDS}/list", user=user)


def record_of(stack, session_id: str) -> dict | None:
    return next((r for r in records(stack) if r["chatSessionId"] == session_id), None)


def test_a_new_session_gets_its_record_within_5_s(both):
    sid = create_session(both, "技术讨论")
    record = wait_for(lambda: record_of(both, sid), timeout=5)
    assert record["title"] == "技术讨论"
    assert record["userId"] == ALICE
    assert record["difyConversationId"] is None
    # The session remembers its record.
    with both.chat.app.app_context():
        wait_for(lambda: chat_db.session.get(ChatSession, sid, populate_existing=True).conversation_record_id)
        assert chat_db.session.get(ChatSession, sid).conversation_record_id == record["id"]
        chat_db.session.remove()


def test_records_made_through_the_public_api_stay_standalone(both):
    record = call("POST", f"{both.conversation_url}{RECORDS}", json={"title": "独立"})
    assert record["chatSessionId"] is None
    time.sleep(1)
    sessions = call("POST", f"{both.chat_url}/api/chat/sessions", json={"page_size": 100})
    assert "独立" not in [session["title"] for session in sessions]


def test_a_session_rename_reaches_the_record(both):
    sid = create_session(both)
    wait_for(lambda: record_of(both, sid))
    call("PATCH", f"{both.chat_url}/api/chat/sessions/{sid}", json={"new_title": "改名了"})
    wait_for(lambda: record_of(both, sid)["title"] == "改名了", timeout=5)


def test_a_record_rename_reaches_the_session_and_its_sockets(both, open_socket):
    sid = create_session(both)
    record = wait_for(lambda: record_of(both, sid))
    socket = open_socket(both.chat_url, sid, ready=True)
    call("PUT", f"{both.conversation_url}{RECORDS}", json={"id": record["id"], "title": "从记录改名"})
    wait_for(lambda: session_of(both, sid)["data"]["title"] == "从记录改名", timeout=5)
    frame = socket.until("session_updated", timeout=5)[-1]
    assert frame["data"]["title"] == "从记录改名"
    # And it is not bounced back as a newer change: the record keeps the same title and version.
    time.sleep(1)
    assert record_of(both, sid)["title"] == "从记录改名"


def test_pinning_stays_the_records_own(both):
    sid = create_session(both, "钉住")
    record = wait_for(lambda: record_of(both, sid))
    call("PUT", f"{both.conversation_url}{RECORDS}/{record['id']}/pinned?isPinned=1")
    with both.conversation.app.app_context():
        assert both.conversation.app.extensions["outbox"].pending() == 0
    assert session_of(both, sid)["data"]["title"] == "钉住"


def test_a_new_message_bumps_the_records_activity(both):
    sid = create_session(both)
    before = wait_for(lambda: record_state(both, sid))
    time.sleep(0.05)
    call("POST", f"{both.chat_url}/api/chat/message", json={"session_id": sid, "content": "hi"})
    after = wait_for(lambda: (s := record_state(both, sid))["activityTime"] > before["activityTime"] and s)
    assert after["id"] == before["id"]


def test_the_dify_conversation_id_reaches_the_record(both):
    sid = create_session(both)
    wait_for(lambda: record_of(both, sid))
    with both.chat.app.app_context():
        assert links.store(sid, "dify-conv-1")
        chat_db.session.remove()
    wait_for(lambda: record_of(both, sid)["difyConversationId"] == "dify-conv-1", timeout=5)


def test_deleting_a_session_deletes_its_record_for_good(both):
    sid = create_session(both, "要删的")
    record = wait_for(lambda: record_of(both, sid))
    call("DELETE", f"{both.chat_url}/api/chat/sessions/{sid}")
    wait_for(lambda: record_of(both, sid) is None, timeout=5)
    call("GET", f"{both.conversation_url}{RECORDS}/{record['id']}", expect=7002)
    # A replayed delivery of the session's live state (even with newer versions) brings nothing back.
    replay = {"title": "复活?", "titleVersion": 2**47, "deleted": False, "activityTime": 2**41}
    response = requests.put(
        f"{both.conversation_url}/internal/ai/conversation/chat/{sid}",
        json=replay,
        headers=service_headers(),
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["data"]["deleted"] is True
    assert response.json()["data"]["title"] == "要删的"
    call("GET", f"{both.conversation_url}{RECORDS}/{record['id']}", expect=7002)
    assert record_of(both, sid) is None


@pytest.mark.parametrize("how", ["single", "batch"])
def test_deleting_a_record_deletes_its_session(both, how, open_socket):
    sid = create_session(both)
    other = create_session(both, "留下")
    record = wait_for(lambda: record_of(both, sid))
    wait_for(lambda: record_of(both, other))
    socket = open_socket(both.chat_url, sid, ready=True)
    if how == "single":
        call("DELETE", f"{both.conversation_url}{RECORDS}/{record['id']}", expect=200)
    else:
        call("DELETE", f"{both.conversation_url}{RECORDS}/batch", json=[record["id"]], expect=200)
    wait_for(lambda: session_of(both, sid)["code"] == 7001, timeout=5)
    assert socket.until("session_deleted", timeout=5)[-1]["data"]["session_id"] == sid
    assert session_of(both, other)["code"] == 200
    # Nothing bounces back: the record stays deleted, the other session's record stays.
    time.sleep(1)
    assert record_of(both, sid) is None and record_of(both, other) is not None


def test_conversation_service_down_then_back_converges_within_30_s(stack):
    stack.start_chat()  # conversation_service is not there yet
    sid = create_session(stack, "一开始")
    kept = create_session(stack, "保留")
    call("PATCH", f"{stack.chat_url}/api/chat/sessions/{kept}", json={"new_title": "离线改名"})
    call("PATCH", f"{stack.chat_url}/api/chat/sessions/{sid}", json={"new_title": "改了再删"})
    call("DELETE", f"{stack.chat_url}/api/chat/sessions/{sid}")
    time.sleep(3)  # a few failed attempts, backing off
    stack.start_conversation()
    started = time.monotonic()
    wait_for(lambda: (r := record_state(stack, kept)) and r["title"] == "离线改名", timeout=30)
    tombstone = wait_for(lambda: record_state(stack, sid), timeout=30)
    assert tombstone["deleted"] is True and tombstone["title"] == "改了再删"
    assert record_of(stack, sid) is None
    assert time.monotonic() - started < 30


def test_conversation_service_stopped_while_renamed_and_deleted_converges(both):
    sid = create_session(both, "在线")
    record = wait_for(lambda: record_of(both, sid))
    both.stop_conversation()
    call("PATCH", f"{both.chat_url}/api/chat/sessions/{sid}", json={"new_title": "停机时改名"})
    time.sleep(1.5)
    call("DELETE", f"{both.chat_url}/api/chat/sessions/{sid}")
    time.sleep(1.5)
    both.start_conversation()
    state = wait_for(lambda: (r := record_state(both, sid)) and r["deleted"] and r, timeout=30)
    assert state["id"] == record["id"] and state["title"] == "停机时改名"


def test_chat_service_down_while_a_record_is_deleted_converges(both):
    sid = create_session(both)
    record = wait_for(lambda: record_of(both, sid))
    both.stop_chat()
    call("DELETE", f"{both.conversation_url}{RECORDS}/{record['id']}")
    time.sleep(2)
    both.start_chat()
    wait_for(lambda: session_of(both, sid)["code"] == 7001, timeout=30)


def test_chat_service_restarted_with_deliveries_pending_loses_nothing(stack):
    stack.start_conversation()
    first = stack.chat_app(OUTBOX_WORKER="false")  # changes made, nothing delivered
    client = ApiClient(first, default_user=ALICE)
    sid = envelope(client.post("/api/chat/session", json={"title": "重启前"}), 200)["session_id"]
    gone = envelope(client.post("/api/chat/session", json={"title": "重启前删"}), 200)["session_id"]
    envelope(client.patch(f"/api/chat/sessions/{sid}", json={"new_title": "重启前改名"}), 200)
    envelope(client.delete(f"/api/chat/sessions/{gone}"), 200)
    assert first.extensions["outbox"].pending() == 2  # each session's record (Dify waits for the purge)
    stack.stop_app(first)  # the process "dies" with its deliveries pending
    assert record_state(stack, sid) is None

    stack.start_chat()  # a new process on the same database, worker on
    wait_for(lambda: (r := record_state(stack, sid)) and r["title"] == "重启前改名", timeout=5)
    wait_for(lambda: (r := record_state(stack, gone)) and r["deleted"], timeout=5)
    wait_for(lambda: stack.chat.app.extensions["outbox"].pending() == 0, timeout=5)


def test_conversation_service_restarted_with_deliveries_pending_loses_nothing(stack):
    stack.start_chat()
    stack.start_conversation()
    sid = create_session(stack)
    record = wait_for(lambda: record_of(stack, sid))
    stack.stop_conversation()
    first = stack.conversation_app(OUTBOX_WORKER="false")
    client = ApiClient(first, default_user=ALICE)
    envelope(client.put(RECORDS, json={"id": record["id"], "title": "重启前记录改名"}), 200)
    stack.stop_app(first)
    time.sleep(1)
    assert session_of(stack, sid)["data"]["title"] != "重启前记录改名"
    stack.start_conversation()
    wait_for(lambda: session_of(stack, sid)["data"]["title"] == "重启前记录改名", timeout=5)


def test_a_session_deleted_by_crud_is_mirrored_too(both):
    """The seed's crud functions write the outbox row themselves: every path is mirrored."""
    sid = create_session(both)
    wait_for(lambda: record_of(both, sid))
    with both.chat.app.app_context():
        assert crud.soft_delete_session(chat_db.session, sid)
        chat_db.session.remove()
    wait_for(lambda: record_of(both, sid) is None, timeout=5)

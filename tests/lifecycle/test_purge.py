"""Purge: what was deleted longer ago than RESTORE_WINDOW_DAYS is hard-deleted in batches, cascading
from a session to its record and its Dify conversation; nothing live or still restorable is touched;
a failed cascade is retried; the in-process schedule. Live on both services; then conversation_service's
own purge and its internal route, in process."""

from __future__ import annotations

import sqlalchemy as sa

from chat_service import purge as chat_purge
from chat_service.models import ChatMessage, ChatSession
from conversation_service.models import AiConversation
from tests.api_client import envelope
from tests.conftest import ALICE, BOB
from tests.lifecycle import restore_fixtures
from tests.lifecycle.restore_fixtures import (
    CHAT_OUTBOX,
    WINDOW_DAYS,
    age_message,
    age_session,
    call,
    chat_rows,
    conversation_rows,
    create_session,
    deleted_at_ago,
    link_dify,
    message_ids,
    outbox_pending,
    post_message,
    record_state,
    set_record_deleted_at,
    set_session_deleted_at,
    wait_for,
)

fake_dify = restore_fixtures.fake_dify
lifecycle_stack = restore_fixtures.lifecycle_stack
lifecycle = restore_fixtures.lifecycle
RECORDS = "/api/ai/conversation"


def deleted_session_with_messages(stack, count: int = 2, title: str = "t") -> str:
    """A session with `count` messages, deleted, its record deleted too (the mirror delivered)."""
    sid = create_session(stack, title)
    for n in range(count):
        post_message(stack, sid, f"m{n}")
    wait_for(lambda: (r := record_state(stack, sid)) and r["id"])
    call("DELETE", f"{stack.chat_url}/api/chat/sessions/{sid}")
    wait_for(lambda: (r := record_state(stack, sid)) and r["deleted"])
    return sid


def quiet_outbox(app) -> None:
    """Stop the app's serving outbox worker, so the purge's own delivery is the only one. (Else that
    worker may hold a cascade the purge just queued while the purge counts what is left, and the
    purge rightly reports it as still pending.)"""
    app.extensions["outbox"].stop()


def run_purge(app, *args: str):
    quiet_outbox(app)
    result = app.test_cli_runner().invoke(args=["purge", *args])
    assert result.exit_code == 0, result.output
    return result


def sessions_left(app) -> set[str]:
    return {row.session_id for row in chat_rows(app, sa.select(ChatSession.session_id))}


def test_purging_a_session_removes_its_messages_record_and_dify_conversation(lifecycle):
    sid = deleted_session_with_messages(lifecycle, 3)
    link_dify(lifecycle.chat.app, sid, "dify-purged")
    age_session(lifecycle.chat.app, sid, WINDOW_DAYS + 1)
    result = run_purge(lifecycle.chat.app)
    assert "purged 3 messages (3 of expired sessions, 0 deleted one by one) and 1 sessions" in result.output
    assert sessions_left(lifecycle.chat.app) == set()
    assert chat_rows(lifecycle.chat.app, sa.select(ChatMessage.message_id)) == []
    assert record_state(lifecycle, sid) is None  # the record is gone, not just deleted
    [delete] = lifecycle.dify.delete_requests
    assert delete.path.endswith("/conversations/dify-purged") and delete.json == {"user": ALICE}
    assert outbox_pending(lifecycle.chat.app, CHAT_OUTBOX) == []


def test_purge_works_in_batches_of_purge_batch_size(lifecycle_stack):
    lifecycle_stack.start_conversation()
    app = lifecycle_stack.start_chat(PURGE_BATCH_SIZE="2")
    sids = [deleted_session_with_messages(lifecycle_stack, 3, f"s{n}") for n in range(5)]
    for sid in sids:
        age_session(app, sid, WINDOW_DAYS + 1)
    quiet_outbox(app)
    with app.app_context():
        counts = chat_purge.purge()
    assert (counts.session_messages, counts.sessions, counts.sessions_pending) == (15, 5, 0)
    # 15 messages 2 a batch (8) and 5 sessions 2 a batch (3), each phase ending on an empty batch.
    assert counts.batches == 8 + 1 + 1 + 3 + 1
    assert counts.longest_batch_ms > 0
    assert sessions_left(app) == set()
    assert all(record_state(lifecycle_stack, sid) is None for sid in sids)


def test_nothing_live_or_still_restorable_is_purged(lifecycle):
    app = lifecycle.chat.app
    live = create_session(lifecycle, "live")
    kept, old, recent = (post_message(lifecycle, live, text) for text in ("kept", "old", "recent"))
    call("DELETE", f"{lifecycle.chat_url}/api/chat/messages/{old}")
    call("DELETE", f"{lifecycle.chat_url}/api/chat/messages/{recent}")
    age_message(app, old, WINDOW_DAYS + 1)
    inside = deleted_session_with_messages(lifecycle, 2, "inside")
    outside = deleted_session_with_messages(lifecycle, 2, "outside")
    set_session_deleted_at(app, inside, deleted_at_ago(WINDOW_DAYS - 1 / 1440))  # a minute inside
    set_session_deleted_at(app, outside, deleted_at_ago(WINDOW_DAYS + 1 / 1440))  # a minute outside

    result = run_purge(app)
    assert "purged 3 messages (2 of expired sessions, 1 deleted one by one) and 1 sessions" in result.output
    assert sessions_left(app) == {live, inside}
    assert message_ids(lifecycle, live) == [kept]
    remaining = {row.message_id for row in chat_rows(app, sa.select(ChatMessage.message_id))}
    assert remaining == {kept, recent} | set(_messages_of(app, inside))
    assert len(_messages_of(app, inside)) == 2
    assert record_state(lifecycle, inside)["deleted"] is True and record_state(lifecycle, outside) is None
    envelope_ok = call("POST", f"{lifecycle.chat_url}/api/chat/sessions/{inside}/restore")
    assert envelope_ok["message_count"] == 2  # still restorable, whole


def _messages_of(app, session_id: str) -> list[int]:
    query = sa.select(ChatMessage.message_id).where(ChatMessage.session_id == session_id)
    return [row.message_id for row in chat_rows(app, query)]


def test_a_failed_cascade_waits_in_the_outbox_and_finishes_later(lifecycle):
    sid = deleted_session_with_messages(lifecycle, 1)
    age_session(lifecycle.chat.app, sid, WINDOW_DAYS + 1)
    lifecycle.stop_conversation()
    result = run_purge(lifecycle.chat.app)
    assert "and 0 sessions" in result.output
    assert "1 sessions wait for their record or Dify conversation to go" in result.output
    assert sessions_left(lifecycle.chat.app) == {sid}  # the row remembers what is left to delete
    assert ("purge", sid) in outbox_pending(lifecycle.chat.app, CHAT_OUTBOX)
    lifecycle.start_conversation()
    lifecycle.chat.app.extensions["outbox"].start()  # the serving worker, as it runs beside the purge
    wait_for(lambda: sessions_left(lifecycle.chat.app) == set(), timeout=30)  # the serving worker did it
    assert record_state(lifecycle, sid) is None
    assert len(lifecycle.dify.delete_requests) == 0  # never linked to a Dify conversation


def test_the_schedule_purges_in_the_serving_process(lifecycle_stack):
    lifecycle_stack.start_conversation()
    app = lifecycle_stack.start_chat(PURGE_INTERVAL_SECONDS="0.2")
    try:
        sid = deleted_session_with_messages(lifecycle_stack, 1)
        age_session(app, sid, WINDOW_DAYS + 1)
        wait_for(lambda: sessions_left(app) == set(), timeout=10)
        assert record_state(lifecycle_stack, sid) is None
    finally:
        app.extensions["purge_schedule"].stop()


# -- conversation_service ---------------------------------------------------------------------------------


def service_headers(conv, user: str | None = ALICE) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {conv.token('chat_service', service=True)}"}
    return headers | ({"X-User-Id": user} if user else {})


def chat_record(conv, session_id: str, deleted: bool, user: str = ALICE) -> int:
    path = f"/internal/ai/conversation/chat/{session_id}"
    body = {"title": "linked", "titleVersion": 1, "deleted": deleted}
    return int(envelope(conv.put(path, json=body, headers=service_headers(conv, user)), 200)["id"])


SESSION_A = "0b8e8d3c-0000-4000-8000-00000000000a"
SESSION_B = "0b8e8d3c-0000-4000-8000-00000000000b"


def test_conversation_purge_removes_expired_standalone_records_only(conv):
    ids = {}
    for name in ("expired", "inside", "live"):
        ids[name] = int(envelope(conv.post(RECORDS, json={"title": name}), 200)["id"])
    for name in ("expired", "inside"):
        envelope(conv.delete(f"{RECORDS}/{ids[name]}"), 200)
    set_record_deleted_at(conv.app, ids["expired"], deleted_at_ago(WINDOW_DAYS + 1 / 1440))
    set_record_deleted_at(conv.app, ids["inside"], deleted_at_ago(WINDOW_DAYS - 1 / 1440))
    linked = chat_record(conv, SESSION_A, deleted=True)
    set_record_deleted_at(conv.app, linked, deleted_at_ago(WINDOW_DAYS + 1))

    result = conv.app.test_cli_runner().invoke(args=["purge", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("purged 1 records in 2 batches")
    left = {row.id for row in conversation_rows(conv.app, sa.select(AiConversation.id))}
    # The linked record is the session's tombstone: it goes with the session (chat_service's purge).
    assert left == {ids["inside"], ids["live"], linked}


def test_the_internal_purge_route(conv):
    path = "/internal/ai/conversation/chat/{}"
    deleted = chat_record(conv, SESSION_A, deleted=True)
    live = chat_record(conv, SESSION_B, deleted=False)
    envelope(conv.delete(path.format(SESSION_A)), 403)  # a user token
    envelope(conv.delete(path.format(SESSION_A), user=None), 401)
    envelope(conv.delete(path.format(SESSION_A), headers=service_headers(conv, BOB)), 403)
    envelope(conv.delete(path.format("nope"), headers=service_headers(conv)), 400)
    assert envelope(conv.delete(path.format(SESSION_A), headers=service_headers(conv)), 200) == {
        "purged": True
    }
    assert envelope(conv.delete(path.format(SESSION_A), headers=service_headers(conv)), 200) == {
        "purged": True
    }
    assert envelope(conv.delete(path.format(SESSION_B), headers=service_headers(conv)), 200) == {
        "purged": False
    }
    left = dict(conversation_rows(conv.app, sa.select(AiConversation.id, AiConversation.chat_session_id)))
    assert deleted not in left and left == {live: None}  # a live record is never purged: now standalone

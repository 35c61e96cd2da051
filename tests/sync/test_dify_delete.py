"""With the Dify provider, a deleted session's Dify conversation is deleted when the session is PURGED
(deleted longer ago than RESTORE_WINDOW_DAYS), not at the delete, so a restore keeps its context:
`DELETE /conversations/{id}` with the same `user`; 404 counts as done, other failures are retried.
The purge's cascade as a whole (record, batches, a kill mid-way) is tests/lifecycle/test_purge.py's."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask, jsonify, request

from chat_service import create_app, live
from chat_service.extensions import db
from chat_service.models import OUTBOX, utcnow
from chat_service.purge import purge
from chat_service.services import links
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ
from tests.databases import clear_tables
from tests.live import serve

API_KEY = "app-test-key"


class DifyDeletes:
    """Just Dify's delete-conversation endpoint, answering scripted statuses (then 204); and, for the
    purge's first step, conversation_service's record purge (every record gone)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        app = Flask("fake-dify-delete")

        @app.delete("/internal/ai/conversation/chat/<session_id>")
        def purge_record(session_id):
            return jsonify({"code": 200, "message": "操作成功", "data": {"purged": True},
                            "timestamp": 0, "traceId": "0" * 32})  # fmt: skip

        @app.delete("/v1/conversations/<conversation_id>")
        def delete(conversation_id):
            self.requests.append(
                {
                    "id": conversation_id,
                    "json": request.get_json(silent=True),
                    "auth": request.headers.get("Authorization"),
                    "trace": request.headers.get("X-Trace-Id"),
                }
            )
            status = self.statuses.pop(0) if self.statuses else 204
            return ("", 204) if status == 204 else (jsonify({"code": "x", "message": "x"}), status)

        self.app = app


@pytest.fixture
def dify():
    fake = DifyDeletes()
    with serve(fake.app) as url:
        fake.url = url + "/v1"
        fake.base = url
        yield fake


@pytest.fixture
def dify_chat(chat_database, dify):
    app = create_app(
        base_environ(
            chat_database,
            AI_PROVIDER="dify",
            DIFY_API_URL=dify.url,
            DIFY_API_KEY=API_KEY,
            CONVERSATION_SERVICE_URL=dify.base,  # the record's purge; its other calls fail, retried
            RESTORE_WINDOW_DAYS="0",  # every deleted session is past the window at once
        )
    )
    app.config["TESTING"] = True
    yield ApiClient(app, default_user=ALICE)
    with app.app_context():
        clear_tables(db, ["chat_messages", "chat_sessions", "chat_sync_outbox"])
        db.engine.dispose()
    live.of(app).close()


def dify_rows(app) -> list[sa.Row]:
    """What is left to delete at Dify: the purge's outbox rows (and any from before it)."""
    with app.app_context():
        try:
            topics = OUTBOX.c.topic.in_(["purge", "dify_delete"])
            return list(db.session.execute(sa.select(OUTBOX).where(topics)).all())
        finally:
            db.session.remove()


def linked_session(chat: ApiClient, dify_id: str = "d-1") -> str:
    sid = envelope(chat.post("/api/chat/session", json={}), 200)["session_id"]
    with chat.app.app_context():
        assert links.store(sid, dify_id)
        db.session.remove()
    return sid


def deliver(chat: ApiClient) -> None:
    chat.app.extensions["outbox"].drain(timeout=5)


def purged(chat: ApiClient) -> None:
    """Run the purge a moment later (the window is 0 days), then deliver what it queued."""
    with chat.app.app_context():
        purge(now=utcnow() + timedelta(seconds=1), deliver=False)
    deliver(chat)


def test_deleting_a_session_keeps_its_dify_conversation_until_the_purge(dify_chat, dify):
    sid = linked_session(dify_chat)
    envelope(dify_chat.delete(f"/api/chat/sessions/{sid}"), 200)
    deliver(dify_chat)
    assert dify.requests == []  # a restore within the window continues it
    purged(dify_chat)
    assert [r["id"] for r in dify.requests] == ["d-1"]


def test_deleting_a_session_deletes_its_dify_conversation(dify_chat, dify):
    sid = linked_session(dify_chat)
    envelope(dify_chat.delete(f"/api/chat/sessions/{sid}", headers={"X-Trace-Id": "cd" * 16}), 200)
    purged(dify_chat)
    [call] = dify.requests  # the purge's own traceId: it is a later act than the delete
    assert call["id"] == "d-1" and call["json"] == {"user": ALICE} and call["auth"] == f"Bearer {API_KEY}"
    assert len(call["trace"]) == 32
    assert dify_rows(dify_chat.app) == []


def test_a_deletion_from_the_record_deletes_it_too(dify_chat, dify):
    sid = linked_session(dify_chat)
    token = dify_chat.token("conversation_service", service=True)
    headers = {"Authorization": f"Bearer {token}", "X-User-Id": ALICE}
    envelope(
        dify_chat.put(f"/internal/chat/sessions/{sid}/sync", json={"deleted": True}, headers=headers), 200
    )
    purged(dify_chat)
    assert [r["id"] for r in dify.requests] == ["d-1"]


@pytest.mark.parametrize("status", [200, 404])
def test_200_and_404_count_as_done(dify_chat, dify, status):
    dify.statuses = [status]
    sid = linked_session(dify_chat)
    envelope(dify_chat.delete(f"/api/chat/sessions/{sid}"), 200)
    purged(dify_chat)
    assert len(dify.requests) == 1
    assert dify_rows(dify_chat.app) == []


def test_a_failure_is_retried(dify_chat, dify):
    dify.statuses = [503]
    sid = linked_session(dify_chat)
    envelope(dify_chat.delete(f"/api/chat/sessions/{sid}"), 200)
    purged(dify_chat)
    [row] = dify_rows(dify_chat.app)
    assert row.attempts == 1
    time.sleep(0.6)
    deliver(dify_chat)
    assert len(dify.requests) == 2
    assert dify_rows(dify_chat.app) == []


def test_a_live_session_or_one_without_dify_id_deletes_nothing(dify_chat, dify):
    sid = envelope(dify_chat.post("/api/chat/session", json={}), 200)["session_id"]
    envelope(dify_chat.delete(f"/api/chat/sessions/{sid}"), 200)
    linked_session(dify_chat, "d-live")
    purged(dify_chat)
    assert dify.requests == []


def test_a_dify_id_stored_after_the_deletion_is_deleted_too(dify_chat, dify):
    """A turn in flight names its Dify conversation after the session was deleted."""
    sid = envelope(dify_chat.post("/api/chat/session", json={}), 200)["session_id"]
    envelope(dify_chat.delete(f"/api/chat/sessions/{sid}"), 200)
    deliver(dify_chat)
    with dify_chat.app.app_context():
        assert links.store(sid, "d-late")
        db.session.remove()
    purged(dify_chat)
    assert [r["id"] for r in dify.requests] == ["d-late"]

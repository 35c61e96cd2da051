"""The internal routes of the mirror, in process: chat_service's `PUT /internal/chat/sessions/{id}/sync`
and conversation_service's `PUT`/`GET /internal/ai/conversation/chat/{session_id}`: success, refusals,
and replayed or reordered deliveries that change nothing."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from chat_service.extensions import db as chat_db
from chat_service.models import OUTBOX as CHAT_OUTBOX
from chat_service.models import epoch_ms
from conversation_service.extensions import db as conversation_db
from conversation_service.models import OUTBOX as CONVERSATION_OUTBOX
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, BOB

RECORDS = "/api/ai/conversation"
LATER = 4_000_000_000_000  # a version far in the future (year 2096)


def service(client: ApiClient, user: str | None = ALICE) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {client.token('peer', service=True)}"}
    if user is not None:
        headers["X-User-Id"] = user
    return headers


def outbox_rows(app, db, table) -> list[tuple[str, str]]:
    with app.app_context():
        try:
            return [tuple(r) for r in db.session.execute(sa.select(table.c.topic, table.c.key)).all()]
        finally:
            db.session.remove()


def clear_outbox(app, db, table) -> None:
    with app.app_context():
        db.session.execute(sa.delete(table))
        db.session.commit()
        db.session.remove()


# -- chat_service: PUT /internal/chat/sessions/<session_id>/sync ------------------------------------


def sync(chat: ApiClient, sid: str, user: str | None = ALICE, **body):
    return chat.put(f"/internal/chat/sessions/{sid}/sync", json=body, headers=service(chat, user))


@pytest.fixture
def sid(chat) -> str:
    return envelope(chat.post("/api/chat/session", json={"title": "原来的"}), 200)["session_id"]


def test_sync_applies_a_newer_title_and_answers_the_sessions_state(chat, sid):
    data = envelope(sync(chat, sid, title="记录改的", titleVersion=LATER), 200)
    assert data["sessionId"] == sid
    assert (data["title"], data["titleVersion"], data["deleted"]) == ("记录改的", LATER, False)
    assert set(data) >= {"difyConversationId", "difyVersion", "activityTime", "createdTime"}
    assert envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)["title"] == "记录改的"


def test_sync_is_not_mirrored_back(chat, sid):
    clear_outbox(chat.app, chat_db, CHAT_OUTBOX)
    envelope(sync(chat, sid, title="记录改的", titleVersion=LATER), 200)
    assert outbox_rows(chat.app, chat_db, CHAT_OUTBOX) == []
    envelope(sync(chat, sid, deleted=True), 200)
    # Nothing either: the Dify conversation waits for the purge (a restore within the window keeps it).
    assert outbox_rows(chat.app, chat_db, CHAT_OUTBOX) == []


def test_an_older_or_equal_title_version_changes_nothing(chat, sid):
    envelope(chat.patch(f"/api/chat/sessions/{sid}", json={"new_title": "用户改的"}), 200)
    version = envelope(sync(chat, sid), 200)["titleVersion"]
    assert version > 0
    for stale in (1, version):
        data = envelope(sync(chat, sid, title="旧的", titleVersion=stale), 200)
        assert data["title"] == "用户改的"
    assert envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)["title"] == "用户改的"


def test_a_deletion_is_final(chat, sid):
    assert envelope(sync(chat, sid, deleted=True), 200)["deleted"] is True
    envelope(chat.get(f"/api/chat/sessions/{sid}"), 404, 7001)
    # Replays, even with a newer title and deleted=false, bring nothing back.
    data = envelope(sync(chat, sid, title="复活?", titleVersion=LATER, deleted=False), 200)
    assert (data["deleted"], data["title"]) == (True, "原来的")
    envelope(chat.get(f"/api/chat/sessions/{sid}"), 404, 7001)


def test_sync_refusals(chat, sid):
    path = f"/internal/chat/sessions/{sid}/sync"
    envelope(chat.put(path, json={}, user=None), 401)
    envelope(chat.put(path, json={}), 403)  # a user token, even the owner's
    envelope(sync(chat, sid, user=BOB, deleted=True), 403)  # a service acting for someone else
    envelope(sync(chat, str(uuid.uuid4())), 404, 7001)
    envelope(sync(chat, "not-a-uuid"), 400)
    envelope(chat.put(path, json={}, headers=service(chat, None)), 400)
    for body in (
        {"title": "x"},  # a title without its version
        {"title": "x", "titleVersion": "1"},
        {"title": " ", "titleVersion": 1},
        {"titleVersion": -1},
        {"deleted": "yes"},
        {"deleted": 1},
        {"is_deleted": True},
    ):
        envelope(sync(chat, sid, **body), 400, 1001)
    assert envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)["title"] == "原来的"


# -- conversation_service: PUT/GET /internal/ai/conversation/chat/<session_id> ----------------------


def mirror(conv: ApiClient, session_id: str, user: str | None = ALICE, **state):
    return conv.put(f"/internal/ai/conversation/chat/{session_id}", json=state, headers=service(conv, user))


def state_of(conv: ApiClient, session_id: str, user: str | None = ALICE):
    return conv.get(f"/internal/ai/conversation/chat/{session_id}", headers=service(conv, user))


def linked(conv: ApiClient, session_id: str) -> list[dict]:
    """The caller's live records of this session (other tests' records left aside)."""
    return [r for r in envelope(conv.get(f"{RECORDS}/list"), 200) if r["chatSessionId"] == session_id]


def live_state(**overrides) -> dict:
    now = epoch_ms()
    return {
        "title": "会话",
        "titleVersion": now,
        "difyConversationId": None,
        "difyVersion": 0,
        "activityTime": now,
        "createdTime": now,
        "deleted": False,
    } | overrides


def test_mirror_creates_the_record_once(conv):
    session_id = str(uuid.uuid4())
    first = envelope(mirror(conv, session_id, **live_state()), 200)
    assert first["chatSessionId"] == session_id and first["title"] == "会话" and first["deleted"] is False
    again = envelope(mirror(conv, session_id, **live_state()), 200)
    assert again["id"] == first["id"]
    assert [r["id"] for r in linked(conv, session_id)] == [first["id"]]
    assert envelope(state_of(conv, session_id), 200)["id"] == first["id"]
    assert outbox_rows(conv.app, conversation_db, CONVERSATION_OUTBOX) == []  # never mirrored back


def test_mirror_is_safe_under_concurrency(conv):
    session_id = str(uuid.uuid4())

    def put(_):
        client = ApiClient(conv.app, default_user=ALICE)
        return envelope(mirror(client, session_id, **live_state()), 200)["id"]

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(put, range(8)))
    assert len(ids) == 1
    assert len(linked(conv, session_id)) == 1


def test_versions_order_titles_and_dify_ids(conv):
    session_id = str(uuid.uuid4())
    envelope(mirror(conv, session_id, **live_state(title="新", titleVersion=2000)), 200)
    assert envelope(mirror(conv, session_id, title="旧", titleVersion=1000), 200)["title"] == "新"
    assert envelope(mirror(conv, session_id, title="更新", titleVersion=3000), 200)["title"] == "更新"
    envelope(mirror(conv, session_id, difyConversationId="d-2", difyVersion=20), 200)
    data = envelope(mirror(conv, session_id, difyConversationId="d-1", difyVersion=10), 200)
    assert data["difyConversationId"] == "d-2"


def test_activity_only_moves_forward(conv):
    session_id = str(uuid.uuid4())
    now = epoch_ms()
    envelope(mirror(conv, session_id, **live_state(activityTime=now + 5000)), 200)
    data = envelope(mirror(conv, session_id, activityTime=now), 200)
    assert data["activityTime"] == now + 5000


def test_a_deleted_record_never_comes_back(conv):
    session_id = str(uuid.uuid4())
    record = envelope(mirror(conv, session_id, **live_state()), 200)
    assert envelope(mirror(conv, session_id, deleted=True), 200)["deleted"] is True
    envelope(conv.get(f"{RECORDS}/{record['id']}"), 404, 7002)
    data = envelope(mirror(conv, session_id, **live_state(title="复活?", titleVersion=LATER)), 200)
    assert (data["deleted"], data["title"], data["id"]) == (True, "会话", record["id"])
    assert linked(conv, session_id) == []


def test_a_session_deleted_before_its_first_delivery_leaves_a_tombstone(conv):
    session_id = str(uuid.uuid4())
    assert envelope(mirror(conv, session_id, **live_state(deleted=True)), 200)["deleted"] is True
    assert envelope(mirror(conv, session_id, **live_state()), 200)["deleted"] is True
    assert linked(conv, session_id) == []


def test_a_record_of_the_older_dify_link_is_adopted(conv):
    old = envelope(
        conv.put("/internal/ai/conversation/dify/d-old", json={"title": "旧链接"}, headers=service(conv)), 200
    )
    session_id = str(uuid.uuid4())
    data = envelope(
        mirror(conv, session_id, **live_state(difyConversationId="d-old", difyVersion=epoch_ms())), 200
    )
    assert data["id"] == old["id"] and data["chatSessionId"] == session_id


def test_a_dify_id_another_live_record_has_is_left_off(conv):
    standalone = envelope(conv.post(RECORDS, json={"title": "独立", "difyConversationId": "d-x"}), 200)
    session_id = str(uuid.uuid4())
    first = envelope(mirror(conv, session_id, **live_state()), 200)
    data = envelope(mirror(conv, session_id, difyConversationId="d-x", difyVersion=epoch_ms()), 200)
    assert data["id"] == first["id"] != standalone["id"]
    assert data["difyConversationId"] is None


def test_mirror_and_state_refusals(conv):
    session_id = str(uuid.uuid4())
    path = f"/internal/ai/conversation/chat/{session_id}"
    envelope(mirror(conv, session_id, **live_state()), 200)
    for method in ("PUT", "GET"):
        body = live_state() if method == "PUT" else None
        envelope(conv.call(method, path, json=body, user=None), 401)
        envelope(conv.call(method, path, json=body), 403)  # a user token
        envelope(conv.call(method, path, json=body, headers=service(conv, BOB)), 403)  # not BOB's session
        envelope(conv.call(method, path, json=body, headers=service(conv, None)), 400)
        bad = "/internal/ai/conversation/chat/nope"
        envelope(conv.call(method, bad, json=body, headers=service(conv)), 400)
    envelope(state_of(conv, str(uuid.uuid4())), 404, 7002)
    for body in (
        {"userId": BOB},
        {"deleted": "true"},
        {"titleVersion": -1},
        {"titleVersion": 1.5},
        {"title": ""},
        {"activityTime": 10**20},
    ):
        envelope(mirror(conv, session_id, **body), 400, 1001)


def test_public_changes_to_a_linked_record_are_mirrored_but_pinning_is_not(conv):
    session_id = str(uuid.uuid4())
    linked = envelope(mirror(conv, session_id, **live_state()), 200)
    standalone = envelope(conv.post(RECORDS, json={"title": "独立"}), 200)
    rows = lambda: outbox_rows(conv.app, conversation_db, CONVERSATION_OUTBOX)  # noqa: E731
    envelope(conv.put(f"{RECORDS}/{linked['id']}/pinned?isPinned=1"), 200)
    envelope(conv.put(RECORDS, json={"id": standalone["id"], "title": "独立改"}), 200)
    envelope(conv.delete(f"{RECORDS}/{standalone['id']}"), 200)
    assert rows() == []
    envelope(conv.put(RECORDS, json={"id": linked["id"], "title": "改名"}), 200)
    assert rows() == [("session", linked["id"])]
    state = envelope(state_of(conv, session_id), 200)
    assert state["titleVersion"] > live_state()["titleVersion"] - 60_000
    envelope(conv.delete(f"{RECORDS}/batch", json=[linked["id"]]), 200)
    assert rows() == [("session", linked["id"])]
    assert envelope(state_of(conv, session_id), 200)["deleted"] is True

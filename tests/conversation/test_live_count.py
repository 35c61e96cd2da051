"""The page's `total` is the user's maintained count of live records (conversation_user_counts), kept
exact by every path that makes a record live or not: creates, links, deletes, restores, the mirror of
chat sessions, imports, purge, erasure, and concurrent writers. Only a `keyword` page still counts."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from conversation_service import create_app
from conversation_service import purge as conversation_purge
from conversation_service.extensions import db
from conversation_service.models import AiConversation, utcnow
from tests.api_client import envelope
from tests.conftest import ALICE, BOB, base_environ
from tests.conversation.helpers import BASE, new_conversation, service_headers

INTERNAL = "/internal/ai/conversation"
LATER = 4_000_000_000_000  # a version far in the future (year 2096)


def total(conv, user: str = ALICE) -> int:
    return envelope(conv.get(f"{BASE}/page", user=user), 200)["total"]


def live_rows(app, user: str = ALICE) -> int:
    with app.app_context():
        try:
            live = sa.and_(AiConversation.user_id == user, AiConversation.is_deleted.is_(False))
            return db.session.scalar(sa.select(sa.func.count()).where(live))
        finally:
            db.session.remove()


def assert_exact(conv, expected: int, user: str = ALICE) -> None:
    assert total(conv, user) == live_rows(conv.app, user) == expected


def test_creates_deletes_and_restores_keep_the_total_exact(conv):
    ids = [new_conversation(conv, f"r{i}")["id"] for i in range(5)]
    new_conversation(conv, "bob's", user=BOB)
    assert_exact(conv, 5)
    envelope(conv.delete(f"{BASE}/{ids[0]}"), 200)
    envelope(conv.delete(f"{BASE}/{ids[0]}"), 404, 7002)  # twice: counted once
    assert_exact(conv, 4)
    envelope(conv.delete(f"{BASE}/batch", json=[ids[1], ids[2]]), 200)
    envelope(conv.delete(f"{BASE}/batch", json=[ids[3], ids[1]]), 404, 7002)  # refused whole: no change
    assert_exact(conv, 2)
    envelope(conv.put(f"{BASE}/{ids[1]}/restore"), 200)
    envelope(conv.put(f"{BASE}/{ids[1]}/restore"), 200)  # already live: counted once
    assert_exact(conv, 3)
    envelope(conv.put(f"{BASE}/{ids[3]}/pinned?isPinned=1"), 200)
    envelope(conv.put(BASE, json={"id": ids[4], "title": "renamed"}), 200)
    assert_exact(conv, 3)
    assert_exact(conv, 1, user=BOB)


def test_a_refused_create_counts_nothing(conv):
    new_conversation(conv, "linked", difyConversationId="dify-1")
    envelope(conv.post(BASE, json={"title": "again", "difyConversationId": "dify-1"}), 409, 1004)
    assert_exact(conv, 1)


def test_links_mirrors_and_imports_keep_the_total_exact(conv):
    headers = service_headers(conv)
    for _ in range(2):  # idempotent: one record
        envelope(conv.put(f"{INTERNAL}/dify/dify-7", json={}, headers=headers), 200)
    assert_exact(conv, 1)
    session, tombstone, imported = (str(uuid.uuid4()) for _ in range(3))
    state = {"title": "mirrored", "titleVersion": 1}
    envelope(conv.put(f"{INTERNAL}/chat/{session}", json=state, headers=headers), 200)
    envelope(conv.put(f"{INTERNAL}/chat/{session}", json=state, headers=headers), 200)
    gone = {"deleted": True, "deletedVersion": LATER}
    envelope(conv.put(f"{INTERNAL}/chat/{tombstone}", json=gone, headers=headers), 200)  # made deleted
    assert_exact(conv, 2)
    envelope(conv.put(f"{INTERNAL}/chat/{session}", json=gone, headers=headers), 200)
    envelope(conv.put(f"{INTERNAL}/chat/{session}", json=gone, headers=headers), 200)  # replayed
    assert_exact(conv, 1)
    back = {"deleted": False, "deletedVersion": LATER + 1}
    envelope(conv.put(f"{INTERNAL}/chat/{session}", json=back, headers=headers), 200)
    envelope(conv.put(f"{INTERNAL}/chat/{session}", json=back, headers=headers), 200)
    assert_exact(conv, 2)
    for _ in range(2):
        body = {"title": "imported", "titleVersion": 1, "isPinned": 1}
        envelope(conv.put(f"{INTERNAL}/chat/{imported}/import", json=body, headers=headers), 200)
    assert_exact(conv, 3)


def test_purge_and_the_purge_of_a_chat_sessions_record_leave_the_total_exact(conv):
    ids = [new_conversation(conv, f"r{i}")["id"] for i in range(3)]
    envelope(conv.delete(f"{BASE}/{ids[0]}"), 200)
    headers = service_headers(conv)
    session = str(uuid.uuid4())
    envelope(
        conv.put(f"{INTERNAL}/chat/{session}", json={"title": "s", "titleVersion": 1}, headers=headers), 200
    )
    envelope(
        conv.put(
            f"{INTERNAL}/chat/{session}", json={"deleted": True, "deletedVersion": LATER}, headers=headers
        ),
        200,
    )
    assert_exact(conv, 2)
    with conv.app.app_context():
        later = utcnow() + timedelta(days=conv.app.config["RESTORE_WINDOW_DAYS"] + 1)
        assert conversation_purge.purge(now=later).records == 1
    assert envelope(conv.delete(f"{INTERNAL}/chat/{session}", headers=headers), 200) == {"purged": True}
    assert_exact(conv, 2)


def test_erasure_brings_the_total_to_zero_and_forgets_the_count(conv):
    new_conversation(conv, "linked", difyConversationId="dify-9")
    deleted = new_conversation(conv, "deleted")
    new_conversation(conv, "plain")
    envelope(conv.delete(f"{BASE}/{deleted['id']}"), 200)
    new_conversation(conv, "bob's", user=BOB)
    headers = service_headers(conv, None)
    first = envelope(conv.post(f"{INTERNAL}/erasures", json={"userId": ALICE}, headers=headers), 200)
    assert first["done"] is False and first["difyConversationIds"] == ["dify-9"]
    assert_exact(conv, 1)  # the linked record waits for its Dify conversation
    body = {"userId": ALICE, "difyDeleted": ["dify-9"]}
    assert envelope(conv.post(f"{INTERNAL}/erasures", json=body, headers=headers), 200)["done"] is True
    assert_exact(conv, 0)
    assert_exact(conv, 1, user=BOB)
    with conv.app.app_context():
        try:
            users = db.session.scalars(sa.text("SELECT user_id FROM conversation_user_counts")).all()
        finally:
            db.session.remove()
    assert users == [BOB], "the erased user's id is gone from the counts too"
    new_conversation(conv, "after the erasure")
    assert_exact(conv, 1)


WRITERS = 8
EACH = 6


def test_concurrent_writers_keep_the_total_exact(conv):
    def write(worker: int) -> None:
        ids = [new_conversation(conv, f"w{worker}-{i}")["id"] for i in range(EACH)]
        conv.delete(f"{BASE}/{ids[0]}")
        conv.delete(f"{BASE}/{ids[0]}")  # only one delete may count
        conv.delete(f"{BASE}/batch", json=[ids[1], ids[2]])
        conv.delete(f"{BASE}/batch", json=[ids[1], ids[2]])
        conv.put(f"{BASE}/{ids[1]}/restore")
        conv.put(f"{BASE}/{ids[1]}/restore")  # only one restore may count
        envelope(conv.put(f"{INTERNAL}/dify/shared-race", json={}, headers=service_headers(conv)), 200)

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(write, range(WRITERS)))
    # Each writer keeps EACH - 2 of its records, and all share one linked record.
    assert_exact(conv, WRITERS * (EACH - 2) + 1)


@contextmanager
def statements(app):
    """Every SQL statement the app's engine runs inside the block."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, _parameters, _context, _many):
        seen.append(statement.lower())

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_the_page_and_the_list_issue_no_count(conv):
    for i in range(12):
        new_conversation(conv, f"项目 {i}")
    with statements(conv.app) as seen:
        for path in ("/page", "/page?pageNo=2&sortBy=title&sortOrder=ASC", "/page?cursor=", "/list"):
            envelope(conv.get(f"{BASE}{path}"), 200)
    assert seen, "the listener saw the statements"
    assert not [s for s in seen if "count(" in s]
    assert any("conversation_user_counts" in s for s in seen)
    with statements(conv.app) as seen:  # a keyword page counts its matches (the counter counts all)
        assert envelope(conv.get(f"{BASE}/page?keyword=项目"), 200)["total"] == 12
    assert [s for s in seen if "count(" in s]


def test_the_migration_counts_the_existing_rows(database_server):
    url = database_server.create("live_count_backfill")
    app = create_app(base_environ(url))
    rows = [(1, ALICE, False), (2, ALICE, False), (3, ALICE, True), (4, BOB, True), (5, BOB, False)]
    with app.app_context():
        try:
            upgrade(revision="0005")
            for record_id, user, deleted in rows:
                db.session.execute(
                    sa.insert(AiConversation.__table__).values(
                        id=record_id,
                        user_id=user,
                        title="t",
                        is_pinned=False,
                        created_time=utcnow(),
                        updated_time=utcnow(),
                        is_deleted=deleted,
                        delete_token=record_id if deleted else 0,
                    )
                )
            db.session.execute(
                sa.insert(AiConversation.__table__).values(
                    id=6, user_id="carol", title="t", created_time=utcnow(), updated_time=utcnow(),
                    is_deleted=True, delete_token=6,
                )
            )  # fmt: skip
            db.session.commit()
            upgrade()
            counts = dict(
                db.session.execute(sa.text("SELECT user_id, live_count FROM conversation_user_counts")).all()
            )
        finally:
            db.session.remove()
            db.engine.dispose()
    assert counts == {ALICE: 2, BOB: 1}


@pytest.mark.parametrize("page_no", [1, 2, 3])
def test_the_far_half_of_the_pages_follows_the_counter(conv, page_no):
    titles = [new_conversation(conv, f"t{i:02}")["title"] for i in range(25)]
    data = envelope(conv.get(f"{BASE}/page?pageNo={page_no}&sortBy=title&sortOrder=ASC"), 200)
    assert [r["title"] for r in data["records"]] == titles[(page_no - 1) * 10 : page_no * 10]
    assert (data["total"], data["pages"]) == (25, 3)

"""POST /api/chat/import: our own export taken back (round trips into a fresh user and into another
deployment, duplicates skipped, every bad line a 1001 naming it, nothing stored), on every backend."""

# ruff: noqa: F401, F811 - the fixtures `linked` and `offline` come from tests/chat/test_export.py

from __future__ import annotations

import io
import json

import pytest
import sqlalchemy as sa

from chat_service import create_app as create_chat_app
from chat_service.extensions import db
from chat_service.models import OUTBOX, ChatMessage, ChatSession
from chat_service.services.importing import imported_session_id
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from shared import outbox
from tests.api_client import ApiClient, envelope
from tests.chat.test_export import (
    RECORDS,
    Linked,
    chat_app_for,
    close_chat_app,
    deliver,
    linked,
    ndjson,
    new_session,
    offline,
    pin,
    post,
    sample,
)
from tests.conftest import ALICE, BOB, base_environ
from tests.databases import clear_tables, migrated_database
from tests.live import serve

CAROL = "542738228948500482"
IMPORT = "/api/chat/import"
# What must survive a round trip; ids, times of the export and record ids may differ.
SESSION_FIELDS = ("title", "created_at", "updated_at", "usage", "inputs")
MESSAGE_FIELDS = ("role", "content", "created_at", "updated_at", "is_generated", "usage", "feedback")


def as_json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def content_of(lines: list[dict]) -> list[tuple]:
    """The export's content, in order, without ids: what a round trip must keep byte for byte."""
    kept = []
    for line in lines:
        if line["type"] == "session":
            record = line["record"]
            pinned = (record["title"], record["pinned"]) if record else None
            kept.append(("session", *(as_json(line[f]) for f in SESSION_FIELDS), pinned))
        elif line["type"] == "message":
            kept.append(("message", *(as_json(line[f]) for f in MESSAGE_FIELDS)))
    return kept


def import_body(chat: ApiClient, body: bytes, user: str = ALICE, status: int = 200, code: int | None = None):
    response = chat.post(IMPORT, user=user, data=body, headers={"Content-Type": "application/x-ndjson"})
    return envelope(response, status, code)


def counts(summary: dict) -> tuple[int, int, int]:
    return summary["sessions_imported"], summary["messages_imported"], summary["duplicates_skipped"]


def live_sessions(chat: ApiClient, user: str) -> list[dict]:
    return envelope(chat.post("/api/chat/sessions", user=user, json={"page_size": 100}), 200)


def records_of(linked: Linked, user: str) -> list[dict]:
    return envelope(linked.conv.get(f"{RECORDS}/list", user=user), 200)


# --- round trips ----------------------------------------------------------------------------------


def test_a_round_trip_into_a_fresh_user_keeps_every_content_field_with_new_ids(linked):
    ids = sample(linked)
    exported = ndjson(linked.chat.get("/api/chat/export"))
    summary = import_body(linked.chat, b"".join(json.dumps(x).encode() + b"\n" for x in exported), CAROL)
    assert counts(summary) == (2, 4, 0)
    assert summary["pins_not_applied"] == []
    mapping = {entry["from_session_id"]: entry["session_id"] for entry in summary["sessions"]}
    assert mapping == {
        ids["first"]: imported_session_id(CAROL, ids["first"]),
        ids["second"]: imported_session_id(CAROL, ids["second"]),
    }
    assert [entry["line"] for entry in summary["sessions"]] == [2, 6]

    assert outbox.drain(linked.app) == 0  # the normal sync creates the unpinned session's record
    again = ndjson(linked.chat.get("/api/chat/export", user=CAROL))
    assert content_of(again) == content_of(exported)
    old_ids = {line.get("message_id") for line in exported} - {None}
    new_ids = {line.get("message_id") for line in again} - {None}
    assert not old_ids & new_ids
    assert {line["session_id"] for line in again if line["type"] == "session"} == set(mapping.values())
    # The pin reached conversation_service and survived the sync's delivery.
    pinned = [r for r in records_of(linked, CAROL) if r["isPinned"] == 1]
    assert [r["chatSessionId"] for r in pinned] == [mapping[ids["first"]]]
    # The session list shows them, message counts right, in their original order of activity.
    listed = live_sessions(linked.chat, CAROL)
    assert [s["title"] for s in listed] == ["Second chat", "项目管理"]
    assert [s["message_count"] for s in listed] == [1, 3]


def test_imported_messages_keep_their_order_times_and_roles(linked):
    sid = new_session(linked.chat, "order")
    for i in range(25):
        post(linked.chat, sid, f"m{i:02}", role=("user", "assistant")[i % 2])
    exported = linked.chat.get(f"/api/chat/sessions/{sid}/export?format=ndjson").get_data()
    summary = import_body(linked.chat, exported, BOB)
    new_sid = summary["sessions"][0]["session_id"]
    page = envelope(linked.chat.get(f"/aichat/sessions/{new_sid}/messages?pageSize=100", user=BOB), 200)
    assert [m["content"] for m in page["items"]] == [f"m{i:02}" for i in range(25)]
    original = envelope(linked.chat.get(f"/aichat/sessions/{sid}/messages?pageSize=100"), 200)
    assert [(m["role"], m["created_at"]) for m in page["items"]] == [
        (m["role"], m["created_at"]) for m in original["items"]
    ]


@pytest.fixture
def other_deployment(database_server):
    """A second deployment: both services on databases of their own, conversation_service live."""
    chat_url = migrated_database(database_server, "chat_other", create_chat_app, db, base_environ)
    conv_url = migrated_database(
        database_server, "conversation_other", create_conversation_app, conversation_db, base_environ
    )
    conversation_app = create_conversation_app(base_environ(conv_url))
    with serve(conversation_app) as url:
        app = chat_app_for(chat_url, url)
        yield Linked(ApiClient(app, ALICE), ApiClient(conversation_app, ALICE), app)
        close_chat_app(app)
    with conversation_app.app_context():
        clear_tables(
            conversation_db, ["ai_conversations", "conversation_sync_outbox", "conversation_user_counts"]
        )
        conversation_db.engine.dispose()


def test_a_round_trip_into_another_deployment(linked, other_deployment):
    sample(linked)
    exported = linked.chat.get("/api/chat/export").get_data()
    summary = import_body(other_deployment.chat, exported)
    assert (summary["sessions_imported"], summary["messages_imported"]) == (2, 4)
    assert outbox.drain(other_deployment.app) == 0
    again = ndjson(other_deployment.chat.get("/api/chat/export"))
    assert content_of(again) == content_of([json.loads(raw) for raw in exported.splitlines()])
    # ... and back again into a third account, to show an imported session exports like any other.
    third = import_body(linked.chat, other_deployment.chat.get("/api/chat/export").get_data(), CAROL)
    assert third["sessions_imported"] == 2
    assert outbox.drain(linked.app) == 0
    assert content_of(ndjson(linked.chat.get("/api/chat/export", user=CAROL))) == content_of(again)


# --- duplicates -----------------------------------------------------------------------------------


def test_importing_the_same_export_twice_skips_every_session_the_second_time(linked):
    sample(linked)
    exported = linked.chat.get("/api/chat/export").get_data()
    first = import_body(linked.chat, exported, CAROL)
    second = import_body(linked.chat, exported, CAROL)
    assert counts(second) == (0, 0, 2)
    assert [entry["status"] for entry in second["sessions"]] == ["duplicate", "duplicate"]
    assert [e["session_id"] for e in second["sessions"]] == [e["session_id"] for e in first["sessions"]]
    assert "already here" in second["sessions"][0]["detail"]
    assert len(live_sessions(linked.chat, CAROL)) == 2
    assert len(records_of(linked, CAROL)) == 1  # the pinned one's; no second record either


def test_an_export_taken_back_where_it_was_made_is_a_duplicate(linked):
    ids = sample(linked)
    summary = import_body(linked.chat, linked.chat.get("/api/chat/export").get_data())
    assert summary["duplicates_skipped"] == 2 and summary["sessions_imported"] == 0
    assert {entry["session_id"] for entry in summary["sessions"]} == {ids["first"], ids["second"]}
    assert len(live_sessions(linked.chat, ALICE)) == 2


def test_a_deleted_import_is_still_a_duplicate(linked):
    sid = new_session(linked.chat, "x")
    exported = linked.chat.get(f"/api/chat/sessions/{sid}/export?format=ndjson").get_data()
    new_sid = import_body(linked.chat, exported, BOB)["sessions"][0]["session_id"]
    envelope(linked.chat.delete(f"/api/chat/sessions/{new_sid}", user=BOB), 200)
    again = import_body(linked.chat, exported, BOB)
    assert again["duplicates_skipped"] == 1 and again["sessions_imported"] == 0


def test_a_partly_imported_file_imports_the_rest(linked):
    """What a failure midway leaves: some sessions committed. The same file again imports the others."""
    first, second = new_session(linked.chat, "one"), new_session(linked.chat, "two")
    post(linked.chat, second, "x")
    one_only = linked.chat.get(f"/api/chat/sessions/{first}/export?format=ndjson").get_data()
    import_body(linked.chat, one_only, BOB)
    summary = import_body(linked.chat, linked.chat.get("/api/chat/export").get_data(), BOB)
    assert [entry["status"] for entry in summary["sessions"]] == ["duplicate", "imported"]
    assert summary["messages_imported"] == 1


# --- bad input ------------------------------------------------------------------------------------


def valid_lines(linked: Linked) -> list[dict]:
    sid = new_session(linked.chat, "valid")
    post(linked.chat, sid, "hello")
    return ndjson(linked.chat.get(f"/api/chat/sessions/{sid}/export?format=ndjson"))


def encode(lines: list) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


def changed(lines: list[dict], index: int, **changes) -> list:
    lines = [dict(line) for line in lines]
    lines[index] = {**lines[index], **changes}
    return lines


BAD = {
    "not json": lambda ls: (encode([ls[0], b"{not json", *ls[1:]]), 2),
    "an array": lambda ls: (encode([ls[0], b"[1, 2]", *ls[1:]]), 2),
    "no header": lambda ls: (encode(ls[1:]), 1),
    "another format": lambda ls: (encode(changed(ls, 0, format="openwebui")), 1),
    "a newer version": lambda ls: (encode(changed(ls, 0, version=2)), 1),
    "an unknown type": lambda ls: (encode(changed(ls, 1, type="folder")), 2),
    "an unknown field": lambda ls: (encode(changed(ls, 2, is_deleted=True)), 3),
    "a bad role": lambda ls: (encode(changed(ls, 2, role="tool")), 3),
    "blank content": lambda ls: (encode(changed(ls, 2, content="  ")), 3),
    "content too long": lambda ls: (encode(changed(ls, 2, content="x" * 32_001)), 3),
    "a lone surrogate": lambda ls: (encode(changed(ls, 2, content="\ud800")), 3),
    "a NUL": lambda ls: (encode(changed(ls, 1, title="a\x00b")), 2),
    "a bad time": lambda ls: (encode(changed(ls, 2, created_at="yesterday")), 3),
    "a bad rating": lambda ls: (encode(changed(ls, 2, feedback={"rating": "meh", "content": None})), 3),
    "a bad session id": lambda ls: (encode(changed(ls, 1, session_id="nope")), 2),
    "a string count": lambda ls: (encode(changed(ls, 3, messages="1")), 4),
    "a message of another session": lambda ls: (
        encode(changed(ls, 2, session_id="00000000-0000-4000-8000-000000000000")),
        3,
    ),
    "a message before any session": lambda ls: (encode([ls[0], ls[2], ls[1], ls[3]]), 2),
    "no end line (cut off)": lambda ls: (encode(ls[:-1]), 4),
    "wrong counts": lambda ls: (encode(changed(ls, 3, messages=5)), 4),
    "a line after the end": lambda ls: (encode([*ls, ls[1]]), 5),
    "the same session twice": lambda ls: (encode([*ls[:3], ls[1], ls[2], {**ls[3], "sessions": 2}]), 4),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_every_bad_line_is_a_1001_naming_it_and_nothing_is_stored(linked, case):
    body, number = BAD[case](valid_lines(linked))
    data = import_body(linked.chat, body, BOB, 400, 1001)
    assert data["line"] == number, data
    assert data["detail"].startswith(f"line {number}: ") and "nothing was imported" in data["detail"]
    assert data["errors"]
    assert live_sessions(linked.chat, BOB) == []


def test_a_bad_line_after_good_sessions_stores_none_of_them(linked):
    sample(linked)
    lines = ndjson(linked.chat.get("/api/chat/export"))
    lines[-2] = {**lines[-2], "role": "robot"}
    import_body(linked.chat, encode(lines), CAROL, 400, 1001)
    assert live_sessions(linked.chat, CAROL) == []


@pytest.mark.parametrize("body", [b"", b"\n\n", "日本語".encode()])
def test_an_empty_or_foreign_body_is_1001(linked, body):
    data = import_body(linked.chat, body, BOB, 400, 1001)
    assert data["line"] == 1


def test_the_import_needs_a_token(linked):
    envelope(linked.chat.post(IMPORT, user=None, data=encode(valid_lines(linked))), 401)


# --- size -----------------------------------------------------------------------------------------


def test_an_import_may_be_larger_than_max_content_length(linked):
    sid = new_session(linked.chat, "big")
    for i in range(40):
        post(linked.chat, sid, f"{i} " + "长" * 30_000)  # 90 KB each in UTF-8: 3.6 MB in all
    exported = linked.chat.get(f"/api/chat/sessions/{sid}/export?format=ndjson").get_data()
    assert len(exported) > 3 * linked.app.config["MAX_CONTENT_LENGTH"]
    summary = import_body(linked.chat, exported, BOB)
    assert summary["messages_imported"] == 40
    # Other routes keep MAX_CONTENT_LENGTH.
    big = {"session_id": sid, "content": "x" * (linked.app.config["MAX_CONTENT_LENGTH"] + 1)}
    envelope(linked.chat.post("/api/chat/message", json=big), 413)


def test_an_import_over_import_max_bytes_is_413(linked):
    body = encode(valid_lines(linked))
    linked.app.config["IMPORT_MAX_BYTES"] = len(body) - 1
    envelope(linked.chat.post(IMPORT, user=BOB, data=body), 413)
    linked.app.config["IMPORT_MAX_BYTES"] = len(body)
    assert import_body(linked.chat, body, BOB)["sessions_imported"] == 1


def test_a_chunked_import_over_the_bound_is_413(linked):
    body = encode(valid_lines(linked))
    linked.app.config["IMPORT_MAX_BYTES"] = len(body) - 1
    response = linked.chat.post(  # no Content-Length: a chunked body, ended by the server
        IMPORT, user=BOB, input_stream=io.BytesIO(body), environ_overrides={"wsgi.input_terminated": True}
    )
    envelope(response, 413)
    assert live_sessions(linked.chat, BOB) == []


# --- conversation_service -------------------------------------------------------------------------


def test_pins_need_conversation_service_up_and_nothing_is_stored_without_it(linked, offline):
    sid = new_session(linked.chat, "pinned")
    pin(linked, sid)
    exported = linked.chat.get("/api/chat/export").get_data()
    data = import_body(offline, exported, BOB, 503, 5000)
    assert "conversation_service" in data["detail"]
    assert live_sessions(offline, BOB) == []


def test_without_pins_an_import_needs_no_conversation_service(linked, offline):
    sid = new_session(linked.chat, "plain")
    deliver(linked.app, sid)
    post(linked.chat, sid, "hi")
    summary = import_body(offline, linked.chat.get("/api/chat/export").get_data(), BOB)
    assert summary["sessions_imported"] == 1
    with offline.app.app_context():  # its record follows by the outbox once conversation_service is back
        new_sid = summary["sessions"][0]["session_id"]
        assert db.session.scalar(sa.select(OUTBOX.c.key).where(OUTBOX.c.key == new_sid)) == new_sid
        session = db.session.get(ChatSession, new_sid)
        assert (session.user_id, session.message_count, session.is_deleted) == (BOB, 1, False)
        assert session.dify_conversation_id is None
        assert db.session.scalar(sa.select(sa.func.count()).where(ChatMessage.session_id == new_sid)) == 1
        db.session.remove()

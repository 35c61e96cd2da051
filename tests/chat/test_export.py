"""GET /api/chat/export (NDJSON) and GET /api/chat/sessions/<id>/export (Markdown, NDJSON), with
conversation_service live on loopback for the pins, on every backend."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from flask import Flask

import conversation_service.api.internal_export  # noqa: F401 - its routes, until conversation_service.api imports it
from chat_service import create_app, crud, live, sync
from chat_service.extensions import db
from chat_service.services import export
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, BOB, base_environ
from tests.databases import clear_tables
from tests.processes import free_port

CHAT_TABLES = ["chat_messages", "chat_sessions", "chat_sync_outbox"]
RECORDS = "/api/ai/conversation"


@dataclass
class Linked:
    """chat_service (test client) calling conversation_service live on loopback."""

    chat: ApiClient
    conv: ApiClient
    app: Flask


def chat_app_for(database: str, conversation_url: str) -> Flask:
    app = create_app(base_environ(database, CONVERSATION_SERVICE_URL=conversation_url))
    app.config["TESTING"] = True
    return app


def close_chat_app(app: Flask) -> None:
    with app.app_context():
        clear_tables(db, CHAT_TABLES)
        db.engine.dispose()
    live.of(app).close()


@pytest.fixture
def linked(chat_database, live_conversation):
    url, conversation_app = live_conversation
    app = chat_app_for(chat_database, url)
    yield Linked(ApiClient(app, ALICE), ApiClient(conversation_app, ALICE), app)
    close_chat_app(app)


@pytest.fixture
def offline(chat_database):
    """chat_service whose conversation_service does not answer (nothing listens on its port)."""
    app = chat_app_for(chat_database, f"http://127.0.0.1:{free_port()}")
    yield ApiClient(app, ALICE)
    close_chat_app(app)


def ndjson(response) -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    text = response.get_data(as_text=True)
    assert text.endswith("\n")
    return [json.loads(raw) for raw in text.splitlines()]


def new_session(chat: ApiClient, title: str, user: str = ALICE) -> str:
    return envelope(chat.post("/api/chat/session", user=user, json={"title": title}), 200)["session_id"]


def post(chat: ApiClient, sid: str, content: str, role: str = "user", user: str = ALICE) -> int:
    body = {"session_id": sid, "content": content, "role": role}
    return envelope(chat.post("/api/chat/message", user=user, json=body), 200)["message_id"]


def reply(app: Flask, sid: str, content: str, usage: dict) -> int:
    """A reply as a turn stores it (crud.create_message, generated, with the provider's usage)."""
    with app.app_context():
        message = crud.create_message(
            db.session, sid, content, "assistant", usage=json.dumps(usage), is_generated=True
        )
        db.session.remove()
        return message.message_id


def deliver(app: Flask, sid: str) -> dict:
    """The session's record created now, by the outbox's own delivery (the worker is off in tests)."""
    with app.app_context():
        return sync.put_record(sid)


def pin(linked: Linked, sid: str, user: str = ALICE) -> None:
    record = deliver(linked.app, sid)
    envelope(linked.conv.put(f"{RECORDS}/{record['id']}/pinned?isPinned=1", user=user), 200)


def sample(linked: Linked) -> dict:
    """Two conversations of ALICE (one pinned, with a rated reply and usage), a deleted one, a deleted
    message, and one conversation of BOB."""
    chat = linked.chat
    first = new_session(chat, "项目管理")
    post(chat, first, "第一条")
    reply_id = reply(linked.app, first, "**答复**\n\n- 一\n- 二", {"prompt_tokens": 3, "total_tokens": 7})
    envelope(
        chat.put(f"/api/chat/messages/{reply_id}/feedback", json={"rating": "like", "content": "好"}), 200
    )
    gone = post(chat, first, "删掉的")
    envelope(chat.delete(f"/api/chat/messages/{gone}"), 200)
    post(chat, first, "system note", role="system")
    pin(linked, first)
    second = new_session(chat, "Second chat")
    post(chat, second, "hello")
    deliver(linked.app, second)
    deleted = new_session(chat, "deleted one")
    post(chat, deleted, "never exported")
    envelope(chat.delete(f"/api/chat/sessions/{deleted}"), 200)
    bobs = new_session(chat, "Bob's", user=BOB)
    post(chat, bobs, "bob's secret", user=BOB)
    return {"first": first, "second": second, "deleted": deleted, "bobs": bobs, "reply": reply_id}


# --- the whole export -----------------------------------------------------------------------------


def test_the_export_streams_every_live_conversation_with_pins_usage_and_feedback(linked):
    ids = sample(linked)
    response = linked.chat.get("/api/chat/export")
    assert response.mimetype == "application/x-ndjson"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="chat-export-')
    assert response.headers["X-Trace-Id"]
    lines = ndjson(response)

    header, *body, end = lines
    assert header["type"] == "export"
    assert (header["format"], header["version"], header["user_id"], header["scope"]) == (
        "chat_service.export",
        1,
        ALICE,
        "all",
    )
    assert header["exported_at"].endswith("Z")
    assert end == {"type": "end", "sessions": 2, "messages": 4, "records_unavailable": 0}
    kinds = ["session", "message", "message", "message", "session", "message"]
    assert [line["type"] for line in body] == kinds

    first = body[0]
    assert first["session_id"] == ids["first"]
    assert first["title"] == "项目管理"
    assert first["record"]["pinned"] is True and first["record"]["title"] == "项目管理"
    assert first["usage"]["prompt_tokens"] == 3 and first["usage"]["total_tokens"] == 7
    assert first["inputs"] is None
    assert [m["content"] for m in body[1:4]] == ["第一条", "**答复**\n\n- 一\n- 二", "system note"]
    assert [m["role"] for m in body[1:4]] == ["user", "assistant", "system"]
    rated = body[2]
    assert rated["message_id"] == ids["reply"]
    assert rated["feedback"] == {"rating": "like", "content": "好"}
    assert rated["usage"] == {"prompt_tokens": 3, "total_tokens": 7}
    assert rated["is_generated"] is True and body[1]["is_generated"] is False
    assert all(m["session_id"] == ids["first"] for m in body[1:4])
    assert body[4]["session_id"] == ids["second"] and body[4]["record"]["pinned"] is False
    text = response.get_data(as_text=True)
    for hidden in ("删掉的", "never exported", "bob's secret", ids["deleted"], ids["bobs"]):
        assert hidden not in text


def test_another_user_exports_only_their_own(linked):
    ids = sample(linked)
    lines = ndjson(linked.chat.get("/api/chat/export", user=BOB))
    assert [line["session_id"] for line in lines if line["type"] == "session"] == [ids["bobs"]]
    assert lines[0]["user_id"] == BOB
    assert "项目管理" not in json.dumps(lines, ensure_ascii=False)


def test_a_user_with_nothing_gets_the_header_and_end_lines_only(offline):
    lines = ndjson(offline.get("/api/chat/export"))
    assert [line["type"] for line in lines] == ["export", "end"]
    assert lines[1] == {"type": "end", "sessions": 0, "messages": 0, "records_unavailable": 0}


def test_the_export_needs_a_token(offline):
    envelope(offline.get("/api/chat/export", user=None), 401)


def test_conversation_service_down_fails_the_export_before_the_first_byte(offline):
    sid = new_session(offline, "x")
    post(offline, sid, "hello")
    data = envelope(offline.get("/api/chat/export"), 503, 5000)
    assert "conversation_service" in data["detail"]
    ndjson_of_one = offline.get(f"/api/chat/sessions/{sid}/export?format=ndjson")
    envelope(ndjson_of_one, 503, 5000)
    # Markdown needs no pins: it does not depend on conversation_service.
    assert offline.get(f"/api/chat/sessions/{sid}/export").status_code == 200


def test_pages_of_sessions_and_messages_are_walked_in_order(linked, monkeypatch):
    monkeypatch.setattr(export, "SESSION_PAGE", 2)
    monkeypatch.setattr(export, "MESSAGE_PAGE", 3)
    sids = [new_session(linked.chat, f"s{i}") for i in range(5)]
    for i, sid in enumerate(sids):
        for j in range(i + 2):
            post(linked.chat, sid, f"{i}-{j}")
    lines = ndjson(linked.chat.get("/api/chat/export"))
    sessions = [line["session_id"] for line in lines if line["type"] == "session"]
    assert sessions == sids  # oldest first
    contents = [line["content"] for line in lines if line["type"] == "message"]
    assert contents == [f"{i}-{j}" for i in range(5) for j in range(i + 2)]
    assert lines[-1]["messages"] == len(contents) == 20


def test_conversation_service_failing_midway_leaves_records_out_and_says_so(linked, monkeypatch):
    monkeypatch.setattr(export, "SESSION_PAGE", 1)
    first, second = new_session(linked.chat, "one"), new_session(linked.chat, "two")
    pin(linked, first)
    pin(linked, second)
    response = linked.chat.get("/api/chat/export")  # the first page and its records are read already
    monkeypatch.setattr(export, "RECORDS_PATH", "/internal/ai/conversation/no-such-route")
    monkeypatch.setattr(export, "RECORD_TRIES", 1)
    lines = ndjson(response)
    sessions = [line for line in lines if line["type"] == "session"]
    assert sessions[0]["record"]["pinned"] is True
    assert sessions[1]["record"] is None
    assert lines[-1] == {"type": "end", "sessions": 2, "messages": 0, "records_unavailable": 1}


def test_a_connection_is_not_held_between_pages(linked, monkeypatch):
    """Each page releases its database session: the stream holds no connection while it is read."""
    monkeypatch.setattr(export, "MESSAGE_PAGE", 2)
    sid = new_session(linked.chat, "long")
    for i in range(6):
        post(linked.chat, sid, f"m{i}")
    response = linked.chat.get("/api/chat/export")
    chunks = response.iter_encoded()
    next(chunks)
    with linked.app.app_context():
        checked_out = db.engine.pool.checkedout()
    assert checked_out == 0
    assert sum(1 for _chunk in chunks) >= 3


# --- one conversation ------------------------------------------------------------------------------


def test_one_conversation_as_markdown(linked):
    ids = sample(linked)
    response = linked.chat.get(f"/api/chat/sessions/{ids['first']}/export?format=markdown")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/markdown; charset=utf-8"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="conversation-{ids["first"]}.md"')
    assert "filename*=UTF-8''%E9%A1%B9%E7%9B%AE%E7%AE%A1%E7%90%86.md" in disposition
    text = response.get_data(as_text=True)
    assert text.startswith("# 项目管理\n")
    assert "**user** · " in text and "**assistant** · " in text and "**system** · " in text
    assert text.index("第一条") < text.index("**答复**") < text.index("system note")
    assert "> 👍 liked: 好" in text
    assert " UTC" in text
    assert "删掉的" not in text


def test_markdown_is_the_default_format(linked):
    sid = new_session(linked.chat, "默认")
    response = linked.chat.get(f"/api/chat/sessions/{sid}/export")
    assert response.mimetype == "text/markdown"
    assert response.get_data(as_text=True).startswith("# 默认\n")


def test_a_title_with_markdown_or_newlines_stays_one_heading(linked):
    sid = new_session(linked.chat, "a\nb  c")
    assert linked.chat.get(f"/api/chat/sessions/{sid}/export").get_data(as_text=True).startswith("# a b c\n")


def test_one_conversation_as_ndjson_has_the_lines_of_the_full_export(linked):
    ids = sample(linked)
    one = ndjson(linked.chat.get(f"/api/chat/sessions/{ids['first']}/export?format=ndjson"))
    whole = ndjson(linked.chat.get("/api/chat/export"))
    assert one[0]["scope"] == "session"
    assert one[1:-1] == whole[1:5]
    assert one[-1] == {"type": "end", "sessions": 1, "messages": 3, "records_unavailable": 0}


@pytest.mark.parametrize("value", ["pdf", "", "MARKDOWN", "json"])
def test_another_format_is_1001(linked, value):
    sid = new_session(linked.chat, "x")
    data = envelope(linked.chat.get(f"/api/chat/sessions/{sid}/export?format={value}"), 400, 1001)
    assert "format" in data["errors"]


def test_another_users_conversation_is_403_and_shows_nothing(linked):
    ids = sample(linked)
    for fmt in ("markdown", "ndjson"):
        response = linked.chat.get(f"/api/chat/sessions/{ids['first']}/export?format={fmt}", user=BOB)
        envelope(response, 403)
        assert "项目管理" not in response.get_data(as_text=True)


def test_unknown_deleted_and_malformed_sessions(linked):
    ids = sample(linked)
    envelope(linked.chat.get("/api/chat/sessions/00000000-0000-4000-8000-000000000000/export"), 404, 7001)
    envelope(linked.chat.get(f"/api/chat/sessions/{ids['deleted']}/export"), 404, 7001)
    envelope(linked.chat.get("/api/chat/sessions/not-a-uuid/export"), 400)
    envelope(linked.chat.get(f"/api/chat/sessions/{ids['first']}/export", user=None), 401)


# --- conversation_service's internal routes for the export and import -----------------------------


def service_headers(conv: ApiClient, user: str | None = ALICE) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {conv.token('chat_service', service=True)}"}
    if user is not None:
        headers["X-User-Id"] = user
    return headers


def test_chat_records_answers_only_the_named_users_records_in_one_call(linked):
    ids = sample(linked)
    deliver(linked.app, ids["bobs"])
    asked = [ids["first"], ids["second"], ids["bobs"], "00000000-0000-4000-8000-000000000000"]
    path = "/internal/ai/conversation/chat-records"
    data = envelope(
        linked.conv.post(path, json={"chatSessionIds": asked}, headers=service_headers(linked.conv)), 200
    )
    by_session = {record["chatSessionId"]: record for record in data["records"]}
    assert set(by_session) == {ids["first"], ids["second"]}
    assert by_session[ids["first"]]["isPinned"] == 1 and by_session[ids["second"]]["isPinned"] == 0
    envelope(linked.conv.post(path, json={"chatSessionIds": asked}), 403)  # a user token
    envelope(linked.conv.post(path, json={"chatSessionIds": asked}, user=None), 401)
    for bad in ({"chatSessionIds": ["nope"]}, {"chatSessionIds": [ids["first"]] * 1001}, {"ids": []}):
        envelope(linked.conv.post(path, json=bad, headers=service_headers(linked.conv)), 400, 1001)


def test_the_import_route_creates_the_record_pinned_and_is_idempotent(linked):
    sid = "6a3c1f55-0d7e-4c1a-9e0b-4f8f0c6f2d11"
    path = f"/internal/ai/conversation/chat/{sid}/import"
    body = {"title": "导入", "titleVersion": 1, "createdTime": 1_700_000_000_000, "isPinned": 1}
    first = envelope(linked.conv.put(path, json=body, headers=service_headers(linked.conv)), 200)
    again = envelope(linked.conv.put(path, json=body, headers=service_headers(linked.conv)), 200)
    assert (first["id"], first["isPinned"], first["title"]) == (again["id"], 1, "导入")
    assert first["createdTime"].startswith("2023-11-14T")
    envelope(linked.conv.put(path, json=body, headers=service_headers(linked.conv, BOB)), 403)
    envelope(linked.conv.put(path, json=body), 403)
    envelope(
        linked.conv.put(path, json={**body, "isPinned": True}, headers=service_headers(linked.conv)),
        400,
        1001,
    )
    envelope(linked.conv.put(path.replace(sid, "nope"), json=body, headers=service_headers(linked.conv)), 400)

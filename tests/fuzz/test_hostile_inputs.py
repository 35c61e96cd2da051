"""A hostile corpus into every route of both services, walked from their OpenAPI documents.

Each operation gets every hostile value in each path parameter, each query parameter and each top-level
body field (the others left valid), hostile raw bodies, and tokens with odd JOSE headers; the socket
route gets malformed handshakes. Every answer must be below 500, JSON, and the envelope, with no
traceback logged. Deterministic (a fixed corpus, no random examples) and in-process: seconds per backend.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from flask import Flask

from chat_service import create_app as create_chat_app
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from shared.auth import USER_HEADER, mint_token
from tests.conftest import ALICE, base_environ
from tests.databases import clear_tables
from tests.live import serve

ENVELOPE = ["code", "message", "data", "timestamp", "traceId"]

# Text: lone surrogates, NUL, control and bidi characters, odd digits, huge, empty, injection-looking.
HOSTILE_TEXT = [
    "\ud800",
    "a\udfffb",
    "\udbff\udbff",
    "\x00",
    "a\x00b",
    "\x01\x1b[31m",
    "\u202eevil",
    " 1",
    "１",
    "1_0",
    "+1",
    "-1",
    "0",
    "1.5",
    "1e309",
    "99999999999999999999999999999",
    "",
    " ",
    "null",
    "' OR 1=1 --",
    "%_%",
    "../../etc/passwd",
    "😀" * 50,
    "x" * 40_000,
]
# JSON values besides text: wrong types, huge and non-finite numbers, nesting.
HOSTILE_JSON = [None, True, 1.5, -1, 0, 10**30, [], {}, ["\ud800"], {"\ud800": 1}, [[[[[[[[1]]]]]]]]]
# Raw bodies: nesting past the recursion limit, bad bytes, surrogates in escapes and in bytes.
HOSTILE_BODIES = [
    b"[" * 100_000,
    b'{"a":' * 100_000,
    b"[" * 2000 + b"]" * 2000,
    b"\xff\xfe\x00",
    b'{"title": "\xed\xa0\x80"}',
    b'"\\ud800"',
    b'{"\\ud800": "\\udfff"}',
    b"1e999",
    b"-" + b"9" * 5000,
    b"{",
    b"",
]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


ODD_TOKENS = [
    "eyJhbGciOlsiSFMyNTYiXX0.e30.AAAA",
    _b64(b'{"alg":{"a":1}}') + ".e30.AAAA",
    _b64(b'{"alg":"HS256","kid":7}') + ".e30.AAAA",
    _b64(b"[1]") + ".e30.AAAA",
    _b64(b"{" * 5000) + ".e30.AAAA",
    _b64(b'{"alg":"none"}') + "." + _b64(b'{"sub":"1","exp":9999999999}') + ".",
    "a.b",
    "x" * 10_000,
]
BAD_HANDSHAKES = [
    {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"},
    {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "8",
     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
     "Sec-WebSocket-Key": "%%%"},
    {},
]  # fmt: skip


@dataclass
class Service:
    app: Flask
    known: dict[str, str]  # path parameter -> an id that exists (the caller's)
    valid_bodies: dict[str, object]  # schema name -> a body that passes


def _known(app: Flask, service: str) -> tuple[dict[str, str], dict[str, object]]:
    client = app.test_client()
    auth = {"Authorization": f"Bearer {mint_token(ALICE, config=app.config)}"}
    if service == "chat":
        session = client.post("/api/chat/session", json={"title": "fuzz"}, headers=auth).get_json()["data"]
        sid = session["session_id"]
        message = client.post("/api/chat/message", json={"session_id": sid, "content": "hi"}, headers=auth)
        known = {
            "session_id": sid,
            "message_id": str(message.get_json()["data"]["message_id"]),
            "user_id": ALICE,
        }
        bodies = {
            "CreateSessionBody": {"title": "t"},
            "RenameSessionBody": {"new_title": "t"},
            "CreateMessageBody": {"session_id": sid, "content": "hi"},
            "EditMessageBody": {"new_content": "hi"},
            "ListSessionsBody": {"page": 1},
            "InputsBody": {"inputs": {"a": "b"}},
            "SessionSyncBody": {},
        }
        return known, bodies
    record = client.post("/api/ai/conversation", json={"title": "fuzz"}, headers=auth).get_json()["data"]
    known = {"conversation_id": record["id"], "chat_session_id": "s-1", "dify_conversation_id": "d-1"}
    bodies = {
        "CreateBody": {"title": "t"},
        "UpdateBody": {"id": record["id"], "title": "t"},
        "ChatSessionStateBody": {"title": "t"},
        "LinkBody": {"title": "t"},
        None: [record["id"]],
    }
    return known, bodies


@pytest.fixture(params=["chat", "conversation"])
def service(request, chat_database, conversation_database) -> Iterator[Service]:
    """A service with rate limits off (the corpus is thousands of requests from one user)."""
    chat = request.param == "chat"
    factory, database, db = (
        (create_chat_app, chat_database, chat_db)
        if chat
        else (create_conversation_app, conversation_database, conversation_db)
    )
    with ExitStack() as stack:
        extra = {}
        if chat:  # conversation_service live, for the routes that read it (an export's pins)
            conversation = create_conversation_app(base_environ(conversation_database, RATE_LIMITS="false"))
            stack.callback(lambda: _dispose(conversation, conversation_db))
            extra["CONVERSATION_SERVICE_URL"] = stack.enter_context(serve(conversation))
        app = factory(base_environ(database, RATE_LIMITS="false", **extra))
        app.config["TESTING"] = True
        known, bodies = _known(app, request.param)
        yield Service(app, known, bodies)
    with app.app_context():
        chat_tables = ["chat_messages", "chat_sessions", "chat_sync_outbox"]
        clear_tables(
            db,
            chat_tables
            if chat
            else ["ai_conversations", "conversation_sync_outbox", "conversation_user_counts"],
        )
        db.engine.dispose()


def _dispose(app: Flask, db) -> None:
    with app.app_context():
        db.engine.dispose()


def _operations(app: Flask) -> Iterator[tuple[str, str, dict]]:
    document = app.test_client().get("/openapi.json").get_json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path != "/openapi.json":
                yield method.upper(), path, operation


def _body_schema(operation: dict) -> str | bool | None:
    """The component name of the JSON body (None: an inline schema), or False without a body."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return False
    return content["schema"].get("$ref", "").rpartition("/")[2] or None


# What an export answers with when it succeeds (docs/export.md).
EXPORT_TYPES = {"application/x-ndjson", "text/markdown"}


def _encode(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _check(response, caplog, what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.data[:300])
    if response.status_code == 200 and response.mimetype in EXPORT_TYPES:
        return  # an export's own format; any refusal of it is still the envelope
    assert response.mimetype == "application/json", (what, response.status_code, response.data[:300])
    body = json.loads(response.data)
    assert list(body) == ENVELOPE, (what, body)
    assert body["code"] != 500
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert not tracebacks, (what, tracebacks[0].getMessage())


def test_every_route_answers_hostile_input_in_the_envelope(service, caplog):
    caplog.set_level(logging.ERROR)
    client = service.app.test_client()
    sent = 0

    def call(method, path, operation, *, query="", body=..., raw=None, token=None, extra=None):
        nonlocal sent
        internal = path.startswith("/internal/")
        token = token or mint_token(ALICE, service=internal, config=service.app.config)
        headers = {"Authorization": f"Bearer {token}", **({USER_HEADER: ALICE} if internal else {})}
        headers |= extra or {}
        kwargs = {}
        if raw is not None:
            kwargs = {"data": raw, "content_type": "application/json"}
        elif body is not ...:
            kwargs = {"data": json.dumps(body), "content_type": "application/json"}
        elif (schema := _body_schema(operation)) is not False:
            kwargs = {"json": service.valid_bodies.get(schema, {})}
        url = path + (f"?{query}" if query else "")
        response = client.open(url, method=method, headers=headers, **kwargs)
        sent += 1
        _check(response, caplog, f"{method} {url[:120]} {str(kwargs)[:120]}")

    for method, template, operation in _operations(service.app):
        params = operation.get("parameters", [])
        path_names = [p["name"] for p in params if p["in"] == "path"]
        path = template
        for name in path_names:
            path = path.replace("{" + name + "}", _encode(service.known.get(name, "1")))
        call(method, path, operation)
        for name in path_names:
            for value in HOSTILE_TEXT:
                hostile = template
                for other in path_names:
                    chosen = value if other == name else service.known.get(other, "1")
                    hostile = hostile.replace("{" + other + "}", _encode(chosen) or "%20")
                call(method, hostile, operation)
        for param in (p for p in params if p["in"] == "query"):
            for value in HOSTILE_TEXT:
                call(method, path, operation, query=f"{param['name']}={_encode(value)}")
        schema = _body_schema(operation)
        if schema is False:
            continue
        valid = service.valid_bodies.get(schema, {})
        for raw in HOSTILE_BODIES:
            call(method, path, operation, raw=raw)
        for value in [*HOSTILE_TEXT, *HOSTILE_JSON]:
            if isinstance(valid, dict):
                for field in valid or ["title"]:
                    call(method, path, operation, body={**valid, field: value})
            else:
                call(method, path, operation, body=[value])
        for token in ODD_TOKENS:
            call(method, path, operation, token=token)
    assert sent > 400, sent  # the walk found the routes


def test_bad_handshakes_are_refused_in_the_envelope(service, caplog):
    if "session_id" not in service.known:
        pytest.skip("only chat_service has the socket")
    client = service.app.test_client()
    token = mint_token(ALICE, config=service.app.config)
    for headers in BAD_HANDSHAKES:
        response = client.get(f"/ws/{service.known['session_id']}?token={token}", headers=headers)
        _check(response, caplog, f"handshake {headers}")
        assert response.status_code == 400

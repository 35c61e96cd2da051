"""Fuzz both services through their own OpenAPI documents: schemathesis, in-process, on SQLite.

Every operation gets generated paths, queries and bodies, sent with a valid token; the response must not
be a 5xx, its status must be documented, its body must match the documented schema, and routes that
need a token must refuse a request without one. Half the examples (hypothesis decides which) use ids
that exist, created just before, so the success paths are fuzzed too, not only the 404s.

Bounded for the suite: FUZZ_MAX_EXAMPLES per operation (default 15), derandomized so that a run is
reproducible. `make fuzz` sets FUZZ_MAX_EXAMPLES higher, and random examples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from flask_migrate import upgrade
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from chat_service import create_app as create_chat_app
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from shared.auth import USER_HEADER, mint_token
from tests.conftest import ALICE, base_environ
from tests.live import serve
from tests.processes import free_port

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, ignored_auth]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the work tree
    derandomize="FUZZ_MAX_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# The apps exist at import, for schemathesis to read their documents and make one test per operation;
# their SQLite files are created, migrated and removed by the `migrated` fixture.
DB_DIR = Path(tempfile.gettempdir()) / f"aichat-fuzz-{os.getpid()}"
# Per-user limits off: every example is ALICE's, and hundreds of them would meet LIMIT_*_CREATED.
# conversation_service answers chat_service's calls (an export reads the pins there) on this port, served
# by the `migrated` fixture: without it such routes answer 503, which the fuzzer counts as a failure.
CONVERSATION_PORT = free_port()
chat_app = create_chat_app(
    base_environ(
        f"sqlite:///{DB_DIR}/chat.sqlite3",
        RATE_LIMITS="false",
        CONVERSATION_SERVICE_URL=f"http://127.0.0.1:{CONVERSATION_PORT}",
    )
)
conversation_app = create_conversation_app(
    base_environ(f"sqlite:///{DB_DIR}/conversation.sqlite3", RATE_LIMITS="false")
)
chat_schema = schemathesis.openapi.from_wsgi("/openapi.json", chat_app)
conversation_schema = schemathesis.openapi.from_wsgi("/openapi.json", conversation_app)


@pytest.fixture(scope="module", autouse=True)
def migrated():
    DB_DIR.mkdir(exist_ok=True)
    for app in (chat_app, conversation_app):
        with app.app_context():
            upgrade()
    with serve(conversation_app, CONVERSATION_PORT):
        yield
    for app, db in ((chat_app, chat_db), (conversation_app, conversation_db)):
        with app.app_context():
            db.engine.dispose()
    shutil.rmtree(DB_DIR, ignore_errors=True)


def _post(app: Flask, path: str, body: dict) -> dict:
    token = mint_token(ALICE, config=app.config)
    response = app.test_client().post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def _known_chat_ids(app: Flask) -> dict:
    session = _post(app, "/api/chat/session", {"title": "fuzz"})
    message = _post(app, "/api/chat/message", {"session_id": session["session_id"], "content": "hi"})
    return {"session_id": session["session_id"], "message_id": str(message["message_id"]), "user_id": ALICE}


def _known_conversation_ids(app: Flask) -> dict:
    record = _post(app, "/api/ai/conversation", {"title": "fuzz"})
    return {"conversation_id": record["id"], "id": record["id"], "user_id": ALICE}


def _use_known(case, known: dict) -> None:
    """Put ids that exist (the caller's) where the generated case names ids."""
    for name in case.path_parameters or {}:
        if name in known:
            case.path_parameters[name] = known[name]
    if isinstance(case.body, dict):
        for name in ("session_id", "user_id", "id"):
            if name in case.body and name in known:
                case.body[name] = known[name]
    elif isinstance(case.body, list) and "id" in known:
        case.body = [known["id"]]


def _call(app: Flask, case, known: dict | None) -> None:
    if known is not None:
        _use_known(case, known)
    internal = case.path.startswith("/internal/")
    token = mint_token(ALICE, service=internal, config=app.config)
    if internal and known is not None:
        case.headers = {**(case.headers or {}), USER_HEADER: ALICE}
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


@chat_schema.parametrize()
@chat_schema.given(known=st.booleans())
@FUZZ_SETTINGS
def test_chat_service(case, known):
    _call(chat_app, case, _known_chat_ids(chat_app) if known else None)


@conversation_schema.parametrize()
@conversation_schema.given(known=st.booleans())
@FUZZ_SETTINGS
def test_conversation_service(case, known):
    _call(conversation_app, case, _known_conversation_ids(conversation_app) if known else None)

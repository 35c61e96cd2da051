"""Fixtures: an app per test on each database backend, a client, and tokens for test users."""

from __future__ import annotations

import uuid

import pytest

import shared.dumping
from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from shared.auth import mint_token
from tests.api_client import ApiClient
from tests.databases import BACKENDS, DatabaseServer, clear_tables, migrated_database
from tests.live import Socket

# Every response the in-process apps dump is checked against marshmallow's own dump (shared/dumping.py).
shared.dumping.VERIFY = True

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
ALICE = "542738228948500480"
BOB = "542738228948500481"


def base_environ(database_url: str, **extra: str) -> dict[str, str]:
    """A service's settings for a test. The outbox worker is off (no thread polling per app, no
    deliveries to a service that is not there) unless a test turns it on (tests/sync)."""
    return {
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "OUTBOX_WORKER": "false",
        # Each test's per-user counts in Redis are its own (the same users recur in every test).
        "LIMITS_KEY_PREFIX": f"test-{uuid.uuid4().hex}",
        **extra,
    }


@pytest.fixture(scope="session", params=BACKENDS)
def database_server(request, tmp_path_factory):
    reason = DatabaseServer.skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    server = DatabaseServer(request.param, tmp_path_factory.mktemp(request.param))
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def chat_database(database_server) -> str:
    """A chat_service database on this backend, migrated once for the whole run."""
    return migrated_database(database_server, "chat_test", create_chat_app, chat_db, base_environ)


CHAT_TABLES = ["chat_messages", "chat_sessions", "chat_sync_outbox"]
CONVERSATION_TABLES = ["ai_conversations", "conversation_sync_outbox", "conversation_user_counts"]


@pytest.fixture
def chat_app(chat_database):
    """chat_service in-process on an empty database. The tables are emptied before the test as well as
    after: a database lives for the whole run of a worker, so a test must not see what another left.
    At the end the app's turns are waited for and its background work stopped, so no reply of this
    test writes into the next one's tables."""
    app = create_chat_app(base_environ(chat_database))
    app.config["TESTING"] = True
    with app.app_context():
        clear_tables(chat_db, CHAT_TABLES)
    yield app
    running = live.of(app)
    running.turns.wait_idle(timeout=10)
    running.close()
    with app.app_context():
        clear_tables(chat_db, CHAT_TABLES)
        chat_db.engine.dispose()


@pytest.fixture
def chat(chat_app) -> ApiClient:
    """chat_service's API, called as ALICE unless a test says otherwise."""
    return ApiClient(chat_app, default_user=ALICE)


@pytest.fixture(scope="session")
def conversation_database(database_server) -> str:
    """A conversation_service database on this backend, migrated once for the whole run."""
    return migrated_database(
        database_server, "conversation_test", create_conversation_app, conversation_db, base_environ
    )


@pytest.fixture
def conversation_app(conversation_database):
    app = create_conversation_app(base_environ(conversation_database))
    app.config["TESTING"] = True
    with app.app_context():
        clear_tables(conversation_db, CONVERSATION_TABLES)
    yield app
    with app.app_context():
        clear_tables(conversation_db, CONVERSATION_TABLES)
        conversation_db.engine.dispose()


@pytest.fixture
def conv(conversation_app) -> ApiClient:
    """conversation_service's API, called as ALICE unless a test says otherwise."""
    return ApiClient(conversation_app, default_user=ALICE)


@pytest.fixture
def bare_app(tmp_path):
    """chat_service on an empty SQLite file: for what happens before any table is touched."""
    app = create_chat_app(base_environ(f"sqlite:///{tmp_path}/bare.sqlite3"))
    app.config["TESTING"] = True
    return app


@pytest.fixture
def token():
    def make(user: str = ALICE, **kwargs) -> str:
        return mint_token(user, config={"JWT_SECRET": SECRET}, **kwargs)

    return make


@pytest.fixture
def open_socket(token):
    sockets = []

    def connect(base_url: str, session_id: str, user: str = ALICE, ready: bool = False, **kwargs) -> Socket:
        """Open a socket; `ready=True` waits until the server has subscribed it (a ping answered)."""
        headers = kwargs.pop("headers", {"Authorization": f"Bearer {token(user)}"})
        socket = Socket(base_url.replace("http", "ws", 1) + f"/ws/{session_id}", headers=headers, **kwargs)
        sockets.append(socket)
        if ready:
            socket.send({"type": "ping"})
            assert socket.until("pong")[-1]["type"] == "pong"
            socket.seen.clear()
        return socket

    yield connect
    for socket in sockets:
        socket.close()

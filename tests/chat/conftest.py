"""Live chat_service servers for the WebSocket tests."""

from __future__ import annotations

import pytest

from chat_service import create_app, live
from chat_service.extensions import db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from tests.conftest import base_environ
from tests.databases import clear_tables
from tests.live import serve


@pytest.fixture
def live_chat_factory(chat_database):
    """Start chat_service on a loopback port with extra settings; yields (base_url, app)."""
    started = []

    def start(**environ: str):
        app = create_app(base_environ(chat_database, **({"ECHO_DELAY_SECONDS": "0.01"} | environ)))
        context = serve(app)
        url = context.__enter__()
        started.append((context, app))
        return url, app

    yield start
    for context, app in reversed(started):
        context.__exit__(None, None, None)
        app.extensions["outbox"].stop()  # started only where a test turned OUTBOX_WORKER on
        live.of(app).close()
    if started:
        with started[0][1].app_context():
            clear_tables(db, ["chat_messages", "chat_sessions", "sync_outbox"])
            db.engine.dispose()


@pytest.fixture
def live_conversation(conversation_database):
    """conversation_service on a loopback port, for the Dify link; yields (base_url, app)."""
    app = create_conversation_app(base_environ(conversation_database))
    with serve(app) as url:
        yield url, app
    with app.app_context():
        clear_tables(conversation_db, ["ai_conversations", "sync_outbox"])
        conversation_db.engine.dispose()


@pytest.fixture
def clean_chat_database(chat_database):
    """The chat database, emptied after the test (for servers started in other processes)."""
    yield chat_database
    app = create_app(base_environ(chat_database))
    with app.app_context():
        clear_tables(db, ["chat_messages", "chat_sessions", "sync_outbox"])
        db.engine.dispose()
    live.of(app).close()

"""Live chat_service servers for the WebSocket tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chat_service import create_app, live
from chat_service.extensions import db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from tests.conftest import base_environ
from tests.databases import clear_tables
from tests.fakes.dify import FakeDify
from tests.fakes.openai import FakeOpenAI
from tests.live import serve


@pytest.fixture
def dify() -> Iterator[FakeDify]:
    """The fake Dify on loopback (tests/fakes/dify.py)."""
    with FakeDify() as fake:
        yield fake


@pytest.fixture
def openai() -> Iterator[FakeOpenAI]:
    """The fake OpenAI-compatible server on loopback (tests/fakes/openai.py)."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def dify_live(live_chat_factory, dify):
    """chat_service talking to the fake Dify (no conversation_service: the outbox worker is off);
    yields (base_url, app)."""
    return live_chat_factory(
        AI_PROVIDER="dify",
        DIFY_API_URL=dify.url,
        DIFY_API_KEY=dify.api_key,
        PROVIDER_RETRY_BASE_SECONDS="0.01",
    )


@pytest.fixture
def openai_chat(live_chat_factory, openai):
    """chat_service on the fake OpenAI server; `settings` adds to its configuration."""

    def start(**settings: str) -> str:
        base, _app = live_chat_factory(
            AI_PROVIDER="openai",
            OPENAI_BASE_URL=openai.url,
            OPENAI_API_KEY=openai.api_key,
            OPENAI_MODEL="test-model",
            TITLE_GENERATION="false",  # no naming call among the turns
            **settings,
        )
        return base

    return start


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
            clear_tables(db, ["chat_messages", "chat_sessions", "chat_sync_outbox"])
    for _context, app in started:  # each app has its own engine and pool
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def live_conversation(conversation_database):
    """conversation_service on a loopback port, for the Dify link; yields (base_url, app)."""
    app = create_conversation_app(base_environ(conversation_database))
    with serve(app) as url:
        yield url, app
    with app.app_context():
        clear_tables(
            conversation_db, ["ai_conversations", "conversation_sync_outbox", "conversation_user_counts"]
        )
        conversation_db.engine.dispose()


@pytest.fixture
def clean_chat_database(chat_database):
    """The chat database, emptied after the test (for servers started in other processes)."""
    yield chat_database
    app = create_app(base_environ(chat_database))
    with app.app_context():
        clear_tables(db, ["chat_messages", "chat_sessions", "chat_sync_outbox"])
        db.engine.dispose()
    live.of(app).close()

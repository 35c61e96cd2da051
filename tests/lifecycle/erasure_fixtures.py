"""The erasure tests' world: both services (conversation_service served on loopback, chat_service called
in-process and through its CLI) on each database backend, talking to the fake Dify; and what the tests
look at (every row of a user, the tombstones)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from flask import Flask

from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from chat_service.models import OUTBOX as CHAT_OUTBOX
from chat_service.services import links
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from conversation_service.models import OUTBOX as CONVERSATION_OUTBOX
from shared.auth import mint_token
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, SECRET, base_environ
from tests.databases import clear_tables
from tests.fakes.dify import FakeDify
from tests.processes import free_port
from tests.sync.conftest import Server

CHAT_TABLES = ["chat_messages", "chat_sessions", "chat_sync_outbox", "chat_erasures"]
CONVERSATION_TABLES = ["ai_conversations", "conversation_sync_outbox", "conversation_erasures"]


@dataclass
class World:
    chat: ApiClient  # chat_service in-process, as ALICE by default
    conv: ApiClient  # conversation_service in-process (the same database as the served one)
    conversation_url: str
    dify: FakeDify
    chat_database: str
    conversation_database: str

    def chat_environ(self, **extra: str) -> dict[str, str]:
        """chat_service's settings (for a subprocess too): Dify and conversation_service on loopback."""
        return base_environ(
            self.chat_database,
            AI_PROVIDER="dify",
            DIFY_API_URL=self.dify.url,
            DIFY_API_KEY=self.dify.api_key,
            CONVERSATION_SERVICE_URL=self.conversation_url,
            **extra,
        )

    def erase(self, user: str = ALICE, app: Flask | None = None):
        """`flask --app chat_service erase-user USER` (click's runner, in this process)."""
        return (app or self.chat.app).test_cli_runner().invoke(args=["erase-user", user])

    def deliver(self) -> None:
        """Run chat_service's outbox now (records, Dify deletions, queued erasures)."""
        self.chat.app.extensions["outbox"].drain(timeout=20)

    # -- seeding through the public routes --------------------------------------------------------

    def session(self, user: str = ALICE, title: str = "a title", messages: tuple[str, ...] = (), dify=None):
        sid = envelope(self.chat.post("/api/chat/session", user=user, json={"title": title}), 200)[
            "session_id"
        ]
        for content in messages:
            body = {"session_id": sid, "content": content}
            envelope(self.chat.post("/api/chat/message", user=user, json=body), 200)
        if dify is not None:
            with self.chat.app.app_context():
                assert links.store(sid, dify)
                chat_db.session.remove()
        return sid

    def record(self, user: str = ALICE, title: str = "a record", dify=None) -> str:
        body = {"title": title, "difyConversationId": dify}
        return envelope(self.conv.post("/api/ai/conversation", user=user, json=body), 200)["id"]

    # -- looking --------------------------------------------------------------------------------------

    def chat_rows(self, user: str) -> dict[str, int]:
        """The user's rows in chat_service (outbox rows naming their sessions or messages included)."""
        with self.chat.app.app_context():
            try:
                s = chat_db.session
                sids = list(
                    s.scalars(sa.text("SELECT session_id FROM chat_sessions WHERE user_id = :u"), {"u": user})
                )
                mids = [
                    str(m)
                    for m in s.scalars(
                        sa.text(
                            "SELECT m.message_id FROM chat_messages m JOIN chat_sessions c"
                            " ON c.session_id = m.session_id WHERE c.user_id = :u"
                        ),
                        {"u": user},
                    )
                ]
                keys = set(sids) | set(mids) | {user}
                outbox = [k for k in s.scalars(sa.select(CHAT_OUTBOX.c.key)) if k in keys]
                return {
                    "chat_sessions": len(sids),
                    "chat_messages": len(mids),
                    "chat_sync_outbox": len(outbox),
                }
            finally:
                chat_db.session.remove()

    def conversation_rows(self, user: str) -> dict[str, int]:
        with self.conv.app.app_context():
            try:
                s = conversation_db.session
                ids = [
                    str(i)
                    for i in s.scalars(
                        sa.text("SELECT id FROM ai_conversations WHERE user_id = :u"), {"u": user}
                    )
                ]
                outbox = [k for k in s.scalars(sa.select(CONVERSATION_OUTBOX.c.key)) if k in set(ids)]
                return {"ai_conversations": len(ids), "conversation_sync_outbox": len(outbox)}
            finally:
                conversation_db.session.remove()

    def tombstones(self) -> list[dict]:
        """Every row of both tombstone tables, every column, as text."""
        rows = []
        for app, db, table in (
            (self.chat.app, chat_db, "chat_erasures"),
            (self.conv.app, conversation_db, "conversation_erasures"),
        ):
            with app.app_context():
                try:
                    result = db.session.execute(sa.text(f"SELECT * FROM {table}"))
                    rows += [{"table": table, **{k: str(v) for k, v in r._mapping.items()}} for r in result]
                finally:
                    db.session.remove()
        return rows

    def chat_tombstone(self) -> dict:
        [row] = [r for r in self.tombstones() if r["table"] == "chat_erasures"]
        return row | {"counts": json.loads(row["counts"])}


def service_headers(user: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {mint_token('ops', service=True, config={'JWT_SECRET': SECRET})}"}
    if user is not None:
        headers["X-User-Id"] = user
    return headers


@contextmanager
def running_world(chat_database: str, conversation_database: str, dify: FakeDify) -> Iterator[World]:
    """Both services on these databases and `dify`; the outbox workers off (tests deliver)."""
    conversation_app = create_conversation_app(base_environ(conversation_database))
    port = free_port()
    server = Server(conversation_app, port)
    world = World(
        chat=None, conv=ApiClient(conversation_app, ALICE), conversation_url=f"http://127.0.0.1:{port}",
        dify=dify, chat_database=chat_database, conversation_database=conversation_database,
    )  # fmt: skip
    chat_app = create_chat_app(world.chat_environ())
    chat_app.config["TESTING"] = True
    world.chat = ApiClient(chat_app, ALICE)
    try:
        yield world
    finally:
        server.stop()
        with chat_app.app_context():
            clear_tables(chat_db, CHAT_TABLES)
            chat_db.engine.dispose()
        live.of(chat_app).close()
        with conversation_app.app_context():
            clear_tables(conversation_db, CONVERSATION_TABLES)
            conversation_db.engine.dispose()


@pytest.fixture
def world(chat_database, conversation_database) -> Iterator[World]:
    """Both services on this backend and the fake Dify."""
    with FakeDify() as dify, running_world(chat_database, conversation_database, dify) as world:
        yield world


def unique(prefix: str) -> str:
    """A string no test could find by accident."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"

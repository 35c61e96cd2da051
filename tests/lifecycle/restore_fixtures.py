"""Fixtures and helpers of the restore and purge tests: both services live with their outbox workers
(tests/sync's Stack), optionally a fake Dify, and ways to age a deletion by writing `deleted_at`."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import requests
import sqlalchemy as sa

from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from chat_service.models import OUTBOX as CHAT_OUTBOX
from chat_service.models import ChatMessage, ChatSession
from chat_service.services import links
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from conversation_service.models import OUTBOX as CONVERSATION_OUTBOX
from conversation_service.models import AiConversation
from tests.conftest import ALICE, base_environ
from tests.databases import clear_tables
from tests.fakes.dify import FakeDify
from tests.sync.conftest import (
    CHAT_TABLES,
    CONVERSATION_TABLES,
    Stack,
    call,
    create_session,
    record_state,
    service_headers,
    session_of,
    wait_for,
)

__all__ = [
    "ALICE",
    "Stack",
    "call",
    "create_session",
    "record_state",
    "service_headers",
    "session_of",
    "wait_for",
]

WINDOW_DAYS = 30


@pytest.fixture
def lifecycle_stack(chat_database, conversation_database):
    """Both services on loopback (started by the test, each delivering to the other), emptied after."""
    stack = Stack(chat_database, conversation_database)
    yield stack
    stack.close()
    chat = create_chat_app(base_environ(chat_database))
    with chat.app_context():
        clear_tables(chat_db, CHAT_TABLES)
        chat_db.engine.dispose()
    live.of(chat).close()
    conversation = create_conversation_app(base_environ(conversation_database))
    with conversation.app_context():
        clear_tables(conversation_db, CONVERSATION_TABLES)
        conversation_db.engine.dispose()


@pytest.fixture
def fake_dify():
    with FakeDify() as dify:
        yield dify


@pytest.fixture
def lifecycle(lifecycle_stack, fake_dify) -> Stack:
    """Both services up, chat_service on the fake Dify (sessions linked with `link_dify`)."""
    lifecycle_stack.start_conversation()
    lifecycle_stack.start_chat(AI_PROVIDER="dify", DIFY_API_URL=fake_dify.url, DIFY_API_KEY=fake_dify.api_key)
    lifecycle_stack.dify = fake_dify
    return lifecycle_stack


def link_dify(app, session_id: str, dify_id: str) -> None:
    """The session continues Dify conversation `dify_id` (as a turn's first frame would store it)."""
    with app.app_context():
        try:
            assert links.store(session_id, dify_id)
        finally:
            chat_db.session.remove()


def post_message(stack: Stack, session_id: str, content: str, user: str = ALICE) -> int:
    url = f"{stack.chat_url}/api/chat/message"
    return call("POST", url, user=user, json={"session_id": session_id, "content": content})["message_id"]


def message_ids(stack: Stack, session_id: str, user: str = ALICE) -> list[int]:
    url = f"{stack.chat_url}/api/chat/sessions/{session_id}/messages"
    return [m["message_id"] for m in call("GET", url, user=user, params={"page_size": 100})["items"]]


def chat_rows(app, statement) -> list:
    with app.app_context():
        try:
            return list(chat_db.session.execute(statement).all())
        finally:
            chat_db.session.remove()


def conversation_rows(app, statement) -> list:
    with app.app_context():
        try:
            return list(conversation_db.session.execute(statement).all())
        finally:
            conversation_db.session.remove()


def age_session(app, session_id: str, days: float) -> datetime:
    """Move the session's deletion (and its messages' deleted along with it) `days` further back."""
    with app.app_context():
        try:
            session = chat_db.session.get(ChatSession, session_id)
            assert session.is_deleted, "age only a deleted session"
            old, new = session.deleted_at, session.deleted_at - timedelta(days=days)
            chat_db.session.execute(
                sa.update(ChatMessage)
                .where(ChatMessage.session_id == session_id, ChatMessage.deleted_at == old)
                .values(deleted_at=new)
            )
            chat_db.session.execute(
                sa.update(ChatSession).where(ChatSession.session_id == session_id).values(deleted_at=new)
            )
            chat_db.session.commit()
            return new
        finally:
            chat_db.session.remove()


def age_message(app, message_id: int, days: float) -> None:
    with app.app_context():
        try:
            message = chat_db.session.get(ChatMessage, message_id)
            chat_db.session.execute(
                sa.update(ChatMessage)
                .where(ChatMessage.message_id == message_id)
                .values(deleted_at=message.deleted_at - timedelta(days=days))
            )
            chat_db.session.commit()
        finally:
            chat_db.session.remove()


def deleted_at_ago(days: float) -> datetime:
    """`days` ago, naive UTC, as the services store times."""
    return datetime.utcnow() - timedelta(days=days)


def set_session_deleted_at(app, session_id: str, moment: datetime) -> None:
    """Set the deletion time of a deleted session and of the messages deleted along with it."""
    with app.app_context():
        try:
            old = chat_db.session.get(ChatSession, session_id).deleted_at
            chat_db.session.execute(
                sa.update(ChatMessage)
                .where(ChatMessage.session_id == session_id, ChatMessage.deleted_at == old)
                .values(deleted_at=moment)
            )
            chat_db.session.execute(
                sa.update(ChatSession).where(ChatSession.session_id == session_id).values(deleted_at=moment)
            )
            chat_db.session.commit()
        finally:
            chat_db.session.remove()


def set_record_deleted_at(app, record_id: int, moment: datetime) -> None:
    with app.app_context():
        try:
            conversation_db.session.execute(
                sa.update(AiConversation).where(AiConversation.id == record_id).values(deleted_at=moment)
            )
            conversation_db.session.commit()
        finally:
            conversation_db.session.remove()


def outbox_pending(app, table) -> list[tuple[str, str]]:
    rows = (chat_rows if table is CHAT_OUTBOX else conversation_rows)(
        app, sa.select(table.c.topic, table.c.key)
    )
    return [tuple(r) for r in rows]


def record_of_session(stack: Stack, session_id: str, user: str = ALICE) -> dict | None:
    """The session's record through the public list (None: not listed, i.e. deleted or missing)."""
    records = call("GET", f"{stack.conversation_url}/api/ai/conversation/list", user=user)
    return next((r for r in records if r["chatSessionId"] == session_id), None)


def internal(stack: Stack, method: str, path: str, user: str = ALICE, **kwargs) -> requests.Response:
    return requests.request(method, path, headers=service_headers(user), timeout=10, **kwargs)


__all__ += ["CHAT_OUTBOX", "CONVERSATION_OUTBOX", "WINDOW_DAYS"]

"""Both services live on loopback, each delivering to the other through its outbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from shared.auth import mint_token
from tests.conftest import ALICE, SECRET, base_environ
from tests.databases import clear_tables
from tests.processes import free_port

CHAT_TABLES = ["chat_messages", "chat_sessions", "chat_sync_outbox"]
CONVERSATION_TABLES = ["ai_conversations", "conversation_sync_outbox", "conversation_user_counts"]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.05) -> Any:
    """The first truthy value of `predicate` within `timeout` seconds; else the test fails."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        time.sleep(step)


class Server:
    """`app` served on a fixed loopback port (so it can stop and come back at the same address)."""

    def __init__(self, app: Flask, port: int) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@dataclass
class Stack:
    """chat_service and conversation_service on reserved ports, each knowing the other's URL."""

    chat_database: str
    conversation_database: str
    chat_port: int = field(default_factory=free_port)
    conversation_port: int = field(default_factory=free_port)
    chat: Server | None = None
    conversation: Server | None = None
    apps: list[Flask] = field(default_factory=list)

    @property
    def chat_url(self) -> str:
        return f"http://127.0.0.1:{self.chat_port}"

    @property
    def conversation_url(self) -> str:
        return f"http://127.0.0.1:{self.conversation_port}"

    def chat_app(self, **environ: str) -> Flask:
        """A chat_service app (worker on unless told otherwise), not served."""
        settings = {
            "OUTBOX_WORKER": "true",
            "CONVERSATION_SERVICE_URL": self.conversation_url,
            "ECHO_DELAY_SECONDS": "0.01",
        }
        app = create_chat_app(base_environ(self.chat_database, **(settings | environ)))
        self.apps.append(app)
        return app

    def conversation_app(self, **environ: str) -> Flask:
        settings = {"OUTBOX_WORKER": "true", "CHAT_SERVICE_URL": self.chat_url}
        app = create_conversation_app(base_environ(self.conversation_database, **(settings | environ)))
        self.apps.append(app)
        return app

    def start_chat(self, **environ: str) -> Flask:
        assert self.chat is None
        self.chat = Server(self.chat_app(**environ), self.chat_port)
        return self.chat.app

    def start_conversation(self, **environ: str) -> Flask:
        assert self.conversation is None
        self.conversation = Server(self.conversation_app(**environ), self.conversation_port)
        return self.conversation.app

    def stop_chat(self) -> None:
        self.chat.stop()
        self.stop_app(self.chat.app)
        self.chat = None

    def stop_conversation(self) -> None:
        self.conversation.stop()
        self.stop_app(self.conversation.app)
        self.conversation = None

    def stop_app(self, app: Flask) -> None:
        """Stop an app's outbox worker and background work, and release its connections."""
        if app not in self.apps:
            return
        self.apps.remove(app)
        app.extensions["outbox"].stop()
        is_chat = "chat_service.live" in app.extensions
        if is_chat:
            live.of(app).close()
        with app.app_context():
            (chat_db if is_chat else conversation_db).engine.dispose()

    def close(self) -> None:
        for server in (self.chat, self.conversation):
            if server is not None:
                server.stop()
        for app in list(self.apps):
            self.stop_app(app)


@pytest.fixture
def stack(chat_database, conversation_database):
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
def both(stack) -> Stack:
    """Both services up."""
    stack.start_conversation()
    stack.start_chat()
    return stack


def user_token(user: str = ALICE) -> str:
    return mint_token(user, config={"JWT_SECRET": SECRET})


def service_headers(user: str | None = ALICE, service: str = "test") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {mint_token(service, service=True, config={'JWT_SECRET': SECRET})}"}
    if user is not None:
        headers["X-User-Id"] = user
    return headers


def call(method: str, url: str, *, user: str = ALICE, expect: int | None = 200, **kwargs) -> Any:
    """Call a public route as `user`; the envelope's data (its code checked when `expect` is given)."""
    headers = {"Authorization": f"Bearer {user_token(user)}", **kwargs.pop("headers", {})}
    response = requests.request(method, url, headers=headers, timeout=10, **kwargs)
    body = response.json()
    if expect is not None:
        assert body["code"] == expect, body
    return body["data"] if expect is not None else body


def record_state(stack: Stack, session_id: str, user: str = ALICE) -> dict | None:
    """The record of a session as conversation_service's internal route shows it (None: no record)."""
    response = requests.get(
        f"{stack.conversation_url}/internal/ai/conversation/chat/{session_id}",
        headers=service_headers(user),
        timeout=10,
    )
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.json()["data"]


def create_session(stack: Stack, title: str | None = None, user: str = ALICE) -> str:
    body = {"title": title} if title else {}
    return call("POST", f"{stack.chat_url}/api/chat/session", user=user, json=body)["session_id"]


def session_of(stack: Stack, session_id: str, user: str = ALICE) -> dict:
    """The session (code 200) or the envelope of its error."""
    return call("GET", f"{stack.chat_url}/api/chat/sessions/{session_id}", user=user, expect=None)

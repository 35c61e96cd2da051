"""Shortcuts for chat tests: create a session or a message through the public API."""

from __future__ import annotations

from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE


def new_session(chat: ApiClient, user: str = ALICE, **body) -> str:
    return envelope(chat.post("/api/chat/session", user=user, json=body), 200)["session_id"]


def new_message(
    chat: ApiClient, session_id: str, content: str = "你好", role: str = "user", user=ALICE
) -> dict:
    body = {"session_id": session_id, "content": content, "role": role}
    return envelope(chat.post("/api/chat/message", user=user, json=body), 200)

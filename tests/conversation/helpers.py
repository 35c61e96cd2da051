"""Shortcuts for conversation tests: the routes, and creating records through the public API."""

from __future__ import annotations

import re

from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE

BASE = "/api/ai/conversation"
UNKNOWN = "123456789012345678"
LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
FIELDS = [
    "id",
    "userId",
    "title",
    "difyConversationId",
    "isPinned",
    "createdTime",
    "updatedTime",
    "chatSessionId",
]


def new_conversation(conv: ApiClient, title: str = "关于项目管理的讨论", user: str = ALICE, **body) -> dict:
    return envelope(conv.post(BASE, user=user, json={"title": title, **body}), 200)


def service_headers(conv: ApiClient, user: str | None = ALICE) -> dict[str, str]:
    """A service token (claim typ=service), naming `user` in X-User-Id when given."""
    headers = {"Authorization": f"Bearer {conv.token('chat_service', service=True)}"}
    if user is not None:
        headers["X-User-Id"] = user
    return headers

"""A turn writes both its messages as its user's: Turns refuses a user who does not own the session,
even where the socket's own check (as it opened) was skipped."""

from __future__ import annotations

import pytest

from chat_service import live
from shared.errors import Forbidden
from tests.api_client import envelope
from tests.chat.helpers import new_session
from tests.conftest import BOB


def test_a_turn_on_another_users_session_is_refused_and_stores_nothing(chat, chat_app):
    sid = new_session(chat)  # Alice's
    turns = live.of(chat_app).turns
    with chat_app.test_request_context(), pytest.raises(Forbidden):
        turns.start(BOB, sid, "hello")
    assert turns.snapshot(sid) is None  # the session's claim was given back
    assert envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)["message_count"] == 0

"""Two chat_service processes sharing Redis: a session's frames, its turn and its stop span both."""

from __future__ import annotations

import os

import pytest

from tests.chat.test_ws import create_session, rest, stored_messages, wait_for
from tests.conftest import base_environ
from tests.processes import gunicorn_process


@pytest.fixture
def two_processes(clean_chat_database):
    chat_database = clean_chat_database
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: no Redis server to test against")
    environ = base_environ(chat_database, REDIS_URL=url, ECHO_DELAY_SECONDS="0.15", LOG_LEVEL="WARNING")
    with (
        gunicorn_process("chat_service:create_app()", environ) as first,
        gunicorn_process("chat_service:create_app()", environ) as second,
    ):
        yield first.url, second.url


def test_a_turn_on_one_process_is_seen_on_the_other(two_processes, token, open_socket):
    first, second = two_processes
    sid = create_session(first, token)
    here, there = open_socket(first, sid, ready=True), open_socket(second, sid, ready=True)
    here.send({"type": "message", "content": "one two three four"})
    frames = there.until("assistant_message")
    assert [f["type"] for f in frames if f["type"] != "delta"] == ["user_message", "assistant_message"]
    assert frames[-1]["data"]["content"] == "one two three four"


def test_turn_state_second_message_and_stop_span_processes(two_processes, token, open_socket):
    first, second = two_processes
    sid = create_session(first, token)
    text = "a b c d e f g h i j k l m n o p"
    sender = open_socket(first, sid, ready=True)
    sender.send({"type": "message", "content": text})
    sender.until("delta")
    sender.until("delta")
    late = open_socket(second, sid)
    state = late.next()
    assert state["type"] == "turn_state" and text.startswith(state["data"]["content"])
    late.send({"type": "message", "content": "me too"})
    assert late.until("error")[-1]["code"] == 1004
    late.send({"type": "stop"})
    reply = late.until("assistant_message")[-1]["data"]
    assert reply["stopped"] is True and text.startswith(reply["content"]) and reply["content"] != text
    assert stored_messages(first, token, sid)[-1]["content"] == reply["content"]


def test_rest_on_one_process_reaches_sockets_on_the_other(two_processes, token, open_socket):
    first, second = two_processes
    sid = create_session(first, token)
    socket = open_socket(first, sid, ready=True)
    rest(second, token(), "PATCH", f"/api/chat/sessions/{sid}", json={"new_title": "renamed elsewhere"})
    assert wait_for(lambda: socket.next())["data"]["title"] == "renamed elsewhere"

"""A provider line over PROVIDER_MAX_LINE_BYTES fails the turn, over a live socket (issue 11)."""

from __future__ import annotations

import time

from tests.chat.test_ws import create_session, rest, stored_messages
from tests.fakes import SSEReply, endless_line
from tests.fakes.dify import DifyTurn
from tests.fakes.openai import chunk

HUGE = 60 * 1024 * 1024  # the probe's line


def assert_turn_failed_and_rest_answers(base, token, socket, sid) -> None:
    frames = socket.until("error")
    assert [f["type"] for f in frames] == ["user_message", "delta", "error"]
    error = frames[-1]
    assert (error["code"], error["data"]["reason"]) == (5000, "bad_response"), error
    assert [m["role"] for m in stored_messages(base, token, sid)] == ["user"]  # no half reply
    started = time.monotonic()
    rest(base, token(), "GET", f"/api/chat/sessions/{sid}")
    assert time.monotonic() - started < 5, "the worker is still busy with the line"


def test_a_huge_dify_line_fails_the_turn_with_5000_and_stores_no_half_reply(
    live_chat_factory, dify, token, open_socket
):
    base, _app = live_chat_factory(AI_PROVIDER="dify", DIFY_API_URL=dify.url, DIFY_API_KEY=dify.api_key)
    turn = DifyTurn()
    line = endless_line(b'data: {"event":"message","answer":"', HUGE)
    dify.script(SSEReply([turn.message("half "), *line]))
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    assert_turn_failed_and_rest_answers(base, token, socket, sid)


def test_a_huge_openai_line_fails_the_turn_with_5000_and_stores_no_half_reply(
    live_chat_factory, openai, token, open_socket
):
    base, _app = live_chat_factory(
        AI_PROVIDER="openai",
        OPENAI_BASE_URL=openai.url,
        OPENAI_API_KEY=openai.api_key,
        OPENAI_MODEL="test-model",
        TITLE_GENERATION="false",
    )
    line = endless_line(b'data: {"choices":[{"delta":{"content":"', HUGE)
    openai.script(SSEReply([chunk("half "), *line]))
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    assert_turn_failed_and_rest_answers(base, token, socket, sid)

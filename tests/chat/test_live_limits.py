"""Per-user limits on the live path: turns per minute, turns in flight, open sockets, tokens per day.

A refused turn is an `error` frame with code 429 (`data.retry_after`, `data.limit`) and nothing is
stored; a refused socket gets that frame and is closed with 4429. With Redis the counts span every
instance (two production gunicorn instances here).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chat.test_ws import create_session, rest, stored_messages, wait_for
from tests.conftest import BOB, base_environ
from tests.live_probe import migrated_sqlite, production_server, redis_url_or_skip


def refused(frame: dict, limit: str) -> dict:
    assert (frame["type"], frame["code"], frame["message"]) == ("error", 429, "请求过于频繁"), frame
    assert frame["data"]["limit"] == limit and frame["data"]["retry_after"] >= 1
    return frame["data"]


def turn(socket, content: str) -> list[dict]:
    """Send `content` and read until its own reply (a socket also sees the session's other turns)."""
    socket.send({"type": "message", "content": content})
    frames = socket.until("assistant_message")
    while frames[-1]["data"]["content"] != content:
        frames += socket.until("assistant_message")
    return frames


def test_turns_past_the_rate_are_refused_and_nothing_is_stored(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(LIMIT_TURNS="2/minute", TITLE_GENERATION="false")
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    turn(socket, "one")
    turn(socket, "two")
    socket.send({"type": "message", "content": "three"})
    data = refused(socket.until("error")[-1], "2 per 1 minute")
    assert data["retry_after"] <= 60
    assert [m["content"] for m in stored_messages(base, token, sid)] == ["one", "one", "two", "two"]
    other = create_session(base, token, user=BOB)  # another user's budget is their own
    assert turn(open_socket(base, other, user=BOB, ready=True), "hello")[-1]["data"]["content"] == "hello"


def test_turns_refused_for_another_reason_are_not_counted(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(LIMIT_TURNS="2/minute", ECHO_DELAY_SECONDS="0.2", TITLE_GENERATION="false")
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    socket.send({"type": "message", "content": "a b c d e f"})
    socket.until("delta")
    socket.send({"type": "message", "content": "while it runs"})
    assert socket.until("error")[-1]["code"] == 1004  # the session is busy: no turn, nothing counted
    socket.send({"type": "stop"})
    socket.until("assistant_message")
    assert turn(socket, "second")[-1]["data"]["content"] == "second"


def test_turns_in_flight_are_bounded_per_user(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(
        LIMIT_TURNS_IN_FLIGHT="2", ECHO_DELAY_SECONDS="0.3", TITLE_GENERATION="false"
    )
    sockets = [open_socket(base, create_session(base, token), ready=True) for _ in range(3)]
    for socket in sockets[:2]:
        socket.send({"type": "message", "content": "a b c d e f g h"})
        socket.until("delta")
    third = sockets[2]
    third.send({"type": "message", "content": "one more"})
    refused(third.until("error")[-1], "2 at once")
    sockets[0].send({"type": "stop"})
    sockets[0].until("assistant_message")
    assert turn(third, "now")[-1]["data"]["content"] == "now"  # a slot was freed by the stop
    sockets[1].send({"type": "stop"})
    sockets[1].until("assistant_message")


def test_sockets_past_the_limit_get_an_error_frame_and_4429(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(LIMIT_SOCKETS="2")
    sid = create_session(base, token)
    first, _second = open_socket(base, sid, ready=True), open_socket(base, sid, ready=True)
    third = open_socket(base, sid)
    refused(third.next(), "2 at once")
    assert third.closed_with() == 4429
    assert open_socket(base, create_session(base, token, user=BOB), user=BOB, ready=True)  # BOB's own
    first.close()
    wait_for(lambda: _opens(base, sid, open_socket), timeout=10)


def _opens(base: str, sid: str, open_socket) -> bool:
    """Whether a new socket on `sid` is accepted now (a pong rather than a refusal)."""
    socket = open_socket(base, sid)
    socket.send({"type": "ping"})
    frame = socket.next()
    socket.close()
    return frame["type"] == "pong"


def test_tokens_per_day_count_what_the_provider_reports(live_chat_factory, openai, token, open_socket):
    # The fake reports 12 tokens a reply: the first turn leaves 8 of 20, the second spends past it.
    base, _app = live_chat_factory(
        AI_PROVIDER="openai",
        OPENAI_BASE_URL=openai.url,
        OPENAI_API_KEY=openai.api_key,
        LIMIT_TOKENS="20/day",
        TITLE_GENERATION="false",
    )
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    for content in ("hi", "again"):
        socket.send({"type": "message", "content": content})
        assert socket.until("assistant_message")[-1]["data"]["usage"]["total_tokens"] == 12
    socket.send({"type": "message", "content": "once more"})
    refused(socket.until("error")[-1], "20 per 1 day")
    assert len(openai.requests) == 2
    assert [m["content"] for m in stored_messages(base, token, sid)][-1] != "once more"


# --- two instances sharing Redis ------------------------------------------------------------------------


@pytest.fixture
def two_instances(tmp_path) -> Iterator[tuple[str, str]]:
    redis_url = redis_url_or_skip()
    database = migrated_sqlite(tmp_path, base_environ)
    environ = base_environ(
        database,
        REDIS_URL=redis_url,
        LIMIT_SOCKETS="2",
        LIMIT_TURNS="2/minute",
        LIMIT_REQUESTS="8/minute",
        TITLE_GENERATION="false",
    )
    with (
        production_server(environ, tmp_path / "first.log") as first,
        production_server(environ, tmp_path / "second.log") as second,
    ):
        yield first.url, second.url


def test_limits_span_instances_with_redis(two_instances, token, open_socket):
    first, second = two_instances
    sid = create_session(first, token)  # request 1 of 8
    here = open_socket(first, sid, ready=True)
    there = open_socket(second, sid, ready=True)
    late = open_socket(first, sid)
    refused(late.next(), "2 at once")  # one socket on each instance: the third is refused
    assert late.closed_with() == 4429

    turn(here, "one")
    turn(there, "two")
    here.send({"type": "message", "content": "three"})
    refused(here.until("error")[-1], "2 per 1 minute")

    for n in range(2, 9):  # requests 2 to 8 of 8, alternating between the instances
        assert (
            rest(first if n % 2 else second, token(), "GET", f"/api/chat/sessions/{sid}").status_code == 200
        )
    response = rest(first, token(), "GET", f"/api/chat/sessions/{sid}")
    assert response.status_code == 429 and response.json()["code"] == 429
    assert int(response.headers["Retry-After"]) >= 1

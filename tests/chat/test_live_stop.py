"""Deleting a session stops its turn for real: the provider is told (Dify's stop endpoint) or hung up on
(an OpenAI-compatible stream is closed), within a second or two, and no reply is stored.

Under the production gunicorn config, against the fake providers on loopback; once more across two
processes sharing Redis (the socket and the turn on one, the DELETE on the other).
"""

from __future__ import annotations

import time

import pytest

from tests.chat.test_ws import create_session, rest
from tests.conftest import ALICE, base_environ
from tests.fakes import SSEReply
from tests.fakes.dify import DifyTurn, FakeDify
from tests.fakes.openai import DONE, chunk
from tests.live_probe import (
    forget_session_keys,
    message_rows,
    migrated_sqlite,
    production_server,
    redis_url_or_skip,
)
from tests.processes import free_port

STOP_BOUND_SECONDS = 2
TEXT = "tell me a long story"
DELETE_PATHS = ["/api/chat/sessions/{sid}", "/aichat/deletesession/{sid}"]


@pytest.fixture
def database(tmp_path) -> str:
    return migrated_sqlite(tmp_path, base_environ)


def provider_environ(database: str, provider: str, fake, **extra: str) -> dict[str, str]:
    keys = (
        {"DIFY_API_URL": fake.url, "DIFY_API_KEY": fake.api_key}
        if provider == "dify"
        else {"OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": fake.api_key}
    )
    return base_environ(
        database,
        AI_PROVIDER=provider,
        # No conversation_service: the Dify link fails once, quietly, in the background.
        CONVERSATION_SERVICE_URL=f"http://127.0.0.1:{free_port()}",
        **keys,
        **extra,
    )


def slow_dify_turn(dify: FakeDify) -> DifyTurn:
    """A reply whose first piece comes at once and the rest 20 s later (a stop cuts the wait short)."""
    turn = DifyTurn()
    dify.script(turn.stream([turn.message("Once upon a time "), 20.0, turn.message("the end."), turn.end()]))
    return turn


def assert_nothing_stored(database: str, sid: str) -> None:
    time.sleep(1)  # a turn that was not stopped would store its reply now or never (its stream is cut)
    assert message_rows(database, sid) == [("user", TEXT)]


def stop_calls(dify: FakeDify, turn: DifyTurn) -> list:
    return [r for r in dify.stop_requests if r.path.endswith(f"/chat-messages/{turn.task_id}/stop")]


@pytest.mark.parametrize("path", DELETE_PATHS)
def test_deleting_the_session_calls_difys_stop_and_stores_nothing(
    database, dify, tmp_path, token, open_socket, path
):
    environ = provider_environ(database, "dify", dify)
    with production_server(environ, tmp_path / "chat.log") as server:
        sid = create_session(server.url, token)
        turn = slow_dify_turn(dify)
        socket = open_socket(server.url, sid, ready=True)
        socket.send({"type": "message", "content": TEXT})
        assert socket.until("delta")[-1]["data"]["content"] == "Once upon a time "

        deleted = rest(server.url, token(), "DELETE", path.format(sid=sid))
        assert deleted.status_code == 200, deleted.text
        dify.wait_for(lambda _requests: stop_calls(dify, turn), timeout=STOP_BOUND_SECONDS)
        assert stop_calls(dify, turn)[0].json == {"user": ALICE}
        assert socket.until("session_deleted")[-1]["data"]["session_id"] == sid
        assert_nothing_stored(database, sid)


@pytest.mark.parametrize("path", DELETE_PATHS)
def test_deleting_the_session_hangs_up_on_an_openai_stream_and_stores_nothing(
    database, openai, tmp_path, token, open_socket, path
):
    environ = provider_environ(database, "openai", openai)
    openai.script(
        SSEReply(
            [
                chunk("", role="assistant"),
                chunk("Once upon a time "),
                20.0,
                chunk("the end."),
                chunk(finish_reason="stop"),
                DONE,
            ]
        )
    )
    with production_server(environ, tmp_path / "chat.log") as server:
        sid = create_session(server.url, token)
        socket = open_socket(server.url, sid, ready=True)
        socket.send({"type": "message", "content": TEXT})
        assert socket.until("delta")[-1]["data"]["content"] == "Once upon a time "
        stream = openai.requests[-1]
        assert stream.client_closed_at is None

        deleted_at = time.monotonic()
        deleted = rest(server.url, token(), "DELETE", path.format(sid=sid))
        assert deleted.status_code == 200, deleted.text
        openai.wait_for(lambda _requests: stream.client_closed_at is not None, timeout=STOP_BOUND_SECONDS)
        assert stream.client_closed_at - deleted_at < STOP_BOUND_SECONDS
        assert_nothing_stored(database, sid)


def test_a_delete_on_another_process_stops_the_turn(database, dify, tmp_path, token, open_socket):
    url = redis_url_or_skip()
    environ = provider_environ(database, "dify", dify, REDIS_URL=url)
    sid = None
    try:
        with (
            production_server(environ, tmp_path / "first.log") as first,
            production_server(environ, tmp_path / "second.log") as second,
        ):
            sid = create_session(first.url, token)
            turn = slow_dify_turn(dify)
            socket = open_socket(first.url, sid, ready=True)
            socket.send({"type": "message", "content": TEXT})
            socket.until("delta")

            deleted = rest(second.url, token(), "DELETE", f"/api/chat/sessions/{sid}")
            assert deleted.status_code == 200, deleted.text
            dify.wait_for(lambda _requests: stop_calls(dify, turn), timeout=STOP_BOUND_SECONDS)
            assert stop_calls(dify, turn)[0].json == {"user": ALICE}
            assert_nothing_stored(database, sid)
    finally:
        if sid is not None:
            forget_session_keys(url, sid)

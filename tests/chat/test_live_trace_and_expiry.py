"""Two promises of the live socket, under the production gunicorn config:

- traceId everywhere: every JSON log line a turn writes (provider retries, the failure, the Dify link)
  carries the traceId the client sent in its socket handshake (`X-Trace-Id`);
- a token that expires while its socket is open ends the socket: an `error` frame 401, then close 4401.
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import jwt
import pytest

from tests.chat.test_ws import create_session
from tests.conftest import base_environ
from tests.fakes.dify import dify_error
from tests.live_probe import (
    JsonLine,
    foreign_lines,
    log_lines,
    log_size,
    migrated_sqlite,
    production_server,
)
from tests.processes import free_port

SETTLE_SECONDS = 0.5  # lets the lines a turn writes as it ends reach the file
LOUD = ("WARNING", "ERROR", "CRITICAL")


@pytest.fixture
def database(tmp_path) -> str:
    return migrated_sqlite(tmp_path, base_environ)


@pytest.fixture
def dify_server(database, dify, tmp_path):
    environ = base_environ(
        database,
        LOG_LEVEL="INFO",
        AI_PROVIDER="dify",
        DIFY_API_URL=dify.url,
        DIFY_API_KEY=dify.api_key,
        PROVIDER_RETRY_BASE_SECONDS="0.01",
        # No conversation_service: linking the Dify conversation fails, and says so in the log.
        CONVERSATION_SERVICE_URL=f"http://127.0.0.1:{free_port()}",
    )
    log = tmp_path / "chat.log"
    with production_server(environ, log) as server:
        yield SimpleNamespace(url=server.url, log=log)


def traced_socket(open_socket, base_url: str, sid: str, token, trace_id: str):
    headers = {"Authorization": f"Bearer {token()}", "X-Trace-Id": trace_id}
    return open_socket(base_url, sid, ready=True, headers=headers)


def turn_lines(server, socket, content: str, last: str) -> tuple[list[dict], list[JsonLine]]:
    """Run one turn; its frames up to `last`, and every log line written meanwhile."""
    start = log_size(server.log)
    socket.send({"type": "message", "content": content})
    frames = socket.until(last, timeout=15)
    time.sleep(SETTLE_SECONDS)
    return frames, log_lines(server.log, start)


def assert_traced(lines: list[JsonLine], trace_id: str) -> None:
    assert foreign_lines(lines) == [], "the turn wrote log lines that are not JSON"
    untraced = [line.fields for line in lines if line.get("traceId") != trace_id]
    assert untraced == [], f"lines of the turn without its traceId {trace_id}"


def test_retry_warnings_of_a_turn_carry_the_sockets_trace_id(dify_server, dify, token, open_socket):
    trace_id = uuid.uuid4().hex
    sid = create_session(dify_server.url, token)
    socket = traced_socket(open_socket, dify_server.url, sid, token, trace_id)
    dify.script(
        dify_error(503, "service_unavailable", "Service temporarily unavailable"),
        dify_error(503, "service_unavailable", "Service temporarily unavailable"),
    )
    frames, lines = turn_lines(dify_server, socket, "hi", "assistant_message")
    assert frames[-1]["data"]["content"] == "Hello from Dify"
    assert len(dify.chat_requests) == 3
    assert len([line for line in lines if line.get("level") in LOUD]) >= 2, "no line per retry"
    assert_traced(lines, trace_id)


def test_the_failure_line_of_a_turn_carries_the_sockets_trace_id(dify_server, dify, token, open_socket):
    trace_id = uuid.uuid4().hex
    sid = create_session(dify_server.url, token)
    socket = traced_socket(open_socket, dify_server.url, sid, token, trace_id)
    dify.script(dify_error(400, "app_unavailable", "App unavailable, please check your app configurations."))
    frames, lines = turn_lines(dify_server, socket, "hi", "error")
    assert frames[-1]["code"] == 5000
    assert frames[-1]["traceId"] == trace_id
    assert [line for line in lines if line.get("level") in LOUD], "the failed turn wrote no warning"
    assert_traced(lines, trace_id)


def test_a_socket_whose_token_expires_is_told_and_closed(database, tmp_path, token, open_socket):
    environ = base_environ(database, JWT_LEEWAY_SECONDS="0")
    with production_server(environ, tmp_path / "chat.log") as server:
        sid = create_session(server.url, token)
        short = token(ttl_seconds=3)
        expires_at = jwt.decode(short, options={"verify_signature": False})["exp"]
        socket = open_socket(server.url, sid, ready=True, headers={"Authorization": f"Bearer {short}"})
        frames = socket.until("error", timeout=max(1.0, expires_at + 6 - time.time()))
        told_at = time.time()
        assert told_at >= expires_at - 1, "the socket was refused before its token expired"
        assert frames[-1]["code"] == 401, frames[-1]
        assert [f["type"] for f in frames[:-1]] == [], frames
        assert socket.closed_with(timeout=5) == 4401

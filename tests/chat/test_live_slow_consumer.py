"""A client that stops reading costs the server a bounded queue, then its socket, never unbounded memory.

Under the production gunicorn config (gevent). The client floods `ping` frames and never reads, so the
`pong` answers fill the kernel buffers and then the socket's outgoing queue on the server
(`WS_QUEUE_MAX_FRAMES` / `WS_QUEUE_MAX_BYTES`, set low here). The server must give that socket up: the
`ws_open_sockets` gauge falls back while the client is still connected and still not reading, and the
worker's memory comes back once the client is gone. The session's other sockets do not notice.
"""

from __future__ import annotations

import pytest

from tests.chat.test_ws import create_session
from tests.conftest import base_environ
from tests.live_probe import (
    RawSocket,
    eventually,
    migrated_sqlite,
    only_worker,
    open_sockets,
    production_server,
    rss_bytes,
)

QUEUE_MAX_FRAMES = 200
QUEUE_MAX_BYTES = 64 * 1024
PING_INTERVAL = 2
FLOOD_FRAMES = 60_000  # ~9 MB of pongs: more than any kernel buffer holds, far more than the queue bound
CLOSE_BOUND_SECONDS = 15
MEMORY_SLACK = 20 * 1024 * 1024


@pytest.fixture
def server(tmp_path):
    database = migrated_sqlite(tmp_path, base_environ)
    environ = base_environ(
        database,
        WS_PING_INTERVAL=str(PING_INTERVAL),
        WS_QUEUE_MAX_FRAMES=str(QUEUE_MAX_FRAMES),
        WS_QUEUE_MAX_BYTES=str(QUEUE_MAX_BYTES),
        ECHO_DELAY_SECONDS="0.01",
    )
    with production_server(environ, tmp_path / "chat.log") as server:
        yield server


def socket_url(base_url: str, session_id: str) -> str:
    return base_url.replace("http", "ws", 1) + f"/ws/{session_id}"


def stalled_socket(base_url: str, session_id: str, token) -> RawSocket:
    return RawSocket(socket_url(base_url, session_id), {"Authorization": f"Bearer {token()}"})


def assert_given_up(raw: RawSocket) -> None:
    """Once the client reads again it finds the end of the connection; a close frame, if the server
    managed to send one, says why (1008 policy / 1013 try again later) in a non-empty reason."""
    drained = raw.drain(timeout=10)
    assert drained.ended in ("close", "eof", "reset"), (
        f"the stalled socket is still open after {len(drained.texts)} frames"
    )
    if drained.ended == "close":
        assert drained.close_code in (1008, 1013), drained.close_code
        assert drained.close_reason, "the close frame gives no reason"


def test_a_client_that_never_reads_is_closed_and_its_memory_comes_back(server, token, open_socket):
    sid = create_session(server.url, token)
    worker = only_worker(server.process.pid)
    # Warm the worker up (imports, first socket, first turn) before taking its memory as the baseline.
    warm = open_socket(server.url, sid, ready=True)
    warm.send({"type": "message", "content": "warm up the worker"})
    warm.until("assistant_message")
    warm.close()
    eventually(lambda: open_sockets(server.url) == 0, 5, what="the warm-up socket closed")
    baseline = rss_bytes(worker)

    raw = stalled_socket(server.url, sid, token)
    try:
        sent = raw.flood({"type": "ping"}, FLOOD_FRAMES)
        assert sent > QUEUE_MAX_FRAMES, f"only {sent} frames went out"
        # Still connected, still not reading: the server gives the socket up by itself.
        eventually(
            lambda: open_sockets(server.url) == 0,
            CLOSE_BOUND_SECONDS,
            interval=0.25,
            what="the server closing a socket whose client never reads",
        )
        assert_given_up(raw)
    finally:
        raw.close()

    assert only_worker(server.process.pid) == worker, "the worker died instead of closing one socket"
    eventually(
        lambda: rss_bytes(worker) <= baseline + MEMORY_SLACK,
        10,
        interval=0.25,
        what=f"the worker's memory back within {MEMORY_SLACK >> 20} MiB of {baseline >> 20} MiB",
    )


def test_a_stalled_socket_does_not_hold_up_the_others_of_its_session(server, token, open_socket):
    sid = create_session(server.url, token)
    good = open_socket(server.url, sid, ready=True)
    raw = stalled_socket(server.url, sid, token)
    try:
        raw.flood({"type": "ping"}, FLOOD_FRAMES)
        text = " ".join(f"word{i}" for i in range(40))
        good.send({"type": "message", "content": text})
        frames = good.until("assistant_message", timeout=15)
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "user_message", kinds
        assert "".join(f["data"]["content"] for f in frames if f["type"] == "delta") == text
        assert frames[-1]["data"]["content"] == text
        # The stalled one is given up; the good one stays.
        eventually(
            lambda: open_sockets(server.url) == 1,
            CLOSE_BOUND_SECONDS,
            interval=0.25,
            what="the stalled socket closed and the good one kept",
        )
        assert_given_up(raw)
    finally:
        raw.close()
    good.send({"type": "ping"})
    assert good.until("pong")[-1]["type"] == "pong"

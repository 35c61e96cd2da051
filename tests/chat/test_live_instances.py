"""chat_service instances sharing Redis (production gunicorn config, one worker each).

- An instance dies (SIGKILL, master and worker) in the middle of a turn: its claim on the session lapses
  after `TURN_CLAIM_TTL_SECONDS` (it is kept alive by a heartbeat, not by a 15-minute TTL), the sockets
  elsewhere are told the reply was interrupted (`error` 5000 with the turn's id), and the session takes
  a new message.
- What a turn writes to Redis grows with the reply's length, not with its square (the reply so far is
  not rewritten whole on every piece).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.chat.test_ws import create_session
from tests.conftest import base_environ
from tests.live_probe import (
    eventually,
    forget_session_keys,
    migrated_sqlite,
    only_worker,
    production_server,
    redis_url_or_skip,
)

CLAIM_TTL_SECONDS = 3
FREED_BOUND_SECONDS = 30


@pytest.fixture
def database(tmp_path) -> str:
    return migrated_sqlite(tmp_path, base_environ)


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


def kill_instance(server) -> None:
    """SIGKILL a gunicorn instance, worker and master: no hook runs, no claim is released. The master is
    frozen first so it cannot fork a new worker in between."""
    master = server.process.pid
    worker = only_worker(master)
    os.kill(master, signal.SIGSTOP)
    os.kill(worker, signal.SIGKILL)
    os.kill(master, signal.SIGKILL)
    server.process.wait(timeout=5)
    eventually(lambda: _zombie(worker), 5, what="the killed worker gone")


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return "Z" in line.split()[1]
    return True


def offer(socket, content: str) -> bool:
    """Send a message: True once it is taken (`user_message`), False on 1004 (a turn still holds the
    session). Other frames (the interrupted turn's error, its deltas) are kept in `socket.seen`."""
    socket.send({"type": "message", "content": content})
    deadline = time.monotonic() + 5
    while True:
        frame = socket.next(timeout=max(0.05, deadline - time.monotonic()))
        if frame["type"] == "user_message" and frame["data"]["content"] == content:
            return True
        if frame["type"] == "error" and frame["code"] == 1004:
            return False


def test_a_turn_whose_instance_dies_is_reported_and_frees_its_session(
    database, redis_url, tmp_path, token, open_socket
):
    environ = base_environ(
        database,
        REDIS_URL=redis_url,
        TURN_CLAIM_TTL_SECONDS=str(CLAIM_TTL_SECONDS),
        ECHO_DELAY_SECONDS="0.5",
    )
    text = " ".join(f"word{i}" for i in range(120))  # a minute of reply: it cannot end by itself
    sid = None
    try:
        with (
            production_server(environ, tmp_path / "doomed.log") as doomed,
            production_server(environ, tmp_path / "survivor.log") as survivor,
        ):
            sid = create_session(survivor.url, token)
            there = open_socket(doomed.url, sid, ready=True)
            here = open_socket(survivor.url, sid, ready=True)
            there.send({"type": "message", "content": text})
            here.until("delta")
            turn_id = here.until("delta")[-1]["data"]["turn_id"]

            kill_instance(doomed)
            killed_at = time.monotonic()
            with contextlib.suppress(Exception):
                there.close()

            while not offer(here, "are you still there"):
                waited = time.monotonic() - killed_at
                assert waited < FREED_BOUND_SECONDS, f"the session was still claimed {waited:.1f}s later"
                time.sleep(0.5)
            freed_after = time.monotonic() - killed_at

            def interrupted():
                errors = [f for f in here.seen if f["type"] == "error" and f["code"] == 5000]
                if not errors:
                    with contextlib.suppress(TimeoutError):
                        here.next(timeout=0.2)
                return errors

            errors = eventually(interrupted, 5, interval=0, what="an error frame for the interrupted turn")
            assert errors[0]["data"]["turn_id"] == turn_id, errors[0]
            assert freed_after < FREED_BOUND_SECONDS
            # The new turn runs to its end on the survivor.
            assert here.until("assistant_message", timeout=15)[-1]["data"]["content"] == "are you still there"
    finally:
        if sid is not None:
            forget_session_keys(redis_url, sid)


def test_redis_traffic_of_a_turn_grows_linearly_with_the_reply(
    database, redis_url, tmp_path, token, open_socket
):
    environ = base_environ(database, REDIS_URL=redis_url, ECHO_DELAY_SECONDS="0")
    client = redis.Redis.from_url(redis_url)
    sid = None
    try:
        with production_server(environ, tmp_path / "chat.log") as server:
            sid = create_session(server.url, token)
            socket = open_socket(server.url, sid, ready=True)

            def redis_bytes(words: int) -> int:
                text = " ".join(f"w{i:04d}" for i in range(words))
                before = int(client.info("stats")["total_net_input_bytes"])
                socket.send({"type": "message", "content": text})
                assert socket.until("assistant_message", timeout=30)[-1]["data"]["content"] == text
                time.sleep(0.3)
                return int(client.info("stats")["total_net_input_bytes"]) - before

            redis_bytes(20)  # warm up
            short, long = redis_bytes(200), redis_bytes(800)
            assert long / short < 6, f"200 words: {short} bytes to Redis, 800 words: {long} bytes"
    finally:
        client.close()
        if sid is not None:
            forget_session_keys(redis_url, sid)

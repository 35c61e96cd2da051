"""Redis goes away behind two chat_service processes, then comes back.

Both reach Redis through a TcpProxy. While it is cut, a turn's frames still reach the sockets of the
process that runs it (fan-out falls back to the process), REST works and `/readyz` names redis; once it
is restored, fan-out spans the processes again, with no restart: the hub's listener reconnects.
"""

from __future__ import annotations

import time

import pytest
import requests
from redis.connection import parse_url

from tests.chat.test_ws import create_session, rest, stored_messages
from tests.conftest import base_environ
from tests.faults.proxy import BLACKHOLE, REFUSE, TcpProxy
from tests.processes import gunicorn_process

BOUND_SECONDS = 10


@pytest.fixture
def redis_proxy(redis_url):
    target = parse_url(redis_url)
    with TcpProxy(target.get("host", "127.0.0.1"), target.get("port", 6379)) as proxy:
        proxy.url = f"redis://127.0.0.1:{proxy.port}/{target.get('db', 0)}"
        yield proxy


@pytest.fixture
def two_processes(sqlite_chat_database, redis_proxy):
    environ = base_environ(sqlite_chat_database, REDIS_URL=redis_proxy.url, ECHO_DELAY_SECONDS="0.02")
    with (
        gunicorn_process("chat_service:create_app()", environ) as first,
        gunicorn_process("chat_service:create_app()", environ) as second,
    ):
        yield first.url, second.url


def readiness(base_url: str) -> requests.Response:
    started = time.monotonic()
    response = requests.get(base_url + "/readyz", timeout=BOUND_SECONDS)
    assert time.monotonic() - started < BOUND_SECONDS
    return response


def wait_ready(*base_urls: str, timeout: float = BOUND_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    for base_url in base_urls:
        while readiness(base_url).status_code != 200:
            assert time.monotonic() < deadline, f"{base_url} did not become ready again"
            time.sleep(0.1)


@pytest.mark.parametrize("mode", [REFUSE, BLACKHOLE])
def test_a_cut_redis_degrades_fan_out_to_the_process_and_recovers(
    two_processes, redis_proxy, token, open_socket, mode
):
    """Refused (connections reset) or blackholed (accepted, never answered): while the hub's listener
    is not subscribed, nothing on a turn's path waits on Redis."""
    first, second = two_processes
    sid = create_session(first, token)
    here, there = open_socket(first, sid, ready=True), open_socket(second, sid, ready=True)

    redis_proxy.cut(mode)
    response = readiness(first)
    body = response.json()
    assert response.status_code == 503 and body["code"] == 12001, body
    assert body["data"]["failed"] == ["redis"] and body["data"]["checks"]["database"] == "ok", body

    started = time.monotonic()
    renamed = rest(first, token(), "PATCH", f"/api/chat/sessions/{sid}", json={"new_title": "cut"})
    assert renamed.status_code == 200, renamed.text
    assert here.until("session_updated")[-1]["data"]["title"] == "cut"
    here.send({"type": "message", "content": "one two three four five six"})
    frames = here.until("assistant_message", timeout=BOUND_SECONDS)
    took = time.monotonic() - started
    assert [f["type"] for f in frames if f["type"] != "delta"] == ["user_message", "assistant_message"]
    assert (
        "".join(f["data"]["content"] for f in frames if f["type"] == "delta") == frames[-1]["data"]["content"]
    )
    assert frames[-1]["data"]["content"] == "one two three four five six"
    assert took < BOUND_SECONDS, f"a turn with Redis cut took {took:.1f}s"
    assert [m["content"] for m in stored_messages(second, token, sid)][-2:] == [
        "one two three four five six"
    ] * 2

    redis_proxy.restore()
    wait_ready(first, second)
    # The listeners resubscribe by themselves (they retry every second); until they have, frames stay in
    # their process. Cross-process fan-out is back within the bound:
    started, attempt = time.monotonic(), 0
    while True:
        attempt += 1
        rest(first, token(), "PATCH", f"/api/chat/sessions/{sid}", json={"new_title": f"back {attempt}"})
        try:
            if there.until("session_updated", timeout=0.5)[-1]["data"]["title"] == f"back {attempt}":
                break
        except TimeoutError:
            assert time.monotonic() - started < BOUND_SECONDS, "fan-out did not span the processes again"
    there.seen.clear()
    here.send({"type": "message", "content": "back again"})
    frames = there.until("assistant_message", timeout=BOUND_SECONDS)
    assert [f["type"] for f in frames if f["type"] not in ("delta", "session_updated")] == [
        "user_message",
        "assistant_message",
    ], frames
    assert frames[-1]["data"]["content"] == "back again"
    assert here.until("assistant_message")[-1]["data"]["content"] == "back again"

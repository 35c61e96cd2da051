"""Slow clients cannot take a service down: with idle, header-trickling and body-trickling connections
held open, both services (production gunicorn configs) keep answering REST, and the server closes the
idle and header-trickling ones after `KEEPALIVE_SECONDS`.

A smaller run of bench/slow_connections.py (which holds 200 of each kind for 30 s): 50 of each kind for
6 s, each REST request bounded by 1 s as a failure detector (not a speed target).
"""

from __future__ import annotations

import importlib
import json
import socket
import time

import pytest
import requests
from flask_migrate import upgrade

from shared.auth import mint_token
from tests.conftest import SECRET
from tests.processes import gunicorn_process
from tests.slow_clients import SlowClients, probe

KEEPALIVE = 2
SERVICES = {
    "chat_service": (1, "/api/chat/session", "/api/chat/sessions/{session_id}"),
    "conversation_service": (2, "/api/ai/conversation", "/api/ai/conversation/{id}"),
}


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, config={'JWT_SECRET': SECRET})}"}


def migrated(service: str, tmp_path, **extra: str) -> dict[str, str]:
    """The settings of `service` on a migrated SQLite file."""
    environ = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/{service}.sqlite3",
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "OUTBOX_WORKER": "false",
        "KEEPALIVE_SECONDS": str(KEEPALIVE),
        **extra,
    }
    with importlib.import_module(service).create_app(environ).app_context():
        upgrade()
    return environ


@pytest.mark.parametrize("service", list(SERVICES))
def test_rest_answers_while_slow_connections_are_held(service, tmp_path):
    workers, create_path, read_path = SERVICES[service]
    environ = migrated(service, tmp_path)
    config = ["-c", f"{service}/gunicorn.conf.py"]
    with gunicorn_process(f"{service}:create_app()", environ, worker=config, workers=workers) as server:
        user = bearer("542738228948500480")
        created = requests.post(server.url + create_path, json={"title": "t"}, headers=user, timeout=5)
        url = server.url + read_path.format(**created.json()["data"])
        attacker = bearer("542738228948500499")
        with SlowClients(server.url, 50, body_path=create_path, headers=attacker) as slow:
            probes = probe(url, user, seconds=6, timeout=1)
            assert slow.open_now == {"idle": 50, "headers": 50, "body": 50}
        assert probes.failures == [], probes.failures
        assert len(probes.latencies) >= 20
        for kind in ("idle", "headers"):
            lifetimes = slow.stats[kind].lifetimes
            assert lifetimes, f"no {kind} connection was closed by the server"
            assert max(lifetimes) < KEEPALIVE + 2, (kind, max(lifetimes))


@pytest.mark.parametrize("service", list(SERVICES))
def test_a_trickled_body_is_a_408_after_the_body_timeout(service, tmp_path):
    workers, create_path, _read_path = SERVICES[service]
    environ = migrated(service, tmp_path, REQUEST_BODY_TIMEOUT_SECONDS="1")
    config = ["-c", f"{service}/gunicorn.conf.py"]
    with gunicorn_process(f"{service}:create_app()", environ, worker=config, workers=workers) as server:
        host, port = server.url.removeprefix("http://").split(":")
        head = "".join(f"{k}: {v}\r\n" for k, v in bearer("542738228948500499").items())
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(
                f"POST {create_path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Type: application/json\r\n"
                f"Content-Length: 1000\r\n\r\n{{".encode()
            )
            started, answer = time.monotonic(), b""
            conn.settimeout(0.3)
            while b"\r\n\r\n" not in answer and time.monotonic() - started < 5:
                try:
                    answer += conn.recv(65536)
                except TimeoutError:
                    conn.sendall(b" ")  # one more byte, never the whole body
            answered_after = time.monotonic() - started
            head_text, _, body = answer.partition(b"\r\n\r\n")
            assert head_text.startswith(b"HTTP/1.1 408"), answer[:200]
            assert 0.9 < answered_after < 3
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head_text.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            while len(body) < length:
                body += conn.recv(65536)
            assert json.loads(body)["code"] == 408

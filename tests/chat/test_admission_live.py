"""Admission control on a live chat_service: sockets open while every slot is taken, and under the
production gunicorn config (gevent) many requests share one slot without one failing."""

from __future__ import annotations

import concurrent.futures

import requests

import shared.admission
from shared.auth import mint_token
from tests.conftest import ALICE, SECRET, base_environ
from tests.processes import gunicorn_process


def bearer(user: str = ALICE) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, config={'JWT_SECRET': SECRET})}"}


def test_a_socket_opens_while_every_slot_is_taken(live_chat_factory, open_socket):
    base, app = live_chat_factory(ADMISSION_MAX_IN_FLIGHT="1", ADMISSION_TIMEOUT_SECONDS="0.3")
    session = requests.post(f"{base}/api/chat/session", json={}, headers=bearer(), timeout=5)
    sid = session.json()["data"]["session_id"]
    with app.app_context():
        slots = shared.admission.current().slots
    assert slots.acquire(0)  # as a request in flight would
    try:
        socket = open_socket(base, sid, ready=True)  # a pong: checked and subscribed, not queued
        socket.send({"type": "message", "content": "hello"})
        assert socket.until("assistant_message")[-1]["data"]["content"] == "hello"
        refused = requests.get(f"{base}/api/chat/sessions/{sid}", headers=bearer(), timeout=5)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
    finally:
        slots.release()
    assert requests.get(f"{base}/api/chat/sessions/{sid}", headers=bearer(), timeout=5).status_code == 200


def test_under_gevent_requests_beyond_the_bound_wait_their_turn(clean_chat_database):
    environ = base_environ(clean_chat_database, ADMISSION_MAX_IN_FLIGHT="1")
    config = ["-c", "chat_service/gunicorn.conf.py"]
    with gunicorn_process("chat_service:create_app()", environ, worker=config) as server:
        created = requests.post(f"{server.url}/api/chat/session", json={}, headers=bearer(), timeout=5)
        url = f"{server.url}/api/chat/sessions/{created.json()['data']['session_id']}"

        def get(_n: int) -> int:
            return requests.get(url, headers=bearer(), timeout=10).status_code

        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            statuses = list(pool.map(get, range(200)))
    assert statuses == [200] * 200

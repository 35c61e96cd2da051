"""Hostile inputs against both services under their production gunicorn configs (real sockets): a chunked
body over the limit is 413, deep nesting 400, a lone surrogate 1001, odd tokens and handshakes are
refused in the envelope; never a 500, and never raw bytes written into a socket."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import ALICE, base_environ
from tests.live import Socket
from tests.processes import gunicorn_process

ODD_TOKEN = "eyJhbGciOlsiSFMyNTYiXX0.e30.AAAA"
CREATE = {"chat": "/api/chat/session", "conversation": "/api/ai/conversation"}


@pytest.fixture(scope="module")
def servers(chat_database, conversation_database):
    """Both services, each under its own gunicorn.conf.py."""
    with (
        gunicorn_process(
            "chat_service:create_app()",
            base_environ(chat_database, ECHO_DELAY_SECONDS="0.01"),
            worker=["-c", "chat_service/gunicorn.conf.py"],
        ) as chat,
        gunicorn_process(
            "conversation_service:create_app()",
            base_environ(conversation_database),
            worker=["-c", "conversation_service/gunicorn.conf.py"],
        ) as conversation,
    ):
        yield {"chat": chat.url, "conversation": conversation.url}


def _headers(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(ALICE)}", "Content-Type": "application/json"}


def _envelope(response: requests.Response, status: int, code: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert list(body) == ["code", "message", "data", "timestamp", "traceId"]
    assert body["code"] == code, body
    return body["data"]


def _chunks(body: bytes, size: int = 65536):
    """A body sent chunked (a generator: requests sends no Content-Length)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_a_chunked_body_over_one_mib_is_413(servers, token, service):
    body = b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = requests.post(
        servers[service] + CREATE[service], data=_chunks(body), headers=_headers(token), timeout=30
    )
    _envelope(response, 413, 413)


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_a_chunked_body_under_the_limit_is_read(servers, token, service):
    body = b'{"title": "chunked"' + b" " * 300_000 + b"}"
    response = requests.post(
        servers[service] + CREATE[service], data=_chunks(body), headers=_headers(token), timeout=30
    )
    assert _envelope(response, 200, 200)["title"] == "chunked"


@pytest.mark.parametrize("service", ["chat", "conversation"])
@pytest.mark.parametrize(
    "raw, status, code",
    [(b"[" * 100_000, 400, 400), (b'{"title": "\\ud800"}', 400, 1001), (b'{"title": "a\\u0000"}', 400, 1001)],
    ids=["deep", "surrogate", "nul"],
)
def test_hostile_bodies(servers, token, service, raw, status, code):
    response = requests.post(
        servers[service] + CREATE[service], data=raw, headers=_headers(token), timeout=30
    )
    _envelope(response, status, code)


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_a_token_with_an_odd_header_is_401(servers, service):
    path = "/api/chat/sessions/x" if service == "chat" else "/api/ai/conversation/list"
    response = requests.get(
        servers[service] + path, headers={"Authorization": f"Bearer {ODD_TOKEN}"}, timeout=10
    )
    _envelope(response, 401, 401)


def test_the_socket_refuses_an_odd_token_with_an_error_frame(servers, token):
    created = requests.post(servers["chat"] + CREATE["chat"], json={}, headers=_headers(token), timeout=10)
    sid = created.json()["data"]["session_id"]
    socket = Socket(servers["chat"].replace("http", "ws", 1) + f"/ws/{sid}?token={ODD_TOKEN}")
    try:
        frame = socket.next()
        assert (frame["type"], frame["code"]) == ("error", 401)
        assert socket.closed_with() == 4401
    finally:
        socket.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"},
        {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "8",
         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    ],
    ids=["no-key", "version-8"],
)  # fmt: skip
def test_a_malformed_handshake_is_400(servers, token, headers):
    response = requests.get(
        servers["chat"] + f"/ws/00000000-0000-0000-0000-000000000000?token={token(ALICE)}",
        headers=headers,
        timeout=10,
    )
    _envelope(response, 400, 400)


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_many_header_fields_reach_the_app_not_gunicorns_html_431(servers, token, service):
    """gunicorn's own limit is 100 fields (an HTML 431 the gateway cannot rewrite: nginx does not count
    fields); the configs raise it to gunicorn's maximum, so the gateway's byte bound refuses first."""
    headers = {**_headers(token), **{f"X-Field-{n}": "v" for n in range(150)}}
    response = requests.get(servers[service] + "/api/chat/sessions/x", headers=headers, timeout=10)
    assert response.headers["Content-Type"] == "application/json", response.text[:200]
    assert response.status_code in (400, 404)

"""/ws/<session_id>: a malformed handshake or a hostile frame is an envelope error, never a 500."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from tests.chat.test_ws import create_session
from tests.live import Socket

ODD_TOKEN = "eyJhbGciOlsiSFMyNTYiXX0.e30.AAAA"  # the JOSE header's `alg` is a list
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": KEY,
}


@pytest.fixture
def live(live_chat_factory):
    return live_chat_factory()[0]


def _envelope(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:200])
    body = response.json()
    assert list(body) == ["code", "message", "data", "timestamp", "traceId"]
    assert body["code"] == status
    return body["data"]


@pytest.mark.parametrize(
    "change",
    [
        {"Sec-WebSocket-Key": None},
        {"Sec-WebSocket-Key": ""},
        {"Sec-WebSocket-Key": "not base64!"},
        {"Sec-WebSocket-Key": base64.b64encode(b"too short").decode()},
        {"Sec-WebSocket-Version": "8"},
        {"Sec-WebSocket-Version": None},
        {"Sec-WebSocket-Version": "13, 8"},
        {"Upgrade": None, "Connection": None},
        {"Upgrade": "h2c"},
    ],
    ids=[
        "no-key",
        "empty-key",
        "key-not-base64",
        "key-not-16-bytes",
        "version-8",
        "no-version",
        "two-versions",
        "no-upgrade",
        "other-upgrade",
    ],
)
def test_a_malformed_handshake_is_400_in_the_envelope(live, token, change):
    sid = create_session(live, token)
    headers = {**UPGRADE, "Authorization": f"Bearer {token()}"}
    for name, value in change.items():
        headers.pop(name) if value is None else headers.__setitem__(name, value)
    if "Upgrade" not in headers:
        headers["Connection"] = "keep-alive"
    response = requests.get(f"{live}/ws/{sid}", headers=headers, timeout=5)
    assert _envelope(response, 400)["detail"]


@pytest.mark.parametrize("where", ["query", "header", "subprotocol"])
def test_a_token_with_an_odd_jose_header_is_refused_like_any_bad_token(live, token, where):
    sid = create_session(live, token)
    url = live.replace("http", "ws", 1) + f"/ws/{sid}"
    kwargs: dict = {"headers": {}}
    if where == "query":
        url += f"?token={ODD_TOKEN}"
    elif where == "header":
        kwargs["headers"] = {"Authorization": f"Bearer {ODD_TOKEN}"}
    else:
        kwargs["subprotocols"] = ["bearer", ODD_TOKEN]
    socket = Socket(url, **kwargs)
    try:
        frame = socket.next()
        assert (frame["type"], frame["code"]) == ("error", 401)
        assert socket.closed_with() == 4401
    finally:
        socket.close()


@pytest.mark.parametrize(
    "raw, code",
    [
        ('{"type": "message", "content": "a\\ud800b"}', 1001),
        ('{"type": "message", "content": "a\\u0000b"}', 1001),
        ('{"type": "message\\udfff"}', 1001),
        ("[" * 100_000, 400),
        ('{"type": "message", "content": ' + "[" * 50_000, 400),
        ('{"type": "ping", "x": 1' + "0" * 5000 + "}", 400),
    ],
    ids=["surrogate-content", "nul-content", "surrogate-type", "deep-array", "deep-content", "long-number"],
)
def test_a_hostile_frame_is_an_error_frame_and_the_socket_stays_open(live, token, open_socket, raw, code):
    sid = create_session(live, token)
    socket = open_socket(live, sid, ready=True)
    socket.send(raw)
    frame = socket.next()
    assert (frame["type"], frame["code"]) == ("error", code), frame
    if code == 1001:
        assert set(frame["data"]["errors"]) <= {"content", "type"}, frame
    socket.send({"type": "ping"})
    assert socket.next()["type"] == "pong"
    socket.send(json.dumps({"type": "message", "content": "still here"}))
    assert socket.until("assistant_message")[-1]["data"]["content"] == "still here"

"""/ws/<session_id>: the live chat socket with the offline echo provider."""

from __future__ import annotations

import time

import pytest
import requests

from chat_service import live as live_path
from chat_service.extensions import db
from tests.conftest import ALICE, BOB
from tests.live import Socket

UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"


def rest(base_url, token, method, path, **kwargs):
    return requests.request(
        method, base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=5, **kwargs
    )


def create_session(base_url, token, user=ALICE) -> str:
    return rest(base_url, token(user), "POST", "/api/chat/session", json={}).json()["data"]["session_id"]


def stored_messages(base_url, token, sid) -> list[dict]:
    return rest(base_url, token(), "GET", f"/aichat/sessions/{sid}/messages").json()["data"]["items"]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def live(live_chat_factory):
    return live_chat_factory()[0]


# --- the handshake and who may open a socket ------------------------------------------------------


def test_a_turn_streams_the_reply_and_stores_both_messages(live, token, open_socket):
    sid = create_session(live, token)
    socket = open_socket(live, sid)
    socket.send({"type": "message", "content": "how do I learn Python"})
    frames = socket.until("assistant_message")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "user_message" and kinds[-1] == "assistant_message"
    deltas = [f for f in frames if f["type"] == "delta"]
    assert len(deltas) >= 4
    assert "".join(d["data"]["content"] for d in deltas) == "how do I learn Python"
    assert [d["data"]["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    reply = frames[-1]["data"]
    assert reply["content"] == "how do I learn Python" and reply["role"] == "assistant"
    assert reply["stopped"] is False
    for frame in frames:
        assert list(frame) == ["type", "code", "message", "data", "timestamp", "traceId"]
    stored = stored_messages(live, token, sid)
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "how do I learn Python"),
        ("assistant", "how do I learn Python"),
    ]


@pytest.mark.parametrize(
    ("make_headers", "code", "close"),
    [
        (lambda token: {}, 401, 4401),
        (lambda token: {"Authorization": "Bearer forged"}, 401, 4401),
        (lambda token: {"Authorization": f"Bearer {token(BOB)}"}, 403, 4403),
    ],
    ids=["no-token", "bad-token", "another-users-session"],
)
def test_refused_sockets_get_an_error_frame_and_a_close_code(
    live, token, open_socket, make_headers, code, close
):
    sid = create_session(live, token)
    socket = open_socket(live, sid, headers=make_headers(token))
    frame = socket.next()
    assert (frame["type"], frame["code"]) == ("error", code)
    assert socket.closed_with() == close


def test_unknown_and_malformed_sessions_are_refused(live, token, open_socket):
    unknown = open_socket(live, UNKNOWN)
    assert (unknown.next()["code"], unknown.closed_with()) == (7001, 4404)
    malformed = open_socket(live, "not-a-uuid")
    assert (malformed.next()["code"], malformed.closed_with()) == (400, 4400)


def test_a_deleted_session_is_refused(live, token, open_socket):
    sid = create_session(live, token)
    rest(live, token(), "DELETE", f"/api/chat/sessions/{sid}")
    socket = open_socket(live, sid)
    assert socket.next()["code"] == 7001


def test_token_from_the_subprotocol_pair_or_the_query(live, token, open_socket):
    sid = create_session(live, token)
    by_protocol = open_socket(live, sid, headers={}, subprotocols=["bearer", token()])
    assert by_protocol.client.subprotocol == "bearer"
    by_protocol.send({"type": "ping"})
    assert by_protocol.next()["type"] == "pong"
    by_query = Socket(live.replace("http", "ws") + f"/ws/{sid}?token={token()}")
    try:
        by_query.send({"type": "ping"})
        assert by_query.next()["type"] == "pong"
    finally:
        by_query.close()


def handshake(base_url, path, headers) -> requests.Response:
    """A WebSocket upgrade request, to see how the server answers the handshake itself."""
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    return requests.get(base_url + path, headers=upgrade | headers, timeout=5)


def test_a_cross_site_origin_is_refused_at_the_handshake(live, token, open_socket):
    sid = create_session(live, token)
    refused = handshake(
        live, f"/ws/{sid}", {"Authorization": f"Bearer {token()}", "Origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == 403
    # simple-websocket's client sends `Host: 127.0.0.1` (no port): that origin is the same one.
    same_origin = {"Authorization": f"Bearer {token()}", "Origin": "http://127.0.0.1"}
    socket = open_socket(live, sid, headers=same_origin)
    socket.send({"type": "ping"})
    assert socket.next()["type"] == "pong"


def test_allowed_origins_are_configurable(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(WS_ALLOWED_ORIGINS="https://app.example, https://admin.example")
    sid = create_session(base, token)
    socket = open_socket(
        base, sid, headers={"Authorization": f"Bearer {token()}", "Origin": "https://app.example"}
    )
    socket.send({"type": "ping"})
    assert socket.next()["type"] == "pong"
    assert handshake(base, f"/ws/{sid}", {"Origin": base}).status_code == 403


# --- frames the client gets wrong -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", 400),
        ('{"type": "dance"}', 1001),
        ('["message"]', 1001),
        ('{"type": "message", "content": ""}', 1001),
        ('{"type": "message", "content": "   "}', 1001),
        ('{"type": "message"}', 1001),
        ('{"type": "message", "content": 5}', 1001),
        ('{"type": "message", "content": "x", "role": "system"}', 1001),
    ],
)
def test_bad_frames_get_an_error_and_the_socket_stays_usable(live, token, open_socket, raw, code):
    sid = create_session(live, token)
    socket = open_socket(live, sid)
    socket.send(raw)
    frame = socket.next()
    assert (frame["type"], frame["code"]) == ("error", code)
    socket.send({"type": "ping"})
    assert socket.next()["type"] == "pong"
    assert stored_messages(live, token, sid) == []


def test_binary_frames_are_refused(live, token, open_socket):
    sid = create_session(live, token)
    socket = open_socket(live, sid)
    socket.client.send(b"\x00\x01")
    assert socket.next()["code"] == 400


def test_an_oversized_frame_closes_the_socket_with_1009(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(WS_MAX_MESSAGE_SIZE="1000")
    sid = create_session(base, token)
    socket = open_socket(base, sid)
    socket.send({"type": "message", "content": "x" * 5000})
    assert socket.closed_with() == 1009


# --- turns ------------------------------------------------------------------------------------------


def test_a_second_message_during_a_turn_is_refused_with_1004(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(ECHO_DELAY_SECONDS="0.2")
    sid = create_session(base, token)
    socket = open_socket(base, sid)
    socket.send({"type": "message", "content": "one two three four"})
    socket.until("user_message")
    socket.send({"type": "message", "content": "too soon"})
    error = socket.until("error")[-1]
    assert error["code"] == 1004
    socket.until("assistant_message")
    assert [m["content"] for m in stored_messages(base, token, sid)] == ["one two three four"] * 2


def test_stop_ends_the_turn_and_stores_what_came(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(ECHO_DELAY_SECONDS="0.2")
    sid = create_session(base, token)
    socket = open_socket(base, sid)
    socket.send({"type": "message", "content": "a b c d e f g h i j"})
    socket.until("delta")
    socket.send({"type": "stop"})
    frames = socket.until("assistant_message")
    reply = frames[-1]["data"]
    assert reply["stopped"] is True
    assert "a b c d e f g h i j".startswith(reply["content"]) and reply["content"] != "a b c d e f g h i j"
    assert stored_messages(base, token, sid)[-1]["content"] == reply["content"]
    # The session is free again.
    socket.send({"type": "message", "content": "next"})
    assert socket.until("assistant_message")[-1]["data"]["content"] == "next"


def test_stop_without_a_turn_is_1004(live, token, open_socket):
    sid = create_session(live, token)
    socket = open_socket(live, sid)
    socket.send({"type": "stop"})
    assert socket.next()["code"] == 1004


def test_the_reply_outlives_the_socket_that_asked(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(ECHO_DELAY_SECONDS="0.05")
    sid = create_session(base, token)
    sender = open_socket(base, sid)
    sender.send({"type": "message", "content": "one two three four five six"})
    sender.until("delta")
    sender.close()
    stored = wait_for(lambda: [m for m in stored_messages(base, token, sid) if m["role"] == "assistant"])
    assert stored[0]["content"] == "one two three four five six"


def test_a_socket_opened_mid_turn_gets_turn_state_then_the_rest(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(ECHO_DELAY_SECONDS="0.1")
    sid = create_session(base, token)
    text = "alpha beta gamma delta epsilon zeta eta theta"
    sender = open_socket(base, sid)
    sender.send({"type": "message", "content": text})
    sender.until("delta")
    sender.until("delta")
    late = open_socket(base, sid)
    state = late.next()
    assert state["type"] == "turn_state"
    assert text.startswith(state["data"]["content"]) and state["data"]["seq"] >= 2
    frames = late.until("assistant_message")
    rest_of_it = "".join(f["data"]["content"] for f in frames if f["type"] == "delta")
    assert state["data"]["content"] + rest_of_it == text
    assert frames[-1]["data"]["content"] == text


def test_every_socket_of_the_session_sees_every_frame(live, token, open_socket):
    sid, other = create_session(live, token), create_session(live, token)
    first, second = open_socket(live, sid, ready=True), open_socket(live, sid, ready=True)
    elsewhere = open_socket(live, other, ready=True)
    first.send({"type": "message", "content": "hello there you all"})
    assert [f["type"] for f in first.until("assistant_message")] == [
        f["type"] for f in second.until("assistant_message")
    ]
    elsewhere.send({"type": "ping"})
    assert elsewhere.next()["type"] == "pong"


def test_rest_changes_reach_open_sockets_and_deleting_closes_them(live, token, open_socket):
    sid = create_session(live, token)
    socket = open_socket(live, sid, ready=True)
    posted = rest(live, token(), "POST", "/api/chat/message", json={"session_id": sid, "content": "via REST"})
    mid = posted.json()["data"]["message_id"]
    assert socket.next()["type"] == "user_message"
    rest(live, token(), "PATCH", f"/api/chat/messages/{mid}", json={"new_content": "edited"})
    assert socket.next()["data"]["content"] == "edited"
    rest(live, token(), "DELETE", f"/api/chat/messages/{mid}")
    assert socket.next()["type"] == "message_deleted"
    rest(live, token(), "PATCH", f"/api/chat/sessions/{sid}", json={"new_title": "renamed"})
    assert socket.next()["data"]["title"] == "renamed"
    rest(live, token(), "DELETE", f"/api/chat/sessions/{sid}")
    assert socket.next()["type"] == "session_deleted"
    assert socket.closed_with() == 1000


def test_open_sockets_hold_no_database_connection(live_chat_factory, token, open_socket):
    """More sockets than the pool has connections, and REST still answers at once."""
    base, app = live_chat_factory(DB_POOL_SIZE="2", DB_MAX_OVERFLOW="3")  # SQLite keeps its 5 + 10
    sid = create_session(base, token)
    sockets = [open_socket(base, sid, ready=True) for _ in range(20)]
    sockets[0].send({"type": "message", "content": "a reply streams to all twenty sockets"})
    response = rest(base, token(), "GET", f"/api/chat/sessions/{sid}")
    assert response.status_code == 200
    for socket in sockets:
        socket.until("assistant_message")
    with app.app_context():  # the background work after a reply (title, outbox) returns its connection
        assert wait_for(lambda: db.engine.pool.checkedout() == 0 or None, timeout=3)


def test_sockets_and_turns_are_counted_in_metrics(live_chat_factory, token, open_socket):
    from prometheus_client import REGISTRY

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    base, _app = live_chat_factory(ECHO_DELAY_SECONDS="0.2")
    sid = create_session(base, token)
    sockets_before = sample("ws_open_sockets")
    completed = sample("ai_turns_total", provider="echo", outcome="completed")
    stopped = sample("ai_turns_total", provider="echo", outcome="stopped")
    first_tokens = sample("ai_time_to_first_token_seconds_count", provider="echo")
    socket = open_socket(base, sid, ready=True)
    assert sample("ws_open_sockets") == sockets_before + 1
    socket.send({"type": "message", "content": "one"})
    socket.until("assistant_message")
    socket.send({"type": "message", "content": "a b c d e f g"})
    socket.until("delta")
    socket.send({"type": "stop"})
    socket.until("assistant_message")
    assert sample("ai_turns_total", provider="echo", outcome="completed") == completed + 1
    assert sample("ai_turns_total", provider="echo", outcome="stopped") == stopped + 1
    assert sample("ai_time_to_first_token_seconds_count", provider="echo") == first_tokens + 2
    socket.close()
    wait_for(lambda: sample("ws_open_sockets") == sockets_before)


def test_a_database_failure_while_checking_a_socket_is_told_in_an_error_frame(tmp_path, token):
    from chat_service import create_app
    from tests.conftest import base_environ
    from tests.live import serve

    app = create_app(base_environ(f"sqlite:///{tmp_path}/missing/dir/chat.sqlite3"))
    with serve(app) as base:
        socket = Socket(
            base.replace("http", "ws") + f"/ws/{UNKNOWN}", headers={"Authorization": f"Bearer {token()}"}
        )
        try:
            frame = socket.next()
            assert (frame["type"], frame["code"]) == ("error", 12001)
            assert socket.closed_with() == 1011
        finally:
            socket.close()
    live_path.of(app).close()


def test_a_reply_that_comes_faster_than_it_is_sent_arrives_in_fewer_larger_deltas(
    live_chat_factory, token, open_socket
):
    """The echo with no delay is a provider faster than the relay: its 300 pieces are coalesced into a
    few deltas (arrivals.py), each numbered, joining to the whole reply, which is stored whole."""
    base, _app = live_chat_factory(ECHO_DELAY_SECONDS="0", TITLE_GENERATION="false")
    question = " ".join(f"word{i}" for i in range(300))
    sid = create_session(base, token)
    socket = open_socket(base, sid)
    socket.send({"type": "message", "content": question})
    frames = socket.until("assistant_message")
    deltas = [f for f in frames if f["type"] == "delta"]
    assert 1 <= len(deltas) < 300
    assert "".join(d["data"]["content"] for d in deltas) == question
    assert [d["data"]["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert frames[-1]["data"]["content"] == question

"""HTTP and a WebSocket turn through a real nginx running the gateway config that compose mounts."""

from __future__ import annotations

import http.client
import json
import logging
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import ALICE
from tests.gateway.nginx import access_log_entries, check_config, free_port, run_gateway
from tests.live import Socket

GOOD = "5d0b8880becc47f5870b57aa3cef3a0c"
UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"
ENVELOPE = ["code", "message", "data", "timestamp", "traceId"]


def call(gateway, token, method, path, *, user=ALICE, headers=None, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token(user)}", **(headers or {})}
    return requests.request(method, gateway + path, headers=headers, timeout=10, **kwargs)


def raw_call(gateway, method, path, headers, source="127.0.0.1") -> tuple[int, bytes]:
    """A request sent exactly as written (no client-side path normalising), from a chosen address."""
    address = urlsplit(gateway)
    connection = http.client.HTTPConnection(
        address.hostname, address.port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def assert_gateway_error(response: requests.Response, status: int) -> dict:
    """An error the gateway answers itself: the services' envelope, with the request's traceId."""
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ENVELOPE
    assert body["code"] == status and body["data"]["detail"]
    assert len(body["traceId"]) == 32 and body["traceId"] == response.headers["X-Trace-Id"]
    assert body["timestamp"] > 1_600_000_000_000
    return body


def test_the_rendered_config_passes_nginx_t(nginx, tmp_path):
    result = check_config(
        nginx, tmp_path, {"CHAT_UPSTREAM": "127.0.0.1:1", "CONVERSATION_UPSTREAM": "127.0.0.1:2"}
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# --- REST through the gateway ------------------------------------------------------------------------


def test_chat_rest_and_view_routes_pass_through_with_the_trace_id(gateway, token):
    created = call(
        gateway, token, "POST", "/api/chat/session", json={"title": "网关"}, headers={"X-Trace-Id": GOOD}
    )
    assert created.status_code == 200
    body = created.json()
    assert list(body) == ENVELOPE and body["code"] == 200 and body["message"] == "success"
    assert body["traceId"] == GOOD == created.headers["X-Trace-Id"]
    sid = body["data"]["session_id"]

    view = call(gateway, token, "GET", f"/aichat/sessions/{sid}")
    assert view.status_code == 200
    assert view.json()["data"]["session"]["title"] == "网关"


def test_conversation_routes_pass_through_with_the_trace_id(gateway, token):
    created = call(
        gateway, token, "POST", "/api/ai/conversation", json={"title": "经网关"}, headers={"X-Trace-Id": GOOD}
    )
    assert created.status_code == 200
    body = created.json()
    assert body["message"] == "操作成功" and body["traceId"] == GOOD == created.headers["X-Trace-Id"]
    listed = call(gateway, token, "GET", "/api/ai/conversation/list")
    assert [record["title"] for record in listed.json()["data"]] == ["经网关"]


def test_a_w3c_traceparent_reaches_the_service(gateway, token):
    response = call(
        gateway,
        token,
        "GET",
        "/api/ai/conversation/list",
        headers={"traceparent": f"00-{GOOD}-00f067aa0ba902b7-01"},
    )
    assert response.json()["traceId"] == GOOD


def test_without_a_trace_id_the_gateways_request_id_is_the_one_trace(gateway, token, gateway_prefix):
    response = call(gateway, token, "GET", "/api/chat/sessions/123e4567-e89b-12d3-a456-426614174000")
    assert response.status_code == 404 and response.json()["code"] == 7001
    trace_id = response.json()["traceId"]
    [line] = access_log_entries(gateway_prefix, lambda entry: entry["traceId"] == trace_id)
    assert line["status"] == 404 and line["uri"].startswith("/api/chat/sessions/") and line["upstream"]


@pytest.mark.parametrize(
    "path",
    [
        f"/api/chat/sessions/{UNKNOWN}",
        f"/aichat/sessions/{UNKNOWN}",
        f"/ws/{UNKNOWN}",
        "/api/ai/conversation",
        "/api/ai/conversation/list",
    ],
)
def test_every_route_forwards_the_clients_address_and_trace_id(gateway, token, caplog, path):
    """X-Forwarded-For and X-Trace-Id reach the service on every location (TRUSTED_PROXIES=1, as compose)."""
    caplog.set_level(logging.INFO, logger="access")
    trace_id = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {token()}", "X-Trace-Id": trace_id}
    try:
        status, _body = raw_call(gateway, "GET", path, headers, source="127.0.0.2")
    except OSError as error:
        pytest.skip(f"cannot send from 127.0.0.2 on this machine: {error}")
    assert status in (200, 400, 404, 405)
    [access] = [r for r in caplog.records if r.name == "access" and r.traceId == trace_id]
    # nginx connects to the service from 127.0.0.1; the client came from 127.0.0.2.
    assert access.remote_addr == "127.0.0.2" and access.path == path


def test_a_browser_socket_from_the_gateways_own_origin_is_accepted(gateway, token):
    """The same-origin check sees the Host the browser used (port included) through the gateway."""
    sid = call(gateway, token, "POST", "/api/chat/session", json={}).json()["data"]["session_id"]
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    upgrade["Authorization"] = f"Bearer {token()}"
    with requests.get(
        f"{gateway}/ws/{sid}", headers=upgrade | {"Origin": gateway}, timeout=10, stream=True
    ) as same:
        assert same.status_code == 101
    foreign = requests.get(
        f"{gateway}/ws/{sid}", headers=upgrade | {"Origin": "https://evil.example"}, timeout=10
    )
    assert foreign.status_code == 403 and foreign.json()["code"] == 403


# --- what the gateway refuses itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/internal/ai/conversation/dify/abc",
        "/api/chat/../../internal/ai/conversation/dify/abc",
        "/api/ai/conversation/%2e%2e/%2e%2e/%2e%2e/internal/ai/conversation/dify/abc",
        "/api/ai/conversation/..%2f..%2f..%2finternal/ai/conversation/dify/abc",
        "/internal/ai/conversation/chat/123e4567-e89b-12d3-a456-426614174000",
        "/internal/chat/sessions/123e4567-e89b-12d3-a456-426614174000/sync",
        "/api/chat/../../internal/chat/sessions/123e4567-e89b-12d3-a456-426614174000/sync",
        "/healthz",
        "/metrics",
        "/",
    ],
)
def test_internal_and_unrouted_paths_are_not_reachable(gateway, token, path):
    service_call = {"Authorization": f"Bearer {token(ALICE, service=True)}", "X-User-Id": ALICE,
                    "Content-Type": "application/json", "Content-Length": "2"}  # fmt: skip
    status, body = raw_call(gateway, "PUT", path, service_call)
    assert status == 404 and json.loads(body)["code"] == 404
    listed = call(gateway, token, "GET", "/api/ai/conversation/list").json()["data"]
    assert not [record for record in listed if record["difyConversationId"] == "abc"]


def test_unknown_paths_answer_the_envelope_with_the_clients_trace_id(gateway):
    response = requests.get(
        gateway + "/internal/ai/conversation/dify/x", headers={"X-Trace-Id": GOOD}, timeout=10
    )
    assert assert_gateway_error(response, 404)["traceId"] == GOOD


def test_a_body_over_one_mib_is_refused_at_the_gateway(gateway, token):
    response = call(gateway, token, "POST", "/api/chat/message", data=b"x" * (1024 * 1024 + 1),
                    headers={"Content-Type": "application/json"})  # fmt: skip
    assert_gateway_error(response, 413)


def test_an_import_may_be_larger_than_one_mib_through_the_gateway(gateway, token):
    """POST /api/chat/import takes up to IMPORT_MAX_BYTES: the gateway passes a 2 MiB export on whole,
    and chat_service itself judges it (here a 1001 for its first line, not the gateway's 413)."""
    body = b'{"type": "export"}\n' + b" " * (2 * 1024 * 1024)
    response = call(gateway, token, "POST", "/api/chat/import", data=body,
                    headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert response.status_code != 413, response.text[:300]
    assert response.json()["code"] == 1001


def test_an_unreachable_service_is_a_502_envelope(nginx, services, tmp_path, token):
    upstreams = services | {"CONVERSATION_UPSTREAM": f"127.0.0.1:{free_port()}"}
    with run_gateway(nginx, tmp_path, upstreams) as gateway:
        response = call(gateway, token, "GET", "/api/ai/conversation/list", headers={"X-Trace-Id": GOOD})
        assert assert_gateway_error(response, 502)["traceId"] == GOOD
        assert call(gateway, token, "POST", "/api/chat/session", json={}).status_code == 200


# --- a WebSocket turn ------------------------------------------------------------------------------


def test_a_websocket_turn_streams_through_the_gateway(gateway, token):
    sid = call(gateway, token, "POST", "/api/chat/session", json={}).json()["data"]["session_id"]
    socket = Socket(
        gateway.replace("http", "ws", 1) + f"/ws/{sid}", headers={"Authorization": f"Bearer {token()}"}
    )
    try:
        socket.send({"type": "message", "content": "through the gateway"})
        frames = socket.until("assistant_message")
    finally:
        socket.close()
    kinds = [frame["type"] for frame in frames]
    assert kinds[0] == "user_message" and kinds[-1] == "assistant_message" and "delta" in kinds
    deltas = "".join(frame["data"]["content"] for frame in frames if frame["type"] == "delta")
    assert deltas == frames[-1]["data"]["content"] == "through the gateway"
    stored = call(gateway, token, "GET", f"/aichat/sessions/{sid}/messages").json()["data"]["items"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "through the gateway"),
        ("assistant", "through the gateway"),
    ]

"""CORS through a real nginx running the gateway template, both ways it can be deployed.

- GATEWAY_CORS_ORIGINS set: the gateway answers preflights and adds the headers itself, to the
  services' answers and to its own errors; the services, told no Origin, add none.
- GATEWAY_CORS_ORIGINS empty: Origin and preflights pass through, and the services' CORS_ALLOWED_ORIGINS
  decides.

Both services here allow APP themselves too, so a response with two Access-Control-Allow-Origin headers
(which a browser refuses) would show.
"""

from __future__ import annotations

import pytest
import requests

from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from tests.conftest import base_environ
from tests.databases import clear_tables
from tests.gateway.conftest import host_port
from tests.gateway.nginx import run_gateway
from tests.live import serve

APP = "http://app.example:5173"  # allowed by the services and by the gateway
GATEWAY_ONLY = "https://gateway-only.example"  # allowed by the gateway alone
EVIL = "https://evil.example"
ENVELOPE = ["code", "message", "data", "timestamp", "traceId"]
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.fixture(scope="module")
def cors_services(chat_database, conversation_database):
    """Both services behind one trusted proxy, each allowing APP itself."""
    settings = {"TRUSTED_PROXIES": "1", "CORS_ALLOWED_ORIGINS": APP}
    conversation_app = create_conversation_app(base_environ(conversation_database, **settings))
    chat_app = create_chat_app(base_environ(chat_database, **settings))
    try:
        with serve(conversation_app) as conversation_url, serve(chat_app) as chat_url:
            yield {"CHAT_UPSTREAM": host_port(chat_url), "CONVERSATION_UPSTREAM": host_port(conversation_url)}
    finally:
        live.of(chat_app).close()
        with chat_app.app_context():
            clear_tables(chat_db, ["chat_messages", "chat_sessions", "chat_sync_outbox"])
            chat_db.engine.dispose()
        with conversation_app.app_context():
            clear_tables(
                conversation_db, ["ai_conversations", "conversation_sync_outbox", "conversation_user_counts"]
            )
            conversation_db.engine.dispose()


@pytest.fixture(scope="module")
def gateway_cors(nginx, cors_services, tmp_path_factory):
    """The gateway doing CORS for APP and GATEWAY_ONLY."""
    variables = {**cors_services, "GATEWAY_CORS_ORIGINS": f"{APP}, {GATEWAY_ONLY}"}
    with run_gateway(nginx, tmp_path_factory.mktemp("nginx-cors"), variables) as url:
        yield url


@pytest.fixture(scope="module")
def gateway_passing(nginx, cors_services, tmp_path_factory):
    """The gateway leaving CORS to the services."""
    variables = {**cors_services, "GATEWAY_CORS_ORIGINS": ""}
    with run_gateway(nginx, tmp_path_factory.mktemp("nginx-pass"), variables) as url:
        yield url


def send(base: str, method: str, path: str, headers=None, **kwargs) -> requests.Response:
    return requests.request(method, base + path, headers=headers or {}, timeout=10, **kwargs)


def preflight(base: str, path: str, origin: str, method: str = "POST", headers=None) -> requests.Response:
    sent = {"Origin": origin, "Access-Control-Request-Method": method, **(headers or {})}
    return send(base, "OPTIONS", path, sent)


def allow_origin(response: requests.Response) -> list[str]:
    """Every Access-Control-Allow-Origin header as sent (requests would join repeated ones)."""
    return response.raw.headers.getlist("Access-Control-Allow-Origin")


def cors_headers(response: requests.Response) -> list[str]:
    return [name for name in response.raw.headers if name.lower().startswith("access-control-")]


def assert_envelope(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ENVELOPE and body["code"] == status
    assert body["traceId"] == response.headers["X-Trace-Id"]
    return body["data"]


def bearer(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token()}"}


# --- the gateway does CORS -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/chat/session", "/aichat/createsession", "/api/ai/conversation", "/api/ai/conversation/1"]
)
def test_the_gateway_answers_a_preflight_from_a_listed_origin(gateway_cors, path):
    asked = {"Access-Control-Request-Headers": "authorization,content-type,x-trace-id"}
    response = preflight(gateway_cors, path, APP, headers=asked)
    assert response.status_code == 204 and response.content == b""
    assert allow_origin(response) == [APP]
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} == {
        m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")
    }
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-trace-id", "traceparent"} <= allowed
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert response.headers["Vary"] == "Origin"
    assert len(response.headers["X-Trace-Id"]) == 32
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_the_gateway_refuses_a_preflight_from_another_origin_in_the_envelope(gateway_cors):
    for origin in (EVIL, "null", "http://[::1", APP + "/", "http://app.example:51731", "app.example:5173"):
        response = preflight(gateway_cors, "/api/chat/session", origin)
        data = assert_envelope(response, 403)
        assert "GATEWAY_CORS_ORIGINS" in data["detail"]
        assert cors_headers(response) == [], origin


def test_every_answer_to_a_listed_origin_has_one_allow_origin(gateway_cors, token):
    """The services' answers, successes and errors, carry the gateway's header and none of their own."""
    origin = {"Origin": APP}
    created = send(gateway_cors, "POST", "/api/chat/session", origin | bearer(token), json={"title": "跨域"})
    assert created.status_code == 200 and allow_origin(created) == [APP]
    exposed = {h.strip() for h in created.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Trace-Id", "Retry-After", "RateLimit", "RateLimit-Policy"} <= exposed
    record = send(
        gateway_cors, "POST", "/api/ai/conversation", origin | bearer(token), json={"title": "跨域"}
    )
    assert record.status_code == 200 and allow_origin(record) == [APP]
    unauthenticated = send(gateway_cors, "GET", "/api/chat/sessions/x", origin)
    assert_envelope(unauthenticated, 401)
    assert allow_origin(unauthenticated) == [APP]
    # An origin only the gateway lists: the services would refuse it, the gateway's word stands.
    only = send(gateway_cors, "POST", "/api/chat/session", {"Origin": GATEWAY_ONLY} | bearer(token), json={})
    assert only.status_code == 200 and allow_origin(only) == [GATEWAY_ONLY]


def test_the_gateways_own_errors_carry_the_origin(gateway_cors, nginx, tmp_path):
    not_public = send(gateway_cors, "GET", "/internal/ai/conversation/dify/x", {"Origin": APP})
    assert_envelope(not_public, 404)
    assert allow_origin(not_public) == [APP] and not_public.headers["Vary"] == "Origin"
    # A preflight to a path the gateway does not route is that 404 too.
    unknown = preflight(gateway_cors, "/no/such/route", APP)
    assert_envelope(unknown, 404)
    assert allow_origin(unknown) == [APP]
    too_large = send(
        gateway_cors, "POST", "/api/chat/session", {"Origin": APP}, data=b"x" * (1024 * 1024 + 1)
    )
    assert_envelope(too_large, 413)
    assert allow_origin(too_large) == [APP]
    dead = {
        "CHAT_UPSTREAM": "127.0.0.1:1",
        "CONVERSATION_UPSTREAM": "127.0.0.1:1",
        "GATEWAY_CORS_ORIGINS": APP,
    }
    with run_gateway(nginx, tmp_path, dead) as gateway:
        unreachable = send(gateway, "GET", "/api/chat/sessions/x", {"Origin": APP})
        assert_envelope(unreachable, 502)
        assert allow_origin(unreachable) == [APP]
        assert cors_headers(send(gateway, "GET", "/api/chat/sessions/x", {"Origin": EVIL})) == []


def test_answers_to_other_origins_carry_no_cors_header(gateway_cors, token):
    for headers in ({"Origin": EVIL}, {}):
        response = send(gateway_cors, "POST", "/api/chat/session", headers | bearer(token), json={})
        assert response.status_code == 200 and cors_headers(response) == []


def test_a_plain_options_still_reaches_the_service(gateway_cors):
    plain = send(gateway_cors, "OPTIONS", "/api/chat/session", {"Origin": APP})
    assert_envelope(plain, 405)
    assert plain.headers["Allow"] == "POST" and allow_origin(plain) == [APP]


def test_a_socket_from_a_listed_origin_opens_through_the_gateway(gateway_cors, token):
    sid = send(gateway_cors, "POST", "/api/chat/session", bearer(token), json={}).json()["data"]["session_id"]
    headers = UPGRADE | bearer(token)
    for origin in (APP, GATEWAY_ONLY, gateway_cors):  # the gateway's own page's origin too
        with requests.get(
            f"{gateway_cors}/ws/{sid}", headers=headers | {"Origin": origin}, timeout=10, stream=True
        ) as accepted:
            assert accepted.status_code == 101, origin
    refused = requests.get(f"{gateway_cors}/ws/{sid}", headers=headers | {"Origin": EVIL}, timeout=10)
    assert refused.status_code == 403 and refused.json()["code"] == 403


def test_a_wildcard_lets_any_well_formed_origin_in(nginx, cors_services, tmp_path, token):
    with run_gateway(nginx, tmp_path, {**cors_services, "GATEWAY_CORS_ORIGINS": "*"}) as gateway:
        for origin in (EVIL, "null", "http://[::1]:3000", "capacitor://localhost"):
            response = preflight(gateway, "/api/chat/session", origin)
            assert response.status_code == 204 and allow_origin(response) == [origin], origin
            answer = send(gateway, "POST", "/api/chat/session", {"Origin": origin} | bearer(token), json={})
            assert allow_origin(answer) == [origin]
        for malformed in ("http://[::1", "evil.example", EVIL + "/x"):
            assert_envelope(preflight(gateway, "/api/chat/session", malformed), 403)


# --- the gateway leaves CORS to the services -----------------------------------------------------------


def test_without_gateway_origins_the_services_answer_preflights(gateway_passing):
    response = preflight(gateway_passing, "/api/chat/session", APP)
    assert response.status_code == 204
    assert allow_origin(response) == [APP]
    # The service's answer: the route's own methods, not the gateway's list.
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    refused = preflight(gateway_passing, "/api/ai/conversation", EVIL)
    data = assert_envelope(refused, 403)
    assert "not allowed to call this API" in data["detail"] and cors_headers(refused) == []
    # An origin the services do not list is theirs to refuse.
    assert_envelope(preflight(gateway_passing, "/api/chat/session", GATEWAY_ONLY), 403)


def test_without_gateway_origins_the_services_headers_pass_once(gateway_passing, token):
    created = send(gateway_passing, "POST", "/api/chat/session", {"Origin": APP} | bearer(token), json={})
    assert created.status_code == 200 and allow_origin(created) == [APP]
    assert "X-Trace-Id" in created.headers["Access-Control-Expose-Headers"]
    body = {"title": "跨域"}
    record = send(gateway_passing, "POST", "/api/ai/conversation", {"Origin": APP} | bearer(token), json=body)
    assert record.status_code == 200 and allow_origin(record) == [APP]
    assert cors_headers(send(gateway_passing, "GET", "/api/chat/sessions/x", {"Origin": EVIL})) == []
    # The gateway's own errors: it cannot know the services' list, so it adds nothing.
    not_public = send(gateway_passing, "GET", "/internal/x", {"Origin": APP})
    assert_envelope(not_public, 404)
    assert cors_headers(not_public) == []

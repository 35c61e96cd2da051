"""CORS on both services (shared.cors): preflights answered or refused in the envelope, and every answer
to an allowed origin, errors included, readable by its page; nothing of it for anyone else."""

from __future__ import annotations

import pytest
import requests

from chat_service import create_app as create_chat_app
from chat_service import live
from conversation_service import create_app as create_conversation_app
from shared.cors import ALLOWED_HEADERS, CorsPolicy, origin_problems
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ
from tests.live import serve

APP = "http://app.example:5173"
EVIL = "https://evil.example"
UNKNOWN_SESSION = "/api/chat/sessions/00000000-0000-4000-8000-000000000000"
# Per service: a route, the methods it takes, and a request that succeeds (method, path, body).
SERVICES = {
    "chat": ("/api/chat/sessions/<id>", UNKNOWN_SESSION, "DELETE, GET, HEAD, PATCH"),
    "conversation": ("/api/ai/conversation", "/api/ai/conversation", "POST, PUT"),
}
CREATE = {
    "chat": ("/api/chat/session", {"title": "跨域"}),
    "conversation": ("/api/ai/conversation", {"title": "跨域"}),
}


@pytest.fixture
def service_app(chat_database, conversation_database):
    """A service app with the given settings (in-process; pools closed afterwards)."""
    apps = []

    def make(service: str, **settings: str) -> ApiClient:
        create, url = (
            (create_chat_app, chat_database)
            if service == "chat"
            else (create_conversation_app, conversation_database)
        )
        app = create(base_environ(url, **settings))
        app.config["TESTING"] = True
        apps.append(app)
        return ApiClient(app, default_user=ALICE)

    yield make
    for app in apps:
        if "chat_service.live" in app.extensions:
            live.of(app).close()
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


def preflight(api: ApiClient, path: str, origin: str | None = APP, method: str = "POST", headers=None):
    """What a browser sends before a request with a token: no token of its own."""
    sent = {"Access-Control-Request-Method": method, **(headers or {})}
    if origin is not None:
        sent["Origin"] = origin
    return api.call("OPTIONS", path, user=None, headers=sent)


def cors_headers(response) -> dict[str, str]:
    return {name: value for name, value in response.headers if name.lower().startswith("access-control-")}


def assert_readable_by(response, origin: str) -> None:
    """An actual answer the page of `origin` may read, with the headers it needs."""
    assert response.headers.getlist("Access-Control-Allow-Origin") == [origin]
    exposed = {name.strip() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Trace-Id", "Retry-After", "RateLimit", "RateLimit-Policy"} <= exposed
    assert "Origin" in response.headers.get("Vary", "")
    assert "Access-Control-Allow-Credentials" not in response.headers


# --- preflights ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_a_preflight_from_an_allowed_origin_is_204_with_the_routes_methods(service_app, service):
    api = service_app(service, CORS_ALLOWED_ORIGINS=f"https://other.example, {APP}")
    _rule, path, methods = SERVICES[service]
    asked = {"Access-Control-Request-Headers": "authorization,content-type,x-trace-id,traceparent"}
    response = preflight(api, path, method=methods.split(", ")[-1], headers=asked)
    assert response.status_code == 204 and response.data == b""
    assert response.headers.getlist("Access-Control-Allow-Origin") == [APP]
    assert response.headers["Access-Control-Allow-Methods"] == methods
    allowed = {name.strip().lower() for name in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-trace-id", "traceparent"} <= allowed
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert response.headers["Vary"] == "Origin"
    assert len(response.headers["X-Trace-Id"]) == 32
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_the_preflight_cache_time_is_a_setting(service_app):
    api = service_app("chat", CORS_ALLOWED_ORIGINS=APP, CORS_MAX_AGE_SECONDS="86400")
    assert preflight(api, "/api/chat/session").headers["Access-Control-Max-Age"] == "86400"


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_a_preflight_from_another_origin_is_403_in_the_envelope_without_cors_headers(service_app, service):
    api = service_app(service, CORS_ALLOWED_ORIGINS=APP)
    response = preflight(api, SERVICES[service][1], origin=EVIL, method="GET")
    data = envelope(response, 403)
    assert EVIL in data["detail"] and "not allowed" in data["detail"]
    assert cors_headers(response) == {}


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_cors_is_off_by_default(service_app, service):
    """No setting: a preflight is told CORS is off; no answer carries any Access-Control-* header."""
    api = service_app(service)
    response = preflight(api, CREATE[service][0], method="POST")
    data = envelope(response, 403)
    assert "CORS_ALLOWED_ORIGINS" in data["detail"]
    assert cors_headers(response) == {}
    path, body = CREATE[service]
    created = api.post(path, json=body, headers={"Origin": APP})
    envelope(created, 200)
    assert cors_headers(created) == {} and "Vary" not in created.headers


@pytest.mark.parametrize("cors", ["", APP])
def test_a_plain_options_is_still_405_with_allow(service_app, cors):
    api = service_app("chat", CORS_ALLOWED_ORIGINS=cors)
    plain = api.call("OPTIONS", "/api/chat/session", user=None)
    envelope(plain, 405)
    assert plain.headers["Allow"] == "POST"
    # An Origin alone is no preflight either (a browser sends Access-Control-Request-Method with it).
    with_origin = api.call("OPTIONS", "/api/chat/session", user=None, headers={"Origin": APP})
    envelope(with_origin, 405)


def test_a_preflight_to_an_unknown_path_is_the_usual_404(service_app):
    api = service_app("chat", CORS_ALLOWED_ORIGINS=APP)
    response = preflight(api, "/api/chat/no/such/route")
    envelope(response, 404)
    assert response.get_json()["message"] == "资源不存在"
    # The page may read why: the 404 carries the origin like every error.
    assert response.headers["Access-Control-Allow-Origin"] == APP


def test_a_preflight_for_a_method_the_route_lacks_is_405_with_allow(service_app):
    api = service_app("chat", CORS_ALLOWED_ORIGINS=APP)
    response = preflight(api, "/api/chat/session", method="DELETE")
    data = envelope(response, 405)
    assert response.headers["Allow"] == "POST" and "DELETE" in data["detail"]
    assert "Access-Control-Allow-Methods" not in response.headers
    # Method names are case-sensitive: fetch sends "patch" as written, and no route takes it.
    envelope(preflight(api, UNKNOWN_SESSION, method="patch"), 405)


def test_a_preflight_asking_for_a_header_we_do_not_accept_is_403_naming_it(service_app):
    api = service_app("chat", CORS_ALLOWED_ORIGINS=APP)
    asked = {"Access-Control-Request-Headers": "authorization, x-user-id"}
    data = envelope(preflight(api, "/api/chat/session", headers=asked), 403)
    assert "x-user-id" in data["detail"]
    # Headers are names in any case.
    asked = {"Access-Control-Request-Headers": "AUTHORIZATION,Content-Type,TraceParent,Accept-Language"}
    assert preflight(api, "/api/chat/session", headers=asked).status_code == 204


def test_a_preflight_needs_no_token_and_counts_against_no_limit(service_app):
    """Preflights are answered before the blueprint's token check and rate limit (and admission)."""
    api = service_app("chat", CORS_ALLOWED_ORIGINS=APP, LIMIT_REQUESTS="1/minute")
    for _ in range(5):
        assert preflight(api, "/api/chat/session").status_code == 204
    assert api.get(UNKNOWN_SESSION).status_code == 404  # the one counted request left
    assert api.get(UNKNOWN_SESSION).status_code == 429


# --- actual requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_an_answer_to_an_allowed_origin_is_readable_by_its_page(service_app, service):
    api = service_app(service, CORS_ALLOWED_ORIGINS=APP)
    path, body = CREATE[service]
    response = api.post(path, json=body, headers={"Origin": APP})
    envelope(response, 200)
    assert_readable_by(response, APP)


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_error_envelopes_are_readable_by_the_page_too(service_app, service):
    api = service_app(service, CORS_ALLOWED_ORIGINS=APP, LIMIT_REQUESTS="2/minute")
    path = SERVICES[service][1] if service == "chat" else "/api/ai/conversation/1"
    origin = {"Origin": APP}
    unauthenticated = api.get(path, user=None, headers=origin)
    envelope(unauthenticated, 401)
    assert_readable_by(unauthenticated, APP)
    unknown_route = api.get("/api/nothing/here", headers=origin)
    envelope(unknown_route, 404)
    assert_readable_by(unknown_route, APP)
    missing = api.get(path, headers=origin)
    envelope(missing, 404, 7001 if service == "chat" else 7002)
    api.get(path, headers=origin)
    limited = api.get(path, headers=origin)
    envelope(limited, 429)
    assert_readable_by(limited, APP)
    assert limited.headers["Retry-After"] and limited.headers["RateLimit"]


@pytest.mark.parametrize("create", [create_chat_app, create_conversation_app])
def test_a_database_outage_is_readable_by_the_page(create):
    # Nothing listens on port 1: a 503 (12001) envelope, as every 5xx, carries the origin.
    app = create(base_environ("postgresql+psycopg://postgres@127.0.0.1:1/none", CORS_ALLOWED_ORIGINS=APP))
    path = UNKNOWN_SESSION if create is create_chat_app else "/api/ai/conversation/1"
    response = ApiClient(app, default_user=ALICE).get(path, headers={"Origin": APP})
    envelope(response, 503, 12001)
    assert_readable_by(response, APP)
    if "chat_service.live" in app.extensions:
        live.of(app).close()


def test_answers_to_other_origins_and_to_no_origin_carry_no_cors_headers(service_app):
    api = service_app("chat", CORS_ALLOWED_ORIGINS=APP)
    for headers in ({"Origin": EVIL}, {}):
        response = api.post("/api/chat/session", json={}, headers=headers)
        envelope(response, 200)
        assert cors_headers(response) == {}
        # The answer depends on Origin, so a cache must keep them apart.
        assert response.headers["Vary"] == "Origin"


@pytest.mark.parametrize(
    "origin",
    [
        "null",  # a sandboxed frame or a file: page
        APP + "/",
        APP + "/path",
        "http://app.example:5173.evil.example",
        "http://app.example",  # another port is another origin
        "https://app.example:5173",  # so is another scheme
        "http://[::1",
        "http://äpp.example",
        "app.example:5173",
        "",
        " ",
        "*",
        "http://user@app.example:5173",
    ],
)
def test_odd_origins_are_refused_and_never_a_500(service_app, origin):
    api = service_app("chat", CORS_ALLOWED_ORIGINS=APP)
    envelope(preflight(api, "/api/chat/session", origin=origin), 403)
    response = api.get(UNKNOWN_SESSION, headers={"Origin": origin})
    envelope(response, 404, 7001)
    assert cors_headers(response) == {}


def test_origins_match_in_any_case_and_are_echoed_as_sent(service_app):
    api = service_app("chat", CORS_ALLOWED_ORIGINS="HTTP://App.Example:5173")
    response = preflight(api, "/api/chat/session", origin=APP)
    assert response.status_code == 204 and response.headers["Access-Control-Allow-Origin"] == APP


def test_a_wildcard_allows_any_origin_without_credentials(service_app):
    """`*` (for development): any well-formed origin, echoed; never Allow-Credentials."""
    api = service_app("chat", CORS_ALLOWED_ORIGINS="*")
    for origin in (EVIL, "http://localhost:3000", "http://[::1]:8080", "null", "capacitor://localhost"):
        response = preflight(api, "/api/chat/session", origin=origin)
        assert response.status_code == 204, origin
        assert response.headers.getlist("Access-Control-Allow-Origin") == [origin]
        answer = api.get(UNKNOWN_SESSION, headers={"Origin": origin})
        assert_readable_by(answer, origin)
    for malformed in ("http://[::1", "evil.example", EVIL + "/x"):
        envelope(preflight(api, "/api/chat/session", origin=malformed), 403)
        assert cors_headers(api.get(UNKNOWN_SESSION, headers={"Origin": malformed})) == {}


# --- the WebSocket ------------------------------------------------------------------------------------

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.mark.parametrize(
    ("settings", "allowed", "refused"),
    [
        ({"CORS_ALLOWED_ORIGINS": APP}, [APP, "HTTP://APP.EXAMPLE:5173"], [EVIL, "http://[::1", "null"]),
        ({"CORS_ALLOWED_ORIGINS": "*"}, [APP, EVIL], ["http://[::1"]),
        # WS_ALLOWED_ORIGINS, when set, is the whole list.
        ({"CORS_ALLOWED_ORIGINS": APP, "WS_ALLOWED_ORIGINS": EVIL}, [EVIL], [APP]),
        ({}, [], [APP, "http://[::1"]),
    ],
)
def test_an_origin_allowed_by_cors_may_open_a_socket(service_app, token, settings, allowed, refused):
    api = service_app("chat", **settings)
    sid = api.post("/api/chat/session", json={}).get_json()["data"]["session_id"]
    headers = UPGRADE | {"Authorization": f"Bearer {token()}"}
    with serve(api.app) as base:
        for origin in allowed:
            with requests.get(
                f"{base}/ws/{sid}", headers=headers | {"Origin": origin}, timeout=10, stream=True
            ) as accepted:
                assert accepted.status_code == 101, origin
        for origin in refused:
            response = requests.get(f"{base}/ws/{sid}", headers=headers | {"Origin": origin}, timeout=10)
            assert response.status_code == 403, origin
            assert response.json()["code"] == 403


# --- the setting --------------------------------------------------------------------------------------


def test_entries_that_are_not_origins_are_named_one_line_each():
    problems = origin_problems([APP, "*", "https://app.example/", "null", "app.example", "https://a.example"])
    assert len(problems) == 3
    assert "'https://app.example/'" in problems[0] and "trailing slash" in problems[0]
    assert "null" in problems[1] and "use * for development" in problems[1]
    assert "'app.example'" in problems[2]
    assert all(problem.startswith("CORS_ALLOWED_ORIGINS: ") and "\n" not in problem for problem in problems)


def test_a_service_with_a_bad_origin_does_not_start(tmp_path):
    with pytest.raises(ValueError, match=r"CORS_ALLOWED_ORIGINS: 'https://app\.example/'"):
        create_chat_app(
            base_environ(f"sqlite:///{tmp_path}/x.sqlite3", CORS_ALLOWED_ORIGINS="https://app.example/")
        )


def test_the_policy_matches_whole_origins_only():
    policy = CorsPolicy(["https://app.example", "http://[::1]:8080"], 600)
    assert policy.allows("https://app.example") and policy.allows("http://[::1]:8080")
    for origin in ("https://app.example.evil", "https://app.exampl", "http://[::1]:80801", None, ""):
        assert not policy.allows(origin), origin
    assert not CorsPolicy([], 600).enabled
    assert "Authorization" in ALLOWED_HEADERS and "X-User-Id" not in ALLOWED_HEADERS

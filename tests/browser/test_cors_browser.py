"""A frontend on another origin, in a real browser: a page served from one loopback port calls
chat_service and conversation_service on others with `fetch()` and a bearer token, and opens a chat
socket. It works when its origin is in CORS_ALLOWED_ORIGINS (and nothing else is set), and fails as a
browser fails it when not: fetch rejects, the socket never opens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from tests.conftest import ALICE, base_environ
from tests.databases import clear_tables
from tests.live import another_origin, serve

FRONTEND_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>another origin</title></head>
<body><h1 data-testid="frontend">A frontend on its own origin</h1>
<pre id="log" style="white-space: pre-wrap"></pre></body></html>
"""

# In the page: one call as a frontend makes it; what the page could read, or the error fetch raised.
FETCH = """async ([url, method, token, body]) => {
  const init = {method, headers: {"Authorization": "Bearer " + token, "X-Trace-Id": "%s"}};
  if (body !== null) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    const response = await fetch(url, init);
    return {status: response.status, body: await response.json(),
            traceId: response.headers.get("X-Trace-Id"), rateLimit: response.headers.get("RateLimit")};
  } catch (error) {
    return {error: String(error)};
  }
}"""
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
UNKNOWN = "00000000-0000-4000-8000-000000000000"

# A chat socket as the reference page opens it (token as the `bearer` subprotocol): a ping answered,
# or how it ended.
SOCKET = """([url, token]) => new Promise((resolve) => {
  const socket = new WebSocket(url, ["bearer", token]);
  const timer = setTimeout(() => resolve({outcome: "timeout"}), 8000);
  socket.onopen = () => socket.send(JSON.stringify({type: "ping"}));
  socket.onmessage = (event) => {
    clearTimeout(timer);
    resolve({outcome: "open", protocol: socket.protocol, frame: JSON.parse(event.data)});
    socket.close();
  };
  socket.onclose = (event) => { clearTimeout(timer); resolve({outcome: "closed", code: event.code}); };
})"""


def frontend():
    """A static page server on a free loopback port: its own origin, `http://127.0.0.1:PORT`."""
    return another_origin(FRONTEND_PAGE)


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """Two frontends: the one the services allow, and a stranger."""
    with frontend() as allowed, frontend() as stranger:
        yield allowed, stranger


@pytest.fixture(scope="module")
def services(chat_database, conversation_database, origins) -> Iterator[dict[str, str]]:
    """Both services live on loopback, with only CORS_ALLOWED_ORIGINS set for the allowed frontend."""
    allowed, _stranger = origins
    conversation_app = create_conversation_app(
        base_environ(conversation_database, CORS_ALLOWED_ORIGINS=allowed)
    )
    chat_app = create_chat_app(base_environ(chat_database, CORS_ALLOWED_ORIGINS=allowed))
    try:
        with serve(chat_app) as chat_url, serve(conversation_app) as conversation_url:
            yield {"chat": chat_url, "conversation": conversation_url}
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


def open_frontend(context, origin: str):
    page = context.new_page()
    page.goto(origin + "/")
    assert page.get_by_test_id("frontend").is_visible()
    return page


def call(page, url: str, method: str, token: str, body=None) -> dict:
    return page.evaluate(FETCH % TRACE_ID, [url, method, token, body])


def test_a_frontend_on_an_allowed_origin_calls_both_services(context, services, origins, token, artifacts):
    allowed, _stranger = origins
    page = open_frontend(context, allowed)
    created = call(page, services["chat"] + "/api/chat/session", "POST", token(), {"title": "跨域"})
    assert created["status"] == 200, created
    assert created["body"]["code"] == 200 and created["body"]["data"]["title"] == "跨域"
    # The page reads our headers: the trace id it sent comes back, and the rate-limit state.
    assert created["traceId"] == TRACE_ID == created["body"]["traceId"]
    assert created["rateLimit"] and created["rateLimit"].startswith('"requests"')
    session_id = created["body"]["data"]["session_id"]
    session_url = f"{services['chat']}/api/chat/sessions/{session_id}"
    renamed = call(page, session_url, "PATCH", token(), {"new_title": "改名"})
    assert renamed["status"] == 200 and renamed["body"]["data"] == "标题更新成功", renamed
    # Errors are envelopes the page can read, too.
    missing = call(
        page, services["chat"] + "/api/chat/sessions/00000000-0000-4000-8000-000000000000", "GET", token()
    )
    assert missing["status"] == 404 and missing["body"]["code"] == 7001, missing
    unauthenticated = call(
        page, f"{services['chat']}/api/chat/sessions/{session_id}", "DELETE", "not-a-token"
    )
    assert unauthenticated["status"] == 401 and unauthenticated["body"]["code"] == 401, unauthenticated
    record = call(page, services["conversation"] + "/api/ai/conversation", "POST", token(), {"title": "记录"})
    assert record["status"] == 200 and record["body"]["data"]["userId"] == ALICE, record
    assert record["traceId"] == TRACE_ID
    show = "(calls) => { document.getElementById('log').textContent = JSON.stringify(calls, null, 1); }"
    page.evaluate(show, {"chat": created, "conversation": record})
    page.screenshot(path=artifacts / "cors-allowed-origin.png")


def test_a_frontend_on_another_origin_is_refused_by_the_browser(context, services, origins, token):
    _allowed, stranger = origins
    page = open_frontend(context, stranger)
    for url, body in (
        (services["chat"] + "/api/chat/session", {"title": "x"}),
        (services["conversation"] + "/api/ai/conversation", {"title": "x"}),
    ):
        result = call(page, url, "POST", token(), body)
        assert "error" in result and "Failed to fetch" in result["error"], result


def test_a_socket_opens_from_the_allowed_origin_only(context, services, origins, token):
    allowed, stranger = origins
    page = open_frontend(context, allowed)
    created = call(page, services["chat"] + "/api/chat/session", "POST", token(), {"title": "socket"})
    ws_url = services["chat"].replace("http", "ws", 1) + f"/ws/{created['body']['data']['session_id']}"
    opened = page.evaluate(SOCKET, [ws_url, token()])
    assert opened["outcome"] == "open" and opened["protocol"] == "bearer", opened
    assert opened["frame"]["type"] == "pong"
    refused = open_frontend(context, stranger).evaluate(SOCKET, [ws_url, token()])
    # The handshake is refused (403): a browser sees only an abnormal close.
    assert refused == {"outcome": "closed", "code": 1006}, refused

"""The outbound helper: a service token, the named user and the traceId on every call."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest

from shared.auth import TokenVerifier
from shared.http import ServiceClient
from tests.conftest import SECRET

TRACE = "5d0b8880becc47f5870b57aa3cef3a0c"


@pytest.fixture
def recorder():
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self):
            length = int(self.headers.get("Content-Length", 0))
            seen.append({"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()
    thread.join()


def test_service_client_sends_a_service_token_user_and_trace(recorder):
    url, seen = recorder
    client = ServiceClient(url, service_name="chat_service", config={"JWT_SECRET": SECRET})
    response = client.request("PUT", "/internal/x", user_id="42", trace_id=TRACE, json={"title": "t"})
    assert response.status_code == 200
    headers = seen[0]["headers"]
    assert headers["X-Trace-Id"] == TRACE
    assert headers["X-User-Id"] == "42"
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = TokenVerifier({"JWT_SECRET": SECRET}).verify(token)
    assert (claims["sub"], claims["typ"]) == ("chat_service", "service")
    assert json.loads(seen[0]["body"]) == {"title": "t"}


def test_service_client_reuses_its_token(recorder):
    url, seen = recorder
    client = ServiceClient(url, service_name="svc", config={"JWT_SECRET": SECRET})
    client.request("PUT", "/a", trace_id=TRACE)
    client.request("PUT", "/b", trace_id=TRACE)
    assert seen[0]["headers"]["Authorization"] == seen[1]["headers"]["Authorization"]
    assert jwt.get_unverified_header(seen[0]["headers"]["Authorization"][7:])["alg"] == "HS256"


def test_service_client_times_out_instead_of_hanging():
    import socket

    import requests

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        port = listener.getsockname()[1]
        client = ServiceClient(
            f"http://127.0.0.1:{port}", service_name="svc", config={"JWT_SECRET": SECRET}, timeout=(1, 0.3)
        )
        with pytest.raises(requests.Timeout):
            client.request("PUT", "/slow", trace_id=TRACE)
    finally:
        listener.close()

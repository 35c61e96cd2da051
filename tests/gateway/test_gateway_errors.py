"""Requests gunicorn would answer itself with an HTML page (a malformed or non-ASCII request line, 414,
431) are refused by the real nginx first, in the envelope; the apps' own JSON errors pass untouched."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.conftest import ALICE
from tests.gateway.nginx import access_log_entries
from tests.gateway.test_nginx import ENVELOPE, call

GUNICORN_REQUEST_LINE = 4094  # gunicorn's default limit_request_line
GUNICORN_FIELD_SIZE = 8190  # gunicorn's default limit_request_field_size


def send_raw(gateway: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Write `request` byte for byte to the gateway; the status, headers and body it answers."""
    address = urlsplit(gateway)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def assert_envelope(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, (status, body[:300])
    assert headers["content-type"] == "application/json", headers
    parsed = json.loads(body)
    assert list(parsed) == ENVELOPE and parsed["code"] == expected and parsed["data"]["detail"]
    assert len(parsed["traceId"]) == 32
    return parsed


def request(line: bytes, *headers: bytes) -> bytes:
    return (
        line
        + b"\r\nHost: gateway\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"Connection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    "raw, expected",
    [
        (request("GET /api/chat/sessions/é HTTP/1.1".encode()), 400),
        (request(b"GET /api/ai/conversation/page?keyword=\xe9\xa1\xb9 HTTP/1.1"), 400),
        (request(b"GET /aichat/\xff HTTP/1.1"), 400),
        (request(b"GET /api/chat/" + b"a" * GUNICORN_REQUEST_LINE + b" HTTP/1.1"), 414),
        (request(b"GET /api/chat/sessions?" + b"a" * (GUNICORN_REQUEST_LINE - 40) + b" HTTP/1.1"), 414),
        (request(b"GET /api/chat/sessions HTTP/1.1", b"X-Big: " + b"b" * GUNICORN_FIELD_SIZE), 400),
        (request(b"GET /api/chat/sessions HTTP/1.1", b"X-Big: " + b"b" * 5000), 400),
        (request(b"GE /api/chat/sessions HTTP/1.1"), 400),
        (request(b"VERYLONGMETHODNAMEOVER20 /api/chat/sessions HTTP/1.1"), 400),
        (request(b"GET /api/chat/sessions HTTP/1.1 extra"), 400),
        (b"HELLO\r\n\r\n", 400),
        (request(b"GET /api/chat/sessions HTTP/9.9"), 505),
        (request(b"POST /api/chat/session HTTP/1.1", b"Transfer-Encoding: gzip, chunked"), 501),
    ],
    ids=[
        "non-ascii-path",
        "raw-utf8-query",
        "invalid-utf8-path",
        "request-line-over-gunicorns",
        "request-line-just-under-gunicorns",
        "header-over-gunicorns",
        "header-over-the-gateways",
        "two-letter-method",
        "method-over-20",
        "garbage-after-version",
        "garbage",
        "http-version",
        "transfer-encoding",
    ],
)
def test_what_gunicorn_would_answer_in_html_the_gateway_refuses_in_the_envelope(gateway, raw, expected):
    assert_envelope(*send_raw(gateway, raw), expected)


def test_the_gateway_refused_them_itself(gateway, gateway_prefix):
    answer = assert_envelope(*send_raw(gateway, request(b"GET /api/chat/sessions/\xc3\xa9 HTTP/1.1")), 400)
    [line] = access_log_entries(gateway_prefix, lambda entry: entry["traceId"] == answer["traceId"])
    assert (line["status"], line["upstream"]) == (400, "")


def test_the_apps_own_json_400_passes_untouched(gateway, token):
    response = call(gateway, token, "GET", f"/aichat/getsessionlist/{ALICE}?page=%201")
    body = response.json()
    assert (response.status_code, body["code"]) == (400, 1001)
    assert "page" in body["data"]["errors"]


def test_percent_encoded_and_long_but_fitting_requests_pass(gateway, token):
    keyword = "%E9%A1%B9" * 300  # 2,700 characters of request line
    response = call(gateway, token, "GET", f"/api/ai/conversation/page?keyword={keyword}")
    assert response.status_code in (200, 400) and response.json()["code"] in (200, 1001)
    big_header = call(gateway, token, "GET", "/api/ai/conversation/list", headers={"X-Note": "n" * 3000})
    assert big_header.status_code == 200

"""Hostile values in bodies and queries of both services: each is a clear error in the envelope, never a 5xx.

Run on every backend given (lone surrogates fail only in psycopg, so check on PostgreSQL too).
"""

from __future__ import annotations

import io
from urllib.parse import quote

import pytest

from tests.api_client import envelope


@pytest.fixture(params=["chat", "conv"])
def service(request, chat, conv):
    """Each service in turn, with the path that creates something there."""
    return {"chat": (chat, "/api/chat/session"), "conv": (conv, "/api/ai/conversation")}[request.param]


def _raw_post(client, path: str, data: bytes, **headers: str):
    headers = {"Content-Type": "application/json", **headers}
    return client.call("POST", path, data=data, headers=headers)


# -- lone surrogates and NUL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/chat/session", b'{"title": "a\\ud800b"}', "title"),
        ("/api/chat/session", b'{"title": "ok", "user_id": "\\udfff"}', "user_id"),
        ("/api/chat/session", b'{"title": "ok", "\\ud800": 1}', "\\ud800"),
        ("/api/chat/message", b'{"session_id": "\\ud800", "content": "hi"}', "session_id"),
        ("/api/chat/message", b'{"session_id": "s\\u0000", "content": "hi"}', "session_id"),
    ],
)
def test_chat_body_text_with_a_lone_surrogate_or_nul_is_1001(chat, path, body, field):
    data = envelope(_raw_post(chat, path, body), 400, 1001)
    assert field in data["errors"], data  # a surrogate in a name comes back as its escape


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"title": "\\ud800"}', "title"),
        (b'{"title": "ok", "difyConversationId": "\\udbff\\udbff"}', "difyConversationId"),
    ],
)
def test_conversation_body_text_with_a_lone_surrogate_is_1001(conv, body, field):
    data = envelope(_raw_post(conv, "/api/ai/conversation", body), 400, 1001)
    assert field in data["errors"], data


def test_a_raw_surrogate_encoded_in_the_body_bytes_is_1001(conv):
    # CESU-style bytes: Python's json decodes them with surrogatepass into a lone surrogate.
    data = envelope(_raw_post(conv, "/api/ai/conversation", b'{"title": "\xed\xa0\x80"}'), 400, 1001)
    assert "title" in data["errors"]


@pytest.mark.parametrize("value", ["%00", "a%00b", "\x00"])
def test_a_nul_in_keyword_is_1001_not_a_database_outage(conv, value):
    data = envelope(conv.get(f"/api/ai/conversation/page?keyword={value}"), 400, 1001)
    assert "keyword" in data["errors"]


def test_a_query_string_that_is_not_utf8_is_400(conv):
    # werkzeug keeps percent-escapes of bad UTF-8 as they are; raw bytes (a server that lets them
    # through) made `request.args` raise.
    response = conv.client.get(
        "/api/ai/conversation/page",
        headers={"Authorization": f"Bearer {conv.token(conv.default_user)}"},
        environ_overrides={"QUERY_STRING": "keyword=\xed\xa0\x80"},
    )
    assert "UTF-8" in envelope(response, 400, 400)["detail"]


def test_percent_escaped_bad_utf8_in_keyword_is_searched_as_text(conv):
    assert envelope(conv.get("/api/ai/conversation/page?keyword=%ED%A0%80"), 200)["records"] == []


def test_a_good_keyword_still_finds_its_title(conv):
    envelope(conv.post("/api/ai/conversation", json={"title": "技术 ☃ 讨论"}), 200)
    data = envelope(conv.get("/api/ai/conversation/page?keyword=☃"), 200)
    assert [record["title"] for record in data["records"]] == ["技术 ☃ 讨论"]


# -- deep nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_deeply_nested_json_is_400_body_must_be_json(service, opening, caplog):
    client, path = service
    data = envelope(_raw_post(client, path, opening * 100_000), 400, 400)
    assert "JSON" in data["detail"]
    assert not [record for record in caplog.records if record.exc_info]


# -- body size without Content-Length --------------------------------------------------------------


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 1024 * 1024 + 1])
def test_a_chunked_body_over_the_limit_is_413(service, size):
    client, path = service
    response = client.call(
        "POST",
        path,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides=_chunked(b"[" + b" " * (size - 2) + b"]"),
    )
    envelope(response, 413, 413)


def test_a_chunked_body_under_the_limit_is_read(service):
    client, path = service
    response = client.call(
        "POST",
        path,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides=_chunked(b'{"title": "chunked"' + b" " * 500_000 + b"}"),
    )
    assert envelope(response, 200)["title"] == "chunked"


def _chunked(body: bytes) -> dict:
    """The environ of a body without Content-Length, as gunicorn passes a chunked one: a stream the
    server ends (`wsgi.input_terminated`), which werkzeug bounds by MAX_CONTENT_LENGTH."""
    return {"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True}


# -- numbers are plain ASCII decimal integers --------------------------------------------------------


ODD_NUMBERS = [" 1", "1 ", "１", "1_0", "+1", "1.0", "0x1", "١", "1e1", "", "99999999999999999999999"]


@pytest.mark.parametrize("value", ODD_NUMBERS)
@pytest.mark.parametrize("name", ["pageNo", "pageSize"])
def test_conversation_page_numbers_must_be_ascii_digits(conv, name, value):
    response = conv.client.get(
        "/api/ai/conversation/page",
        query_string={name: value},
        headers={"Authorization": f"Bearer {conv.token(conv.default_user)}"},
    )
    data = envelope(response, 400, 1001)
    assert name in data["errors"], data


@pytest.mark.parametrize("value", ODD_NUMBERS)
@pytest.mark.parametrize("name", ["page", "page_size", "pageSize"])
def test_chat_query_page_numbers_must_be_ascii_digits(chat, name, value):
    response = chat.client.get(
        f"/aichat/getsessionlist/{chat.default_user}",
        query_string={name: value},
        headers={"Authorization": f"Bearer {chat.token(chat.default_user)}"},
    )
    data = envelope(response, 400, 1001)
    assert "page" in next(iter(data["errors"])), data


@pytest.mark.parametrize("value", [1.5, 1.0, True, "1", None, [1], {"a": 1}, 10**30])
@pytest.mark.parametrize("name", ["page", "page_size"])
def test_chat_body_page_numbers_must_be_json_integers(chat, name, value):
    data = envelope(chat.post("/api/chat/sessions", json={name: value}), 400, 1001)
    assert name in data["errors"], data


def test_plain_numbers_still_page(chat, conv):
    assert (
        envelope(chat.get(f"/aichat/getsessionlist/{chat.default_user}?page=1&page_size=5"), 200)["page_size"]
        == 5
    )
    assert envelope(chat.post("/api/chat/sessions", json={"page": 2, "page_size": 5}), 200) == []
    assert envelope(conv.get("/api/ai/conversation/page?pageNo=1&pageSize=7"), 200)["size"] == 7


@pytest.mark.parametrize("value", [True, 1.0, "1"])
def test_is_pinned_is_a_json_integer(conv, value):
    data = envelope(conv.post("/api/ai/conversation", json={"title": "t", "isPinned": value}), 400, 1001)
    assert "isPinned" in data["errors"]


def test_a_huge_number_in_dify_inputs_is_1001(chat):
    session = envelope(chat.post("/api/chat/session", json={"title": "t"}), 200)
    response = chat.call(
        "PUT",
        f"/api/chat/sessions/{session['session_id']}/inputs",
        data=b'{"inputs": {"n": 1' + b"0" * 400 + b"}}",
        headers={"Content-Type": "application/json"},
    )
    assert "inputs" in envelope(response, 400, 1001)["errors"]


FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize(
    "spell",
    [
        lambda n: f"%20{n}",
        lambda n: f"{n}%20",
        lambda n: quote(str(n).translate(FULLWIDTH)),
        lambda n: f"+{n}",
        lambda n: f"{n}.0",
        lambda n: "_".join(str(n)) if n > 9 else f"0_{n}",
    ],
    ids=["leading-space", "trailing-space", "fullwidth", "plus", "decimal", "underscore"],
)
def test_an_existing_message_id_spelled_oddly_is_not_found_by_it(chat, spell):
    session = envelope(chat.post("/api/chat/session", json={"title": "t"}), 200)
    sid = session["session_id"]
    message_id = envelope(chat.post("/api/chat/message", json={"session_id": sid, "content": "hi"}), 200)[
        "message_id"
    ]
    odd = spell(message_id)
    for method, path in [
        ("GET", f"/api/chat/sessions/{sid}/messages/{odd}"),
        ("DELETE", f"/api/chat/messages/{odd}"),
    ]:
        response = chat.call(method, path)
        assert response.status_code in (400, 404), (path, response.status_code)
    assert (
        envelope(chat.get(f"/api/chat/sessions/{sid}/messages/{message_id}"), 200)["message_id"] == message_id
    )


@pytest.mark.parametrize(
    "spell",
    [lambda i: f"%20{i}", lambda i: quote(i.translate(FULLWIDTH)), lambda i: f"+{i}", lambda i: f"{i}.0"],
    ids=["leading-space", "fullwidth", "plus", "decimal"],
)
def test_an_existing_conversation_id_spelled_oddly_is_not_found_by_it(conv, spell):
    record_id = envelope(conv.post("/api/ai/conversation", json={"title": "t"}), 200)["id"]
    response = conv.get(f"/api/ai/conversation/{spell(record_id)}")
    assert response.status_code in (400, 404), response.status_code
    assert envelope(conv.get(f"/api/ai/conversation/{record_id}"), 200)["id"] == record_id

"""The chat page's routes over HTTP (no browser): the page and its files, the settings it is given, and the
dev-token route, which exists only with DEV_TOKENS on; then the page minting a token in Chromium."""

from __future__ import annotations

import re

import jwt
import pytest

from chat_service import create_app
from tests.browser.pages import ChatPage, chat_server, sqlite_databases
from tests.conftest import SECRET, base_environ

UNKNOWN = "/chat/no-such-route"


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    return sqlite_databases(tmp_path_factory.mktemp("chat-page-routes"))


def client(databases, **settings: str):
    app = create_app(base_environ(databases.chat, **settings))
    app.config["TESTING"] = True
    return app.test_client()


@pytest.mark.parametrize("path", ["/chat", "/chat/"])
def test_the_page_is_served_with_its_settings_and_a_strict_policy(databases, path):
    response = client(databases, CHAT_PAGE_CONVERSATION_URL="http://127.0.0.1:5002/").get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for testid in (
        "token-input",
        "token-save",
        "new-session",
        "message-input",
        "send",
        "stop",
        "error-banner",
    ):
        assert f'data-testid="{testid}"' in html
    assert 'data-dev-tokens="false"' in html and 'data-conversation-url="http://127.0.0.1:5002"' in html
    assert 'data-testid="dev-mint"' not in html
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self' http://127.0.0.1:5002" in policy
    # Nothing fetched from anywhere else: every asset the page names is its own.
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == [
        "data:,",
        "/chat/static/chat.css",
        "/chat/static/chat.js",
    ]


@pytest.mark.parametrize(("name", "mimetype"), [("chat.js", "text/javascript"), ("chat.css", "text/css")])
def test_the_pages_files_are_served(databases, name, mimetype):
    with client(databases).get(f"/chat/static/{name}") as response:  # a file: closed after reading
        assert (response.status_code, response.mimetype) == (200, mimetype)
        text = response.get_data(as_text=True)
    assert "http://" not in text and "https://" not in text


def test_without_dev_tokens_the_mint_route_is_an_unknown_route(databases):
    http = client(databases)
    minted = http.post("/chat/dev-token", json={"user_id": "542738228948500480"})
    unknown = http.post(UNKNOWN, json={"user_id": "542738228948500480"})
    assert minted.status_code == unknown.status_code == 404
    assert minted.headers["Content-Type"] == "application/json"
    strip = ("timestamp", "traceId")
    assert {k: v for k, v in minted.get_json().items() if k not in strip} == {
        k: v for k, v in unknown.get_json().items() if k not in strip
    }
    assert "token" not in minted.get_data(as_text=True)
    # Not even a malformed body gets further than the 404.
    assert http.post("/chat/dev-token", data="not json").status_code == 404


def test_with_dev_tokens_the_mint_route_signs_a_token_for_the_user(databases):
    http = client(databases, DEV_TOKENS="true")
    response = http.post("/chat/dev-token", json={"user_id": "542738228948500480"})
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()["data"]
    claims = jwt.decode(data["token"], SECRET, algorithms=["HS256"])
    assert (
        claims["sub"] == "542738228948500480" and claims["exp"] - claims["iat"] == data["expires_in"] == 3600
    )
    sessions = http.post("/api/chat/sessions", json={}, headers={"Authorization": f"Bearer {data['token']}"})
    assert sessions.status_code == 200
    assert 'data-dev-tokens="true"' in http.get("/chat").get_data(as_text=True)


@pytest.mark.parametrize(
    "body", [{}, {"user_id": ""}, {"user_id": "a b"}, {"user_id": "x" * 65}, {"user_id": 1}]
)
def test_the_mint_route_refuses_a_bad_user_id(databases, body):
    response = client(databases, DEV_TOKENS="true").post("/chat/dev-token", json=body)
    assert response.status_code == 400
    assert response.get_json()["code"] == 1001 and "user_id" in response.get_json()["data"]["errors"]


def test_the_page_can_be_turned_off(databases):
    response = client(databases, CHAT_PAGE="false").get("/chat")
    assert response.status_code == 404 and response.get_json()["code"] == 404


def test_the_page_mints_a_token_in_dev_mode_and_chats(context, databases):
    with chat_server(databases.chat, DEV_TOKENS="true") as server:
        chat = ChatPage(context.new_page()).open(server.url)
        chat.by("dev-user-id").fill("dev-user-1")
        chat.by("dev-mint").click()
        chat.expect(chat.by("who")).to_contain_text("user dev-user-1")
        chat.new_session()
        chat.send("minted and chatting")
        chat.wait_reply("minted and chatting", count=1)


def test_without_dev_tokens_the_page_offers_no_minting_and_works_with_a_pasted_token(context, databases):
    with chat_server(databases.chat) as server:
        chat = ChatPage(context.new_page()).open(server.url)
        chat.expect(chat.by("dev-mint")).to_have_count(0)
        minted = chat.page.evaluate(
            """async () => (await fetch("/chat/dev-token", {method: "POST",
                headers: {"Content-Type": "application/json"}, body: '{"user_id": "x"}'})).status"""
        )
        assert minted == 404
        chat.use_token(jwt.encode({"sub": "pasted-user", "exp": 4102444800}, SECRET, algorithm="HS256"))
        chat.new_session()
        chat.send("pasted and chatting")
        chat.wait_reply("pasted and chatting", count=1)

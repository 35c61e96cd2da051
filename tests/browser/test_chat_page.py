"""The chat page (/chat) in a real Chromium, directly against chat_service on loopback.

A chat streams token by token; two tabs on one chat see each other's frames; a reload mid-reply picks
the reply up again (`turn_state`); the token travels as the `bearer` subprotocol, never in the URL; a page
on a foreign origin cannot open the socket; stop, regenerate, edit and resend, rate, rename, delete and
usage work from the page; error frames and REST errors show in the banner.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
import requests

from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from tests.browser.pages import (
    ChatPage,
    assert_streamed,
    chat_server,
    foreign_site,
    new_user,
    sqlite_databases,
    user_token,
    words,
)
from tests.conftest import base_environ
from tests.fakes.dify import DEFAULT_SUGGESTIONS, FakeDify
from tests.live import serve
from tests.live_probe import eventually
from tests.processes import free_port


def create_session(base_url: str, token: str) -> str:
    response = requests.post(
        base_url + "/aichat/createsession", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]["session_id"]


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    return sqlite_databases(tmp_path_factory.mktemp("chat-page"))


@pytest.fixture(scope="module")
def server(databases):
    with chat_server(databases.chat) as running:
        yield running


@pytest.fixture
def user() -> str:
    return new_user()


@pytest.fixture
def chat(context, server, user) -> ChatPage:
    """The page, open on the server, with the test user's token pasted."""
    page = ChatPage(context.new_page()).open(server.url)
    page.use_token(user_token(user))
    return page


def test_a_chat_streams_its_reply_token_by_token(chat, artifacts):
    chat.new_session()
    text = words(12)
    chat.send(text)
    chat.expect(chat.page.locator("[data-testid=user-message] [data-testid=message-text]")).to_have_text(text)
    partials = chat.wait_partials(3)
    chat.page.screenshot(path=artifacts / "direct-streaming.png")
    chat.wait_reply(text, count=1)
    assert_streamed(chat.partials(), text, at_least=3)
    assert chat.user_texts() == [text]
    assert partials[0] != text
    chat.expect(chat.by("usage")).to_contain_text("2 messages")
    chat.expect(chat.by("error-banner")).to_be_hidden()
    chat.page.screenshot(path=artifacts / "direct-chat.png")


def test_the_token_is_the_bearer_subprotocol_and_never_in_the_url(chat, server, user):
    token = chat.by("token-input").input_value()
    with chat.page.expect_websocket() as opened:
        sid = chat.new_session()
    socket_url = opened.value.url
    assert socket_url.endswith(f"/ws/{sid}"), socket_url
    assert token not in socket_url and "token" not in socket_url
    chat.expect(chat.by("socket-state")).to_have_text("socket: open (bearer)")

    seen = [h for h in server.handshakes.seen if h["path"] == f"/ws/{sid}"]
    assert len(seen) == 1, seen
    assert seen[0]["protocol"] == f"bearer, {token}"
    assert (seen[0]["query"], seen[0]["authorization"]) == ("", None)
    assert seen[0]["origin"] == server.url and seen[0]["status"] is None  # accepted, still open
    chat.send("hello there, bearer")
    chat.wait_reply("hello there, bearer")


def test_two_tabs_on_one_chat_see_each_others_frames(context, chat, artifacts):
    sid = chat.new_session()
    other = ChatPage(context.new_page()).open(
        chat.page.url.removesuffix("/chat")
    )  # same storage: token, chat
    other.wait_connected()
    assert other.current_session() == sid

    text = words(10)
    chat.send(text)
    other.wait_reply(text, count=1)
    assert other.user_texts() == [text]
    assert_streamed(other.partials(), text, at_least=3)

    answer = "and this one from the second tab"
    other.send(answer)
    chat.wait_reply(answer, count=2)
    assert chat.user_texts() == [text, answer]

    other.by("session-title").fill("Renamed in the second tab")
    other.by("rename-session").click()
    chat.expect(chat.by("session-title")).to_have_value("Renamed in the second tab")
    other.page.screenshot(path=artifacts / "second-tab.png")


def test_a_reload_mid_reply_picks_the_reply_up_again(context, tmp_path, databases, user):
    with chat_server(databases.chat, ECHO_DELAY_SECONDS="0.15") as slow:
        chat = ChatPage(context.new_page()).open(slow.url)
        chat.use_token(user_token(user))
        chat.new_session()
        text = words(24)  # 24 pieces, 3.6 s
        chat.send(text)
        before = chat.wait_partials(3)[-1]

        frames: list[dict] = []
        chat.page.on(
            "websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))
        )
        # Hold the history the reloaded page asks for, so the socket's first frames wait behind it (as on a
        # slow network): the page must show them all once the history is in.
        chat.page.route("**/aichat/sessions/*", lambda route: (time.sleep(0.5), route.continue_()))
        chat.page.reload()
        chat.wait_reply(text, count=1)
        assert frames and frames[0]["type"] == "turn_state", [f["type"] for f in frames]
        resumed = frames[0]["data"]["content"]
        assert resumed.startswith(before)  # all that was shown before the reload, or more
        # What this load of the page showed, from the `turn_state` on: the page holds the socket's frames
        # until the history is in, then applies them in one go, so its first text is the `turn_state` and
        # the deltas held behind it, never less.
        after = chat.partials()
        assert after[0].startswith(resumed) and len(after[0]) > len(resumed), after
        assert_streamed(after, text, at_least=2)
        assert chat.user_texts() == [text]


def test_a_page_on_a_foreign_origin_cannot_open_the_socket(context, databases, user):
    """WS_ALLOWED_ORIGINS decides: the same page is refused by default and let in once it is listed."""
    # What a hostile page would run: open the user's socket with a token it got hold of, and ping.
    script = """([url, token]) => new Promise((resolve) => {
      const result = {frames: [], close: null};
      const ws = new WebSocket(url, ["bearer", token]);
      ws.onopen = () => ws.send(JSON.stringify({type: "ping"}));
      ws.onmessage = (event) => { result.frames.push(JSON.parse(event.data).type); ws.close(); };
      ws.onclose = (event) => { result.close = event.code; resolve(result); };
    })"""
    token = user_token(user)
    outcomes = {}
    with foreign_site() as foreign:
        for allowed in ("", foreign):
            with chat_server(databases.chat, WS_ALLOWED_ORIGINS=allowed) as target:
                sid = create_session(target.url, token)
                page = context.new_page()
                page.goto(foreign + "/evil")
                socket_url = target.url.replace("http", "ws", 1) + f"/ws/{sid}"
                outcomes[allowed] = page.evaluate(script, [socket_url, token])
                outcomes[allowed]["statuses"] = [
                    h["status"] for h in target.handshakes.seen if h["origin"] == foreign
                ]
                page.close()
    # Refused before the upgrade: the browser sees only an abnormal close (1006), and no frame.
    assert outcomes[""] == {"frames": [], "close": 1006, "statuses": [403]}
    # Listed: the handshake was accepted (no HTTP refusal; werkzeug logs 200 once the socket ends).
    assert outcomes[foreign]["frames"] == ["pong"]
    assert len(outcomes[foreign]["statuses"]) == 1 and outcomes[foreign]["statuses"][0] in (None, 200)


def test_stop_regenerate_edit_and_rate_from_the_page(context, databases, user):
    with chat_server(databases.chat, ECHO_DELAY_SECONDS="0.1") as server:
        chat = ChatPage(context.new_page()).open(server.url)
        chat.use_token(user_token(user))
        chat.new_session()

        long_text = words(30)
        chat.send(long_text)
        chat.wait_partials(3)
        chat.by("stop").click()
        stopped = chat.stored_reply()
        chat.expect(stopped).to_have_class("assistant stopped")
        stopped_text = chat.assistant_texts()[-1]
        assert long_text.startswith(stopped_text) and 0 < len(stopped_text) < len(long_text)

        chat.by("regenerate").click()  # the same question answered anew: the stopped reply goes
        chat.wait_reply(long_text, count=1)
        assert chat.user_texts() == [long_text]

        chat.by("edit-message").click()
        chat.by("edit-input").fill("an edited question, resent")
        chat.by("edit-save").click()
        chat.wait_reply("an edited question, resent", count=1)
        assert chat.user_texts() == ["an edited question, resent"]

        chat.by("rate-like").click()
        chat.expect(chat.by("rate-like")).to_have_attribute("aria-pressed", "true")
        chat.by("rate-dislike").click()
        chat.expect(chat.by("rate-dislike")).to_have_attribute("aria-pressed", "true")
        chat.expect(chat.by("rate-like")).to_have_attribute("aria-pressed", "false")
        chat.page.reload()  # the rating was stored, not just drawn
        chat.expect(chat.by("rate-dislike")).to_have_attribute("aria-pressed", "true")
        chat.expect(chat.by("error-banner")).to_be_hidden()


def test_rename_and_delete_from_the_page(chat):
    first = chat.new_session()
    chat.by("session-title").fill("Project notes")
    chat.by("rename-session").click()
    item = chat.page.locator(f"[data-testid=session-item][data-session-id='{first}']")
    chat.expect(item.get_by_test_id("session-item-title")).to_have_text("Project notes")

    second = chat.new_session()
    chat.by("delete-session").click()
    chat.expect(chat.by("session-item")).to_have_count(1)
    chat.expect(chat.by("notice")).to_have_text("Chat deleted.")
    assert chat.page.locator("[data-testid=session-item]").get_attribute("data-session-id") == first
    chat.page.reload()
    chat.expect(chat.by("session-item")).to_have_count(1)
    assert second != first


def test_error_frames_and_rest_errors_show_in_the_banner(chat):
    chat.new_session()
    chat.by("stop").click()  # nothing is being generated: an `error` frame, 1004
    chat.expect(chat.by("error-banner")).to_be_visible()
    chat.expect(chat.by("error-text")).to_contain_text("socket: [1004 操作失败] no reply is being generated")
    chat.expect(chat.by("error-text")).to_contain_text("traceId")

    chat.by("error-close").click()
    chat.send(words(30))
    chat.wait_partials(1)
    chat.send("a second question while the first is answered")  # 1004 again, from the turn rules
    chat.expect(chat.by("error-text")).to_contain_text("[1004 操作失败]")

    chat.by("session-title").fill("")
    chat.by("rename-session").click()  # REST: a blank title is a 1001 naming the field
    chat.expect(chat.by("error-text")).to_contain_text("PATCH /aichat/sessions/")
    chat.expect(chat.by("error-text")).to_contain_text("[1001 数据验证失败]")
    chat.expect(chat.by("error-text")).to_contain_text("new_title")

    forged = jwt.encode(
        {"sub": "someone", "exp": int(time.time()) + 60}, "another-key-" * 4, algorithm="HS256"
    )
    chat.by("token-input").fill(forged)
    chat.by("token-save").click()  # a JWT, signed with another key: the chat list answers 401
    chat.expect(chat.by("error-text")).to_contain_text("GET /aichat/getsessionlist/someone")
    chat.expect(chat.by("error-text")).to_contain_text(
        "[401 未认证] invalid token: Signature verification failed"
    )


def test_usage_and_suggestions_with_dify(context, databases, user, artifacts):
    with (
        FakeDify() as dify,
        chat_server(
            databases.chat, AI_PROVIDER="dify", DIFY_API_URL=dify.url, DIFY_API_KEY=dify.api_key
        ) as server,
    ):
        chat = ChatPage(context.new_page()).open(server.url)
        chat.use_token(user_token(user))
        chat.new_session()
        chat.send("hi Dify")
        chat.wait_reply("Hello from Dify", count=1)
        chat.expect(chat.by("usage")).to_contain_text("15 tokens (prompt 12, completion 3) · 0.0000150 USD")
        chat.expect(chat.by("suggestion")).to_have_count(len(DEFAULT_SUGGESTIONS))
        chat.by("suggestion").first.click()
        chat.wait_reply("Hello from Dify", count=2)
        assert chat.user_texts() == ["hi Dify", DEFAULT_SUGGESTIONS[0]]
        chat.expect(chat.by("usage")).to_contain_text("30 tokens (prompt 24, completion 6) · 0.0000300 USD")
        chat.page.screenshot(path=artifacts / "dify-usage.png")


def test_pins_straight_at_conversation_service_as_make_run_serves_the_page(context, databases, user):
    """No gateway: the page pins at CHAT_PAGE_CONVERSATION_URL, which lets the page's origin in (CORS)."""
    chat_port = free_port()
    page_origin = f"http://127.0.0.1:{chat_port}"
    conversation_app = create_conversation_app(
        base_environ(databases.conversation, CORS_ALLOWED_ORIGINS=page_origin)
    )
    with (
        serve(conversation_app) as conversation_url,
        chat_server(
            databases.chat,
            port=chat_port,
            CHAT_PAGE_CONVERSATION_URL=conversation_url,
            CONVERSATION_SERVICE_URL=conversation_url,
            OUTBOX_WORKER="true",
            OUTBOX_INTERVAL_SECONDS="0.2",
        ) as server,
    ):
        chat = ChatPage(context.new_page()).open(server.url)
        chat.use_token(user_token(user))
        sid = chat.new_session()
        chat.expect(chat.by("pin-session")).to_be_enabled()
        token = user_token(user)

        def record():
            response = requests.get(
                conversation_url + "/api/ai/conversation/list",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            return next((r for r in response.json()["data"] if r["chatSessionId"] == sid), None)

        eventually(record, 10, what="the chat's record")
        chat.by("pin-session").click()
        chat.expect(chat.by("session-pinned")).to_have_text("pinned")
        assert record()["isPinned"] == 1
        chat.by("pin-session").click()
        chat.expect(chat.by("session-pinned")).to_have_text("")
        assert record()["isPinned"] == 0
        chat.expect(chat.by("error-banner")).to_be_hidden()
    with conversation_app.app_context():
        conversation_db.engine.dispose()

"""The chat page through the gateway: nginx from the compose template in front of chat_service under
gunicorn's production config (gevent) and conversation_service, as a deployment runs them.

The page, its REST calls, its socket and its pins all go through nginx (one origin); the screenshots the
README shows are taken here (docs/screenshots/).
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.browser.pages import ChatPage, assert_streamed, gateway_stack, new_user, user_token, words
from tests.live_probe import eventually


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with gateway_stack(tmp_path_factory.mktemp("chat-page-gateway"), ECHO_DELAY_SECONDS="0.08") as running:
        yield running


@pytest.fixture
def user() -> str:
    return new_user()


@pytest.fixture
def chat(context, gateway, user) -> ChatPage:
    page = ChatPage(context.new_page()).open(gateway.url)
    page.use_token(user_token(user))
    return page


def record_of(gateway, user: str, sid: str) -> dict | None:
    """The conversation record of chat `sid`, as the gateway answers it (None until the outbox delivered)."""
    response = requests.get(
        gateway.url + "/api/ai/conversation/list",
        headers={"Authorization": f"Bearer {user_token(user)}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return next((r for r in response.json()["data"] if r["chatSessionId"] == sid), None)


def socket_lines(gateway) -> list[dict]:
    lines = (gateway.prefix / "access.log").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["uri"].startswith("/ws/")]


def test_a_chat_streams_through_the_gateway(chat, gateway, artifacts):
    with chat.page.expect_websocket() as opened:
        sid = chat.new_session()
    assert opened.value.url == gateway.url.replace("http", "ws", 1) + f"/ws/{sid}"
    chat.expect(chat.by("socket-state")).to_have_text("socket: open (bearer)")

    chat.by("session-title").fill("Streaming through nginx")
    chat.by("rename-session").click()
    chat.expect(chat.by("session-item-title")).to_have_text("Streaming through nginx")
    text = "Through the gateway, " + words(20)
    chat.send(text)
    chat.wait_partials(6)
    chat.page.screenshot(path=artifacts / "chat-page-streaming.png")
    chat.wait_reply(text, count=1)
    assert_streamed(chat.partials(), text, at_least=5)
    chat.expect(chat.by("error-banner")).to_be_hidden()

    chat.page.reload()  # the stored chat comes back through the view routes
    chat.wait_reply(text, count=1)
    assert chat.user_texts() == [text]
    handshakes = [line for line in socket_lines(gateway) if line["uri"] == f"/ws/{sid}"]
    assert handshakes and all(line["status"] == 101 for line in handshakes), handshakes
    assert handshakes[0]["upstream"] == gateway.chat_url.removeprefix("http://")


def test_pin_rename_and_delete_through_the_gateway(chat, gateway, user, artifacts):
    first = chat.new_session()
    chat.send("What is a snowflake id?")
    chat.wait_reply("What is a snowflake id?", count=1)
    chat.by("session-title").fill("Snowflake ids")
    chat.by("rename-session").click()

    second = chat.new_session()
    chat.send("Pin me, please: " + words(6))
    chat.wait_reply("Pin me, please: " + words(6), count=1)
    chat.by("session-title").fill("Pinned notes")
    chat.by("rename-session").click()

    third = chat.new_session()
    chat.by("session-title").fill("To be deleted")
    chat.by("rename-session").click()
    items = chat.page.locator("[data-testid=session-item]")
    chat.expect(items.first.get_by_test_id("session-item-title")).to_have_text("To be deleted")

    # Pins live in conversation_service: the chat's record follows through the outbox within a second.
    eventually(lambda: record_of(gateway, user, second), 10, what="the second chat's record")
    chat.page.locator(f"[data-testid=session-item][data-session-id='{second}']").click()
    chat.wait_connected()
    chat.by("pin-session").click()
    chat.expect(items.first).to_have_attribute("data-session-id", second)  # pinned chats first
    chat.expect(items.first.get_by_test_id("session-pinned")).to_have_text("pinned")
    chat.expect(chat.by("pin-session")).to_have_text("Unpin")
    assert record_of(gateway, user, second)["isPinned"] == 1

    chat.page.locator(f"[data-testid=session-item][data-session-id='{third}']").click()
    chat.wait_connected()
    chat.by("delete-session").click()
    chat.expect(items).to_have_count(2)
    eventually(lambda: record_of(gateway, user, third) is None, 10, what="the deleted chat's record to go")

    chat.page.reload()  # all of it stored: the order, the pin, the titles
    chat.expect(items).to_have_count(2)
    assert [items.nth(i).get_attribute("data-session-id") for i in range(2)] == [second, first]
    chat.expect(items.nth(1).get_by_test_id("session-item-title")).to_have_text("Snowflake ids")
    items.first.click()
    chat.wait_connected()
    chat.by("rate-like").click()
    chat.expect(chat.by("rate-like")).to_have_attribute("aria-pressed", "true")
    chat.expect(chat.by("error-banner")).to_be_hidden()
    chat.page.screenshot(path=artifacts / "chat-page.png")

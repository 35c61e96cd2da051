"""The API docs in a real browser: Swagger UI at /docs of both services renders every operation of the
service's /openapi.json, with nothing fetched from anywhere but the service and nothing refused by its
Content-Security-Policy; "Authorize" with a bearer token makes "Try it out" call as that user; and the
browser client of docs/websocket.md, run as printed, chats."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chat_service import create_app as create_chat_app
from chat_service import live
from conversation_service import create_app as create_conversation_app
from shared.auth import mint_token
from tests.conftest import ALICE, SECRET, base_environ
from tests.live import serve
from tests.live_probe import migrated_sqlite

TIMEOUT_MS = 20_000
FACTORIES = {"chat_service": create_chat_app, "conversation_service": create_conversation_app}


@pytest.fixture(params=sorted(FACTORIES))
def docs_server(request, tmp_path) -> Iterator[tuple[str, str]]:
    """One service on a loopback port (no database needed to read its docs); yields (name, base URL)."""
    app = FACTORIES[request.param](base_environ(f"sqlite:///{tmp_path}/docs.sqlite3"))
    try:
        with serve(app) as base:
            yield request.param, base
    finally:
        if request.param == "chat_service":
            live.of(app).close()


class Watched:
    """Every request the page made and every console error (a CSP refusal is one)."""

    def __init__(self, page) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


def operations(page, base: str) -> int:
    document = page.request.get(f"{base}/openapi.json").json()
    return sum(len(methods) for methods in document["paths"].values())


def test_docs_render_every_operation_from_the_service_alone(context, artifacts, docs_server):
    name, base = docs_server
    page = context.new_page()
    watched = Watched(page)
    page.goto(f"{base}/docs")
    page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    expected = operations(page, base)
    assert page.locator(".opblock").count() == expected > 0
    assert page.locator(".info .title").first.inner_text().startswith(name)
    page.screenshot(path=str(artifacts / f"docs-{name}.png"), full_page=False)
    assert page.locator(".btn.authorize").is_visible()
    foreign = [url for url in watched.requests if not url.startswith(base + "/")]
    assert not foreign, foreign
    assert f"{base}/openapi.json" in watched.requests
    assert not watched.errors, watched.errors


def test_authorize_then_try_it_out_calls_as_that_user(context, artifacts, tmp_path):
    app = create_chat_app(base_environ(f"sqlite:///{tmp_path}/docs.sqlite3"))
    try:
        with serve(app) as base:
            page = context.new_page()
            watched = Watched(page)
            sent: list[dict] = []
            page.on("request", lambda r: sent.append(r.headers) if "/api/chat/parameters" in r.url else None)
            page.goto(f"{base}/docs")
            page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)

            page.click(".btn.authorize")
            page.fill(".modal-ux input", mint_token(ALICE, config={"JWT_SECRET": SECRET}))
            page.click(".modal-ux .btn.modal-btn.auth.authorize")
            page.click(".modal-ux .btn-done")

            operation = page.locator(".opblock", has=page.locator("[data-path='/api/chat/parameters']"))
            operation.locator(".opblock-summary").click()
            operation.locator(".try-out__btn").click()
            operation.locator(".execute").click()
            status = operation.locator(".live-responses-table tr.response .response-col_status").first
            status.wait_for(timeout=TIMEOUT_MS)
            assert status.inner_text().strip() == "200"
            body = operation.locator(".live-responses-table .microlight").first.inner_text()
            assert re.search(r'"code":\s*200', body) and '"traceId"' in body
            page.screenshot(path=str(artifacts / "docs-chat_service-try-it-out.png"))
            assert not watched.errors, watched.errors  # the CSP refused nothing the UI needed
    finally:
        live.of(app).close()
    assert sent and sent[-1]["authorization"].startswith("Bearer ey")


def guide_example(language: str) -> str:
    """The `language` code block of docs/websocket.md: the examples there are run, so they stay right."""
    guide = (Path(__file__).parents[2] / "docs" / "websocket.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"```{language}\n(.*?)```", guide, flags=re.DOTALL)
    assert len(blocks) == 1, f"one {language} example in docs/websocket.md"
    return blocks[0]


# The guide's client, driven as a page would: ask, and collect what its callbacks were given.
DRIVE_GUIDE_CLIENT = """([sessionId, token]) => new Promise((resolve) => {
  const seen = {texts: [], messages: [], errors: []};
  const chat = openChat(sessionId, token, {
    onText: (text) => seen.texts.push(text),
    onMessage: (data, type) => {
      seen.messages.push([type || data.role, data.content]);
      if (data.role === "assistant") { chat.stop(); }
    },
    onError: (code) => { seen.errors.push(code); chat.close(); },
    onClosed: (code) => resolve({...seen, closed: code}),
  });
  setTimeout(() => chat.ask("one two three four five"), 300);
})"""


def test_the_guides_browser_client_chats(context, tmp_path):
    database = migrated_sqlite(tmp_path, base_environ)
    app = create_chat_app(base_environ(database, ECHO_DELAY_SECONDS="0.02"))
    try:
        with serve(app) as base:
            token = mint_token(ALICE, config={"JWT_SECRET": SECRET})
            session = requests.post(
                f"{base}/api/chat/session", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=5
            )
            page = context.new_page()
            page.goto(f"{base}/openapi.json")  # the service's origin (/docs's CSP refuses injected scripts)
            page.evaluate(f"() => {{ {guide_example('js')}\n window.openChat = openChat; }}")
            seen = page.evaluate(DRIVE_GUIDE_CLIENT, [session.json()["data"]["session_id"], token])
    finally:
        live.of(app).close()
    assert seen["messages"][0] == ["user", "one two three four five"]
    assert seen["texts"][-1] == "one two three four five" and len(seen["texts"]) >= 4  # streamed
    assert ["assistant", "one two three four five"] in seen["messages"]
    assert seen["errors"] == [1004]  # `stop` with nothing running any more: the error path works too
    assert seen["closed"] == 1000

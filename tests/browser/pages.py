"""Helpers of the chat page's browser tests: the servers behind the page, and the page driven as a user would.

- `sqlite_databases`: a migrated SQLite database per service, in a directory of the test's;
- `chat_server`: chat_service in a thread on loopback (werkzeug, as tests/live.py serves it), its socket
  handshakes recorded (`Handshakes`) so a test can check what the server saw;
- `gateway_stack`: chat_service under gunicorn with the production config (gevent), conversation_service,
  and a real nginx from the compose template in front of both;
- `ChatPage`: the page's controls by `data-testid`, and every text the reply in flight showed.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask_migrate import upgrade
from werkzeug.serving import make_server

from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from shared.auth import mint_token
from tests.conftest import SECRET, base_environ
from tests.gateway.nginx import compose, nginx_binary, run_gateway, template_variables
from tests.live import another_origin, serve
from tests.live_probe import production_server

TIMEOUT_MS = 15_000
# Records every text the reply being generated shows, before the page's own script runs (and again after
# each reload): the proof that it streamed, piece by piece, rather than appearing whole.
WATCH_STREAMING = """
window.__partials = [];
new MutationObserver(() => {
  const text = document.querySelector(
    '[data-testid=assistant-message].streaming [data-testid=message-text]');
  if (text && window.__partials[window.__partials.length - 1] !== text.textContent) {
    window.__partials.push(text.textContent);
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def new_user() -> str:
    """A user of the test's own, so that no other test's chats show in its list."""
    return f"u{uuid.uuid4().int % 10**18}"


def user_token(user: str, **kwargs) -> str:
    return mint_token(user, config={"JWT_SECRET": SECRET}, **kwargs)


def words(count: int) -> str:
    """A message the echo provider streams back in `count` pieces (one per word)."""
    return " ".join(f"word{i}" for i in range(1, count + 1))


# --- servers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Databases:
    chat: str
    conversation: str


def sqlite_databases(directory: Path) -> Databases:
    """A chat and a conversation SQLite database in `directory`, each migrated to its head."""
    urls = Databases(f"sqlite:///{directory}/chat.sqlite3", f"sqlite:///{directory}/conversation.sqlite3")
    for create_app, db, url in (
        (create_chat_app, chat_db, urls.chat),
        (create_conversation_app, conversation_db, urls.conversation),
    ):
        app = create_app(base_environ(url))
        with app.app_context():
            upgrade()
            db.engine.dispose()
        if "chat_service.live" in app.extensions:
            live.of(app).close()
    return urls


@dataclass
class Handshakes:
    """What chat_service saw of each socket handshake: path, query string, headers, and the status of a
    refused one (None while an accepted socket is open)."""

    seen: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, wsgi_app):
        def recording(environ, start_response):
            if not environ.get("PATH_INFO", "").startswith("/ws/"):
                return wsgi_app(environ, start_response)
            entry = {
                "path": environ["PATH_INFO"],
                "query": environ.get("QUERY_STRING", ""),
                "protocol": environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL"),
                "origin": environ.get("HTTP_ORIGIN"),
                "authorization": environ.get("HTTP_AUTHORIZATION"),
                "status": None,
            }
            with self._lock:
                self.seen.append(entry)

            def recorded_start_response(status, headers, *args):
                # A refused handshake is an HTTP answer; an accepted one is written by flask-sock on the
                # raw socket (the browser's `WebSocket.protocol` tells what it answered).
                entry["status"] = int(status.split()[0])
                return start_response(status, headers, *args)

            return wsgi_app(environ, recorded_start_response)

        return recording


@dataclass(frozen=True)
class ChatServer:
    url: str
    handshakes: Handshakes


@contextmanager
def chat_server(database: str, port: int = 0, **settings: str) -> Iterator[ChatServer]:
    """chat_service on a loopback port (any free one unless given; echo provider, 0.05 s a piece unless
    told), handshakes recorded."""
    app = create_chat_app(base_environ(database, **({"ECHO_DELAY_SECONDS": "0.05"} | settings)))
    handshakes = Handshakes()
    app.wsgi_app = handshakes.wrap(app.wsgi_app)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ChatServer(f"http://127.0.0.1:{server.server_port}", handshakes)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if "outbox" in app.extensions:
            app.extensions["outbox"].stop()  # started only where a test turned OUTBOX_WORKER on
        live.of(app).close()
        with app.app_context():
            chat_db.engine.dispose()


def foreign_site():
    """Another origin on loopback: a blank page any script can be put in; yields its base URL."""
    return another_origin()


@dataclass(frozen=True)
class Gateway:
    url: str
    chat_url: str  # chat_service under gunicorn, behind the gateway
    prefix: Path  # nginx's files: access.log, error.log


def compose_defaults() -> dict[str, str]:
    """The gateway's other template variables as compose sets them when the environment leaves them unset
    (`${NAME:-default}`: the default), so the gateway here is the one `docker compose up` starts."""
    environment = compose()["services"]["gateway"]["environment"]
    values = {}
    for name in template_variables():
        if name == "GATEWAY_LISTEN":
            continue  # run_gateway picks a free port
        default = re.fullmatch(r"\$\{\w+:-(.*)\}", str(environment.get(name, "")))
        values[name] = default.group(1) if default else str(environment.get(name, ""))
    return values


@contextmanager
def gateway_stack(directory: Path, **chat_settings: str) -> Iterator[Gateway]:
    """nginx (the compose template) in front of chat_service under gunicorn's production config (gevent:
    the socket depends on the worker class) and conversation_service, on loopback; the outbox worker on,
    so each chat gets its conversation record (pins)."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)")
    databases = sqlite_databases(directory)
    conversation_app = create_conversation_app(base_environ(databases.conversation, TRUSTED_PROXIES="1"))
    try:
        with serve(conversation_app) as conversation_url:
            environ = base_environ(
                databases.chat,
                TRUSTED_PROXIES="1",
                CONVERSATION_SERVICE_URL=conversation_url,
                OUTBOX_WORKER="true",
                OUTBOX_INTERVAL_SECONDS="0.2",
                **({"ECHO_DELAY_SECONDS": "0.05"} | chat_settings),
            )
            with production_server(environ, directory / "chat.log") as chat:
                upstreams = {
                    **compose_defaults(),
                    "CHAT_UPSTREAM": chat.url.removeprefix("http://"),
                    "CONVERSATION_UPSTREAM": conversation_url.removeprefix("http://"),
                }
                prefix = directory / "nginx"
                prefix.mkdir()
                with run_gateway(binary, prefix, upstreams) as url:
                    yield Gateway(url, chat.url, prefix)
    finally:
        with conversation_app.app_context():
            conversation_db.engine.dispose()


# --- the page ----------------------------------------------------------------------------------------


class ChatPage:
    """The chat page in one browser tab, driven through its `data-testid`s."""

    def __init__(self, page) -> None:
        self.page = page
        page.set_default_timeout(TIMEOUT_MS)
        page.add_init_script(WATCH_STREAMING)

    def by(self, testid: str):
        return self.page.get_by_test_id(testid)

    def open(self, base_url: str) -> ChatPage:
        self.page.goto(base_url + "/chat")
        return self

    def use_token(self, token: str) -> None:
        self.by("token-input").fill(token)
        self.by("token-save").click()
        self.expect(self.by("who")).to_contain_text("user ")

    def new_session(self) -> str:
        """Start a chat; its session id once its socket is open."""
        count = self.by("session-item").count()
        self.by("new-session").click()
        self.expect(self.by("session-item")).to_have_count(count + 1)
        self.wait_connected()
        return self.current_session()

    def current_session(self) -> str:
        return self.page.locator("[data-testid=session-item].current").get_attribute("data-session-id")

    def wait_connected(self) -> None:
        self.expect(self.by("socket-state")).to_have_text(re.compile(r"socket: open"))

    def send(self, text: str) -> None:
        self.by("message-input").fill(text)
        self.by("send").click()

    def assistant_texts(self) -> list[str]:
        return self.page.locator(
            "[data-testid=assistant-message] [data-testid=message-text]"
        ).all_text_contents()

    def user_texts(self) -> list[str]:
        return self.page.locator("[data-testid=user-message] [data-testid=message-text]").all_text_contents()

    def stored_reply(self, index: int = -1):
        """The `index`th stored reply (not the one streaming)."""
        return self.page.locator("[data-testid=assistant-message][data-message-id]").nth(index)

    def wait_reply(self, text: str, count: int | None = None) -> None:
        """Until a stored reply (no longer streaming) shows exactly `text`."""
        replies = self.page.locator(
            "[data-testid=assistant-message][data-message-id] [data-testid=message-text]"
        )
        if count is not None:
            self.expect(replies).to_have_count(count)
        self.expect(replies.last).to_have_text(text)

    def partials(self) -> list[str]:
        """Every text the streaming reply showed since the page loaded."""
        return self.page.evaluate("window.__partials")

    def wait_partials(self, at_least: int) -> list[str]:
        self.page.wait_for_function("(n) => window.__partials.length >= n", arg=at_least)
        return self.partials()

    def error_text(self) -> str:
        return self.by("error-text").text_content() or ""

    @staticmethod
    def expect(locator):
        from playwright.sync_api import expect

        return expect(locator)


def assert_streamed(partials: list[str], final: str, at_least: int = 3) -> None:
    """The reply showed at least `at_least` growing prefixes of `final` before it was whole."""
    growing = [text for text in partials if text and final.startswith(text) and text != final]
    assert len(set(growing)) >= at_least, f"saw only {partials!r} before {final!r}"
    assert growing == sorted(growing, key=len), f"the reply did not only grow: {partials!r}"

"""The API docs pages of both services: Swagger UI at /docs, every file of it served by the service itself,
for the service's own /openapi.json, with no token; off with API_DOCS=false; and /asyncapi.json."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

import shared.admission
from chat_service import create_app as create_chat_app
from conversation_service import create_app as create_conversation_app
from shared import docs
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ

FACTORIES = {"chat_service": create_chat_app, "conversation_service": create_conversation_app}
CONTENT_TYPES = {
    ".js": {"text/javascript", "application/javascript"},
    ".css": {"text/css"},
    ".png": {"image/png"},
}


def make_app(name: str, tmp_path, **settings: str):
    app = FACTORIES[name](base_environ(f"sqlite:///{tmp_path}/docs.sqlite3", **settings))
    app.config["TESTING"] = True
    return app


@pytest.fixture(params=sorted(FACTORIES))
def app(request, tmp_path):
    return make_app(request.param, tmp_path)


class Page(HTMLParser):
    """What a browser would load for a page: its scripts, stylesheets and icons, and the docs' settings."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline_scripts = 0
        self.openapi_url: str | None = None
        self.links: dict[str, str] = {}
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in attributes
            if "src" in attributes:
                self.loads.append(attributes["src"])
        elif tag == "link":
            self.loads.append(attributes["href"])
        self.inline_scripts += sum(name.startswith("on") for name in attributes)  # onclick=...
        if attributes.get("id") == "swagger-ui":
            self.openapi_url = attributes.get("data-openapi-url")
        if tag == "a" and "data-testid" in attributes:
            self.links[attributes["data-testid"]] = attributes["href"]

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False


def test_docs_page_is_swagger_ui_for_the_services_own_document_with_no_token(app):
    client = app.test_client()
    response = client.get(docs.PAGE_PATH)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    page = Page(html)
    assert page.openapi_url is not None
    assert urljoin("http://localhost/docs", page.openapi_url) == "http://localhost/openapi.json"
    assert page.links["openapi-link"] == page.openapi_url
    spec = client.get(page.openapi_url)
    assert spec.status_code == 200 and spec.get_json()["info"]["title"] == app.name
    assert "swagger-ui-bundle.js" in " ".join(page.loads)


def test_every_file_of_the_page_is_served_by_the_service_with_its_content_type(app):
    client = app.test_client()
    html = client.get(docs.PAGE_PATH).get_data(as_text=True)
    page = Page(html)
    assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9]", html), "the page names another host"
    assert len(page.loads) >= 4
    for url in page.loads:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
        with client.get(url) as response:  # a file of the bundle: closed, as the server would
            assert response.status_code == 200, url
            suffix = parts.path[parts.path.rindex(".") :]
            assert response.mimetype in CONTENT_TYPES[suffix], (url, response.mimetype)
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert len(response.data) > 100


def test_the_page_allows_scripts_and_requests_to_its_own_origin_only(app):
    response = app.test_client().get(docs.PAGE_PATH)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"  # the document and "Try it out" only to this service
    assert policy["frame-ancestors"] == "'none'"
    assert Page(response.get_data(as_text=True)).inline_scripts == 0


def test_files_of_the_bundle_are_cacheable_and_revalidated(app):
    client = app.test_client()
    with client.get("/docs/swagger-ui.css") as first:
        assert first.headers["Cache-Control"] == f"public, max-age={docs.ASSET_MAX_AGE_SECONDS}"
    with client.get("/docs/swagger-ui.css", headers={"If-None-Match": first.headers["ETag"]}) as again:
        assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/docs/index.html",  # the bundle's own page (petstore URL, inline script)
        "/docs/swagger-initializer.js",
        "/docs/swagger-ui-bundle.js.map",
        "/docs/../shared/docs.py",
        "/docs/%2e%2e/__init__.py",
        "/docs/nothing.css",
        "/docs/",
    ],
)
def test_anything_else_under_docs_is_404_in_the_envelope(app, path):
    envelope(app.test_client().get(path), 404)


def test_api_docs_off_leaves_no_page_and_keeps_the_documents(tmp_path):
    for name in FACTORIES:
        app = make_app(name, tmp_path, API_DOCS="false")
        client = app.test_client()
        envelope(client.get("/docs"), 404)
        envelope(client.get("/docs/swagger-ui.css"), 404)
        assert client.get("/openapi.json").status_code == 200
    assert app.name == "conversation_service"
    assert (
        make_app("chat_service", tmp_path, API_DOCS="false").test_client().get("/asyncapi.json").status_code
        == 200
    )


@pytest.fixture(params=sorted(FACTORIES))
def busy_app(request, tmp_path):
    """A service whose only admission slot is taken and whose users may make one request a minute."""
    app = make_app(
        request.param,
        tmp_path,
        ADMISSION_MAX_IN_FLIGHT="1",
        ADMISSION_TIMEOUT_SECONDS="0.1",
        LIMIT_REQUESTS="1/minute",
    )
    with app.app_context():
        assert shared.admission.current().slots.acquire(0)
    return app


def test_docs_are_answered_while_the_api_is_busy_and_count_against_no_limit(busy_app):
    api = ApiClient(busy_app, default_user=ALICE)
    api_path = (
        "/api/chat/sessions/" + "0" * 32 if busy_app.name == "chat_service" else "/api/ai/conversation/list"
    )
    envelope(api.get(api_path), 503, 12001)  # the API waits for the taken slot, in vain
    for path in ("/docs", "/docs/swagger-ui-bundle.js", "/docs/docs.js", "/openapi.json"):
        for _ in range(3):  # with a token too: never counted
            with api.get(path) as response:
                assert response.status_code == 200, (path, response.data[:200])
                assert "RateLimit" not in response.headers


def test_chat_service_links_its_asyncapi_document_and_conversation_service_has_none(tmp_path):
    chat = make_app("chat_service", tmp_path).test_client()
    links = Page(chat.get("/docs").get_data(as_text=True)).links
    assert links["asyncapi-link"] == docs.ASYNCAPI_PATH
    assert chat.get(links["asyncapi-link"]).get_json()["asyncapi"] == "3.0.0"
    conversation = make_app("conversation_service", tmp_path).test_client()
    assert "asyncapi-link" not in Page(conversation.get("/docs").get_data(as_text=True)).links
    envelope(conversation.get("/asyncapi.json"), 404)


def test_asyncapi_document_is_served_with_no_token_naming_the_server_that_answers(tmp_path):
    client = make_app("chat_service", tmp_path, TRUSTED_PROXIES="1").test_client()
    direct = client.get("/asyncapi.json", base_url="http://127.0.0.1:5001")
    assert direct.status_code == 200 and direct.mimetype == "application/json"
    assert direct.get_json()["servers"]["chat_service"] | {"security": None} == {
        **direct.get_json()["servers"]["chat_service"],
        "host": "127.0.0.1:5001",
        "protocol": "ws",
        "security": None,
    }
    forwarded = client.get(
        "/asyncapi.json", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.org"}
    )
    server = forwarded.get_json()["servers"]["chat_service"]
    assert (server["host"], server["protocol"]) == ("chat.example.org", "wss")
    # what is served is a copy: the next answer names its own server again
    assert client.get("/asyncapi.json").get_json()["servers"]["chat_service"]["protocol"] == "ws"

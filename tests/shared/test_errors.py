"""Every failure answers in the envelope, with the contract's HTTP status and code."""

from __future__ import annotations

import pytest

from chat_service import create_app
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ


@pytest.fixture
def api(bare_app) -> ApiClient:
    return ApiClient(bare_app, default_user=ALICE)


def test_unknown_route_is_404_in_the_envelope(api):
    response = api.get("/no/such/route", user=None)
    data = envelope(response, 404, 404)
    assert response.get_json()["message"] == "资源不存在"
    assert response.mimetype == "application/json"
    assert data["detail"]


def test_wrong_method_is_405_with_allow(api):
    response = api.call("PUT", "/api/chat/session")
    envelope(response, 405, 405)
    assert "POST" in response.headers["Allow"]


def test_body_too_large_is_413(tmp_path):
    app = create_app(base_environ(f"sqlite:///{tmp_path}/x.sqlite3", MAX_CONTENT_LENGTH="1000"))
    api = ApiClient(app, default_user=ALICE)
    response = api.post("/api/chat/session", json={"title": "x" * 2000})
    envelope(response, 413, 413)


def test_wrong_content_type_is_still_read_as_json(api):
    # Clients that forget the Content-Type header are served; the body must still be JSON.
    response = api.post("/api/chat/session", data='{"title": "x"}', headers={"Content-Type": "text/plain"})
    assert response.status_code != 415


def test_unhandled_exception_is_500_without_a_stack_trace(bare_app):
    @bare_app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = bare_app.test_client().get("/boom")
    data = envelope(response, 500, 500)
    assert data is None
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_unreachable_sqlite_database_is_503_12001(tmp_path):
    app = create_app(base_environ(f"sqlite:///{tmp_path}/missing/dir/db.sqlite3"))
    response = ApiClient(app, default_user=ALICE).post("/api/chat/session", json={})
    envelope(response, 503, 12001)
    assert response.get_json()["message"] == "数据库操作失败"


def test_unreachable_postgresql_is_503_12001_quickly(tmp_path):
    # Nothing listens on port 1: the connection is refused and the request must not hang.
    app = create_app(base_environ("postgresql+psycopg://postgres@127.0.0.1:1/none"))
    response = ApiClient(app, default_user=ALICE).get(
        "/api/chat/sessions/123e4567-e89b-12d3-a456-426614174000"
    )
    envelope(response, 503, 12001)


def test_options_is_405_in_the_envelope_with_allow(api):
    response = api.call("OPTIONS", "/api/chat/session", user=None)
    envelope(response, 405, 405)
    assert "POST" in response.headers["Allow"]


def test_no_response_is_html(api):
    for path in ("/", "/api/chat", "/aichat", "/api/chat/sessions/x/messages/y/z"):
        response = api.get(path)
        assert response.mimetype == "application/json", (path, response.data[:100])

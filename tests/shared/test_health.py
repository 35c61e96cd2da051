"""`/healthz` and `/readyz` of both services: outside auth, in the envelope, 503 naming what failed."""

from __future__ import annotations

import os
import time

import pytest

from chat_service import create_app as create_chat_app
from chat_service import live
from conversation_service import create_app as create_conversation_app
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ

SERVICES = {"chat": create_chat_app, "conversation": create_conversation_app}


@pytest.fixture
def make_app():
    """Build a service's app; closes what it started (the hub's Redis listener) afterwards."""
    apps = []

    def make(service: str, database_url: str, **environ: str):
        app = SERVICES[service](base_environ(database_url, **environ))
        app.config["TESTING"] = True
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        if "hub" in app.extensions:
            live.of(app).close()
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_healthz_answers_without_a_token_or_a_database(make_app, tmp_path, service):
    client = make_app(service, f"sqlite:///{tmp_path}/missing/dir/x.sqlite3")
    assert envelope(client.get("/healthz"), 200)["status"] == "alive"


@pytest.mark.parametrize("service", SERVICES)
def test_readyz_is_200_when_the_database_answers(make_app, tmp_path, service):
    client = make_app(service, f"sqlite:///{tmp_path}/ok.sqlite3")
    data = envelope(client.get("/readyz"), 200)
    assert data == {"status": "ready", "checks": {"database": "ok"}}


def test_readyz_on_each_backend(chat):
    assert envelope(chat.get("/readyz", user=None), 200)["checks"] == {"database": "ok"}


@pytest.mark.usefixtures("conversation_database")
def test_readyz_on_each_backend_of_conversation_service(make_app, request):
    client = make_app("conversation", request.getfixturevalue("conversation_database"))
    assert envelope(client.get("/readyz"), 200)["checks"] == {"database": "ok"}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    "database_url",
    ["sqlite:///{tmp}/missing/dir/x.sqlite3", "postgresql+psycopg://user:pw@127.0.0.1:1/nothing"],
    ids=["sqlite-missing-dir", "postgres-port-1"],
)
def test_readyz_is_503_with_12001_when_the_database_is_unreachable(make_app, tmp_path, service, database_url):
    client = make_app(service, database_url.format(tmp=tmp_path))
    started = time.monotonic()
    data = envelope(client.get("/readyz"), 503, 12001)
    assert time.monotonic() - started < 5
    assert data == {"status": "unavailable", "checks": {"database": "failed"}, "failed": ["database"]}


def test_readyz_is_503_naming_redis_when_redis_is_unreachable(make_app, tmp_path):
    client = make_app("chat", f"sqlite:///{tmp_path}/ok.sqlite3", REDIS_URL="redis://127.0.0.1:1/0")
    started = time.monotonic()
    data = envelope(client.get("/readyz"), 503, 12001)
    assert time.monotonic() - started < 6
    assert data["checks"]["database"] == "ok"
    assert data["checks"]["redis"] in ("failed", "timeout")
    assert data["failed"] == ["redis"]


def test_readyz_checks_redis_when_it_is_configured(make_app, tmp_path):
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: no Redis server to test against")
    client = make_app("chat", f"sqlite:///{tmp_path}/ok.sqlite3", REDIS_URL=url)
    assert envelope(client.get("/readyz"), 200)["checks"] == {"database": "ok", "redis": "ok"}


def test_a_check_that_hangs_is_a_timeout_within_the_deadline(bare_app):
    bare_app.extensions["shared.health"] |= {"checks": {"slow": lambda: time.sleep(1)}, "timeout": 0.2}
    started = time.monotonic()
    data = envelope(bare_app.test_client().get("/readyz"), 503, 12001)
    assert time.monotonic() - started < 2
    assert data["checks"] == {"database": "ok", "slow": "timeout"}


def test_probes_are_logged_like_any_request(bare_app, caplog):
    api = ApiClient(bare_app, default_user=ALICE)
    with caplog.at_level("INFO", logger="access"):
        api.get("/healthz", user=None)
    assert [r.path for r in caplog.records if r.name == "access"] == ["/healthz"]


def test_a_bad_token_does_not_stop_the_probes(make_app, tmp_path):
    client = make_app("chat", f"sqlite:///{tmp_path}/ok.sqlite3")
    headers = {"Authorization": "Bearer not-a-token"}
    envelope(client.get("/healthz", headers=headers), 200)
    envelope(client.get("/readyz", headers=headers), 200)

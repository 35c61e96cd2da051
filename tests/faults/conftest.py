"""Fault fixtures: a service whose database (or Redis) is reached through a proxy the test controls."""

from __future__ import annotations

import os

import pytest
from flask_migrate import upgrade
from sqlalchemy.engine import make_url

from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from tests.conftest import base_environ
from tests.faults.proxy import TcpProxy

DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


@pytest.fixture
def networked(database_server):
    """The database server of this run's backend; SQLite has no network to cut."""
    if database_server.backend == "sqlite":
        pytest.skip("SQLite is a file in the process: there is no network connection to cut")
    return database_server


def proxy_for(database_url: str) -> TcpProxy:
    url = make_url(database_url)
    return TcpProxy(url.host or "127.0.0.1", url.port or DEFAULT_PORTS[url.get_backend_name()])


def through(database_url: str, proxy: TcpProxy) -> str:
    """`database_url` with its host and port replaced by the proxy's."""
    return make_url(database_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: no Redis server to test against")
    return url


@pytest.fixture
def sqlite_chat_database(tmp_path) -> str:
    """A migrated chat_service database of its own (the Redis faults need no database server)."""
    url = f"sqlite:///{tmp_path}/chat.sqlite3"
    app = create_chat_app(base_environ(url))
    with app.app_context():
        upgrade()
        chat_db.engine.dispose()
    live.of(app).close()
    return url

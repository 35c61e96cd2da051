"""Both services live on loopback, and a real nginx in front of them configured as compose does."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from tests.conftest import base_environ
from tests.databases import clear_tables
from tests.gateway.nginx import nginx_binary, run_gateway
from tests.live import serve


@pytest.fixture(scope="session")
def nginx() -> str:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)")
    return binary


def host_port(url: str) -> str:
    return urlsplit(url).netloc


@pytest.fixture(scope="module")
def services(chat_database, conversation_database):
    """chat_service and conversation_service as compose runs them: behind one trusted proxy."""
    conversation_app = create_conversation_app(base_environ(conversation_database, TRUSTED_PROXIES="1"))
    with serve(conversation_app) as conversation_url:
        chat_app = create_chat_app(
            base_environ(
                chat_database,
                TRUSTED_PROXIES="1",
                CONVERSATION_SERVICE_URL=conversation_url,
                ECHO_DELAY_SECONDS="0.01",
            )
        )
        try:
            with serve(chat_app) as chat_url:
                yield {
                    "CHAT_UPSTREAM": host_port(chat_url),
                    "CONVERSATION_UPSTREAM": host_port(conversation_url),
                }
        finally:
            live.of(chat_app).close()
            with chat_app.app_context():
                clear_tables(chat_db, ["chat_messages", "chat_sessions"])
                chat_db.engine.dispose()
    with conversation_app.app_context():
        clear_tables(conversation_db, ["ai_conversations", "conversation_user_counts"])
        conversation_db.engine.dispose()


@pytest.fixture(scope="module")
def gateway_prefix(tmp_path_factory):
    return tmp_path_factory.mktemp("nginx")


@pytest.fixture(scope="module")
def gateway(nginx, services, gateway_prefix) -> str:
    """The gateway's base URL; its access log is `gateway_prefix / "access.log"`."""
    with run_gateway(nginx, gateway_prefix, services) as url:
        yield url

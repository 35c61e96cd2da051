"""Fixtures for conversation_service: a database per backend, an app per test, a client as ALICE."""

from __future__ import annotations

import pytest
from flask_migrate import upgrade

from conversation_service import create_app
from conversation_service.extensions import db
from tests.api_client import ApiClient
from tests.conftest import ALICE, base_environ
from tests.databases import clear_tables


@pytest.fixture(scope="session")
def conversation_database(database_server) -> str:
    """A conversation_service database on this backend, migrated once for the whole run."""
    url = database_server.create("conversation_test")
    app = create_app(base_environ(url))
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return url


@pytest.fixture
def conversation_app(conversation_database):
    app = create_app(base_environ(conversation_database))
    app.config["TESTING"] = True
    yield app
    with app.app_context():
        clear_tables(db, ["ai_conversations"])
        db.engine.dispose()


@pytest.fixture
def conv(conversation_app) -> ApiClient:
    """conversation_service's API, called as ALICE unless a test says otherwise."""
    return ApiClient(conversation_app, default_user=ALICE)

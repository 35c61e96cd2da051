"""Each service's migrations run up from empty, back down to base, and up again, on every backend,
and leave the schema its models describe."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

import chat_service
import conversation_service
from chat_service import live
from chat_service.extensions import db as chat_db
from conversation_service.extensions import db as conversation_db
from tests.conftest import base_environ

SERVICES = {
    "chat_service": (chat_service.create_app, chat_db, {"chat_sessions", "chat_messages", "sync_outbox"}),
    "conversation_service": (
        conversation_service.create_app,
        conversation_db,
        {"ai_conversations", "sync_outbox"},
    ),
}


def tables(engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


@pytest.mark.parametrize("service", SERVICES)
def test_upgrade_downgrade_upgrade(database_server, service):
    create_app, db, expected = SERVICES[service]
    app = create_app(base_environ(database_server.create(f"migrations_{service[:4]}")))
    with app.app_context():
        try:
            upgrade()
            assert tables(db.engine) == expected
            with db.engine.connect() as connection:
                drift = compare_metadata(MigrationContext.configure(connection), db.metadata)
            assert drift == [], f"the models and the migrations differ: {drift}"
            downgrade(revision="base")
            assert tables(db.engine) == set()
            upgrade()
            assert tables(db.engine) == expected
        finally:
            db.engine.dispose()
    if "hub" in app.extensions:
        live.of(app).close()

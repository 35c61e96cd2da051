"""Each service's migrations run up from empty, back down to base, and up again, on every backend,
and leave the schema its models describe."""

from __future__ import annotations

from datetime import datetime

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
from shared.search_text import is_search_object
from tests.conftest import base_environ

SERVICES = {
    "chat_service": (
        chat_service.create_app,
        chat_db,
        {"chat_sessions", "chat_messages", "chat_sync_outbox", "chat_erasures"},
    ),
    "conversation_service": (
        conversation_service.create_app,
        conversation_db,
        {"ai_conversations", "conversation_sync_outbox", "conversation_erasures", "conversation_user_counts"},
    ),
}


VERSION_TABLES = {chat_service.VERSION_TABLE, conversation_service.VERSION_TABLE}


def tables(engine) -> set[str]:
    names = {name for name in sa.inspect(engine).get_table_names() if not is_search_object(name)}
    return names - VERSION_TABLES


@pytest.mark.parametrize("service", SERVICES)
def test_upgrade_downgrade_upgrade(database_server, service):
    create_app, db, expected = SERVICES[service]
    app = create_app(base_environ(database_server.create(f"migrations_{service[:4]}")))
    with app.app_context():
        try:
            upgrade()
            assert tables(db.engine) == expected
            with db.engine.connect() as connection:
                options = app.extensions["migrate"].configure_args  # the service's own version table
                drift = compare_metadata(MigrationContext.configure(connection, opts=options), db.metadata)
            assert drift == [], f"the models and the migrations differ: {drift}"
            downgrade(revision="base")
            assert tables(db.engine) == set()
            upgrade()
            assert tables(db.engine) == expected
        finally:
            db.engine.dispose()
    if "hub" in app.extensions:
        live.of(app).close()


def _upgrade(service: str, url: str, revision: str = "head") -> None:
    create_app, db, _ = SERVICES[service]
    app = create_app(base_environ(url))
    with app.app_context():
        try:
            upgrade(revision=revision)
        finally:
            db.engine.dispose()
    if "hub" in app.extensions:
        live.of(app).close()


@pytest.mark.parametrize(
    "order", [list(SERVICES), list(reversed(SERVICES))], ids=["chat-first", "conv-first"]
)
def test_both_services_migrate_one_shared_database(database_server, order):
    """Each keeps its own version table and its own table names, so one database holds both."""
    url = database_server.create("migrations_shared")
    for service in order:
        _upgrade(service, url)
    engine = sa.create_engine(url)
    try:
        names = tables(engine) | VERSION_TABLES
        expected = set().union(*(tables for _, _, tables in SERVICES.values()))
        assert names == expected | VERSION_TABLES
        with engine.connect() as connection:
            heads = {
                table: connection.execute(sa.text(f"SELECT version_num FROM {table}")).scalar_one()
                for table in VERSION_TABLES
            }
        assert heads == {chat_service.VERSION_TABLE: "0010", conversation_service.VERSION_TABLE: "0006"}
        for service in order:  # upgrading again is a no-op for both
            _upgrade(service, url)
    finally:
        engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_a_database_migrated_with_alembics_default_version_table_is_adopted(database_server, service):
    """Before each service had its own version table, Alembic kept the revision in `alembic_version`:
    the next upgrade moves it over and goes on from there (the outbox renamed), keeping every row."""
    _, _, expected = SERVICES[service]
    version_table = {"chat_service": chat_service, "conversation_service": conversation_service}[
        service
    ].VERSION_TABLE
    legacy_head, outbox = {
        "chat_service": ("0006", "chat_sync_outbox"),
        "conversation_service": ("0002", "conversation_sync_outbox"),
    }[service]
    url = database_server.create(f"migrations_legacy_{service[:4]}")
    _upgrade(service, url, legacy_head)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:  # what the old code left: its revision in alembic_version
            connection.execute(sa.text(f"ALTER TABLE {version_table} RENAME TO alembic_version"))
            if engine.dialect.name == "postgresql":  # and its key, named after it as Alembic names it
                rename = f"RENAME CONSTRAINT {version_table}_pkc TO alembic_version_pkc"
                connection.execute(sa.text(f"ALTER TABLE alembic_version {rename}"))
            connection.execute(
                sa.text(
                    'INSERT INTO sync_outbox (topic, "key", version, due_at, attempts)'
                    " VALUES ('record', 'k1', 3, :now, 0)"
                    if engine.dialect.name != "mysql"
                    else "INSERT INTO sync_outbox (topic, `key`, version, due_at, attempts)"
                    " VALUES ('record', 'k1', 3, :now, 0)"
                ),
                {"now": datetime(2026, 12, 3, 12, 0)},
            )
        _upgrade(service, url)
        names = tables(engine) | {version_table}
        assert names == expected | {version_table}, "alembic_version is gone, the rest migrated on"
        with engine.connect() as connection:
            assert connection.execute(sa.text(f"SELECT version_num FROM {version_table}")).scalar_one() == (
                "0010" if service == "chat_service" else "0006"
            )
            rows = connection.execute(sa.text(f"SELECT topic, version FROM {outbox}")).all()
        assert [tuple(row) for row in rows] == [("record", 3)]
    finally:
        engine.dispose()

"""Migration 0009 on every backend: rows written before it are backfilled and found, and the index
still finds them after a downgrade and an upgrade (MariaDB once rebuilt an empty FULLTEXT index)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

import chat_service
from chat_service import live
from chat_service.extensions import db
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ

SESSION = "123e4567-e89b-12d3-a456-426614174001"


def _migrate(url: str, step) -> None:
    app = chat_service.create_app(base_environ(url))
    with app.app_context():
        try:
            step()
        finally:
            db.engine.dispose()
    live.of(app).close()


def _found(url: str, q: str) -> list:
    app = chat_service.create_app(base_environ(url))
    try:
        data = envelope(
            ApiClient(app, default_user=ALICE).get("/api/chat/search", query_string={"q": q}), 200
        )
        return [(item["kind"], item["message_id"]) for item in data["items"]]
    finally:
        with app.app_context():
            db.engine.dispose()
        live.of(app).close()


def test_existing_rows_are_backfilled_and_survive_a_downgrade_and_upgrade(database_server):
    url = database_server.create("search_migration")
    _migrate(url, lambda: upgrade(revision="0008"))
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            now = datetime(2026, 1, 1)
            connection.execute(
                sa.text(
                    "INSERT INTO chat_sessions (session_id, user_id, title, message_count, created_at,"
                    " updated_at, is_deleted) VALUES (:sid, :user, '项目周会', 1, :now, :now, false)"
                ),
                {"sid": SESSION, "user": ALICE, "now": now},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO chat_messages (message_id, session_id, role, content, created_at,"
                    " updated_at, is_deleted) VALUES (7, :sid, 'user', :content, :now, :now, false)"
                ),
                {"sid": SESSION, "content": "讨论项目管理 and the Plan", "now": now},
            )
    finally:
        engine.dispose()
    _migrate(url, upgrade)
    assert _found(url, "项目") == [("message", 7), ("title", None)]
    assert _found(url, "plan 管理") == [("message", 7)]
    _migrate(url, lambda: downgrade(revision="0008"))
    _migrate(url, upgrade)
    assert _found(url, "项目") == [("message", 7), ("title", None)]
    assert _found(url, "plan 管理") == [("message", 7)]

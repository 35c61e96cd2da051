"""Fresh databases for a test run on each backend: SQLite always, PostgreSQL and MariaDB when given."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from chat_service import live

SERVER_URLS = {
    "postgresql": "TEST_POSTGRES_URL",
    "mysql": "TEST_MYSQL_URL",
}
BACKENDS = ("sqlite", *SERVER_URLS)


def create_and_drop_statements(backend: str, name: str) -> tuple[str, str]:
    """The statements that create database `name` on a PostgreSQL or MariaDB/MySQL server (utf8mb4 on
    MariaDB) and drop it, connections and all (also used by bench/_support.temporary_database)."""
    if backend == "postgresql":
        return f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    if backend in ("mysql", "mariadb"):
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        return create, f"DROP DATABASE IF EXISTS `{name}`"
    raise ValueError(f"no database server statements for {backend!r}")


class DatabaseServer:
    """Creates uniquely named databases on one backend and drops them all at the end."""

    def __init__(self, backend: str, tmp_dir: Path) -> None:
        self.backend = backend
        self._tmp_dir = tmp_dir
        self._created: list[str] = []
        self._server_url = os.environ.get(SERVER_URLS[backend]) if backend in SERVER_URLS else None

    @classmethod
    def skip_reason(cls, backend: str) -> str | None:
        if backend in SERVER_URLS and not os.environ.get(SERVER_URLS[backend]):
            return f"{SERVER_URLS[backend]} is not set: no {backend} server to test against"
        return None

    def create(self, prefix: str) -> str:
        """A new, empty database; returns its URL."""
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
        if self.backend == "sqlite":
            return f"sqlite:///{self._tmp_dir / name}.sqlite3"
        self._admin(create_and_drop_statements(self.backend, name)[0])
        self._created.append(name)
        return make_url(self._server_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for name in self._created:
            self._admin(create_and_drop_statements(self.backend, name)[1])
        self._created.clear()

    def _admin(self, statement: str) -> None:
        engine = sa.create_engine(self._server_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(statement))
        finally:
            engine.dispose()


def clear_tables(db, tables: list[str]) -> None:
    """Empty `tables` (children first) so the next test starts from nothing."""
    with db.engine.begin() as connection:
        for table in tables:
            connection.execute(sa.text(f"DELETE FROM {table}"))


def migrated_database(server: DatabaseServer, prefix: str, create_app, db, environ) -> str:
    """A new database on `server`, migrated to the service's head once; returns its URL."""
    url = server.create(prefix)
    app = create_app(environ(url))
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        db.engine.dispose()
    if "chat_service.live" in app.extensions:
        live.of(app).close()
    return url

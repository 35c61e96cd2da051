"""Engine settings that make a database outage fail fast (503 in seconds, not a 30 s hang)."""

from __future__ import annotations

import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

CONNECT_TIMEOUT_SECONDS = 3
POOL_TIMEOUT_SECONDS = 5


def engine_options(database_url: str) -> dict:
    """Pool and driver options for `database_url`'s backend."""
    backend = make_url(database_url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": 15}}
    options: dict = {"pool_pre_ping": True, "pool_recycle": 1800, "pool_timeout": POOL_TIMEOUT_SECONDS}
    if backend == "postgresql":
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    elif backend in ("mysql", "mariadb"):
        options["connect_args"] = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": 30,
            "write_timeout": 30,
            "charset": "utf8mb4",
        }
    return options


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL lets readers run beside a writer; foreign keys are off in SQLite unless asked for."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

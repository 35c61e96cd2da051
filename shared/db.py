"""Engine settings that make a database outage fail fast (503 in seconds, not a 30 s hang)."""

from __future__ import annotations

import logging
import sqlite3

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3
POOL_TIMEOUT_SECONDS = 5


def engine_options(database_url: str, pool_size: int = 5, max_overflow: int = 10) -> dict:
    """Pool and driver options for `database_url`'s backend.

    A larger pool does not buy a CPU-bound gevent worker throughput: in bench/mixed_load.py it put more
    requests in flight at once, each held its connection longer, and more of them timed out waiting
    (78 503s with 10 + 20 against 5 with 5 + 10). Add workers instead, and keep
    workers x (pool_size + max_overflow) below the server's connection limit.
    """
    backend = make_url(database_url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": 15}}
    options: dict = {
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "pool_timeout": POOL_TIMEOUT_SECONDS,
        "pool_size": pool_size,
        "max_overflow": max_overflow,
    }
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


@event.listens_for(Engine, "do_connect")
def _mysql_handshake_timeout(dialect, _record, cargs, cparams):
    """PyMySQL reads the server's handshake under `read_timeout` (30 s), not `connect_timeout`: a server
    that accepts but never answers would hold each request for 30 s. Connect under the connect timeout,
    then give queries their own read timeout back."""
    if dialect.driver != "pymysql" or "connect_timeout" not in cparams:
        return None
    connection = dialect.loaded_dbapi.connect(
        *cargs, **{**cparams, "read_timeout": cparams["connect_timeout"]}
    )
    connection._read_timeout = cparams.get("read_timeout")  # applied before every read from now on
    return connection


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL lets readers run beside a writer; foreign keys are off in SQLite unless asked for."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def init_app(app: Flask, db: SQLAlchemy) -> None:
    """End each request's session without letting a lost connection turn its answer into a 500.

    Flask-SQLAlchemy's own teardown rolls the session back; when the database went away after the
    request's last statement (a commit already acknowledged, a read already answered), that rollback
    raises from the teardown, outside every error handler, and the server answers a bare 500. This
    teardown runs first (Flask runs them in reverse order): it drops such a connection instead.
    """

    @app.teardown_appcontext
    def _remove_session(_error: BaseException | None) -> None:
        try:
            db.session.remove()
        except sa_exc.SQLAlchemyError as error:
            log.warning("database connection lost while ending the request: %s", error.__class__.__name__)
            db.session().invalidate()  # discard the connection unrolled-back: the server ends its transaction
            db.session.remove()

"""Engine settings that make a database outage fail fast (503 in seconds, not a 30 s hang)."""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Iterator

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3
POOL_TIMEOUT_SECONDS = 5
# A statement's bound (DB_STATEMENT_TIMEOUT_SECONDS). The server cancels it then; the client gives up
# on the connection a moment later, for a server that has gone silent and will never cancel anything.
STATEMENT_TIMEOUT_SECONDS = 5.0
CLIENT_MARGIN_SECONDS = 0.5
# TCP keepalives on idle pooled connections: a peer that vanished is noticed in 5 + 2 x 3 = 11 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
# A pooled connection idle at least this long is pinged (`SELECT 1`) before a request uses it; one used
# more recently is handed out as it is. Pinging every checkout (pool_pre_ping) cost each request a round
# trip (GET session on PostgreSQL: p50 1.78 against 1.11 ms without, docs/benchmarks.md); a connection in
# use under load is never idle that long, and one that lay idle through an outage is caught as before.
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "idle_since"
# Our own key in psycopg's connect_args (taken out before psycopg sees it): the client-side bound.
_WAIT_TIMEOUT = "_wait_timeout"
# Our own key in PyMySQL's connect_args: the server-side bound, set on each new connection.
_STATEMENT_TIMEOUT = "_statement_timeout"


def engine_options(
    database_url: str,
    pool_size: int = 15,
    max_overflow: int = 0,
    statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
) -> dict:
    """Pool and driver options for `database_url`'s backend; `statement_timeout` 0 lifts the bounds.

    A request on a pooled connection whose database went silent (packets dropped, a hung server)
    waited for TCP to give up: 90 s in the issue-11 probe. Now every wait for the server is bounded:
    PostgreSQL cancels a statement after `statement_timeout` (server side), libpq drops a connection
    whose sent data stays unacknowledged that long (`tcp_user_timeout`) and our psycopg connection
    stops waiting for any answer a moment later (a server that acknowledges but never answers);
    PyMySQL's read and write timeouts bound each socket operation the same way.

    The pool keeps every connection it opens (15 + 0): QueuePool closes a connection beyond `pool_size`
    as soon as it comes back, so with 5 + 10 each burst above five requests opened and closed
    connections again (57 % of a loaded worker's time on MariaDB, where PyMySQL builds an SSL context
    per connection; bench/rest_overhead.py). A larger total does not buy a CPU-bound gevent worker
    throughput: in bench/mixed_load.py it put more requests in flight at once, each held its connection
    longer, and more of them timed out waiting (78 503s with 10 + 20 against 5 with 5 + 10). Add
    workers instead, and keep workers x (pool_size + max_overflow) below the server's connection limit.
    """
    backend = make_url(database_url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": 15}}
    options: dict = {
        "pool_recycle": 1800,
        "pool_timeout": POOL_TIMEOUT_SECONDS,
        "pool_size": pool_size,
        "max_overflow": max_overflow,
    }
    client_bound = statement_timeout + CLIENT_MARGIN_SECONDS if statement_timeout > 0 else None
    if backend == "postgresql":
        connect_args: dict = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **KEEPALIVES}
        if client_bound is not None:
            server_options = make_url(database_url).query.get("options")
            statement_option = f"-c statement_timeout={int(statement_timeout * 1000)}"
            connect_args["options"] = " ".join(filter(None, [server_options, statement_option]))
            connect_args["tcp_user_timeout"] = int(client_bound * 1000)
            connect_args[_WAIT_TIMEOUT] = client_bound
        options["connect_args"] = connect_args
    elif backend in ("mysql", "mariadb"):
        options["connect_args"] = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": client_bound,
            "write_timeout": client_bound,
            "charset": "utf8mb4",
            _STATEMENT_TIMEOUT: statement_timeout,
        }
    return options


@functools.cache
def _bounded_connection_class() -> type:
    """psycopg's Connection, with every wait for the server bounded by its `wait_timeout`."""
    import psycopg
    from psycopg import errors

    class BoundedConnection(psycopg.Connection):
        """Waits at most `wait_timeout` seconds for each answer; past it, the connection is closed
        (SQLAlchemy then sees a disconnect: the pool drops it and the request answers 503)."""

        wait_timeout: float | None = None

        def wait(self, gen, interval: float = 0.1, timeout: float | None = None):
            if timeout is not None or self.wait_timeout is None:
                return super().wait(gen, interval, timeout)  # the caller handles its own timeout
            try:
                return super().wait(gen, interval, self.wait_timeout)
            except errors._WaitTimeout:
                self.pgconn.finish()
                message = f"the database did not answer within {self.wait_timeout:g} s"
                raise psycopg.OperationalError(message) from None

    return BoundedConnection


@event.listens_for(Engine, "do_connect")
def _psycopg_bounded_waits(dialect, _record, cargs, cparams):
    """Connect with `BoundedConnection` when the engine's options ask for a client-side bound."""
    if dialect.driver != "psycopg" or _WAIT_TIMEOUT not in cparams:
        return None
    params = dict(cparams)
    wait_timeout = params.pop(_WAIT_TIMEOUT)
    connection = _bounded_connection_class().connect(*cargs, **params)
    connection.wait_timeout = wait_timeout
    return connection


@event.listens_for(Engine, "do_connect")
def _mysql_handshake_timeout(dialect, _record, cargs, cparams):
    """PyMySQL reads the server's handshake under `read_timeout`, not `connect_timeout`: a server
    that accepts but never answers would hold each request that long. Connect under the connect
    timeout, then give queries their own read timeout back, and the server its statement bound."""
    if dialect.driver != "pymysql" or "connect_timeout" not in cparams:
        return None
    params = dict(cparams)
    statement_timeout = params.pop(_STATEMENT_TIMEOUT, 0)
    connection = dialect.loaded_dbapi.connect(*cargs, **{**params, "read_timeout": params["connect_timeout"]})
    connection._read_timeout = params.get("read_timeout")  # applied before every read from now on
    if statement_timeout:
        _set_mysql_statement_timeout(connection, statement_timeout)
    return connection


def _mysql_timeout_statement(dbapi_connection, seconds: float) -> str:
    """MariaDB's `max_statement_time` (seconds, every statement) or MySQL's `max_execution_time`
    (milliseconds, SELECT only); 0 lifts it."""
    if "mariadb" in dbapi_connection.get_server_info().lower():
        return f"SET SESSION max_statement_time = {float(seconds)}"
    return f"SET SESSION max_execution_time = {int(seconds * 1000)}"


def _set_mysql_statement_timeout(dbapi_connection, seconds: float) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_mysql_timeout_statement(dbapi_connection, seconds))
    finally:
        cursor.close()


@contextlib.contextmanager
def unbounded(connection: sa.Connection) -> Iterator[sa.Connection]:
    """`connection` without the statement and socket bounds, for migrations (`flask db upgrade` may
    build an index for minutes); the connection is discarded afterwards, never pooled again."""
    driver = connection.dialect.driver
    if driver not in ("psycopg", "pymysql"):
        yield connection  # SQLite: no bounds to lift
        return
    dbapi_connection = connection.connection.dbapi_connection
    try:
        if driver == "psycopg":
            dbapi_connection.wait_timeout = None
            connection.exec_driver_sql("SET statement_timeout = 0")
        else:
            dbapi_connection._read_timeout = dbapi_connection._write_timeout = None
            connection.exec_driver_sql(_mysql_timeout_statement(dbapi_connection, 0))
        connection.commit()
        yield connection
    finally:
        connection.invalidate()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL lets readers run beside a writer; foreign keys are off in SQLite unless asked for."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def ping_idle_connections(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Ping a pooled connection before use when it has been idle `idle_seconds` or more (SQLAlchemy's
    pessimistic checkout recipe, made lazy). A failed ping raises DisconnectionError: the pool drops
    that connection and checks out another (a new one when the server came back), as pool_pre_ping does."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # just connected, or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise sa_exc.DisconnectionError(f"ping of an idle connection failed: {error}") from error
        if alive is False:
            raise sa_exc.DisconnectionError("ping of an idle connection failed")


def init_app(app: Flask, db: SQLAlchemy) -> None:
    """End each request's session without letting a lost connection turn its answer into a 500.

    Flask-SQLAlchemy's own teardown rolls the session back; when the database went away after the
    request's last statement (a commit already acknowledged, a read already answered), that rollback
    raises from the teardown, outside every error handler, and the server answers a bare 500. This
    teardown runs first (Flask runs them in reverse order): it drops such a connection instead.
    Also: the app's server engines ping a pooled connection idle for a second or more before use.
    """
    with app.app_context():
        for engine in db.engines.values():
            if engine.dialect.name != "sqlite":  # a file needs no ping
                ping_idle_connections(engine)

    @app.teardown_appcontext
    def _remove_session(_error: BaseException | None) -> None:
        try:
            db.session.remove()
        except sa_exc.SQLAlchemyError as error:
            log.warning("database connection lost while ending the request: %s", error.__class__.__name__)
            db.session().invalidate()  # discard the connection unrolled-back: the server ends its transaction
            db.session.remove()

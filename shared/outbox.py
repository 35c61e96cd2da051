"""A transactional, coalescing outbox: changes to propagate to another service, delivered at least once.

A writer calls `enqueue(session, table, topic, key)` inside the transaction of its change: the row
`(topic, key)` is inserted, or, when one is already pending, its `version` is bumped and it is made due
now. Many changes to one key before a delivery are one row, so one delivery. Nothing is committed here:
the row commits (or rolls back) with the change itself, so a change is never lost nor announced without
having happened.

`OutboxWorker` is one daemon thread per process. Every `interval` it reads the due rows, claims each with
a conditional UPDATE (moving its `due_at` a lease ahead, only if nobody changed or claimed it since it
was read), so several workers, processes or instances never deliver the same row at once, then calls the
topic's handler with the key inside an app context. A handler reads the *current* state of the thing
the key names and delivers that, so deliveries are idempotent and their order does not matter. After
a success the row is deleted only if its version is still the one delivered: a change enqueued during
the delivery leaves the row due for another round. A failure is retried with capped exponential backoff.
The rows live in the database, so a restart loses nothing: the next worker finds them due.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from shared.tracing import bound_trace_id, current_trace_id, new_trace_id

log = logging.getLogger(__name__)

BATCH = 50
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Handler = Callable[[str], None]


def outbox_table(metadata: sa.MetaData, name: str) -> sa.Table:
    """The service's outbox table `name` in `metadata`; each service names its own (`chat_sync_outbox`,
    `conversation_sync_outbox`), so the two can share one database."""
    return sa.Table(
        name,
        metadata,
        sa.Column("topic", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        # Bumped by every enqueue: a delivery deletes the row only if nothing was enqueued meanwhile.
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("due_at", Timestamp, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        # The traceId of the last change enqueued: deliveries and their log lines carry it.
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Index(f"ix_{name}_due_at", "due_at"),
        mysql_charset="utf8mb4",
    )


def _now() -> datetime:
    """Now in UTC, naive, as the services store times."""
    return datetime.now(UTC).replace(tzinfo=None)


def enqueue(session: Session | Connection, table: sa.Table, topic: str, key: str) -> None:
    """Make `(topic, key)` due now, in the caller's open transaction (nothing is committed here), on an
    ORM session or a Core connection."""
    dialect = (session.dialect if isinstance(session, Connection) else session.get_bind().dialect).name
    session.execute(
        _upsert(table, dialect),
        {"o_topic": topic, "o_key": key, "o_due_at": _now(), "o_trace_id": current_trace_id()},
    )


@functools.cache
def _upsert(table: sa.Table, dialect: str) -> sa.Insert:
    """`enqueue`'s upsert for `table` on `dialect`, built once with its values bound (building it per
    call was a tenth of storing a message: bench/turn_cpu.py)."""
    due_at, trace_id = sa.bindparam("o_due_at"), sa.bindparam("o_trace_id")
    values = {
        "topic": sa.bindparam("o_topic"),
        "key": sa.bindparam("o_key"),
        "version": 1,
        "due_at": due_at,
        "attempts": 0,
        "trace_id": trace_id,
    }
    changes = {"version": table.c.version + 1, "due_at": due_at, "attempts": 0, "trace_id": trace_id}
    if dialect in ("mysql", "mariadb"):
        return mysql.insert(table).values(values).on_duplicate_key_update(**changes)
    if dialect in ("postgresql", "sqlite"):
        insert = pg.insert if dialect == "postgresql" else sqlite.insert
        upsert = insert(table).values(values)
        return upsert.on_conflict_do_update(index_elements=["topic", "key"], set_=changes)
    raise RuntimeError(f"no outbox upsert for the {dialect} dialect")  # pragma: no cover - the three above


class OutboxWorker:
    """Delivers `table`'s due rows through `handlers` (topic -> handler(key)), in a daemon thread."""

    def __init__(
        self,
        app: Flask,
        db: SQLAlchemy,
        table: sa.Table,
        handlers: Mapping[str, Handler],
        *,
        interval: float = 0.5,
        lease: float = 15,
        max_backoff: float = 10,
        batch: int = BATCH,
    ) -> None:
        # A weak reference: a worker never keeps a discarded app (and its connection pool) alive, and
        # stops once the app is gone.
        self._app = weakref.ref(app)
        self._db = db
        self.table = table
        self.handlers = dict(handlers)
        self.interval = interval
        self.lease = lease
        self.max_backoff = max_backoff
        self.batch = batch
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            app = self._app()
            name = f"outbox-{app.name if app is not None else '?'}"
            self._stopped.clear()
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        """Stop the thread after the delivery in progress, if any."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopped.is_set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            app = self._app()
            if app is None:
                return
            try:
                self.run_once(app)
            except Exception as error:  # the database is down, the table missing (before migrating)...
                log.warning("outbox: polling failed: %s", _reason(error))
            del app
            self._stopped.wait(self.interval)

    # -- one round -----------------------------------------------------------------------------------

    def run_once(self, app: Flask | None = None) -> int:
        """Deliver the rows due now (at most one batch); how many were tried."""
        app = app or self._app()
        if app is None:
            return 0
        table, session = self.table, self._db.session
        with app.app_context():
            try:
                rows = session.execute(
                    sa.select(table.c.topic, table.c.key, table.c.version, table.c.due_at, table.c.trace_id)
                    .add_columns(table.c.attempts)
                    .where(table.c.due_at <= _now())
                    .order_by(table.c.due_at)
                    .limit(self.batch)
                ).all()
            finally:
                session.remove()
            tried = 0
            for row in rows:
                if self._stopped.is_set() and threading.current_thread() is self._thread:
                    break
                tried += self._deliver(row)
            return tried

    def _deliver(self, row: sa.Row) -> int:
        table, session = self.table, self._db.session
        mine = sa.and_(table.c.topic == row.topic, table.c.key == row.key, table.c.version == row.version)
        try:
            claimed = session.execute(
                sa.update(table)
                .where(mine, table.c.due_at == row.due_at)
                .values(due_at=_now() + timedelta(seconds=self.lease))
            ).rowcount
            session.commit()
        finally:
            session.remove()
        if claimed != 1:
            return 0  # another worker has it, or it changed since it was read: the next round sees it
        with bound_trace_id(row.trace_id or new_trace_id()):
            try:
                handler = self.handlers.get(row.topic)
                if handler is None:
                    raise LookupError(f"no handler for outbox topic {row.topic!r}")
                handler(row.key)
            except Exception as error:
                session.remove()
                delay = min(0.5 * 2 ** min(row.attempts, 30), self.max_backoff)
                log.warning(
                    "outbox: delivering %s %s failed (attempt %d, next in %.1f s): %s",
                    row.topic,
                    row.key,
                    row.attempts + 1,
                    delay,
                    _reason(error),
                    extra={"topic": row.topic, "key": row.key, "attempts": row.attempts + 1},
                )
                try:
                    session.execute(
                        sa.update(table)
                        .where(mine)
                        .values(attempts=table.c.attempts + 1, due_at=_now() + timedelta(seconds=delay))
                    )
                    session.commit()
                finally:
                    session.remove()
                return 1
            session.remove()
            try:
                session.execute(sa.delete(table).where(mine))
                session.commit()
            finally:
                session.remove()
        return 1

    def drain(self, timeout: float = 10) -> int:
        """Deliver everything due now, synchronously, until nothing is due (or `timeout` passes); the
        number of rows left pending (0: everything was delivered). For tests and maintenance commands."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run_once() == 0 and self._due() == 0:
                break
        return self.pending()

    def _due(self) -> int:
        return self._count(self.table.c.due_at <= _now())

    def pending(self) -> int:
        """How many rows wait in the outbox (due or not)."""
        return self._count(sa.true())

    def _count(self, where: sa.ColumnElement[bool]) -> int:
        app = self._app()
        if app is None:
            return 0
        with app.app_context():
            try:
                query = sa.select(sa.func.count()).select_from(self.table).where(where)
                return self._db.session.scalar(query) or 0
            finally:
                self._db.session.remove()


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0][:300] if text else ''}"


def drain(app: Flask, timeout: float = 10) -> int:
    """`drain` of the app's outbox worker (`app.extensions["outbox"]`)."""
    return app.extensions["outbox"].drain(timeout)


def in_cli_command() -> bool:
    """True inside a `flask` CLI command other than `run` (migrations, tokens, reconcile): those
    processes never start a worker of their own."""
    return os.environ.get("FLASK_RUN_FROM_CLI") == "true" and "run" not in sys.argv[1:]

"""Purge: hard-delete what has been soft-deleted for longer than RESTORE_WINDOW_DAYS (issue 14).

`purge()` works in batches of PURGE_BATCH_SIZE rows, each batch its own short transaction that locks
only the rows it deletes (children first, by id lists), so live sessions never wait on it for long:
1. the messages of expired sessions (deleted longer ago than the window), whatever their own state;
2. messages deleted one by one and expired (their own `deleted_at`), in sessions live or not;
3. the expired sessions, now empty: each gets an outbox row (topic `purge`, key: the session id) in the
   transaction that finds it, and that row's handler (`purge_session`) removes the session's record in
   conversation_service (`DELETE /internal/ai/conversation/chat/{id}`, idempotent), deletes its Dify
   conversation (`DELETE /conversations/{id}` as the user, 404 is done), and only then the session
   row. The row is the durable note of what is left to delete: a crash (kill -9) anywhere forgets
   nothing, and the next run, or any outbox worker, carries on. The command delivers those rows
   itself before it ends.
Every delete re-checks "deleted, and longer ago than the window" under the row lock, so a restore racing
a purge either wins (the session is live again, nothing of it purged) or finds it gone.

For the erasure helper (chat_service/erasure.py): erasure has its own batch primitives; this module's
reusable piece is `purge_session` (a deleted session's record, Dify conversation, then row, idempotent)
and the outbox topic `purge`, which an erasure deleting a session's rows may delete as well.

Every instance may run the schedule (PURGE_INTERVAL_SECONDS) at once: each batch is idempotent and
guarded, and an outbox row is delivered by one worker at a time (its claim).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from datetime import datetime

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext

from chat_service import live
from chat_service.extensions import db
from chat_service.models import OUTBOX, ChatMessage, ChatSession, utcnow
from chat_service.services.sessions import window_start
from shared import outbox, schedule

log = logging.getLogger(__name__)

TOPIC = "purge"
RECORD_PATH = "/internal/ai/conversation/chat/{}"


class CascadeError(Exception):
    """conversation_service or Dify failed: the outbox retries the session later."""


@dataclass
class PurgeCounts:
    """What one run did."""

    session_messages: int = 0  # messages of expired sessions
    messages: int = 0  # messages deleted one by one, expired
    sessions_queued: int = 0  # expired sessions handed to their cascade
    sessions: int = 0  # session rows gone by the end of the run (cascade done)
    sessions_pending: int = 0  # expired sessions whose cascade failed for now (the outbox retries)
    batches: int = 0
    longest_batch_ms: float = 0.0  # the longest transaction of the run (its locks' longest hold)

    def line(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def _expired_sessions(cutoff: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(ChatSession.is_deleted.is_(True), ChatSession.deleted_at < cutoff)


class _Batches:
    """Each batch in its own transaction, timed."""

    def __init__(self, counts: PurgeCounts, batch_size: int) -> None:
        self.counts, self.size = counts, batch_size

    def run(self, step, *args):
        started = time.perf_counter()
        try:
            done = step(*args)
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
        finally:
            db.session.remove()
        elapsed = (time.perf_counter() - started) * 1000
        self.counts.batches += 1
        self.counts.longest_batch_ms = max(self.counts.longest_batch_ms, round(elapsed, 1))
        return done


def _lock_expired(session_ids: list[str], cutoff: datetime) -> list[str]:
    """Those of `session_ids` still deleted and expired, locked by primary key. The candidates are found
    by a plain read first: a locking range scan would lock (on MariaDB) every row it passes, live
    sessions included, for the whole batch."""
    if not session_ids:
        return []
    return list(
        db.session.scalars(
            sa.select(ChatSession.session_id)
            .where(ChatSession.session_id.in_(session_ids), _expired_sessions(cutoff))
            .order_by(ChatSession.session_id)
            .with_for_update()
        )
    )


def _delete_session_messages(cutoff: datetime, size: int) -> int:
    """One batch of messages of expired sessions: the sessions locked first (a restore waits, or wins
    and the delete finds them live), then their messages by primary key."""
    candidates = db.session.scalars(
        sa.select(ChatSession.session_id)
        .where(_expired_sessions(cutoff))
        .where(sa.exists().where(ChatMessage.session_id == ChatSession.session_id))
        .order_by(ChatSession.deleted_at)
        .limit(size)
    )
    sessions = _lock_expired(list(candidates), cutoff)
    if not sessions:
        return 0
    ids = list(
        db.session.scalars(
            sa.select(ChatMessage.message_id).where(ChatMessage.session_id.in_(sessions)).limit(size)
        )
    )
    return _delete_messages(ids)


def _delete_expired_messages(cutoff: datetime, size: int) -> int:
    """One batch of messages deleted (one by one, or with a session since restored... never: a restore
    brings those back) longer ago than the window, oldest deletion first (the `deleted_at` index)."""
    ids = list(
        db.session.scalars(
            sa.select(ChatMessage.message_id)
            .where(ChatMessage.is_deleted == sa.true(), ChatMessage.deleted_at < cutoff)
            .order_by(ChatMessage.deleted_at)
            .limit(size)
        )
    )
    # Re-checked in the DELETE itself: a message a racing restore made live again stays.
    return _delete_messages(ids, ChatMessage.is_deleted == sa.true(), ChatMessage.deleted_at < cutoff)


def _delete_messages(ids: list[int], *also: sa.ColumnElement[bool]) -> int:
    if not ids:
        return 0
    db.session.execute(
        sa.delete(OUTBOX).where(OUTBOX.c.topic == "dify_feedback", OUTBOX.c.key.in_([str(i) for i in ids]))
    )
    return db.session.execute(
        sa.delete(ChatMessage)
        .where(ChatMessage.message_id.in_(ids), *also)
        .execution_options(synchronize_session=False)
    ).rowcount


def _queue_sessions(cutoff: datetime, size: int, after: str) -> tuple[list[str], list[str]]:
    """One batch of expired, empty sessions (ids above `after`), locked, each queued for its cascade:
    the ids looked at (to go on after them) and those queued."""
    candidates = list(
        db.session.scalars(
            sa.select(ChatSession.session_id)
            .where(_expired_sessions(cutoff), ChatSession.session_id > after)
            .where(~sa.exists().where(ChatMessage.session_id == ChatSession.session_id))
            .order_by(ChatSession.session_id)
            .limit(size)
        )
    )
    locked = _lock_expired(candidates, cutoff)
    for session_id in locked:
        outbox.enqueue(db.session, OUTBOX, TOPIC, session_id)
    return candidates, locked


def purge(*, now: datetime | None = None, batch_size: int | None = None, deliver: bool = True) -> PurgeCounts:
    """Hard-delete what was deleted longer ago than RESTORE_WINDOW_DAYS before `now`; see the module."""
    cutoff = window_start(now or utcnow())
    counts = PurgeCounts()
    batches = _Batches(counts, batch_size or current_app.config["PURGE_BATCH_SIZE"])
    while done := batches.run(_delete_session_messages, cutoff, batches.size):
        counts.session_messages += done
    while done := batches.run(_delete_expired_messages, cutoff, batches.size):
        counts.messages += done
    queued, last = [], ""
    while (batch := batches.run(_queue_sessions, cutoff, batches.size, last))[0]:
        queued += batch[1]
        last = batch[0][-1]
    counts.sessions_queued = len(queued)
    if deliver and queued:
        _deliver_now()
    if queued:
        left = set()
        for start in range(0, len(queued), batches.size):
            chunk = queued[start : start + batches.size]
            left |= set(
                db.session.scalars(sa.select(ChatSession.session_id).where(ChatSession.session_id.in_(chunk)))
            )
            db.session.remove()
        counts.sessions, counts.sessions_pending = len(queued) - len(left), len(left)
    return counts


def _deliver_now() -> None:
    """Deliver the due outbox rows (the cascades just queued among them) here, as a worker would, until
    none is due: a failure waits in the outbox for its backoff (a serving worker, or the next run)."""
    worker: outbox.OutboxWorker = current_app.extensions["outbox"]
    while worker.run_once(current_app._get_current_object()):
        pass


# -- the cascade of one session (the outbox handler) -----------------------------------------------------


def purge_session(session_id: str) -> None:
    """The `purge` handler: an expired, empty session's record and Dify conversation, then its row.
    Nothing happens to a session that is live, still restorable, already gone, or not yet empty."""
    cutoff = window_start()
    session = db.session.get(ChatSession, session_id, populate_existing=True)
    if (
        session is None
        or not session.is_deleted
        or session.deleted_at is None
        or session.deleted_at >= cutoff
    ):
        db.session.remove()
        return
    has_messages = db.session.scalar(sa.select(sa.exists().where(ChatMessage.session_id == session_id)))
    user_id, dify_id = session.user_id, session.dify_conversation_id
    db.session.remove()  # no connection held across the calls
    if has_messages:
        return  # the purge deletes them first, then queues the session again
    response = live.current().conversations.request("DELETE", RECORD_PATH.format(session_id), user_id=user_id)
    if not response.ok:
        raise CascadeError(f"conversation_service answered {response.status_code}: {response.text[:300]}")
    dify = current_app.config["AI_PROVIDER"] == "dify"
    if dify and dify_id and not live.current().provider.delete_conversation(dify_id, user_id):
        raise CascadeError(f"Dify did not delete conversation {dify_id}")
    db.session.execute(
        sa.delete(ChatSession)
        .where(ChatSession.session_id == session_id, _expired_sessions(cutoff))
        .where(~sa.exists().where(ChatMessage.session_id == session_id))
        # The same Dify id as deleted above: one a late turn stored meanwhile is deleted next time.
        .where(
            ChatSession.dify_conversation_id == dify_id
            if dify_id is not None
            else ChatSession.dify_conversation_id.is_(None)
        )
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        sa.delete(OUTBOX).where(OUTBOX.c.topic.in_(["record", "dify_delete"]), OUTBOX.c.key == session_id)
    )
    db.session.commit()
    db.session.remove()


# -- the schedule and the command ------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """The `flask --app chat_service purge` command, the `purge` outbox topic (and `dify_delete`, queued
    at deletion before deletions waited for the purge: the same handler, doing nothing to a session
    still restorable), and the in-process schedule when PURGE_INTERVAL_SECONDS > 0."""
    worker: outbox.OutboxWorker = app.extensions["outbox"]
    worker.handlers[TOPIC] = purge_session
    worker.handlers["dify_delete"] = purge_session
    app.cli.add_command(purge_command)
    schedule.every(app, "PURGE_INTERVAL_SECONDS", "purge_schedule", lambda: purge().line())


@click.command("purge")
@with_appcontext
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Rows a transaction (PURGE_BATCH_SIZE)."
)
def purge_command(batch_size: int | None) -> None:
    """Hard-delete sessions and messages deleted longer ago than RESTORE_WINDOW_DAYS, with their
    records and Dify conversations; print what was done."""
    counts = purge(batch_size=batch_size)
    click.echo(
        f"purged {counts.session_messages + counts.messages} messages "
        f"({counts.session_messages} of expired sessions, {counts.messages} deleted one by one) and "
        f"{counts.sessions} sessions in {counts.batches} batches (longest {counts.longest_batch_ms} ms)"
    )
    if counts.sessions_pending:
        click.echo(
            f"{counts.sessions_pending} sessions wait for their record or Dify conversation to go: "
            "the outbox retries them",
            err=True,
        )

"""Purge: hard-delete what has been soft-deleted for longer than RESTORE_WINDOW_DAYS (issue 14).

`purge()` removes standalone records (no chat session) deleted longer ago than the window, in batches
of PURGE_BATCH_SIZE ids, each batch its own short transaction whose DELETE re-checks the condition
(a record restored meanwhile stays). The record of a chat session is not purged here: it is the
session's tombstone (no replayed delivery can bring it back) for as long as the session exists, and
chat_service's purge removes it with the session (`DELETE /internal/ai/conversation/chat/{id}`:
`purge_chat_record`). Every instance may run the schedule at once: the batches are idempotent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext

from conversation_service.extensions import db
from conversation_service.models import OUTBOX, AiConversation, utcnow
from conversation_service.services import conversations
from shared import schedule

log = logging.getLogger(__name__)


@dataclass
class PurgeCounts:
    records: int = 0
    batches: int = 0
    longest_batch_ms: float = 0.0  # the longest transaction of the run (its locks' longest hold)

    def line(self) -> str:
        return f"records={self.records}, batches={self.batches}, longest_batch_ms={self.longest_batch_ms}"


def _expired(cutoff: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        AiConversation.is_deleted == sa.true(),
        AiConversation.deleted_at < cutoff,
        AiConversation.chat_session_id.is_(None),
    )


def _purge_batch(cutoff: datetime, size: int) -> int:
    ids = list(
        db.session.scalars(
            sa.select(AiConversation.id)
            .where(_expired(cutoff))
            .order_by(AiConversation.deleted_at)
            .limit(size)
        )
    )
    if not ids:
        return 0
    db.session.execute(sa.delete(OUTBOX).where(OUTBOX.c.topic == "session", OUTBOX.c.key.in_(map(str, ids))))
    return db.session.execute(
        sa.delete(AiConversation)
        .where(AiConversation.id.in_(ids), _expired(cutoff))
        .execution_options(synchronize_session=False)
    ).rowcount


def purge(*, now: datetime | None = None, batch_size: int | None = None) -> PurgeCounts:
    """Hard-delete the standalone records deleted longer ago than the window before `now`."""
    cutoff = conversations.window_start(now or utcnow())
    size = batch_size or current_app.config["PURGE_BATCH_SIZE"]
    counts = PurgeCounts()
    while True:
        started = time.perf_counter()
        try:
            done = _purge_batch(cutoff, size)
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
        finally:
            db.session.remove()
        counts.batches += 1
        counts.longest_batch_ms = max(
            counts.longest_batch_ms, round((time.perf_counter() - started) * 1000, 1)
        )
        if not done:
            return counts
        counts.records += done


def purge_chat_record(user_id: str, chat_session_id: str) -> bool:
    """Remove the record of a purged chat session: True when it is gone (or there was none). A live
    record (the views disagreed) is never purged: it is kept as a standalone record, False."""
    record = conversations.chat_record(user_id, chat_session_id)  # 403 if it is another user's
    if record is None:
        return True
    this = AiConversation.id == record.id
    if not record.is_deleted:
        db.session.execute(
            sa.update(AiConversation)
            .where(this, AiConversation.is_deleted == sa.false())
            .values(chat_session_id=None)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        return False
    db.session.execute(sa.delete(OUTBOX).where(OUTBOX.c.topic == "session", OUTBOX.c.key == str(record.id)))
    gone = db.session.execute(
        sa.delete(AiConversation)
        .where(this, AiConversation.is_deleted == sa.true())
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    return gone == 1 or conversations.chat_record(user_id, chat_session_id) is None


def init_app(app: Flask) -> None:
    """The `flask --app conversation_service purge` command (and the in-process schedule, when set)."""
    app.cli.add_command(purge_command)
    schedule.every(app, "PURGE_INTERVAL_SECONDS", "purge_schedule", lambda: purge().line())


@click.command("purge")
@with_appcontext
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Rows a transaction (PURGE_BATCH_SIZE)."
)
def purge_command(batch_size: int | None) -> None:
    """Hard-delete standalone records deleted longer ago than RESTORE_WINDOW_DAYS; print how many."""
    counts = purge(batch_size=batch_size)
    click.echo(
        f"purged {counts.records} records in {counts.batches} batches "
        f"(longest {counts.longest_batch_ms} ms); the records of chat sessions go with their sessions "
        "(chat_service's purge)"
    )

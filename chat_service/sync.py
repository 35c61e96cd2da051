"""A session and its conversation record kept equal: chat_service's outbox handlers, and reconcile.

Topics (rows written by chat_service.crud in the transaction of each change):
- `record` (key: session id): PUT the session's current state to conversation_service's
  `/internal/ai/conversation/chat/{session_id}`; the answer (the record's state) is applied back (a newer
  title, a deletion), and the record's id remembered.
- `purge` (and `dify_delete`, its name before restores) (key: session id): registered by
  chat_service.purge: a purged session's record, Dify conversation and row.
- `dify_feedback` (key: message id): with the Dify provider, send a reply's current feedback to Dify.

Every delivery sends the current state, never a diff, so replays and reorders are harmless; the
receiving side keeps the higher version of a title, a Dify id or the deletion state (a delete or a
restore: `deletedVersion`, the `deleted_at` both views share).
"""

from __future__ import annotations

import logging

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext

from chat_service import crud, live
from chat_service.extensions import db
from chat_service.models import OUTBOX, ChatMessage, ChatSession, epoch_ms
from shared import outbox

log = logging.getLogger(__name__)

RECORD_PATH = "/internal/ai/conversation/chat/{}"
RECONCILE_BATCH = 200


class DeliveryError(Exception):
    """The other side refused or failed: the outbox retries later."""


def session_state(session: ChatSession) -> dict:
    """What a session's record mirrors, in the internal routes' wire names."""
    return {
        "title": session.title,
        "titleVersion": int(session.title_version or 0),
        "difyConversationId": session.dify_conversation_id,
        "difyVersion": int(session.dify_version or 0),
        "activityTime": epoch_ms(session.updated_at),
        "createdTime": epoch_ms(session.created_at),
        "deleted": bool(session.is_deleted),
        "deletedVersion": crud.lifecycle_version(session),
    }


def _conversations():
    return live.current().conversations


def put_record(session_id: str) -> dict | None:
    """Deliver the session's current state to its record; the record's state (None: no such session)."""
    session = db.session.get(ChatSession, session_id, populate_existing=True)
    if session is None:
        db.session.remove()
        return None
    user_id, body, known = session.user_id, session_state(session), session.conversation_record_id
    db.session.remove()  # no connection held across the call
    response = _conversations().request("PUT", RECORD_PATH.format(session_id), user_id=user_id, json=body)
    if not response.ok:
        raise DeliveryError(f"conversation_service answered {response.status_code}: {response.text[:300]}")
    record = response.json()["data"]
    if known is None and record.get("id"):
        db.session.execute(
            sa.update(ChatSession)
            .where(ChatSession.session_id == session_id, ChatSession.conversation_record_id.is_(None))
            .values(conversation_record_id=str(record["id"]))
        )
        db.session.commit()
    # The record may know something newer (its delivery to us still pending): take it now.
    _apply_record(session_id, user_id, record)
    return record


def _apply_record(session_id: str, user_id: str, record: dict) -> None:
    from chat_service.services import sessions

    sessions.apply_synced(
        session_id,
        user_id,
        title=record.get("title"),
        title_version=int(record.get("titleVersion") or 0),
        deleted=bool(record.get("deleted")),
        deleted_version=int(record.get("deletedVersion") or 0),
    )
    db.session.remove()


def deliver_record(session_id: str) -> None:
    """The `record` handler."""
    put_record(session_id)


def send_dify_feedback(message_id: str) -> None:
    """The `dify_feedback` handler: a reply's current feedback to Dify's `POST /messages/{id}/feedbacks`,
    as the session's user (a failure raises, and the outbox retries it)."""
    if current_app.config["AI_PROVIDER"] != "dify":
        return
    row = db.session.execute(
        sa.select(ChatMessage.dify_message_id, ChatMessage.feedback_rating, ChatMessage.feedback_content)
        .add_columns(ChatSession.user_id)
        .join(ChatSession, ChatSession.session_id == ChatMessage.session_id)
        .where(ChatMessage.message_id == int(message_id))
    ).first()
    db.session.remove()
    if row is None or row.dify_message_id is None:
        return
    live.current().provider.send_feedback(
        row.dify_message_id, row.user_id, row.feedback_rating, row.feedback_content
    )


HANDLERS = {
    "record": deliver_record,
    "dify_feedback": send_dify_feedback,
}


def worker(app: Flask) -> outbox.OutboxWorker:
    return app.extensions["outbox"]


def init_app(app: Flask) -> None:
    """The outbox worker (started unless OUTBOX_WORKER is false, or in a CLI command) and `reconcile`."""
    app.extensions["outbox"] = outbox_worker = outbox.OutboxWorker(
        app,
        db,
        OUTBOX,
        HANDLERS,
        interval=app.config["OUTBOX_INTERVAL_SECONDS"],
        max_backoff=app.config["OUTBOX_MAX_BACKOFF_SECONDS"],
    )
    if app.config["OUTBOX_WORKER"] and not outbox.in_cli_command():
        outbox_worker.start()
    app.cli.add_command(reconcile_command)


# -- reconcile ---------------------------------------------------------------------------------------


def _sessions(user_id: str | None):
    """Every session (of `user_id`), deleted or not, in batches."""
    last = ""
    while True:
        query = sa.select(ChatSession).where(ChatSession.session_id > last)
        if user_id is not None:
            query = query.where(ChatSession.user_id == user_id)
        batch = list(db.session.scalars(query.order_by(ChatSession.session_id).limit(RECONCILE_BATCH)))
        db.session.remove()
        if not batch:
            return
        yield from batch
        last = batch[-1].session_id


def _record_state(session: ChatSession) -> dict | None:
    path = RECORD_PATH.format(session.session_id)
    response = _conversations().request("GET", path, user_id=session.user_id)
    if response.status_code == 404 and response.json().get("code") == 7002:
        return None
    if not response.ok:
        raise DeliveryError(f"conversation_service answered {response.status_code}: {response.text[:300]}")
    return response.json()["data"]


def drift(session: ChatSession, record: dict | None) -> list[str]:
    """What differs between a session and its record, as `(what, direction)` lines; empty: in sync."""
    if record is None:
        return ["record missing -> create it"]
    changes = []
    record_deleted = bool(record.get("deleted"))
    if record_deleted != session.is_deleted:
        record_version, own_version = int(record.get("deletedVersion") or 0), crud.lifecycle_version(session)
        # The newer deletion state wins; unversioned (both 0, from before restores), the deletion does.
        record_wins = record_version > own_version or (record_version == own_version and record_deleted)
        state = "deleted" if (record_deleted if record_wins else session.is_deleted) else "restored"
        changes.append(f"{state} on the {'record -> session' if record_wins else 'session -> record'}")
    if session.is_deleted or record_deleted:
        return changes
    record_version = int(record.get("titleVersion") or 0)
    if record_version > session.title_version:
        changes.append(f"title {record.get('title')!r} (record, newer) -> session")
    elif session.title_version > record_version or session.title != record.get("title"):
        changes.append(f"title {session.title!r} (session, newer) -> record")
    if session.dify_conversation_id and session.dify_conversation_id != record.get("difyConversationId"):
        changes.append(f"difyConversationId {session.dify_conversation_id!r} -> record")
    if record.get("activityTime") is not None and int(record["activityTime"]) < epoch_ms(session.updated_at):
        changes.append("activity time -> record")
    if session.conversation_record_id is None and record.get("id"):
        changes.append(f"record id {record['id']} -> session")
    return changes


def reconcile(user_id: str | None = None, echo=print) -> tuple[int, int, int]:
    """Compare every session (of `user_id`) with its record and repair what differs, in the direction
    of the newer version (a deletion anywhere wins). Prints one line per repaired session; returns
    (sessions seen, sessions repaired, failures)."""
    seen = repaired = failed = 0
    for session in _sessions(user_id):
        seen += 1
        sid = session.session_id
        try:
            record = _record_state(session)
            changes = drift(session, record)
            if not changes:
                continue
            _break_tie(session, record)
            put_record(sid)  # both ways: the session's state to the record, the record's newer state back
            repaired += 1
            echo(f"session {sid} (user {session.user_id}): {'; '.join(changes)}")
        except Exception as error:
            failed += 1
            db.session.rollback()
            db.session.remove()
            _enqueue_later(sid)
            echo(f"session {sid} (user {session.user_id}): FAILED ({error}); queued for the outbox")
    return seen, repaired, failed


def _break_tie(session: ChatSession, record: dict | None) -> None:
    """Equal title versions with different titles (a record made before versions existed, skewed
    clocks): the session's title wins, one version up, so the record takes it."""
    if record is None or session.is_deleted or record.get("deleted"):
        return
    if int(record.get("titleVersion") or 0) != session.title_version or record.get("title") == session.title:
        return
    db.session.execute(
        sa.update(ChatSession)
        .where(ChatSession.session_id == session.session_id)
        .values(title_version=ChatSession.title_version + 1)
    )
    db.session.commit()
    db.session.remove()


def _enqueue_later(session_id: str) -> None:
    try:
        outbox.enqueue(db.session, OUTBOX, "record", session_id)
        db.session.commit()
    except Exception:
        db.session.rollback()
    finally:
        db.session.remove()


@click.command("reconcile")
@with_appcontext
@click.option("--user", "user_id", default=None, help="Only this user's sessions (default: everyone's).")
def reconcile_command(user_id: str | None) -> None:
    """Compare sessions with their conversation records and repair any drift; print what changed."""
    seen, repaired, failed = reconcile(user_id, echo=click.echo)
    click.echo(f"reconciled {seen} sessions: {repaired} repaired, {failed} failed")
    if failed:
        click.echo(f"{failed} sessions could not be repaired now; the outbox retries them", err=True)

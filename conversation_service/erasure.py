"""Erasure: every record of one user removed, a tombstone without personal data kept (issue 14).

chat_service's `erase-user` drives it through `POST /internal/ai/conversation/erasures` (a service token,
never a user's): each call removes, in short batches, the user's records that name no Dify conversation or
one that chat_service has just deleted at Dify (`difyDeleted`), and answers the Dify conversation ids the
user's records still name. chat_service deletes those at Dify and names them in its next call, until
`done`. So a record is never removed before its Dify conversation is gone: a crash anywhere forgets none,
the records themselves are the queue. conversation_service holds no Dify key, so it never calls Dify.

`flask --app conversation_service erase-user USER_ID` erases this service alone: it keeps the records
that still name a Dify conversation (and says so, exiting 1) unless `--without-dify` is given.

The tombstone (`conversation_erasures`) holds `user_hash` (HMAC-SHA256 of the user id, see `user_hash`),
when the latest erasure was asked and finished, and the rows removed in total (table -> rows).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping

import click
import sqlalchemy as sa
from flask import Blueprint, Flask, current_app
from flask.cli import with_appcontext
from marshmallow import RAISE, Schema, fields, validate

from conversation_service.extensions import db
from conversation_service.models import OUTBOX, AiConversation, ConversationErasure, epoch_ms, utcnow
from conversation_service.services import live_counts
from shared import rate_limits
from shared.auth import require_service
from shared.decorators import body, response
from shared.tombstones import user_hash

# What a user id may be (shared.auth accepts no other `sub`).
USER_ID = r"[A-Za-z0-9_.@:-]{1,64}"
# One call's work is bounded: a few batches, then it answers (the caller calls again).
CALL_BUDGET_SECONDS = 2.0

bp = Blueprint("erasure", __name__, url_prefix="/internal/ai/conversation/erasures")
bp.before_request(require_service)


# -- the steps --------------------------------------------------------------------------------------------


def begin(user_id: str) -> None:
    """Record the request in the tombstone: a new one, or a finished one asked again (its counts kept)."""
    key = user_hash(user_id)
    row = db.session.get(ConversationErasure, key, with_for_update=True)
    if row is None:
        db.session.add(ConversationErasure(user_hash=key, requested_at=utcnow(), counts="{}"))
    elif row.finished_at is not None:
        row.requested_at, row.finished_at = utcnow(), None
    try:
        db.session.commit()
    except sa.exc.IntegrityError:  # begun concurrently: theirs is as good
        db.session.rollback()


def _add_counts(key: str, removed: Mapping[str, int], *, finish: bool = False) -> None:
    """Add to the tombstone's totals in the open transaction (that of the deletion counted)."""
    row = db.session.get(ConversationErasure, key, with_for_update=True, populate_existing=True)
    totals = Counter(json.loads(row.counts or "{}"))
    totals.update({name: n for name, n in removed.items() if n})
    row.counts = json.dumps(dict(sorted(totals.items())))
    if finish:
        row.finished_at = utcnow()


def remove_batch(
    user_id: str, dify_deleted: Iterable[str], batch: int, *, without_dify: bool = False
) -> Counter:
    """Remove one batch of the user's records that name no Dify conversation, or one in `dify_deleted`
    (all of them with `without_dify`), with their outbox rows; one transaction. Rows removed by table."""
    mine = AiConversation.user_id == user_id
    if not without_dify:
        gone = list(dify_deleted)
        free = AiConversation.dify_conversation_id.is_(None)
        mine = sa.and_(mine, sa.or_(free, AiConversation.dify_conversation_id.in_(gone)) if gone else free)
    ids = list(
        db.session.scalars(sa.select(AiConversation.id).where(mine).order_by(AiConversation.id).limit(batch))
    )
    removed: Counter = Counter()
    if ids:
        keys = [str(i) for i in ids]
        removed["conversation_sync_outbox"] = db.session.execute(
            sa.delete(OUTBOX).where(OUTBOX.c.topic == "session", OUTBOX.c.key.in_(keys))
        ).rowcount
        these = AiConversation.id.in_(ids)
        live = _delete(sa.and_(these, AiConversation.is_deleted == sa.false()))
        removed["ai_conversations"] = live + _delete(these)
        live_counts.add(user_id, -live)
        _add_counts(user_hash(user_id), removed)
    db.session.commit()
    return removed


def _delete(where: sa.ColumnElement[bool]) -> int:
    statement = sa.delete(AiConversation).where(where).execution_options(synchronize_session=False)
    return db.session.execute(statement).rowcount


def pending_dify_ids(user_id: str, limit: int) -> list[str]:
    """Dify conversation ids the user's records still name (the next `limit`, in order)."""
    query = (
        sa.select(AiConversation.dify_conversation_id)
        .where(AiConversation.user_id == user_id, AiConversation.dify_conversation_id.is_not(None))
        .group_by(AiConversation.dify_conversation_id)
        .order_by(AiConversation.dify_conversation_id)
        .limit(limit)
    )
    return list(db.session.scalars(query))


def step(user_id: str, dify_deleted: Iterable[str] = (), *, without_dify: bool = False) -> dict:
    """Remove batches for up to CALL_BUDGET_SECONDS; the erasure's state, what this call removed, the Dify
    ids still named, and `done` (no record of the user is left: the tombstone is finished)."""
    batch = current_app.config["PURGE_BATCH_SIZE"]
    dify_deleted = list(dify_deleted)
    begin(user_id)
    removed: Counter = Counter()
    deadline = time.monotonic() + CALL_BUDGET_SECONDS
    while True:
        got = remove_batch(user_id, dify_deleted, batch, without_dify=without_dify)
        removed.update(got)
        if got["ai_conversations"] < batch or time.monotonic() > deadline:
            break
    pending = pending_dify_ids(user_id, batch)
    left = db.session.scalar(sa.select(sa.func.count()).where(AiConversation.user_id == user_id))
    done = not left
    if done:
        _add_counts(user_hash(user_id), {}, finish=True)
        live_counts.forget(user_id)
        db.session.commit()
        rate_limits.current().forget(user_id)
    state = tombstone(user_hash(user_id))
    db.session.remove()
    removed_now = {name: n for name, n in removed.items() if n}
    return state | {"removed": removed_now, "dify_conversation_ids": pending, "done": done}


def tombstone(key: str) -> dict:
    """The tombstone as the routes show it (times in ms since the epoch)."""
    row = db.session.get(ConversationErasure, key, populate_existing=True)
    return {
        "user_hash": row.user_hash,
        "requested_time": epoch_ms(row.requested_at),
        "finished_time": epoch_ms(row.finished_at) if row.finished_at else None,
        "counts": json.loads(row.counts or "{}"),
    }


# -- the route and the command ----------------------------------------------------------------------------


class ErasureBody(Schema):
    class Meta:
        unknown = RAISE

    user_id = fields.String(required=True, data_key="userId", validate=validate.Regexp(f"^{USER_ID}$"))
    dify_deleted = fields.List(
        fields.String(validate=validate.Length(min=1, max=100)),
        data_key="difyDeleted",
        load_default=list,
        validate=validate.Length(max=10_000),
    )


class ErasureStepSchema(Schema):
    user_hash = fields.String(data_key="userHash")
    requested_time = fields.Integer(data_key="requestedTime")
    finished_time = fields.Integer(data_key="finishedTime", allow_none=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    removed = fields.Dict(keys=fields.String(), values=fields.Integer())
    dify_conversation_ids = fields.List(fields.String(), data_key="difyConversationIds")
    done = fields.Boolean()


@bp.post("")
@body(ErasureBody)
@response(ErasureStepSchema)
def erase(data):
    """One step of a user's erasure (chat_service drives it; a service token only): remove the records
    that name no Dify conversation or one in `difyDeleted`; answer the Dify ids still named, and `done`."""
    return step(data["user_id"], data["dify_deleted"])


@click.command("erase-user")
@click.argument("user_id")
@click.option("--without-dify", is_flag=True, help="Also remove records naming a Dify conversation.")
@with_appcontext
def erase_user_command(user_id: str, without_dify: bool) -> None:
    """Erase every conversation record of USER_ID (this service alone), keeping a tombstone."""
    removed: Counter = Counter()
    while True:
        state = step(user_id, without_dify=without_dify)
        removed.update(state["removed"])
        if state["done"] or not state["removed"]:
            break
    click.echo(f"user hash {state['user_hash']}: removed {json.dumps(dict(removed), sort_keys=True)}")
    if not state["done"]:
        left = len(state["dify_conversation_ids"])
        raise click.ClickException(
            f"records naming {left}{'+' if left >= current_app.config['PURGE_BATCH_SIZE'] else ''} Dify "
            "conversations were kept: `flask --app chat_service erase-user` deletes them at Dify first "
            "(or pass --without-dify)"
        )


def init_app(app: Flask) -> None:
    """The `erase-user` command and the operator's internal route (service token only)."""
    app.cli.add_command(erase_user_command)
    app.register_blueprint(bp)

"""Erasure: every row of one user removed in both services and at Dify, a tombstone without personal data
kept (issue 14). docs/erasure.md tells the whole story.

`erase_user(user_id)` works through the user's sessions (live and deleted) in batches of PURGE_BATCH_SIZE,
each step its own short transaction: soft-delete the batch (so no writer adds a message to it any more),
hard-delete its messages (and their outbox rows), delete its Dify conversations (`DELETE
/conversations/{id}` as the user, 404 is done), then delete the sessions whose Dify conversation is gone.
A session row is the durable note of its Dify conversation: it goes only after Dify said so, so a crash
(kill -9) forgets none, and a re-run simply carries on. Then conversation_service's records, through its
internal route (conversation_service/erasure.py), which answers the Dify ids its records name, deleted
here before those records go. Then the user's rate-limit counts. A pass is repeated until it finds
nothing (a session created while it ran), then the tombstone is finished.

For purge (chat_service/purge.py), the batch primitives are `delete_messages`, `delete_dify_conversations`
and `delete_sessions`: hard-delete sessions with their messages, Dify conversation first.

`flask --app chat_service erase-user USER_ID` runs it here and now; `POST /internal/chat/erasures` (a
service token) queues it in the outbox (topic `erase_user`, key: the user id, deleted once done), so a
serving process runs it, retries it while Dify or conversation_service fail, and resumes it after a crash.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import click
import requests
import sqlalchemy as sa
from flask import Blueprint, Flask, current_app
from flask.cli import with_appcontext
from marshmallow import RAISE, Schema, fields, validate

from chat_service import live
from chat_service.extensions import db
from chat_service.models import OUTBOX, ChatErasure, ChatMessage, ChatSession, utcnow
from chat_service.providers import make_provider
from chat_service.schemas import UTC_FORMAT
from shared import outbox, rate_limits
from shared.auth import require_service
from shared.decorators import body, response
from shared.errors import BadRequest, NotFound
from shared.tombstones import user_hash

log = logging.getLogger(__name__)

TOPIC = "erase_user"
CONVERSATION_ERASURES = "/internal/ai/conversation/erasures"
USER_ID = r"[A-Za-z0-9_.@:-]{1,64}"  # what shared.auth accepts as a `sub`
HASH = r"[0-9a-f]{64}"
# The outbox topics keyed by a session id (`purge`: chat_service/purge.py); a deleted session's rows go.
SESSION_TOPICS = ("record", "dify_delete", "purge")
MAX_PASSES = 5  # a user writing faster than their erasure runs is not erased in a loop forever

bp = Blueprint("erasure", __name__, url_prefix="/internal/chat/erasures")
bp.before_request(require_service)


class ErasureIncomplete(Exception):
    """Something could not be removed yet (Dify or conversation_service failed): run it again."""


# -- the batch primitives (purge may use them too) ---------------------------------------------------------


def delete_messages(session_ids: Sequence[str], batch: int, on_batch=None) -> int:
    """Hard-delete every message of `session_ids` (and their `dify_feedback` outbox rows), `batch` rows a
    transaction; `on_batch(counts)` runs inside each before it commits. How many messages went."""
    total = 0
    while session_ids:
        ids = list(
            db.session.scalars(
                sa.select(ChatMessage.message_id)
                .where(ChatMessage.session_id.in_(session_ids))
                .order_by(ChatMessage.message_id)
                .limit(batch)
            )
        )
        if not ids:
            break
        counts = Counter(
            chat_sync_outbox=db.session.execute(
                sa.delete(OUTBOX).where(
                    OUTBOX.c.topic == "dify_feedback", OUTBOX.c.key.in_([str(i) for i in ids])
                )
            ).rowcount,
            chat_messages=db.session.execute(
                sa.delete(ChatMessage)
                .where(ChatMessage.message_id.in_(ids))
                .execution_options(synchronize_session=False)
            ).rowcount,
        )
        if on_batch is not None:
            on_batch(counts)
        db.session.commit()
        total += counts["chat_messages"]
    return total


def delete_dify_conversations(targets: Iterable[tuple[str, str]], provider) -> tuple[set[str], set[str]]:
    """Delete each (Dify conversation id, user) at Dify; the ids gone (404 included) and those that failed.
    Without the Dify provider there is no Dify to call: every id counts as gone."""
    gone: set[str] = set()
    failed: set[str] = set()
    for dify_id, user_id in dict(targets).items():
        if provider is None or provider.delete_conversation(dify_id, user_id):
            gone.add(dify_id)
        else:
            failed.add(dify_id)
    return gone, failed


def delete_sessions(rows: Sequence[tuple[str, str | None]], on_batch=None) -> int:
    """Hard-delete the sessions (session id, the Dify id it was seen with) that still name that Dify id
    and have no message left, with their outbox rows (SESSION_TOPICS); one transaction. A session
    whose Dify id changed since (a turn linked it) stays for the next pass. How many went."""
    if not rows:
        return 0
    same = sa.or_(
        *(
            sa.and_(
                ChatSession.session_id == sid,
                ChatSession.dify_conversation_id == dify_id
                if dify_id is not None
                else ChatSession.dify_conversation_id.is_(None),
            )
            for sid, dify_id in rows
        )
    )
    has_messages = sa.exists().where(ChatMessage.session_id == ChatSession.session_id)
    ids = [sid for sid, _dify in rows]
    counts = Counter(
        chat_sync_outbox=db.session.execute(
            sa.delete(OUTBOX).where(OUTBOX.c.topic.in_(SESSION_TOPICS), OUTBOX.c.key.in_(ids))
        ).rowcount,
        chat_sessions=db.session.execute(
            sa.delete(ChatSession).where(same, ~has_messages).execution_options(synchronize_session=False)
        ).rowcount,
    )
    if on_batch is not None:
        on_batch(counts)
    db.session.commit()
    return counts["chat_sessions"]


# -- the erasure --------------------------------------------------------------------------------------------


def begin(user_id: str, *, queue: bool = False) -> dict:
    """Record the request in the tombstone (new, or a finished one asked again: its counts kept); with
    `queue`, the erasure is queued in the outbox in the same transaction."""
    key = user_hash(user_id)
    row = db.session.get(ChatErasure, key, with_for_update=True)
    if row is None:
        db.session.add(ChatErasure(user_hash=key, requested_at=utcnow(), counts="{}"))
    elif row.finished_at is not None:
        row.requested_at, row.finished_at = utcnow(), None
    if queue:
        outbox.enqueue(db.session, OUTBOX, TOPIC, user_id)
    try:
        db.session.commit()
    except sa.exc.IntegrityError:  # begun concurrently
        db.session.rollback()
    return tombstone(key)


def _adder(key: str, run: Counter, *, finish: bool = False):
    """A callback adding a batch's counts to the tombstone's totals in the batch's own transaction."""

    def add(counts: Mapping[str, int]) -> None:
        row = db.session.get(ChatErasure, key, with_for_update=True, populate_existing=True)
        totals = Counter(json.loads(row.counts or "{}"))
        totals.update({name: n for name, n in counts.items() if n})
        row.counts = json.dumps(dict(sorted(totals.items())))
        if finish:
            row.finished_at = utcnow()
        run.update({name: n for name, n in counts.items() if n})

    return add


def erase_user(user_id: str, provider=None) -> dict:
    """Erase everything of `user_id` (see the module's docstring); what this run removed, by table.
    `provider`: the one that deletes Dify conversations (default: the app's, when AI_PROVIDER is dify).
    Raises ErasureIncomplete when something must wait for a re-run (the tombstone stays unfinished)."""
    if provider is None and current_app.config["AI_PROVIDER"] == "dify":
        provider = live.current().provider
    key = begin(user_id)["user_hash"]
    run: Counter = Counter()
    add = _adder(key, run)
    for _attempt in range(MAX_PASSES):
        gone: set[str] = set()
        failed = _erase_sessions(user_id, provider, add, gone)
        failed |= _erase_records(user_id, provider, add, gone, failed)
        if failed:
            db.session.remove()
            raise ErasureIncomplete(f"{len(failed)} Dify conversations could not be deleted yet")
        if not _has_sessions(user_id):
            break
    else:
        raise ErasureIncomplete("the user kept writing while being erased")
    rate_limits.current().forget(user_id)
    _adder(key, Counter(), finish=True)({})
    db.session.commit()
    db.session.remove()
    return dict(run)


def _has_sessions(user_id: str) -> bool:
    return (
        db.session.scalar(sa.select(ChatSession.session_id).where(ChatSession.user_id == user_id).limit(1))
        is not None
    )


def _erase_sessions(user_id: str, provider, add, gone: set[str]) -> set[str]:
    """One pass over the user's sessions in batches; the Dify ids that failed. `gone` collects the Dify
    ids deleted (so records naming them are not asked about twice)."""
    batch = current_app.config["PURGE_BATCH_SIZE"]
    failed: set[str] = set()
    after = ""
    while True:
        rows = db.session.execute(
            sa.select(ChatSession.session_id, ChatSession.dify_conversation_id)
            .where(ChatSession.user_id == user_id, ChatSession.session_id > after)
            .order_by(ChatSession.session_id)
            .limit(batch)
        ).all()
        if not rows:
            return failed
        after = rows[-1].session_id
        ids = [row.session_id for row in rows]
        # Deleted first: every writer of a message checks its session is live under the row's lock.
        now = utcnow()
        db.session.execute(
            sa.update(ChatSession)
            .where(ChatSession.session_id.in_(ids), ChatSession.is_deleted.is_(False))
            .values(is_deleted=True, deleted_at=now, updated_at=now)
        )
        db.session.commit()
        delete_messages(ids, batch, add)
        named = {row.dify_conversation_id for row in rows if row.dify_conversation_id} - gone
        deleted, refused = delete_dify_conversations([(d, user_id) for d in sorted(named)], provider)
        gone |= deleted
        failed |= refused
        confirmed = [
            (row.session_id, row.dify_conversation_id)
            for row in rows
            if row.dify_conversation_id not in refused
        ]
        at_dify = len(deleted) if provider is not None else 0
        delete_sessions(confirmed, lambda counts, n=at_dify: add({**counts, "dify_conversations": n}))


def _erase_records(user_id: str, provider, add, gone: set[str], refused_before: set[str]) -> set[str]:
    """conversation_service's records, step by step through its internal route; the Dify ids that failed
    (those refused before, in this pass, are not asked again). A failure to reach conversation_service
    raises ErasureIncomplete (the tombstone stays unfinished)."""
    client = live.current().conversations
    dify_deleted: list[str] = []
    failed: set[str] = set(refused_before)
    db.session.remove()  # no connection held across the calls
    while True:
        try:
            response = client.request(
                "POST", CONVERSATION_ERASURES, json={"userId": user_id, "difyDeleted": dify_deleted}
            )
        except requests.RequestException as error:
            raise ErasureIncomplete(f"conversation_service could not be reached: {error}") from None
        if not response.ok:
            raise ErasureIncomplete(
                f"conversation_service answered {response.status_code}: {response.text[:300]}"
            )
        state = response.json()["data"]
        if state["removed"]:
            add(state["removed"])
            db.session.commit()
            db.session.remove()
        if state["done"]:
            return failed
        pending = [dify_id for dify_id in state["difyConversationIds"] if dify_id not in failed]
        if not pending:
            return failed  # only those Dify refused are left: a re-run tries them again
        deleted, refused = delete_dify_conversations(
            [(d, user_id) for d in pending if d not in gone], provider
        )
        gone |= deleted
        failed |= refused
        if deleted and provider is not None:
            add({"dify_conversations": len(deleted)})
            db.session.commit()
            db.session.remove()
        dify_deleted = [d for d in pending if d in gone]


def tombstone(key: str) -> dict | None:
    """The tombstone of a user hash as the routes show it; None if there is none."""
    row = db.session.get(ChatErasure, key, populate_existing=True)
    if row is None:
        return None
    return {
        "user_hash": row.user_hash,
        "requested_at": row.requested_at,
        "finished_at": row.finished_at,
        "counts": json.loads(row.counts or "{}"),
    }


# -- the routes, the outbox handler, the command ------------------------------------------------------------


class ErasureBody(Schema):
    class Meta:
        unknown = RAISE

    user_id = fields.String(required=True, validate=validate.Regexp(f"^{USER_ID}$"))


class ErasureSchema(Schema):
    """An erasure: the user id's hash, when it was asked and finished (null: still running), and the rows
    removed in total by table (with `dify_conversations` and conversation_service's tables)."""

    user_hash = fields.String()
    requested_at = fields.DateTime(format=UTC_FORMAT)
    finished_at = fields.DateTime(format=UTC_FORMAT, allow_none=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())


@bp.post("")
@body(ErasureBody)
@response(ErasureSchema, status=202)
def request_erasure(data):
    """Queue the erasure of a user (an operator's tooling, a service token only): 202 with its state;
    `GET /internal/chat/erasures/<user_hash>` follows it until `finished_at` is set."""
    return begin(data["user_id"], queue=True)


@bp.get("/<user_hash>")
@response(ErasureSchema)
def erasure_state(user_hash):
    """The state of a user's erasure, by the hash `POST` answered (or an operator computes)."""
    if not re.fullmatch(HASH, user_hash):
        raise BadRequest("malformed user hash: 64 lowercase hex characters")
    state = tombstone(user_hash)
    if state is None:
        raise NotFound("no erasure of this user hash")
    return state


def run_queued(user_id: str) -> None:
    """The outbox handler of `erase_user`: a failure raises, and the outbox retries it with backoff."""
    erase_user(user_id)


@click.command("erase-user")
@click.argument("user_id")
@with_appcontext
def erase_user_command(user_id: str) -> None:
    """Erase every row of USER_ID in both services and their Dify conversations, keeping a tombstone."""
    config = current_app.config
    provider = make_provider(config) if config["AI_PROVIDER"] == "dify" else None
    key = user_hash(user_id)
    try:
        removed = erase_user(user_id, provider)
    except ErasureIncomplete as error:
        raise click.ClickException(f"user hash {key}: not finished, run it again: {error}") from None
    finally:
        if provider is not None:
            provider.close()
    click.echo(f"user hash {key}: erased; this run removed {json.dumps(removed, sort_keys=True)}")


def init_app(app: Flask) -> None:
    """The `erase-user` command and the operator's internal route (service token only)."""
    app.cli.add_command(erase_user_command)
    app.register_blueprint(bp)
    app.extensions["outbox"].handlers[TOPIC] = run_queued

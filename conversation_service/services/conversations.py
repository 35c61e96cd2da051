"""AI conversation records as their owner sees them: create, change, find, list, page, delete, link."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from conversation_service import search
from conversation_service.extensions import db
from conversation_service.models import (
    DEFAULT_TITLE,
    DIFY_ID_MAX,
    OUTBOX,
    AiConversation,
    epoch_ms,
    from_epoch_ms,
    utcnow,
)
from conversation_service.schemas import parse_id
from conversation_service.services import live_counts
from shared import outbox
from shared.errors import BadRequest, ConversationNotFound, Forbidden, OperationFailed
from shared.paging import Page

SORT_COLUMNS = {
    "createdTime": AiConversation.created_time,
    "updatedTime": AiConversation.updated_time,
    "title": AiConversation.title,
}
Record = AiConversation
EPOCH = datetime(1970, 1, 1)
# What the listings read: the columns a record shows (and its sort key), as rows, not ORM objects
# (object loading and the identity map were a third of a page request: docs/benchmarks.md).
TABLE = AiConversation.__table__
SHOWN = ("id", "user_id", "title", "dify_conversation_id", "is_pinned", "created_time", "updated_time")
LISTED = sa.select(*(TABLE.c[name] for name in SHOWN), TABLE.c.chat_session_id)
DEFAULT_ORDER = (TABLE.c.is_pinned.desc(), TABLE.c.created_time.desc(), TABLE.c.id.desc())
# The user's live records; `= false`, not `IS false`: MariaDB uses only an equality as a key part, so
# that the list indexes (user_id, is_deleted, is_pinned, time, id) give both the rows and their order.
LIVE = sa.and_(TABLE.c.user_id == sa.bindparam("user_id"), TABLE.c.is_deleted == sa.false())
# The unfiltered listings, built once (and their cache keys with them): parameters only per request.
LIST_ALL = LISTED.where(LIVE).order_by(*DEFAULT_ORDER).limit(sa.bindparam("limit"))


def _mirror(record_id: int) -> None:
    """Have the record's chat session follow it: an outbox row (topic `session`) in the open
    transaction, delivered by conversation_service.sync once it commits."""
    outbox.enqueue(db.session, OUTBOX, "session", str(record_id))


def next_version(column: sa.ColumnElement[int], now_ms: int) -> sa.ColumnElement[int]:
    """A change's version: now in ms, or one more than the stored version when that is not older, so
    versions only ever grow."""
    return sa.case((column >= now_ms, column + 1), else_=now_ms)


def _new_id() -> int:
    return current_app.extensions["snowflake"].next_id()


def _live(user_id: str) -> sa.ColumnElement[bool]:
    # `= false`, not `IS false`: MariaDB uses only an equality as a key part, so that the list
    # indexes (user_id, is_deleted, is_pinned, time, id) give both the rows and their order.
    return sa.and_(AiConversation.user_id == user_id, AiConversation.is_deleted == sa.false())


def parse_path_id(raw: str) -> int:
    """A conversation id from a path is a positive 64-bit integer in digits; anything else is a 400."""
    parsed = parse_id(raw)
    if parsed is None:
        raise BadRequest(f"malformed id: {raw!r} is not a conversation id")
    return parsed


def parse_dify_path_id(raw: str) -> str:
    """A Dify conversation id from a path: 1 to 100 characters, not blank; anything else is a 400."""
    if not raw.strip() or len(raw) > DIFY_ID_MAX or "\x00" in raw:
        raise BadRequest(f"malformed difyConversationId: at most {DIFY_ID_MAX} characters, not blank")
    return raw


def owned(user_id: str, conversation_id: int) -> Record:
    """The user's live record; 7002 if there is none, 403 if it is someone else's."""
    record = db.session.get(AiConversation, conversation_id)
    if record is None or record.is_deleted:
        raise ConversationNotFound()
    if record.user_id != user_id:
        raise Forbidden("the conversation belongs to another user")
    return record


def _linked(user_id: str, dify_id: str) -> Record | None:
    """The user's live record linked to this Dify conversation, if any."""
    query = sa.select(AiConversation).where(_live(user_id), AiConversation.dify_conversation_id == dify_id)
    return db.session.scalar(query)


@contextmanager
def _one_link_per_dify_conversation(user_id: str, dify_id: str | None, own_id: int | None = None) -> Iterator:
    """Commit the changes made inside; a second live record for the same Dify conversation is 1004."""
    if dify_id is not None:
        other = _linked(user_id, dify_id)
        if other is not None and other.id != own_id:
            raise OperationFailed(
                f"difyConversationId {dify_id!r} is already linked to conversation {other.id}"
            )
    try:
        yield
        db.session.commit()
    except IntegrityError:  # a concurrent request linked it first
        db.session.rollback()
        raise OperationFailed(
            f"difyConversationId {dify_id!r} is already linked to another conversation"
        ) from None


def create(user_id: str, title: str, dify_id: str | None = None, is_pinned: int = 0) -> Record:
    now = utcnow()
    record = AiConversation(
        id=_new_id(),
        user_id=user_id,
        title=title,
        dify_conversation_id=dify_id,
        is_pinned=bool(is_pinned),
        created_time=now,
        updated_time=now,
        is_deleted=False,
        delete_token=0,
    )
    with _one_link_per_dify_conversation(user_id, dify_id):
        db.session.add(record)
        db.session.flush()  # the record first, then its count (live_counts: the lock order)
        live_counts.add(user_id, 1)
    return record


def update(user_id: str, conversation_id: int, changes: dict[str, Any]) -> Record:
    """Change only the given fields (`title`, `dify_conversation_id`, `is_pinned`) of the user's record."""
    record = owned(user_id, conversation_id)
    if not changes:
        return record
    now = utcnow()
    values = {**changes, "updated_time": now}
    if "is_pinned" in values:
        values["is_pinned"] = bool(values["is_pinned"])
    mirrored = "title" in changes and record.chat_session_id is not None
    if mirrored:  # the session follows (pinning and the Dify id are the record's own)
        values["title_version"] = next_version(AiConversation.title_version, epoch_ms(now))
    with _one_link_per_dify_conversation(user_id, changes.get("dify_conversation_id"), record.id):
        result = db.session.execute(
            sa.update(AiConversation)
            .where(AiConversation.id == record.id, AiConversation.is_deleted.is_(False))
            .values(**values)
        )
        if result.rowcount == 1 and mirrored:
            _mirror(record.id)
    if result.rowcount != 1:
        raise ConversationNotFound()  # deleted meanwhile
    return record


def set_pinned(user_id: str, conversation_id: int, is_pinned: int) -> Record:
    return update(user_id, conversation_id, {"is_pinned": is_pinned})


def page(
    user_id: str,
    page: Page,
    sort_by: str = "createdTime",
    sort_order: str = "DESC",
    keyword: str | None = None,
) -> tuple[list[sa.Row], int]:
    """A page of the user's live records (pinned first, then `sort_by` in `sort_order`), as rows of
    their shown columns, and their total.

    The total of all their live records is their maintained count (live_counts), not a COUNT(*) (30 ms
    at 100,000 records); a `keyword` page counts its matches, which no counter can know.
    """
    if keyword:
        matches = search.title_matches(keyword)
        total = (
            db.session.scalar(
                sa.select(sa.func.count()).select_from(TABLE).where(LIVE, matches), {"user_id": user_id}
            )
            or 0
        )
    else:
        matches, total = None, live_counts.of(user_id)
    # The far half of the pages is read from the other end of the same (total) order: the same rows,
    # with an OFFSET of at most total/2 instead of up to total.
    from_end = page.offset > total // 2
    if from_end and page.offset >= total:
        return [], total
    query = _page_query(sort_by, (sort_order == "ASC") == from_end, from_end)
    if matches is not None:
        query = query.where(matches)
    if not from_end:
        offset, limit = page.offset, page.page_size
    else:
        offset, limit = max(0, total - page.offset - page.page_size), min(page.page_size, total - page.offset)
    rows = db.session.execute(query, {"user_id": user_id, "offset": offset, "limit": limit}).all()
    return (rows[::-1] if from_end else rows), total


@functools.cache
def _page_query(sort_by: str, descending: bool, from_end: bool) -> sa.Select:
    """The page query of one order (12 in all), its offset and limit parameters."""
    direction = sa.desc if descending else sa.asc
    pinned = TABLE.c.is_pinned.asc() if from_end else TABLE.c.is_pinned.desc()
    order = (pinned, direction(TABLE.c[SORT_COLUMNS[sort_by].key]), direction(TABLE.c.id))
    return LISTED.where(LIVE).order_by(*order).offset(sa.bindparam("offset")).limit(sa.bindparam("limit"))


def _after(key: tuple[bool, datetime, int]) -> sa.ColumnElement[bool]:
    """Rows after `key` in the order (is_pinned DESC, created_time DESC, id DESC).

    A row-value comparison where the database walks the index with it (PostgreSQL, SQLite); the
    expanded OR form on MySQL/MariaDB, whose optimizer turns only that into index ranges.
    """
    pinned, created, record_id = key
    columns = (AiConversation.is_pinned, AiConversation.created_time, AiConversation.id)
    if db.session.get_bind().dialect.name not in ("mysql", "mariadb"):
        return sa.tuple_(*columns) < (pinned, created, record_id)
    older = sa.or_(
        AiConversation.created_time < created,
        sa.and_(AiConversation.created_time == created, AiConversation.id < record_id),
    )
    if not pinned:
        return sa.and_(AiConversation.is_pinned == sa.false(), older)
    return sa.or_(
        AiConversation.is_pinned == sa.false(), sa.and_(AiConversation.is_pinned == sa.true(), older)
    )


def scroll(
    user_id: str, page_size: int, after: tuple = (), keyword: str | None = None
) -> tuple[list[sa.Row], bool]:
    """The `page_size` live records that follow the sort key `after` (empty: from the top) in the default
    order (pinned first, newest first, id last), and whether more follow. Keyset paging on the index
    `(user_id, is_deleted, is_pinned, created_time, id)`: the deepest page costs what the first does."""
    where = [LIVE]
    if after:
        where.append(_after(after))
    if keyword:
        where.append(search.title_matches(keyword))
    query = LISTED.where(*where).order_by(*DEFAULT_ORDER).limit(page_size + 1)
    records = db.session.execute(query, {"user_id": user_id}).all()
    return records[:page_size], len(records) > page_size


def list_all(user_id: str, limit: int) -> list[sa.Row]:
    """The user's live records, pinned first, then newest first (the seed's sort rule): at most
    `limit` of them (LIST_MAX_RECORDS), so that one user's 20,000 records never slow everyone."""
    return db.session.execute(LIST_ALL, {"user_id": user_id, "limit": limit}).all()


def version_time(version_ms: int) -> datetime:
    """The naive UTC time of a lifecycle version (ms since the epoch), as `deleted_at` stores it."""
    return EPOCH + timedelta(milliseconds=version_ms)  # integer arithmetic: exact, unlike a float


def lifecycle_version(record: Record) -> int:
    """The version of a record's deletion state: `deleted_at` in ms (the time of its last deletion, or
    of its last restore while it lives; 0: never deleted). Mirrored deletes and restores carry it."""
    return epoch_ms(record.deleted_at) if record.deleted_at is not None else 0


def _next_lifecycle(stored: datetime | None) -> datetime:
    """The time (and version) of a new delete or restore: now in whole ms, or one ms past the stored
    version when that is not older (a restore mirrored from a clock ahead of ours)."""
    stored_ms = epoch_ms(stored) if stored is not None else 0
    return version_time(max(epoch_ms(), stored_ms + 1))


def window_start(now: datetime | None = None) -> datetime:
    """The oldest deletion time still restorable (RESTORE_WINDOW_DAYS before now); older records are
    purged (conversation_service.purge)."""
    return (now or utcnow()) - timedelta(days=current_app.config["RESTORE_WINDOW_DAYS"])


def _soft_delete(user_id: str, ids: list[int]) -> int:
    """Mark the user's live records among `ids` deleted, in the open transaction; how many were. They
    share one `deleted_at`, a whole ms: mirrored to a session, the very same time is its version."""
    stored = db.session.scalar(
        sa.select(sa.func.max(AiConversation.deleted_at)).where(_live(user_id), AiConversation.id.in_(ids))
    )
    result = db.session.execute(
        sa.update(AiConversation)
        .where(_live(user_id), AiConversation.id.in_(ids))
        .values(
            is_deleted=True,
            delete_token=AiConversation.id,
            deleted_at=_next_lifecycle(stored),
            updated_time=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    live_counts.add(user_id, -result.rowcount)
    return result.rowcount


def restore(user_id: str, conversation_id: int) -> Record:
    """Bring back the user's record deleted within the window; its chat session follows. A live record
    is answered as it is. 7002 if it is unknown or deleted longer ago than the window (as if it did not
    exist), 403 if it is someone else's, 1004 if another live record has taken its Dify conversation."""
    record = db.session.get(AiConversation, conversation_id, populate_existing=True)
    if record is None:
        raise ConversationNotFound()
    if record.user_id != user_id:
        raise Forbidden("the conversation belongs to another user")
    if not record.is_deleted:
        return record
    if record.deleted_at is None or record.deleted_at < window_start():
        raise ConversationNotFound()
    try:
        restored = _restore(record, record.deleted_at)
    except IntegrityError:  # a live record links the same Dify conversation now
        db.session.rollback()
        raise OperationFailed(
            f"difyConversationId {record.dify_conversation_id!r} is linked to another live conversation"
        ) from None
    if not restored:
        db.session.rollback()
        raise ConversationNotFound()  # restored, purged or deleted again meanwhile
    if record.chat_session_id is not None:
        _mirror(record.id)
    db.session.commit()
    return db.session.get(AiConversation, conversation_id, populate_existing=True)


def _restore(record: Record, deleted_at: datetime, version: int | None = None) -> bool:
    """Make the record live again if it is still deleted at `deleted_at`, in the open transaction;
    `deleted_at` then holds the restore's version (given when mirrored)."""
    restored_at = version_time(version) if version else _next_lifecycle(deleted_at)
    result = db.session.execute(
        sa.update(AiConversation)
        .where(
            AiConversation.id == record.id,
            AiConversation.is_deleted == sa.true(),
            AiConversation.deleted_at == deleted_at,
        )
        .values(is_deleted=False, delete_token=0, deleted_at=restored_at)
        .execution_options(synchronize_session=False)
    )
    live_counts.add(record.user_id, result.rowcount)
    return result.rowcount == 1


def delete(user_id: str, conversation_id: int) -> None:
    record = owned(user_id, conversation_id)
    linked = record.chat_session_id is not None
    deleted = _soft_delete(user_id, [conversation_id])
    if deleted == 1 and linked:
        _mirror(conversation_id)
    db.session.commit()
    if deleted != 1:
        raise ConversationNotFound()  # deleted meanwhile


def delete_many(user_id: str, ids: list[int]) -> None:
    """Delete all the given records or none: any unknown, deleted or foreign id refuses the lot."""
    ids = list(dict.fromkeys(ids))
    if _soft_delete(user_id, ids) == len(ids):
        linked = db.session.scalars(
            sa.select(AiConversation.id).where(
                AiConversation.id.in_(ids), AiConversation.chat_session_id.is_not(None)
            )
        )
        for record_id in linked.all():
            _mirror(record_id)
        db.session.commit()
        return
    db.session.rollback()
    owners = dict(
        db.session.execute(
            sa.select(AiConversation.id, AiConversation.user_id).where(
                AiConversation.id.in_(ids), AiConversation.is_deleted.is_(False)
            )
        ).all()
    )
    foreign = [str(i) for i in ids if i in owners and owners[i] != user_id]
    missing = [str(i) for i in ids if i not in owners]
    problems = [f"of another user: {', '.join(foreign)}"] if foreign else []
    problems += [f"unknown or deleted: {', '.join(missing)}"] if missing else []
    detail = f"nothing was deleted; conversations {'; '.join(problems)}"
    data = {"detail": detail, "notFound": missing, "forbidden": foreign}
    raise (Forbidden if foreign else ConversationNotFound)(detail, data=data)


def link(user_id: str, dify_id: str, title: str | None = None) -> Record:
    """The user's live record for this Dify conversation, created (with `title`) if there is none.

    Idempotent and safe under concurrency: the unique link constraint lets only one insert win; the
    loser finds the winner's record. A record the user deleted is as if it never existed, so a link
    after a delete creates a new record.
    """
    existing = _linked(user_id, dify_id)
    if existing is not None:
        return existing
    now = utcnow()
    record = AiConversation(
        id=_new_id(),
        user_id=user_id,
        title=title or DEFAULT_TITLE,
        dify_conversation_id=dify_id,
        is_pinned=False,
        created_time=now,
        updated_time=now,
        is_deleted=False,
        delete_token=0,
    )
    db.session.add(record)
    try:
        db.session.flush()
        live_counts.add(user_id, 1)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        existing = _linked(user_id, dify_id)
        if existing is None:
            raise
        return existing
    return record


# -- the records of chat sessions (the internal routes; conversation_service.sync) -------------------


def chat_record(user_id: str, chat_session_id: str) -> Record | None:
    """The record of this chat session, deleted or not; None if there is none; 403 if it is another
    user's."""
    of_session = sa.select(AiConversation).where(AiConversation.chat_session_id == chat_session_id)
    record = db.session.scalar(
        of_session.where(AiConversation.user_id == user_id).execution_options(populate_existing=True)
    )
    if record is None and db.session.scalar(
        sa.select(of_session.where(AiConversation.user_id != user_id).exists())
    ):
        raise Forbidden("the chat session's record belongs to another user")
    return record


def owned_chat_record(user_id: str, chat_session_id: str) -> Record:
    record = chat_record(user_id, chat_session_id)
    if record is None:
        raise ConversationNotFound()
    return record


def mirror_chat_session(user_id: str, chat_session_id: str, state: dict[str, Any]) -> Record:
    """Make the record of a chat session follow the session's `state` (title, title_version,
    dify_conversation_id, dify_version, activity_time and created_time in ms, deleted, deleted_version);
    not mirrored back.

    Created the first time (a tombstone when the session is already deleted). A deletion or a restore
    applies only with a higher `deleted_version` than the record's, so a replayed delivery cannot bring a
    deleted record back nor delete a restored one; a deleted record takes nothing else. Otherwise a
    title or Dify id is taken only with a higher version than the stored one, and the update time only
    moves forward. Idempotent, and safe under concurrency: one record per (user, session) by a unique
    constraint; a losing insert retries as an update.
    """
    for _attempt in range(3):
        record = chat_record(user_id, chat_session_id)
        if record is None:
            record = _adopt(user_id, chat_session_id, state)
        if record is None:
            try:
                return _create_chat_record(user_id, chat_session_id, state)
            except IntegrityError:  # created concurrently, or the Dify id is another record's
                db.session.rollback()
                continue
        # A restore before the rest (a deleted record takes nothing), a deletion after it (the
        # session's last title comes with its deletion).
        record = _apply_chat_lifecycle(record, state) if not state.get("deleted") else record
        if record.is_deleted:
            return record
        try:
            _apply_chat_state(record, state, with_dify=True)
        except IntegrityError:  # the Dify id is another live record's: keep the rest
            db.session.rollback()
            _apply_chat_state(record, state, with_dify=False)
        return _apply_chat_lifecycle(chat_record(user_id, chat_session_id), state)
    raise OperationFailed("the chat session's record changed concurrently; try again")


def _adopt(user_id: str, chat_session_id: str, state: dict[str, Any]) -> Record | None:
    """A live, unmirrored record of the same Dify conversation (made by the older Dify link), taken as
    the session's record; None if there is none."""
    dify_id = state.get("dify_conversation_id")
    if not dify_id:
        return None
    record = _linked(user_id, dify_id)
    if record is None or record.chat_session_id is not None:
        return None
    adopted = db.session.execute(
        sa.update(AiConversation)
        .where(AiConversation.id == record.id, AiConversation.chat_session_id.is_(None))
        .values(chat_session_id=chat_session_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return None
    return chat_record(user_id, chat_session_id) if adopted == 1 else None


def _create_chat_record(user_id: str, chat_session_id: str, state: dict[str, Any]) -> Record:
    now = utcnow()
    created = from_epoch_ms(state["created_time"]) if state.get("created_time") else now
    activity = from_epoch_ms(state["activity_time"]) if state.get("activity_time") else created
    record_id = _new_id()
    deleted = bool(state.get("deleted"))
    dify_id = state.get("dify_conversation_id")
    if dify_id and not deleted and _linked(user_id, dify_id) is not None:
        dify_id = None  # another live record has it (1004 on the public routes): left off this one
    record = AiConversation(
        id=record_id,
        user_id=user_id,
        title=state.get("title") or DEFAULT_TITLE,
        title_version=int(state.get("title_version") or 0),
        dify_conversation_id=dify_id,
        dify_version=int(state.get("dify_version") or 0) if dify_id else 0,
        chat_session_id=chat_session_id,
        is_pinned=False,
        created_time=created,
        updated_time=max(activity, created),
        is_deleted=deleted,
        delete_token=record_id if deleted else 0,
        deleted_at=(
            version_time(int(state.get("deleted_version") or 0) or epoch_ms(now)) if deleted else None
        ),
    )
    db.session.add(record)
    db.session.flush()
    live_counts.add(user_id, 0 if deleted else 1)
    db.session.commit()
    return record


def _apply_chat_state(record: Record, state: dict[str, Any], *, with_dify: bool) -> None:
    """The state's newer parts, each by a conditional UPDATE of the live record, in one transaction."""
    this = sa.and_(AiConversation.id == record.id, AiConversation.is_deleted == sa.false())

    def change(where: sa.ColumnElement[bool] | None, **values: Any) -> None:
        condition = this if where is None else sa.and_(this, where)
        db.session.execute(
            sa.update(AiConversation)
            .where(condition)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    title, title_version = state.get("title"), int(state.get("title_version") or 0)
    if title is not None and title_version > 0:
        change(AiConversation.title_version < title_version, title=title, title_version=title_version)
    dify_version = int(state.get("dify_version") or 0)
    if with_dify and dify_version > 0:
        change(
            AiConversation.dify_version < dify_version,
            dify_conversation_id=state.get("dify_conversation_id"),
            dify_version=dify_version,
        )
    if state.get("activity_time"):
        activity = from_epoch_ms(state["activity_time"])
        change(AiConversation.updated_time < activity, updated_time=activity)
    db.session.commit()


def _apply_chat_lifecycle(record: Record, state: dict[str, Any]) -> Record:
    """The session's deletion or restore, if newer than the record's own (`deleted_version`, ms; 0:
    from before restores existed, a deletion then applies unless the record was ever restored). A
    record deleted longer ago than the window (being purged) is not brought back."""
    deleted, version = bool(state.get("deleted")), int(state.get("deleted_version") or 0)
    own = lifecycle_version(record)
    if deleted == record.is_deleted or not (version > own or (deleted and version == 0 and own == 0)):
        return record
    if deleted:
        result = db.session.execute(
            sa.update(AiConversation)
            .where(AiConversation.id == record.id, AiConversation.is_deleted == sa.false())
            .values(
                is_deleted=True,
                delete_token=AiConversation.id,
                deleted_at=version_time(version) if version else _next_lifecycle(record.deleted_at),
                updated_time=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        live_counts.add(record.user_id, -result.rowcount)
    elif record.deleted_at is None or record.deleted_at < window_start():
        return record
    else:
        try:
            _restore(record, record.deleted_at, version)
        except IntegrityError:  # another live record has its Dify conversation: restored without it
            db.session.rollback()
            db.session.execute(
                sa.update(AiConversation)
                .where(AiConversation.id == record.id)
                .values(dify_conversation_id=None, dify_version=0)
                .execution_options(synchronize_session=False)
            )
            _restore(record, record.deleted_at, version)
    db.session.commit()
    return chat_record(record.user_id, record.chat_session_id)

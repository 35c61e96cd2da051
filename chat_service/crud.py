"""The seed's ten database functions, under its names and signatures (and two for paging at scale).

`db` is a SQLAlchemy session. Each function that writes is one transaction and commits it; none checks
who is asking (that is the service layer's job). Soft-deleted rows are invisible here: a deleted session
hides its messages too. Where the seed's return lines swap "object" and "list" (`get_session`,
`list_sessions`), the names win: `get_session` returns one session, `list_sessions` a list.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from chat_service.models import DEFAULT_TITLE, OUTBOX, ChatMessage, ChatSession, epoch_ms, utcnow
from shared import outbox
from shared.search_text import index_tokens

Order = Literal["asc", "desc"]
Columns = tuple[sa.Column, ...] | None
EPOCH = datetime(1970, 1, 1)


def _live_session(session_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(ChatSession.session_id == session_id, ChatSession.is_deleted.is_(False))


# Built once, with the id as a parameter: building the statement (and its cache key) on every call was
# a tenth of a GET-session request's time (bench/rest_overhead.py).
_GET_SESSION = sa.select(ChatSession).where(
    ChatSession.session_id == sa.bindparam("session_id"), ChatSession.is_deleted.is_(False)
)


# The hot REST reads (bench/rest_overhead.py) select columns on a Core connection: rows, without ORM
# objects, the identity map or a session to set up and remove (an ORM read costs 2.4x the Core one).
SESSION_COLUMNS = tuple(
    ChatSession.__table__.c[name]
    for name in ("session_id", "user_id", "title", "message_count", "created_at", "updated_at", "is_deleted")
)
BRIEF_COLUMNS = tuple(
    ChatMessage.__table__.c[name] for name in ("message_id", "content", "role", "created_at")
)
_SESSION_ROW = sa.select(*SESSION_COLUMNS).where(
    ChatSession.__table__.c.session_id == sa.bindparam("session_id"),
    ChatSession.__table__.c.is_deleted == sa.false(),
)


def session_row(db: Session | Connection, session_id: str) -> sa.Row | None:
    """The live session's own columns (SESSION_COLUMNS) as a row, or None."""
    return db.execute(_SESSION_ROW, {"session_id": session_id}).first()


# An AI turn's two reads, built once (building them per turn was a fifth of a turn's worker CPU:
# bench/turn_cpu.py --profile): the session's columns a turn uses, and the history before a question.
TURN_SESSION_COLUMNS = tuple(
    ChatSession.__table__.c[name] for name in ("session_id", "user_id", "dify_conversation_id", "inputs")
)
_TURN_SESSION = sa.select(*TURN_SESSION_COLUMNS).where(
    ChatSession.__table__.c.session_id == sa.bindparam("session_id"),
    ChatSession.__table__.c.is_deleted == sa.false(),
)
_m = ChatMessage.__table__.c
_HISTORY = (
    sa.select(_m.role, _m.content, _m.is_generated)
    .where(
        _m.session_id == sa.bindparam("session_id"),
        _m.is_deleted == sa.false(),
        _m.message_id < sa.bindparam("before_id", type_=_m.message_id.type),
    )
    .order_by(_m.message_id.desc())
    .limit(sa.bindparam("limit", type_=sa.Integer()))
)
TurnSession = ChatSession | sa.Row  # the session as a turn reads it: a row of TURN_SESSION_COLUMNS
_NO_MESSAGE_ID = 2**63 - 1  # above every message id: "before" it is the newest


def turn_session(db: Session | Connection, session_id: str) -> sa.Row | None:
    """The live session's TURN_SESSION_COLUMNS as a row, or None."""
    return db.execute(_TURN_SESSION, {"session_id": session_id}).first()


def history(
    db: Session | Connection, session_id: str, limit: int, before_id: int | None = None
) -> list[sa.Row]:
    """(role, content, is_generated) of the session's `limit` live messages just older than `before_id`
    (else its newest), oldest first: the index (session_id, is_deleted, message_id) read backwards."""
    bound = {"session_id": session_id, "before_id": before_id or _NO_MESSAGE_ID, "limit": limit}
    return db.execute(_HISTORY, bound).all()[::-1]


def _messages(db: Session | Connection, query: sa.Select, columns: Columns) -> list:
    """The query's messages: ORM objects, or rows of `columns` when given."""
    result = db.execute(query)
    return list(result.scalars() if columns is None else result)


def _commit_keeping(db: Session, row: object) -> None:
    """Commit, keeping the values just written to `row` loaded. A commit expires them, and the next
    read of any would cost a SELECT returning exactly what was written (bench/rest_overhead.py)."""
    db.flush()
    values = {attr.key: getattr(row, attr.key) for attr in sa.inspect(row).mapper.column_attrs}
    db.commit()
    for key, value in values.items():
        set_committed_value(row, key, value)


def mirror(db: Session | Connection, session_id: str) -> None:
    """Have the session's conversation record follow it: an outbox row (topic `record`) in the open
    transaction, delivered by chat_service.sync once it commits."""
    outbox.enqueue(db, OUTBOX, "record", session_id)


def next_version(column: sa.ColumnElement[int], now_ms: int) -> sa.ColumnElement[int]:
    """A change's version: now in ms, or one more than the stored version when that is not older (two
    changes in one millisecond, or a clock behind the other side's), so versions only ever grow."""
    return sa.case((column >= now_ms, column + 1), else_=now_ms)


def _live_messages(session_id: str) -> sa.ColumnElement[bool]:
    # `= false`, not `IS false`: MariaDB uses only an equality as a key part, so that the index
    # (session_id, is_deleted, message_id) gives both the rows and their order (no filesort).
    return sa.and_(ChatMessage.session_id == session_id, ChatMessage.is_deleted == sa.false())


def create_session(db: Session, session_id: str, user_id: str, title: str = DEFAULT_TITLE) -> ChatSession:
    """Store a new, empty session and return it."""
    now = utcnow()
    session = ChatSession(
        session_id=session_id,
        user_id=user_id,
        title=title,
        message_count=0,
        created_at=now,
        updated_at=now,
        is_deleted=False,
        title_version=epoch_ms(now) if title != DEFAULT_TITLE else 0,
        dify_version=0,
    )
    db.add(session)
    db.flush()
    mirror(db, session_id)
    _commit_keeping(db, session)
    return session


def get_session(db: Session, session_id: str) -> ChatSession | None:
    """The live session with this id, or None."""
    return db.scalar(_GET_SESSION, {"session_id": session_id})


def list_sessions(db: Session, user_id: str, page: int = 1, page_size: int = 20) -> list[ChatSession]:
    """One page of the user's live sessions, most recently updated first."""
    query = (
        sa.select(ChatSession)
        .where(ChatSession.user_id == user_id, ChatSession.is_deleted.is_(False))
        .order_by(ChatSession.updated_at.desc(), ChatSession.session_id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return list(db.scalars(query))


def count_sessions(db: Session, user_id: str) -> int:
    """How many live sessions the user has (the total that goes with `list_sessions`)."""
    query = sa.select(sa.func.count()).where(
        ChatSession.user_id == user_id, ChatSession.is_deleted.is_(False)
    )
    return db.scalar(query) or 0


def version_time(version_ms: int) -> datetime:
    """The naive UTC time of a lifecycle version (ms since the epoch), as `deleted_at` stores it."""
    return EPOCH + timedelta(milliseconds=version_ms)  # integer arithmetic: exact, unlike a float


def lifecycle_version(session: ChatSession) -> int:
    """The version of a session's deletion state: `deleted_at` in ms (the time of its last deletion, or
    of its last restore while it lives; 0: never deleted). Mirrored deletes and restores carry it."""
    return epoch_ms(session.deleted_at) if session.deleted_at is not None else 0


def _lock_lifecycle(db: Session, session_id: str) -> sa.Row | None:
    """The session row locked (first, as every writer of a session does): its deletion state."""
    return db.execute(
        sa.select(ChatSession.is_deleted, ChatSession.deleted_at)
        .where(ChatSession.session_id == session_id)
        .with_for_update()
    ).first()


def _next_lifecycle(current: datetime | None, version: int | None) -> int:
    """The version of a new delete or restore: the given one (mirrored), else now in ms, or one ms
    past the stored version when that is not older (a clock behind the other side's)."""
    if version:
        return version
    stored = epoch_ms(current) if current is not None else 0
    return max(epoch_ms(), stored + 1)


def soft_delete_session(
    db: Session, session_id: str, *, mirror_record: bool = True, version: int | None = None
) -> bool:
    """Mark the session deleted, with its live messages, all at one `deleted_at` (a ms version, so that
    both views hold the very same time); False if it was not live. Its record follows unless
    `mirror_record` is false (the deletion came from the record, at its `version`). The Dify
    conversation stays until the session is purged (chat_service.purge): a restore keeps its context."""
    row = _lock_lifecycle(db, session_id)
    if row is None or row.is_deleted:
        db.rollback()
        return False
    deleted_at = version_time(_next_lifecycle(row.deleted_at, version))
    db.execute(
        sa.update(ChatSession)
        .where(_live_session(session_id))
        .values(is_deleted=True, deleted_at=deleted_at, updated_at=utcnow())
    )
    db.execute(
        sa.update(ChatMessage)
        .where(_live_messages(session_id))
        .values(is_deleted=True, deleted_at=deleted_at)
        .execution_options(synchronize_session=False)
    )
    if mirror_record:
        mirror(db, session_id)
    db.commit()
    return True


def restore_session(
    db: Session,
    session_id: str,
    not_before: datetime,
    *,
    mirror_record: bool = True,
    version: int | None = None,
) -> bool:
    """Bring back a session deleted at or after `not_before` (the restore window's start), with the
    messages deleted along with it (those of its exact `deleted_at`; messages deleted one by one before
    keep theirs). `deleted_at` then holds the restore's version. False if it is not so deleted."""
    row = _lock_lifecycle(db, session_id)
    if row is None or not row.is_deleted or row.deleted_at is None or row.deleted_at < not_before:
        db.rollback()
        return False
    db.execute(
        sa.update(ChatMessage)
        .where(
            ChatMessage.session_id == session_id,
            ChatMessage.is_deleted == sa.true(),
            ChatMessage.deleted_at == row.deleted_at,
        )
        .values(is_deleted=False, deleted_at=None)
        .execution_options(synchronize_session=False)
    )
    live_count = sa.select(sa.func.count()).where(_live_messages(session_id)).scalar_subquery()
    db.execute(
        sa.update(ChatSession)
        .where(ChatSession.session_id == session_id, ChatSession.is_deleted.is_(True))
        .values(
            is_deleted=False,
            deleted_at=version_time(_next_lifecycle(row.deleted_at, version)),
            message_count=live_count,
        )
    )
    if mirror_record:
        mirror(db, session_id)
    db.commit()
    return True


def list_deleted_sessions(
    db: Session, user_id: str, not_before: datetime, page: int = 1, page_size: int = 20
) -> tuple[list[ChatSession], int]:
    """One page of the user's sessions deleted at or after `not_before` (restorable), newest deletion
    first, and how many there are."""
    where = (
        ChatSession.user_id == user_id,
        ChatSession.is_deleted.is_(True),
        ChatSession.deleted_at >= not_before,
    )
    query = (
        sa.select(ChatSession)
        .where(*where)
        .order_by(ChatSession.deleted_at.desc(), ChatSession.session_id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    total = db.scalar(sa.select(sa.func.count()).select_from(ChatSession).where(*where)) or 0
    return list(db.scalars(query)), total


def set_generated_title(db: Session, session_id: str, title: str) -> bool:
    """Give a live session a generated title, only if nobody ever set one (`title_version` 0); its record
    follows. True if it was applied (a rename made meanwhile wins)."""
    result = db.execute(
        sa.update(ChatSession)
        .where(_live_session(session_id), ChatSession.title_version == 0)
        .values(title=title, title_version=next_version(ChatSession.title_version, epoch_ms()))
    )
    if result.rowcount != 1:
        db.rollback()
        return False
    mirror(db, session_id)
    db.commit()
    return True


def set_session_inputs(db: Session, session_id: str, inputs: str) -> bool:
    """Replace a live session's Dify inputs (JSON text); False if it is not live."""
    result = db.execute(sa.update(ChatSession).where(_live_session(session_id)).values(inputs=inputs))
    db.commit()
    return result.rowcount == 1


def get_any_session(db: Session, session_id: str) -> ChatSession | None:
    """The session with this id, deleted or not (for mirroring it), or None."""
    return db.get(ChatSession, session_id, populate_existing=True)


def apply_title(db: Session, session_id: str, title: str, version: int) -> bool:
    """Take a title set elsewhere (the session's record) at `version`, unless the session is deleted or
    its title is as new; not mirrored back. `updated_at` stays: it is the session's own activity, which
    the record follows (bumping it here would leave the record behind)."""
    result = db.execute(
        sa.update(ChatSession)
        .where(_live_session(session_id), ChatSession.title_version < version)
        .values(title=title, title_version=version)
    )
    db.commit()
    return result.rowcount == 1


def update_session_title(db: Session, session_id: str, new_title: str | None = None) -> bool:
    """Rename the session (no title given: back to the default); False if it is not live."""
    now = utcnow()
    result = db.execute(
        sa.update(ChatSession)
        .where(_live_session(session_id))
        .values(
            title=new_title if new_title is not None else DEFAULT_TITLE,
            title_version=next_version(ChatSession.title_version, epoch_ms(now)),
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        db.rollback()
        return False
    mirror(db, session_id)
    db.commit()
    return True


def create_message(
    db: Session | Connection,
    session_id: str,
    content: str,
    role: str,
    *,
    dify_message_id: str | None = None,
    usage: str | None = None,
    is_generated: bool = False,
    user_id: str | None = None,
) -> ChatMessage | None:
    """Store a message and count it on its session in one transaction (`db`'s: an ORM session or a Core
    connection, committed here); None if the session is gone. The message carries its session's owner:
    `user_id` when the caller knows it, else read from the session inside the INSERT. The message
    returned is a new object, not in any session: what was written, and its id.

    The count is bumped by an atomic `UPDATE ... SET message_count = message_count + 1` that also
    locks the session row, so concurrent writers can neither lose an increment nor add to a session
    that is being deleted.
    """
    now = utcnow()
    # Core statements on `db`'s connection, in its transaction: no ORM execution to set up for each
    # (the ORM UPDATE evaluated its criteria against the identity map; bench/rest_overhead.py).
    connection = db if isinstance(db, Connection) else db.connection()
    totals = _usage_totals(usage)
    if totals:
        bump = (
            sa.update(_sessions)
            .where(_sessions.c.session_id == session_id, _sessions.c.is_deleted == sa.false())
            .values(message_count=_sessions.c.message_count + 1, updated_at=now, **totals)
        )
        bumped = connection.execute(bump)
    else:  # most messages: the statement built once, the values bound
        bumped = connection.execute(_BUMP, {"b_session_id": session_id, "b_now": now})
    if bumped.rowcount != 1:
        db.rollback()
        return None
    mirror(connection, session_id)  # the record's activity time follows (one upsert; the session is locked)
    values = {
        "session_id": session_id,
        "role": role,
        "content": content,
        "created_at": now,
        "updated_at": now,
        "is_deleted": False,
        "dify_message_id": dify_message_id,
        "usage": usage,
        "is_generated": is_generated,
        "search_tokens": index_tokens(content),
    }
    # On the table: no unit of work to flush, the search tokens given (the ORM insert was a fifth of a
    # POST /message).
    if user_id is not None:
        inserted = connection.execute(_INSERT_MESSAGE, values | {"user_id": user_id})
    else:
        inserted = connection.execute(_INSERT_MESSAGE.values(**values, user_id=_owner_of(session_id)))
    db.commit()
    message = ChatMessage(**values, message_id=inserted.inserted_primary_key[0])
    if user_id is not None:
        message.user_id = user_id
    return message


# create_message's statements for the common case, built once (building `.values()` per call was a
# tenth of storing a message: bench/turn_cpu.py --profile).
_sessions = ChatSession.__table__
_BUMP = (
    sa.update(_sessions)
    .where(_sessions.c.session_id == sa.bindparam("b_session_id"), _sessions.c.is_deleted == sa.false())
    .values(
        message_count=_sessions.c.message_count + 1,
        updated_at=sa.bindparam("b_now", type_=_sessions.c.updated_at.type),
    )
)
_INSERT_MESSAGE = ChatMessage.__table__.insert()


def _owner_of(session_id: str) -> sa.ScalarSelect:
    return sa.select(ChatSession.user_id).where(ChatSession.session_id == session_id).scalar_subquery()


def _usage_totals(usage: str | None) -> dict:
    """The session columns a reply's usage (normalized JSON text) adds to, as UPDATE values."""
    if not usage:
        return {}
    reported = json.loads(usage)
    values: dict = {
        name: getattr(ChatSession, name) + int(reported[name])
        for name in ("prompt_tokens", "completion_tokens", "total_tokens")
        if isinstance(reported.get(name), int)
    }
    price = reported.get("total_price")  # the decimal string the provider gave (normalize_usage)
    if isinstance(price, str):
        values["total_price"] = sa.func.coalesce(ChatSession.total_price, 0) + Decimal(price)
        if isinstance(reported.get("currency"), str):
            values["currency"] = sa.func.coalesce(ChatSession.currency, reported["currency"][:8])
    return values


def set_feedback(
    db: Session, message: ChatMessage, rating: str | None, content: str | None, *, forward: bool
) -> bool:
    """Store a reply's feedback (and, with `forward`, queue it for Dify in the same transaction);
    False if the message is no longer live."""
    result = db.execute(
        sa.update(ChatMessage)
        .where(ChatMessage.message_id == message.message_id, ChatMessage.is_deleted.is_(False))
        .values(feedback_rating=rating, feedback_content=content)
    )
    if result.rowcount != 1:
        db.rollback()
        return False
    if forward:
        outbox.enqueue(db, OUTBOX, "dify_feedback", str(message.message_id))
    db.commit()
    set_committed_value(message, "feedback_rating", rating)
    set_committed_value(message, "feedback_content", content)
    return True


def get_message(db: Session, message_id: int) -> ChatMessage | None:
    """The live message with this id, in a live session, or None."""
    query = (
        sa.select(ChatMessage)
        .join(ChatSession, ChatSession.session_id == ChatMessage.session_id)
        .where(
            ChatMessage.message_id == message_id,
            ChatMessage.is_deleted.is_(False),
            ChatSession.is_deleted.is_(False),
        )
    )
    return db.scalar(query)


def list_messages(
    db: Session | Connection,
    session_id: str,
    page: int = 1,
    page_size: int = 50,
    order: Order = "asc",
    *,
    columns: Columns = None,
) -> list[ChatMessage]:
    """One page of the session's live messages, oldest first (`order="desc"`: pages from the newest);
    as rows of `columns` when given (any executor, a Core connection too)."""
    offset = (page - 1) * page_size
    return _page(db, columns, order, {"session_id": session_id, "offset": offset, "limit": page_size})


def list_messages_from_end(
    db: Session | Connection,
    session_id: str,
    page: int,
    page_size: int,
    order: Order,
    total: int,
    *,
    columns: Columns = None,
) -> list[ChatMessage]:
    """The same page as `list_messages(db, session_id, page, page_size, order)`, read from the other end.

    `total` is the session's live message count (its maintained `message_count`). The page's rows are
    found by walking the index from the far end, so a page near the end skips few rows instead of nearly
    `total`: `ORDER BY message_id DESC LIMIT n OFFSET total - offset - n`, reversed (for `order="asc"`).
    """
    offset = (page - 1) * page_size
    if offset >= total:
        return []
    reverse = "desc" if order == "asc" else "asc"
    window = {"offset": max(0, total - offset - page_size), "limit": min(page_size, total - offset)}
    return _page(db, columns, reverse, {"session_id": session_id, **window})[::-1]


@functools.cache
def _page_query(columns: Columns, order: Order) -> sa.Select:
    """A page of a session's live messages in `order`, built once per shape (its SQL and cache key
    too), with the session, offset and limit as parameters."""
    key = ChatMessage.message_id.asc() if order == "asc" else ChatMessage.message_id.desc()
    return (
        sa.select(*(columns or (ChatMessage,)))
        .where(_live_messages(sa.bindparam("session_id")))
        .order_by(key)
        .offset(sa.bindparam("offset"))
        .limit(sa.bindparam("limit"))
    )


def _page(db: Session | Connection, columns: Columns, order: Order, parameters: dict) -> list:
    result = db.execute(_page_query(columns, order), parameters)
    return list(result.scalars() if columns is None else result)


def list_messages_by_cursor(
    db: Session | Connection,
    session_id: str,
    before_id: int | None = None,
    after_id: int | None = None,
    limit: int = 50,
    *,
    columns: Columns = None,
) -> list[ChatMessage]:
    """Up to `limit` live messages just older than `before_id`, or just newer than `after_id`, oldest first.

    Keyset paging on the index `(session_id, is_deleted, message_id)`: `WHERE session_id = ? AND
    is_deleted = false AND message_id < ? ORDER BY message_id DESC LIMIT ?` (reversed here), or
    `message_id > ? ORDER BY message_id ASC LIMIT ?`; as fast on the millionth message as on the first.
    With neither cursor: the newest `limit`. The cursor need not be a live message (or exist at all).
    """
    query = sa.select(*(columns or (ChatMessage,))).where(_live_messages(session_id))
    if after_id is not None:
        query = query.where(ChatMessage.message_id > after_id).order_by(ChatMessage.message_id.asc())
        return _messages(db, query.limit(limit), columns)
    if before_id is not None:
        query = query.where(ChatMessage.message_id < before_id)
    query = query.order_by(ChatMessage.message_id.desc()).limit(limit)
    return _messages(db, query, columns)[::-1]


def last_message(db: Session, session_id: str, role: str) -> ChatMessage | None:
    """The session's newest live message of `role`, or None."""
    query = (
        sa.select(ChatMessage)
        .where(_live_messages(session_id), ChatMessage.role == role)
        .order_by(ChatMessage.message_id.desc())
        .limit(1)
    )
    return db.scalars(query).first()


def soft_delete_message(db: Session, message_id: int) -> bool:
    """Mark the message deleted and uncount it; False if it was not live."""
    message = get_message(db, message_id)
    if message is None:
        return False
    # Lock the session row first, as create_message does: every writer of a session takes its
    # locks in the same order, so they queue instead of deadlocking (InnoDB would otherwise).
    db.execute(
        sa.select(ChatSession.session_id)
        .where(ChatSession.session_id == message.session_id)
        .with_for_update()
    )
    deleted = db.execute(
        sa.update(ChatMessage)
        .where(ChatMessage.message_id == message_id, ChatMessage.is_deleted.is_(False))
        .values(is_deleted=True, deleted_at=_own_deletion_time(), updated_at=utcnow())
    )
    if deleted.rowcount != 1:  # a concurrent delete got there first
        db.rollback()
        return False
    db.execute(
        sa.update(ChatSession)
        .where(ChatSession.session_id == message.session_id)
        .values(message_count=ChatSession.message_count - 1)
    )
    db.commit()
    return True


def _own_deletion_time() -> datetime:
    """When a message deleted on its own was deleted: never a whole millisecond, so never equal to a
    session's deletion time (those are ms versions), and a restore of the session leaves it deleted."""
    now = utcnow()
    return now + timedelta(microseconds=1) if now.microsecond % 1000 == 0 else now


def update_message_content(db: Session, message_id: int, new_content: str) -> bool:
    """Replace a live user message's content; False if there is no such message or it is not `user`."""
    message = get_message(db, message_id)
    if message is None or message.role != "user":
        return False
    result = db.execute(
        sa.update(ChatMessage)
        .where(
            ChatMessage.message_id == message_id,
            ChatMessage.is_deleted.is_(False),
            ChatMessage.role == "user",
        )
        .values(content=new_content, updated_at=utcnow())
    )
    db.commit()
    return result.rowcount == 1

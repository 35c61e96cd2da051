"""Search over a user's live messages and session titles, newest first, cursor-paged (docs/search.md).

Two streams, each read newest first through the backend's full-text index (shared.search_text) in
small batches: messages by `message_id` (their creation order), titles by the session's `updated_at`.
A page merges them by time; the cursor holds where each stream stopped, so the next page goes on in
both. A query with a CJK run of three or more characters finds candidates by the run's bigrams and
keeps those that hold the run (`matches`): the batches grow until the page is full.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from chat_service.extensions import db
from chat_service.models import ChatMessage, ChatSession
from chat_service.services.sessions import owned_session
from shared.errors import ValidationFailed
from shared.search_text import Query, index_match, matches, snippet, token_test

MAX_BATCH = 1000
RECENT = 2000  # messages tested row by row before the index is asked (see _message_stages)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


@dataclass(frozen=True)
class Hit:
    kind: str  # "message" or "title"
    session_id: str
    session_title: str
    message_id: int | None
    role: str | None
    time: datetime
    text: str
    position: object  # where its stream stands once this hit is shown


@dataclass(frozen=True)
class Cursor:
    """Where each stream stopped: the last message id shown, the last title's (updated_at, session_id)."""

    message: int | None = None
    title: tuple[datetime, str] | None = None

    def encode(self) -> str:
        raw = {"m": self.message, "t": None}
        if self.title is not None:
            raw["t"] = [self.title[0].strftime(TIME_FORMAT), self.title[1]]
        text = json.dumps(raw, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str | None) -> Cursor:
        """The cursor a previous page gave; anything else is a 1001 on `cursor`."""
        if not value:
            return cls()
        try:
            raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            message, title = raw["m"], raw["t"]
            if message is not None and not (type(message) is int and message > 0):
                raise ValueError
            if title is not None:
                title = (datetime.strptime(title[0], TIME_FORMAT), str(title[1]))
            return cls(message, title)
        except (ValueError, TypeError, KeyError, IndexError, binascii.Error, UnicodeDecodeError):
            raise ValidationFailed({"cursor": ["not a cursor this search gave"]}) from None


def search(user_id: str, query: Query, page_size: int, cursor: Cursor, session_id: str | None) -> dict:
    """One page of the user's hits for `query` (in one session of theirs when `session_id` is given)."""
    if session_id is not None:
        session_id = owned_session(user_id, session_id).session_id
    dialect = db.engine.dialect.name
    streams = [
        _confirmed(query, page_size, *_message_stages(dialect, user_id, query, session_id, cursor.message)),
        _confirmed(query, page_size, _title_batches(dialect, user_id, query, session_id, cursor.title)),
    ]
    merged = heapq.merge(*streams, key=lambda hit: hit.time, reverse=True)
    hits = list(itertools.islice(merged, page_size + 1))
    shown = hits[:page_size]
    message, title = cursor.message, cursor.title
    for hit in shown:
        if hit.kind == "message":
            message = hit.position
        else:
            title = hit.position
    more = len(hits) > page_size
    return {
        "items": [_item(query, hit) for hit in shown],
        "page_size": page_size,
        "has_more": more,
        "next_cursor": Cursor(message, title).encode() if more else None,
    }


def _item(query: Query, hit: Hit) -> dict:
    return {
        "kind": hit.kind,
        "session_id": hit.session_id,
        "session_title": hit.session_title,
        "message_id": hit.message_id,
        "role": hit.role,
        "time": hit.time,
        **snippet(query, hit.text),
    }


Batches = Callable[[object, int], list[Hit]]


def _confirmed(query: Query, page_size: int, *stages: Batches) -> Iterator[Hit]:
    """The stream's hits newest first, stage after stage: candidates in batches (page_size + 1, then
    growing), each confirmed by `matches` when the tokens alone are not exact. A stage that has no more
    (a short batch) hands over to the next."""
    for batches in stages:
        position, size = None, page_size + 1
        while True:
            rows = batches(position, size)
            for hit in rows:
                if query.exact or matches(query, hit.text):
                    yield hit
            if len(rows) < size:
                break
            position, size = rows[-1].position, min(size * 4, MAX_BATCH)


def _message_stages(
    dialect: str, user_id: str, query: Query, session_id: str | None, start: int | None
) -> tuple[Batches, Batches]:
    """The user's newest RECENT live messages (below `start`) tested row by row, then the index for
    the older ones.

    The index answers a rare term at once but hands over every row of a common one: MariaDB's
    FULLTEXT materialises and sorts all 66,000 hits of `会` among 1,000,000 messages (seconds), and
    PostgreSQL's bitmap scan does as much when its estimate is off (a long run's correlated bigrams).
    Most searches want the newest hits: a common term fills the page from the recent rows alone; a
    rare one reads them (a few ms) and goes on through the index."""
    messages, sessions = ChatMessage.__table__, ChatSession.__table__
    live = [
        sessions.c.user_id == user_id,
        sessions.c.is_deleted == sa.false(),
        messages.c.is_deleted == sa.false(),
    ]
    if session_id is not None:
        live.append(messages.c.session_id == session_id)
    if start is not None:
        live.append(messages.c.message_id < start)
    columns = [
        messages.c.message_id,
        messages.c.session_id,
        messages.c.role,
        messages.c.content,
        messages.c.created_at,
        sessions.c.title,
    ]
    joined = messages.join(sessions, sessions.c.session_id == messages.c.session_id)
    tested = (
        [sa.literal_column("chat_messages.search_vector").label("search_vector")]
        if dialect == "postgresql"
        else [messages.c.search_tokens]
    )
    recent = (
        sa.select(*columns, *tested)
        .select_from(joined)
        .where(*live)
        .order_by(messages.c.message_id.desc())
        .limit(RECENT)
        # Messages first, walked newest first by their key: MariaDB otherwise starts from the user's
        # sessions and sorts all their messages (5 s on 1,000,000) to keep the newest RECENT.
        .prefix_with("STRAIGHT_JOIN", dialect="mysql")
        .prefix_with("STRAIGHT_JOIN", dialect="mariadb")
        .subquery("recent")
    )
    newest_first = recent.c.message_id.desc()

    def in_recent(position: int | None, size: int) -> list[Hit]:
        statement = sa.select(recent).where(token_test(dialect, recent, query.tokens)).order_by(newest_first)
        if position is not None:
            statement = statement.where(recent.c.message_id < position)
        return [_message_hit(row) for row in db.session.execute(statement.limit(size))]

    indexed = (
        sa.select(*columns)
        .select_from(joined)
        .where(*live, index_match(dialect, messages, messages.c.message_id, query.tokens))
        .order_by(messages.c.message_id.desc())
    )
    below: list[int | None] = []

    def in_index(position: int | None, size: int) -> list[Hit]:
        if not below:  # where the recent rows end; none older if there were fewer than RECENT
            low, count = db.session.execute(
                sa.select(sa.func.min(recent.c.message_id), sa.func.count())
            ).one()
            below.append(low if count == RECENT else None)
        if below[0] is None:
            return []
        bound = position if position is not None else below[0]
        statement = indexed.where(messages.c.message_id < bound).limit(size)
        return [_message_hit(row) for row in db.session.execute(statement)]

    return in_recent, in_index


def _message_hit(row) -> Hit:
    return Hit(
        "message",
        row.session_id,
        row.title,
        row.message_id,
        row.role,
        row.created_at,
        row.content,
        row.message_id,
    )


def _title_batches(
    dialect: str, user_id: str, query: Query, session_id: str | None, start: tuple[datetime, str] | None
) -> Batches:
    sessions = ChatSession.__table__
    base = (
        sa.select(sessions.c.session_id, sessions.c.title, sessions.c.updated_at)
        .where(
            sessions.c.user_id == user_id,
            sessions.c.is_deleted == sa.false(),
            index_match(dialect, sessions, sa.literal_column("chat_sessions.rowid"), query.tokens),
        )
        .order_by(sessions.c.updated_at.desc(), sessions.c.session_id.desc())
    )
    if session_id is not None:
        base = base.where(sessions.c.session_id == session_id)

    def batch(position: tuple[datetime, str] | None, size: int) -> list[Hit]:
        bound = position if position is not None else start
        statement = base
        if bound is not None:  # the expanded form: MariaDB uses an index for it (PITFALLS.md)
            statement = base.where(
                sa.or_(
                    sessions.c.updated_at < bound[0],
                    sa.and_(sessions.c.updated_at == bound[0], sessions.c.session_id < bound[1]),
                )
            )
        return [
            Hit(
                "title",
                row.session_id,
                row.title,
                None,
                None,
                row.updated_at,
                row.title,
                (row.updated_at, row.session_id),
            )
            for row in db.session.execute(statement.limit(size))
        ]

    return batch

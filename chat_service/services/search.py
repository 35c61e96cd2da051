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
from types import SimpleNamespace

import sqlalchemy as sa

from chat_service.extensions import db
from chat_service.models import ChatMessage, ChatSession
from chat_service.services.sessions import owned_session
from shared.errors import ValidationFailed
from shared.search_text import Query, index_match, matches, snippet, token_test

MAX_BATCH = 1000
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
    """The user's live messages below `start`, newest first: walked row by row, then through the index.

    The index answers a rare term at once but hands over every row of a common one, and MariaDB's
    FULLTEXT costs per entry of each term's list, whatever the user and the page: `项目` (69,000 of
    1,000,000 messages) takes 1.9 s, `项目 plan` (two common terms, 4,000 together) 0.55 s. A walk of
    the user's newest messages by their index tests a row in about 1.5 microseconds. So the walk comes
    first, over RECENT rows; it goes on, in windows twice as large each time up to WALK_LIMIT rows, while
    one of the query's tokens is in at least COMMON of the rows walked (the index would read a long
    list); else, or past WALK_LIMIT, the index takes over below the lowest message walked."""
    walk = _Walk(dialect, user_id, query, session_id, start)
    return walk.batches, walk.index_batches


RECENT = 2000  # the first window of the walk
WALK_LIMIT = 64_000  # rows walked at most before the index takes over (about 100 ms)
COMMON = 0.005  # a token in this share of the first window's rows makes the index slow: walk on


class _Walk:
    """The walk's state across a page's batches: the current window is the `size` live messages of the
    user just below `upper`, bounded below by `floor` (the lowest of them; None: the window holds all
    that is left). Bounds come from the index alone; each batch is then one range scan of the window
    testing the tokens in place (no derived table: MariaDB would copy every row's text into a temporary
    table to test it)."""

    def __init__(self, dialect: str, user_id: str, query: Query, session_id: str | None, start: int | None):
        messages, sessions = ChatMessage.__table__, ChatSession.__table__
        self.dialect, self.query, self.messages = dialect, query, messages
        self.mine = [messages.c.user_id == user_id, messages.c.is_deleted == sa.false()]
        if session_id is not None:
            self.mine.append(messages.c.session_id == session_id)
        self.live = [*self.mine, sessions.c.is_deleted == sa.false()]
        self.columns = [
            messages.c.message_id,
            messages.c.session_id,
            messages.c.role,
            messages.c.content,
            messages.c.created_at,
            sessions.c.title,
        ]
        self.joined = messages.join(sessions, sessions.c.session_id == messages.c.session_id)
        # What token_test reads of a row: PostgreSQL's stored vector is a column of the migration's only.
        vector = sa.literal_column("chat_messages.search_vector")
        self.tested = SimpleNamespace(
            c=SimpleNamespace(search_tokens=messages.c.search_tokens, search_vector=vector)
        )
        self.upper = start
        self.size = RECENT
        self.floor: int | None = None
        self.bounded = False  # whether `floor` is known for the current window
        self.walked = 0
        self.ended = False
        self.lowest: int | None = None  # where the index goes on; None: no message is older

    def _in_window(self) -> list[sa.ColumnElement[bool]]:
        key = self.messages.c.message_id
        return [
            *([key < self.upper] if self.upper is not None else []),
            *([key >= self.floor] if self.floor is not None else []),
        ]

    def _bound(self) -> None:
        """The current window's floor: the `size`-th of the user's messages below `upper` (index only)."""
        key = self.messages.c.message_id
        statement = sa.select(key).where(*self.mine).order_by(key.desc()).offset(self.size - 1).limit(1)
        if self.upper is not None:
            statement = statement.where(key < self.upper)
        self.floor, self.bounded = db.session.scalar(statement), True

    def batches(self, position: int | None, size: int) -> list[Hit]:
        """Up to `size` hits below `position`, window after window; fewer only once the walk ended."""
        hits: list[Hit] = []
        while not self.ended:
            if not self.bounded:
                self._bound()
            below = hits[-1].position if hits else position
            statement = (
                sa.select(*self.columns)
                .select_from(self.joined)
                .where(
                    *self.live, *self._in_window(), token_test(self.dialect, self.tested, self.query.tokens)
                )
                .order_by(self.messages.c.message_id.desc())
                .limit(size - len(hits))
                # Messages first, by their key: MariaDB otherwise starts from the user's sessions.
                .prefix_with("STRAIGHT_JOIN", dialect="mysql")
                .prefix_with("STRAIGHT_JOIN", dialect="mariadb")
            )
            if below is not None:
                statement = statement.where(self.messages.c.message_id < below)
            hits += [_message_hit(row) for row in db.session.execute(statement)]
            if len(hits) == size:
                return hits
            self._next_window()
        return hits

    def _next_window(self) -> None:
        """The window is used up: step below it, or end the walk (no older message, the terms rare
        enough for the index, WALK_LIMIT reached)."""
        if self.floor is None:  # it held all that was left: nothing for the index either
            self.ended, self.lowest = True, None
            return
        if self.walked == 0 and not self._common():
            self.ended = True
        self.walked += self.size
        self.upper = self.lowest = self.floor
        self.floor, self.bounded = None, False
        if self.walked >= WALK_LIMIT:
            self.ended = True
        self.size = min(self.size * 2, WALK_LIMIT - self.walked) or 1

    def _common(self) -> bool:
        """Whether one of the query's tokens is in COMMON of the first window's rows."""
        counts = [
            sa.func.sum(sa.case((token_test(self.dialect, self.tested, (token,)), 1), else_=0))
            for token in self.query.tokens
        ]
        per_token = db.session.execute(sa.select(*counts).where(*self.mine, *self._in_window())).one()
        return max(int(n or 0) for n in per_token) >= COMMON * self.size

    def index_batches(self, position: int | None, size: int) -> list[Hit]:
        """Hits through the index, below the lowest message walked."""
        if self.lowest is None:
            return []
        bound = position if position is not None else self.lowest
        statement = (
            sa.select(*self.columns)
            .select_from(self.joined)
            .where(
                *self.live,
                index_match(self.dialect, self.messages, self.messages.c.message_id, self.query.tokens),
                self.messages.c.message_id < bound,
            )
            .order_by(self.messages.c.message_id.desc())
            .limit(size)
        )
        return [_message_hit(row) for row in db.session.execute(statement)]


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

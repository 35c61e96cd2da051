"""A user's conversations as NDJSON lines (docs/export.md), and one conversation as Markdown.

Memory stays bounded whatever the user holds: sessions are read in keyset pages of SESSION_PAGE
(oldest first, by `(created_at, session_id)`, neither of which ever changes), each session's messages in
keyset pages of MESSAGE_PAGE on the index `(session_id, is_deleted, message_id)`, and each page is
written out before the next is read. No connection is held while the client reads: the database
session is released after every page. The records' pins and titles come from conversation_service in
one call per page of sessions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import requests
import sqlalchemy as sa

from chat_service import live
from chat_service.export_schemas import FORMAT, VERSION, format_time
from chat_service.extensions import db
from chat_service.models import ChatMessage, ChatSession, utcnow
from shared.errors import UpstreamFailed

log = logging.getLogger(__name__)

SESSION_PAGE = 100
MESSAGE_PAGE = 1000
RECORDS_PATH = "/internal/ai/conversation/chat-records"
RECORD_TRIES = 3
RATING_WORDS = {"like": "👍 liked", "dislike": "👎 disliked"}

SESSION_COLUMNS = (
    ChatSession.session_id,
    ChatSession.title,
    ChatSession.created_at,
    ChatSession.updated_at,
    ChatSession.prompt_tokens,
    ChatSession.completion_tokens,
    ChatSession.total_tokens,
    ChatSession.total_price,
    ChatSession.currency,
    ChatSession.inputs,
    ChatSession.dify_conversation_id,
)
MESSAGE_COLUMNS = (
    ChatMessage.message_id,
    ChatMessage.role,
    ChatMessage.content,
    ChatMessage.created_at,
    ChatMessage.updated_at,
    ChatMessage.is_generated,
    ChatMessage.usage,
    ChatMessage.feedback_rating,
    ChatMessage.feedback_content,
    ChatMessage.dify_message_id,
)


class RecordsUnavailable(UpstreamFailed):
    """conversation_service did not answer: the export would lack the pins, so it does not start."""

    http_status = 503

    def __init__(self, reason: str) -> None:
        detail = f"conversation_service is unreachable ({reason}): pins and titles cannot be read; try again"
        super().__init__(detail, data={"detail": detail, "service": "conversation_service"})
        self.headers = {"Retry-After": "5"}


def line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def pause() -> None:
    """Let the worker's other requests run between pages. Under gevent a page read from SQLite (or
    the database's cache) and encoded never waits on a socket, so a long export would otherwise hold
    the worker's loop (and its heartbeat: gunicorn kills a worker silent for its timeout, cutting the
    stream; bench/export.py on SQLite)."""
    time.sleep(0)  # gevent's patched sleep yields to the other greenlets; elsewhere a no-op


# --- reading ----------------------------------------------------------------------------------------


def session_pages(user_id: str, only: str | None = None) -> Iterator[list[sa.Row]]:
    """The user's live sessions (or just `only`), oldest first, a page at a time."""
    live_of_user = sa.and_(ChatSession.user_id == user_id, ChatSession.is_deleted == sa.false())
    after: tuple[datetime, str] | None = None
    while True:
        query = sa.select(*SESSION_COLUMNS).where(live_of_user)
        if only is not None:
            query = query.where(ChatSession.session_id == only)
        if after is not None:  # the expanded form: MariaDB turns only this into an index range
            created, session_id = after
            query = query.where(
                sa.or_(
                    ChatSession.created_at > created,
                    sa.and_(ChatSession.created_at == created, ChatSession.session_id > session_id),
                )
            )
        query = query.order_by(ChatSession.created_at, ChatSession.session_id).limit(SESSION_PAGE)
        rows = db.session.execute(query).all()
        db.session.remove()  # no connection held while the page is written out
        if not rows:
            return
        yield rows
        if len(rows) < SESSION_PAGE:
            return
        after = (rows[-1].created_at, rows[-1].session_id)


def message_pages(session_id: str) -> Iterator[list[sa.Row]]:
    """The session's live messages in id (= creation) order, a page at a time."""
    after = 0
    while True:
        rows = db.session.execute(
            sa.select(*MESSAGE_COLUMNS)
            .where(
                ChatMessage.session_id == session_id,
                ChatMessage.is_deleted == sa.false(),
                ChatMessage.message_id > after,
            )
            .order_by(ChatMessage.message_id)
            .limit(MESSAGE_PAGE)
        ).all()
        db.session.remove()
        pause()
        if not rows:
            return
        yield rows
        if len(rows) < MESSAGE_PAGE:
            return
        after = rows[-1].message_id


def fetch_records(user_id: str, session_ids: list[str]) -> dict[str, dict]:
    """The records of these sessions in conversation_service, by session id, in one call (retried a
    few times); RecordsUnavailable when it does not answer."""
    reason = "no answer"
    for attempt in range(RECORD_TRIES):
        try:
            response = live.current().conversations.request(
                "POST", RECORDS_PATH, user_id=user_id, json={"chatSessionIds": session_ids}
            )
            if response.ok:
                records = response.json()["data"]["records"]
                return {record["chatSessionId"]: record for record in records}
            reason = f"HTTP {response.status_code}"
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            reason = error.__class__.__name__
        if attempt + 1 < RECORD_TRIES:
            time.sleep(0.2 * (attempt + 1))
    raise RecordsUnavailable(reason)


def record_part(record: dict | None) -> dict | None:
    if record is None or record.get("deleted"):
        return None
    return {"id": record.get("id"), "title": record.get("title"), "pinned": bool(record.get("isPinned"))}


# --- the NDJSON lines -------------------------------------------------------------------------------


def session_line(row: sa.Row, record: dict | None) -> dict[str, Any]:
    return {
        "type": "session",
        "session_id": row.session_id,
        "title": row.title,
        "created_at": format_time(row.created_at),
        "updated_at": format_time(row.updated_at),
        "usage": {
            "prompt_tokens": int(row.prompt_tokens or 0),
            "completion_tokens": int(row.completion_tokens or 0),
            "total_tokens": int(row.total_tokens or 0),
            "total_price": str(row.total_price) if row.total_price is not None else None,
            "currency": row.currency,
        },
        "inputs": json.loads(row.inputs) if row.inputs else None,
        "dify_conversation_id": row.dify_conversation_id,
        "record": record_part(record),
    }


def message_line(session_id: str, row: sa.Row) -> dict[str, Any]:
    feedback = None
    if row.feedback_rating is not None or row.feedback_content:
        feedback = {"rating": row.feedback_rating, "content": row.feedback_content}
    return {
        "type": "message",
        "session_id": session_id,
        "message_id": row.message_id,
        "role": row.role,
        "content": row.content,
        "created_at": format_time(row.created_at),
        "updated_at": format_time(row.updated_at),
        "is_generated": bool(row.is_generated),
        "usage": json.loads(row.usage) if row.usage else None,
        "feedback": feedback,
        "dify_message_id": row.dify_message_id,
    }


class Export:
    """One export, in two steps: `start()` reads the first page of sessions and their records while an
    error can still be answered (conversation_service down: 503 before any byte), then `lines()`
    streams. A later failure of conversation_service leaves those sessions' `record` null and is
    counted in the end line's `records_unavailable`."""

    def __init__(self, user_id: str, only: str | None = None) -> None:
        self.user_id = user_id
        self.only = only
        self.pages = session_pages(user_id, only)
        self.first: tuple[list[sa.Row], dict[str, dict]] | None = None

    def start(self) -> Export:
        rows = next(self.pages, None)
        if rows is not None:
            self.first = (rows, fetch_records(self.user_id, [row.session_id for row in rows]))
        return self

    def _pages(self) -> Iterator[tuple[list[sa.Row], dict[str, dict] | None]]:
        if self.first is None:
            return
        yield self.first
        self.first = None
        for rows in self.pages:
            try:
                yield rows, fetch_records(self.user_id, [row.session_id for row in rows])
            except RecordsUnavailable as error:
                log.warning("export without records for %d sessions: %s", len(rows), error.detail)
                yield rows, None

    def lines(self) -> Iterator[bytes]:
        """The export: its header, each session and its messages, the end line with the counts. Each
        chunk is whole lines (a page of messages at most)."""
        yield line(
            {
                "type": "export",
                "format": FORMAT,
                "version": VERSION,
                "exported_at": format_time(utcnow()),
                "user_id": self.user_id,
                "scope": "session" if self.only else "all",
            }
        )
        sessions = messages = unavailable = 0
        for rows, records in self._pages():
            for row in rows:
                sessions += 1
                if records is None:
                    unavailable += 1
                yield line(session_line(row, (records or {}).get(row.session_id)))
                for page in message_pages(row.session_id):
                    messages += len(page)
                    yield b"".join(line(message_line(row.session_id, message)) for message in page)
        yield line(
            {"type": "end", "sessions": sessions, "messages": messages, "records_unavailable": unavailable}
        )


# --- Markdown ---------------------------------------------------------------------------------------


def _heading_text(text: str) -> str:
    """Text fit for one Markdown heading line."""
    return " ".join(text.split()) or "-"


def markdown(session: ChatSession) -> Iterator[bytes]:
    """One conversation as Markdown: the title as the heading, then each message under its role and
    time, in order (its content as it was written: replies are Markdown already)."""
    session_id, title = session.session_id, session.title
    created, updated = format_time(session.created_at), format_time(session.updated_at)
    db.session.remove()
    yield (
        f"# {_heading_text(title)}\n\n"
        f"- Session: `{session_id}`\n- Created: {_readable(created)}\n- Updated: {_readable(updated)}\n"
    ).encode()
    for page in message_pages(session_id):
        parts = []
        for message in page:
            parts.append(f"\n---\n\n**{message.role}** · {_readable(format_time(message.created_at))}\n\n")
            parts.append(message.content.rstrip("\n") + "\n")
            if message.feedback_rating or message.feedback_content:
                rating = RATING_WORDS.get(message.feedback_rating, "feedback")
                comment = f": {_heading_text(message.feedback_content)}" if message.feedback_content else ""
                parts.append(f"\n> {rating}{comment}\n")
        yield "".join(parts).encode()


def _readable(stamp: str) -> str:
    """`2025-01-01T08:30:00.123456Z` as `2025-01-01 08:30:00 UTC`."""
    return f"{stamp[:10]} {stamp[11:19]} UTC"

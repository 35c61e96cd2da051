"""ChatSession and ChatMessage, exactly the seed's model structure."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from chat_service.extensions import db
from shared.outbox import outbox_table
from shared.search_text import keep_tokens

DEFAULT_TITLE = "新会话"
ROLES = ("user", "assistant", "system")
TITLE_MAX = 255
CONTENT_MAX = 32_000
RATINGS = ("like", "dislike")
FEEDBACK_MAX = 1000

# Microsecond timestamps on MySQL/MariaDB too (plain DATETIME drops the fraction), so ordering by
# time is as fine-grained on every backend.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# 32,000 characters of 4-byte UTF-8 exceed MySQL's 64 KiB TEXT.
LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
MessageId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    """Now in UTC, naive: every backend stores it the same way."""
    return datetime.now(UTC).replace(tzinfo=None)


class ChatSession(db.Model):
    __tablename__ = "chat_sessions"
    __table_args__ = (
        # A user's live sessions, most recently updated first.
        sa.Index("ix_chat_sessions_user_live_updated", "user_id", "is_deleted", "updated_at", "session_id"),
        {"mysql_charset": "utf8mb4"},
    )

    session_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(64))
    title: Mapped[str] = mapped_column(sa.String(TITLE_MAX), default=DEFAULT_TITLE)
    message_count: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    is_deleted: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    # With is_deleted: when it was deleted (restorable within RESTORE_WINDOW_DAYS, purged after); while
    # live, when it was last restored, if ever. In ms, the mirrored `deletedVersion` of the two views.
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp, default=None, index=True)
    # The Dify conversation this session continues, and its record in conversation_service once linked.
    dify_conversation_id: Mapped[str | None] = mapped_column(sa.String(100), default=None)
    conversation_record_id: Mapped[str | None] = mapped_column(sa.String(20), default=None)
    # Versions (ms since the epoch of the change; 0: never set) that order changes mirrored to the
    # session's record: the higher version of a title or Dify id wins on either side (docs: sync).
    title_version: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    dify_version: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # Dify's `inputs` this session's turns send (a JSON object as text), over `DIFY_INPUTS`.
    inputs: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # What the session's replies cost, as the providers reported it (deleted replies included: spent).
    prompt_tokens: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    total_tokens: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    total_price: Mapped[Decimal | None] = mapped_column(sa.Numeric(20, 7), default=None)
    currency: Mapped[str | None] = mapped_column(sa.String(8), default=None)
    # The title's search tokens (shared.search_text.index_tokens), kept by every write of the title and
    # indexed per backend by migration 0009 (docs/search.md).
    search_tokens: Mapped[str | None] = mapped_column(LongText, default=None)

    @property
    def usage(self) -> dict:
        """The session's usage totals, as its whole object shows them."""
        return {
            "prompt_tokens": self.prompt_tokens or 0,
            "completion_tokens": self.completion_tokens or 0,
            "total_tokens": self.total_tokens or 0,
            "total_price": str(self.total_price) if self.total_price is not None else None,
            "currency": self.currency,
        }


class ChatMessage(db.Model):
    __tablename__ = "chat_messages"
    __table_args__ = (
        # A session's live messages in id (= creation) order, for paging either way.
        sa.Index("ix_chat_messages_session_live_id", "session_id", "is_deleted", "message_id"),
        # A user's live messages newest first, whatever their session: where a search walks.
        sa.Index("ix_chat_messages_user_live_id", "user_id", "is_deleted", "message_id"),
        {"mysql_charset": "utf8mb4"},
    )

    message_id: Mapped[int] = mapped_column(MessageId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("chat_sessions.session_id"))
    # The session's owner, written with the message (neither ever changes): the search's walk.
    user_id: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    role: Mapped[str] = mapped_column(sa.String(16))
    content: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    is_deleted: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    # When it was deleted; messages deleted with their session share the session's `deleted_at`.
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp, default=None, index=True)
    # What the AI provider said about a reply: Dify's message id, and its usage as JSON text.
    dify_message_id: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    usage: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # The server generated it (an AI reply): only these are sent to a model as its own turns.
    is_generated: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    # The user's rating of a reply (`like` / `dislike`, None: none) and their comment.
    feedback_rating: Mapped[str | None] = mapped_column(sa.String(8), default=None)
    feedback_content: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # The content's search tokens (shared.search_text.index_tokens), kept by every write of the content
    # and indexed per backend by migration 0009 (docs/search.md).
    search_tokens: Mapped[str | None] = mapped_column(LongText, default=None)

    @property
    def feedback(self) -> dict | None:
        """The user's feedback on a reply, None when there is none."""
        if self.feedback_rating is None and not self.feedback_content:
            return None
        return {"rating": self.feedback_rating, "content": self.feedback_content}


class ChatErasure(db.Model):
    """The proof that a user's data was erased, holding none of it: a hash of the user id, when it was
    asked and finished, and how many rows went."""

    __tablename__ = "chat_erasures"
    __table_args__ = ({"mysql_charset": "utf8mb4"},)

    user_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, default=None)
    counts: Mapped[str | None] = mapped_column(sa.Text, default=None)  # JSON: table -> rows removed


# Search tokens follow the content and the title on every ORM write (shared/search_text.py).
keep_tokens(ChatMessage, "content")
keep_tokens(ChatSession, "title")

# Changes to deliver elsewhere (topics "record", "dify_delete", "dify_feedback"): shared/outbox.py.
OUTBOX = outbox_table(db.metadata, "chat_sync_outbox")


def epoch_ms(moment: datetime | None = None) -> int:
    """Milliseconds since the epoch of a naive UTC time (now by default): the versions of changes."""
    moment = moment or utcnow()
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)

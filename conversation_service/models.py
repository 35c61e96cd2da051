"""AiConversation: one AI conversation record of a user, optionally linked to a Dify conversation."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from conversation_service.extensions import db
from shared.outbox import outbox_table
from shared.search_text import keep_tokens

DEFAULT_TITLE = "新会话"
TITLE_MAX = 255
DIFY_ID_MAX = 100
USER_ID_MAX = 64
CHAT_SESSION_ID_MAX = 36
LIST_KEY = ("user_id", "is_deleted", "is_pinned")

# Microsecond timestamps on MySQL/MariaDB too, so ordering by time is as fine-grained on every backend.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def utcnow() -> datetime:
    """Now in UTC, naive: every backend stores it the same way."""
    return datetime.now(UTC).replace(tzinfo=None)


class AiConversation(db.Model):
    __tablename__ = "ai_conversations"
    __table_args__ = (
        # A user's live records, pinned first, then by creation or update time (id breaks ties).
        sa.Index("ix_ai_conversations_user_live_created", *LIST_KEY, "created_time", "id"),
        sa.Index("ix_ai_conversations_user_live_updated", *LIST_KEY, "updated_time", "id"),
        # The link lookup, and the guarantee behind the idempotent upsert: one live record per Dify
        # conversation and user. `delete_token` is 0 while the record lives and its own id once deleted,
        # so deleted records keep their link without blocking a new live one. NULLs never collide.
        sa.UniqueConstraint(
            "user_id", "dify_conversation_id", "delete_token", name="uq_ai_conversations_dify_link"
        ),
        # The record of a chat session: one per session, ever. A deleted record keeps its session id
        # (a tombstone), so a replayed delivery can never create the record again.
        sa.UniqueConstraint("user_id", "chat_session_id", name="uq_ai_conversations_chat_session"),
        {"mysql_charset": "utf8mb4"},
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[str] = mapped_column(sa.String(USER_ID_MAX))
    title: Mapped[str] = mapped_column(sa.String(TITLE_MAX))
    dify_conversation_id: Mapped[str | None] = mapped_column(sa.String(DIFY_ID_MAX), nullable=True)
    is_pinned: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    created_time: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_time: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    is_deleted: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    delete_token: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # With is_deleted: when it was deleted (restorable within RESTORE_WINDOW_DAYS, purged after); while
    # live, when it was last restored, if ever. In ms, the mirrored `deletedVersion` of the two views.
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp, default=None, index=True)
    # The chat session this record mirrors (null: a standalone record made through the public API), and
    # the versions (ms since the epoch of the change; 0: never set) that order mirrored changes.
    chat_session_id: Mapped[str | None] = mapped_column(sa.String(CHAT_SESSION_ID_MAX), nullable=True)
    title_version: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    dify_version: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # The title's search tokens (shared.search_text.index_tokens), indexed per backend by migration 0005,
    # and the title normalised (NFKC, case-folded) to confirm a CJK run longer than a bigram
    # (docs/search.md); both kept by every write of the title.
    search_tokens: Mapped[str | None] = mapped_column(sa.Text, default=None)
    search_text: Mapped[str | None] = mapped_column(sa.Text, default=None)


class ConversationUserCount(db.Model):
    """How many live records a user has: the page's `total` without a COUNT(*) over their records.

    Kept by conversation_service.live_counts in the transaction of every change that makes a record live
    or not (create, delete, restore, mirror, import, erasure); a user without a row has none."""

    __tablename__ = "conversation_user_counts"
    __table_args__ = ({"mysql_charset": "utf8mb4"},)

    user_id: Mapped[str] = mapped_column(sa.String(USER_ID_MAX), primary_key=True)
    live_count: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")


class ConversationErasure(db.Model):
    """The proof that a user's records were erased, holding none of them: a hash of the user id, when
    it was asked and finished, and how many rows went."""

    __tablename__ = "conversation_erasures"
    __table_args__ = ({"mysql_charset": "utf8mb4"},)

    user_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, default=None)
    counts: Mapped[str | None] = mapped_column(sa.Text, default=None)  # JSON: table -> rows removed


# Search tokens (and the normalised title) follow the title on every ORM write (shared/search_text.py).
keep_tokens(AiConversation, "title", normalized="search_text")

# Changes to mirror in chat_service (topic "session", key: the record id): shared/outbox.py.
OUTBOX = outbox_table(db.metadata, "conversation_sync_outbox")


def epoch_ms(moment: datetime | None = None) -> int:
    """Milliseconds since the epoch of a naive UTC time (now by default): the versions of changes."""
    moment = moment or utcnow()
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    """The naive UTC time of a ms epoch."""
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)

"""messages carry their session's owner (`user_id`), indexed with their id, for the search's walk

A user's search walks only their own messages, newest first (docs/search.md). A message never changes session, nor a session owner, so the column is written once, when the message
is. Existing rows are filled from their session in batches of message ids (no long locks).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BATCH = 5000
INDEX = "ix_chat_messages_user_live_id"


def upgrade():
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("user_id", sa.String(64), nullable=True))
    backfill(op.get_bind())
    op.create_index(INDEX, "chat_messages", ["user_id", "is_deleted", "message_id"])


def downgrade():
    op.drop_index(INDEX, table_name="chat_messages")
    if op.get_bind().dialect.name == "sqlite":
        # In place (3.35+): a batch copy would recreate the table, which its foreign keys refuse.
        op.execute("ALTER TABLE chat_messages DROP COLUMN user_id")
    else:
        op.drop_column("chat_messages", "user_id")


def backfill(bind) -> None:
    """Each message's owner from its session, BATCH message ids per statement."""
    messages = sa.table(
        "chat_messages", sa.column("message_id"), sa.column("session_id"), sa.column("user_id")
    )
    sessions = sa.table("chat_sessions", sa.column("session_id"), sa.column("user_id"))
    low, high = bind.execute(
        sa.select(sa.func.min(messages.c.message_id), sa.func.max(messages.c.message_id))
    ).one()
    if low is None:
        return
    owner = (
        sa.select(sessions.c.user_id).where(sessions.c.session_id == messages.c.session_id).scalar_subquery()
    )
    for start in range(low, high + 1, BATCH):
        bind.execute(
            messages.update()
            .where(messages.c.message_id >= start, messages.c.message_id < start + BATCH)
            .values(user_id=owner)
        )

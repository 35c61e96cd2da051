"""messages the server generated (AI replies), told apart from assistant messages a client posted

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("is_generated", sa.Boolean(), server_default=sa.false(), nullable=False))
    # Replies stored before this column: those that carry the provider's metadata (a Dify message id or
    # usage) were generated; an older reply without either stays a client's message (never a model turn).
    messages = sa.table(
        "chat_messages",
        sa.column("role", sa.String),
        sa.column("dify_message_id", sa.String),
        sa.column("usage", sa.Text),
        sa.column("is_generated", sa.Boolean),
    )
    op.execute(
        messages.update()
        .where(messages.c.role == "assistant")
        .where(sa.or_(messages.c.dify_message_id.is_not(None), messages.c.usage.is_not(None)))
        .values(is_generated=True)
    )


def downgrade():
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("is_generated")

"""sessions mirrored to conversation_service: versions, the outbox, and reply metadata

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade():
    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(sa.Column("title_version", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("dify_version", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("dify_message_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("usage", sa.Text(), nullable=True))
    op.create_table(
        "sync_outbox",
        sa.Column("topic", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("due_at", TIMESTAMP, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("topic", "key"),
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_sync_outbox_due_at", "sync_outbox", ["due_at"])


def downgrade():
    op.drop_table("sync_outbox")
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("usage")
        batch.drop_column("dify_message_id")
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("dify_version")
        batch.drop_column("title_version")

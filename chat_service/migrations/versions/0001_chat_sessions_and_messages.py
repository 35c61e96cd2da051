"""chat sessions and messages

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
MESSAGE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "chat_sessions",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("session_id"),
        mysql_charset="utf8mb4",
    )
    op.create_index(
        "ix_chat_sessions_user_live_updated",
        "chat_sessions",
        ["user_id", "is_deleted", "updated_at", "session_id"],
    )
    op.create_table(
        "chat_messages",
        sa.Column("message_id", MESSAGE_ID, autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", LONG_TEXT, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["chat_sessions.session_id"]),
        sa.PrimaryKeyConstraint("message_id"),
        mysql_charset="utf8mb4",
    )
    op.create_index(
        "ix_chat_messages_session_live_id",
        "chat_messages",
        ["session_id", "is_deleted", "message_id"],
    )


def downgrade():
    # Dropping a table drops its indexes (MySQL refuses to drop one a foreign key needs).
    op.drop_table("chat_messages")
    op.drop_table("chat_sessions")

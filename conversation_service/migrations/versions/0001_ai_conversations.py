"""ai conversations

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


def upgrade():
    op.create_table(
        "ai_conversations",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("dify_conversation_id", sa.String(length=100), nullable=True),
        sa.Column("is_pinned", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_time", TIMESTAMP, nullable=False),
        sa.Column("updated_time", TIMESTAMP, nullable=False),
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("delete_token", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "user_id", "dify_conversation_id", "delete_token", name="uq_ai_conversations_dify_link"
        ),
        mysql_charset="utf8mb4",
    )
    op.create_index(
        "ix_ai_conversations_user_live_created",
        "ai_conversations",
        ["user_id", "is_deleted", "is_pinned", "created_time", "id"],
    )
    op.create_index(
        "ix_ai_conversations_user_live_updated",
        "ai_conversations",
        ["user_id", "is_deleted", "is_pinned", "updated_time", "id"],
    )


def downgrade():
    # Dropping the table drops its indexes and constraints.
    op.drop_table("ai_conversations")

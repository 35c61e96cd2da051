"""when a record was deleted (restore within a window, purge after it), and erasure records

`deleted_at` is set with `is_deleted`; records deleted before this revision take their `updated_time`.
`conversation_erasures` proves an erasure without personal data: a hash of the user id, times, counts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade():
    with op.batch_alter_table("ai_conversations") as batch:
        batch.add_column(sa.Column("deleted_at", TIMESTAMP, nullable=True))
    true = sa.true().compile(dialect=op.get_bind().dialect)
    op.execute(f"UPDATE ai_conversations SET deleted_at = updated_time WHERE is_deleted = {true}")
    op.create_index("ix_ai_conversations_deleted_at", "ai_conversations", ["deleted_at"])
    op.create_table(
        "conversation_erasures",
        sa.Column("user_hash", sa.String(length=64), nullable=False),
        sa.Column("requested_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("user_hash"),
        mysql_charset="utf8mb4",
    )


def downgrade():
    op.drop_table("conversation_erasures")
    op.drop_index("ix_ai_conversations_deleted_at", table_name="ai_conversations")
    with op.batch_alter_table("ai_conversations") as batch:
        batch.drop_column("deleted_at")

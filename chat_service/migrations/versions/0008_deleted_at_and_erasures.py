"""when a session or message was deleted (restore within a window, purge after it), and erasure records

`deleted_at` is set with `is_deleted`: messages deleted with their session share its `deleted_at`, so a
restore brings back exactly those. Rows deleted before this revision take their `updated_at`.
`chat_erasures` proves an erasure without personal data: a hash of the user id, times and counts.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade():
    true = sa.true().compile(dialect=op.get_bind().dialect)
    for table in ("chat_sessions", "chat_messages"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("deleted_at", TIMESTAMP, nullable=True))
        op.execute(f"UPDATE {table} SET deleted_at = updated_at WHERE is_deleted = {true}")
        op.create_index(f"ix_{table}_deleted_at", table, ["deleted_at"])
    op.create_table(
        "chat_erasures",
        sa.Column("user_hash", sa.String(length=64), nullable=False),
        sa.Column("requested_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("user_hash"),
        mysql_charset="utf8mb4",
    )


def downgrade():
    op.drop_table("chat_erasures")
    for table in ("chat_messages", "chat_sessions"):
        op.drop_index(f"ix_{table}_deleted_at", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("deleted_at")

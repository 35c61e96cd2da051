"""each user's count of live records (`conversation_user_counts`), the page's `total` without a COUNT(*)

Filled from the existing rows: one row per user with live records (a user without a row has none).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "conversation_user_counts",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("live_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
        mysql_charset="utf8mb4",
    )
    false = sa.false().compile(dialect=op.get_bind().dialect)
    op.execute(
        "INSERT INTO conversation_user_counts (user_id, live_count)"
        f" SELECT user_id, COUNT(*) FROM ai_conversations WHERE is_deleted = {false} GROUP BY user_id"
    )


def downgrade():
    op.drop_table("conversation_user_counts")

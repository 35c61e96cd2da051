"""a reply's feedback from its user (a rating and a comment), and each session's usage totals

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("feedback_rating", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("feedback_content", sa.Text(), nullable=True))
    with op.batch_alter_table("chat_sessions") as batch:
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            batch.add_column(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("total_price", sa.Numeric(precision=20, scale=7), nullable=True))
        batch.add_column(sa.Column("currency", sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table("chat_sessions") as batch:
        for name in ("currency", "total_price", "total_tokens", "completion_tokens", "prompt_tokens"):
            batch.drop_column(name)
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("feedback_content")
        batch.drop_column("feedback_rating")

"""a session's own Dify inputs (the app's input form), merged over DIFY_INPUTS on every turn

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(sa.Column("inputs", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("inputs")

"""chat sessions remember their Dify conversation and its conversation_service record

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(sa.Column("dify_conversation_id", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("conversation_record_id", sa.String(length=20), nullable=True))


def downgrade():
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("conversation_record_id")
        batch.drop_column("dify_conversation_id")

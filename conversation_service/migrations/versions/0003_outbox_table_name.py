"""the outbox table named for its service (`conversation_sync_outbox`), so both services can share one database

Both services created `sync_outbox` (and `ix_sync_outbox_due_at`); in one database the second
migration failed. PostgreSQL names a primary key after its table, in the schema's namespace: that is
renamed too.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _rename(old, new):
    op.drop_index(f"ix_{old}_due_at", table_name=old)
    op.rename_table(old, new)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {new} RENAME CONSTRAINT {old}_pkey TO {new}_pkey")
    op.create_index(f"ix_{new}_due_at", new, ["due_at"])


def upgrade():
    _rename("sync_outbox", "conversation_sync_outbox")


def downgrade():
    _rename("conversation_sync_outbox", "sync_outbox")

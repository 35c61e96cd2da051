"""search: the tokens of message contents and session titles, and a full-text index of them per backend

`search_tokens` holds shared.search_text.index_tokens of the text (words, CJK unigrams and bigrams, as
ASCII tokens of 3+ characters); existing rows are filled in batches. The index (docs/search.md):
PostgreSQL a GIN index on a generated column `search_vector`, `strip(to_tsvector('simple',
search_tokens))`; MariaDB a FULLTEXT index; SQLite an FTS5 table over the column (external
content) that triggers keep in step with every write.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from shared.search_text import index_tokens

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
BATCH = 1000
# table -> (its key, the text column, the key FTS5 rows carry on SQLite)
TABLES = {
    "chat_messages": ("message_id", "content", "message_id"),
    "chat_sessions": ("session_id", "title", "rowid"),
}


def upgrade():
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("search_tokens", LONG_TEXT, nullable=True))
    bind = op.get_bind()
    for table, (key, source, rowid) in TABLES.items():
        backfill(bind, table, key, source)
        for statement in create_index(bind.dialect.name, table, rowid):
            op.execute(statement)


def downgrade():
    bind = op.get_bind()
    for table in TABLES:
        for statement in drop_index(bind.dialect.name, table):
            op.execute(statement)
        for column in ("search_tokens",):
            # SQLite drops a column in place (3.35+): a batch copy would drop and recreate the table,
            # which its foreign keys refuse while rows refer to it.
            if bind.dialect.name == "sqlite":
                op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
            else:
                op.drop_column(table, column)


def backfill(bind, table: str, key: str, source: str) -> None:
    """Tokens for the rows already there, BATCH rows per statement in key order (no long locks)."""
    rows = sa.table(table, sa.column(key), sa.column(source), sa.column("search_tokens"))
    last = None
    while True:
        query = sa.select(rows.c[key], rows.c[source]).order_by(rows.c[key]).limit(BATCH)
        if last is not None:
            query = query.where(rows.c[key] > last)
        batch = bind.execute(query).all()
        if not batch:
            return
        bind.execute(
            rows.update().where(rows.c[key] == sa.bindparam("k")).values(search_tokens=sa.bindparam("t")),
            [{"k": row[0], "t": index_tokens(row[1] or "")} for row in batch],
        )
        last = batch[-1][0]


def create_index(dialect: str, table: str, rowid: str) -> list[str]:
    name = f"{table}_search"
    if dialect == "postgresql":  # a stored vector: a scan in key order tests it without parsing the text
        vector = "strip(to_tsvector('simple'::regconfig, search_tokens))"
        return [
            f"ALTER TABLE {table} ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({vector}) STORED",
            f"CREATE INDEX ix_{name} ON {table} USING gin (search_vector)",
        ]
    if dialect in ("mysql", "mariadb"):
        # COPY rebuilds the table: once a FULLTEXT index was dropped, InnoDB keeps its hidden FTS_DOC_ID
        # column, and an index added again in place finds none of the rows already there (MariaDB 10.11,
        # seen after a downgrade and upgrade). The first FULLTEXT index rebuilds the table anyway.
        return [f"ALTER TABLE {table} ADD FULLTEXT INDEX ix_{name} (search_tokens), ALGORITHM=COPY"]
    delete = (
        f"INSERT INTO {name} ({name}, rowid, search_tokens)"
        f" VALUES ('delete', old.{rowid}, old.search_tokens);"
    )
    insert = f"INSERT INTO {name} (rowid, search_tokens) VALUES (new.{rowid}, new.search_tokens);"
    return [
        f"CREATE VIRTUAL TABLE {name} USING fts5(search_tokens, content='{table}', content_rowid='{rowid}')",
        f"INSERT INTO {name} ({name}) VALUES ('rebuild')",
        f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} BEGIN {insert} END",
        f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} BEGIN {delete} END",
        f"CREATE TRIGGER {name}_update AFTER UPDATE OF search_tokens ON {table} BEGIN {delete} {insert} END",
    ]


def drop_index(dialect: str, table: str) -> list[str]:
    name = f"{table}_search"
    if dialect == "postgresql":
        return [f"DROP INDEX ix_{name}", f"ALTER TABLE {table} DROP COLUMN search_vector"]
    if dialect in ("mysql", "mariadb"):
        return [f"ALTER TABLE {table} DROP INDEX ix_{name}"]
    return [f"DROP TRIGGER {name}_{event}" for event in ("insert", "delete", "update")] + [
        f"DROP TABLE {name}"
    ]

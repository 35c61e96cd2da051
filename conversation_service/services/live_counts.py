"""Each user's count of live records (conversation_user_counts): the page's `total` without a COUNT(*).

Every change that makes a record live or not calls `add` in its own transaction, after the rows it
changed (by their rowcount, never by a count read back), so the count commits or rolls back with them.
`add` is one atomic upsert, `live_count = live_count + n` (insert-if-missing included), safe under
concurrency on every backend: writers of one user queue on the count's row, taken last so that it is
held only until their commit and never before a record's lock (no lock-order cycle).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from conversation_service.extensions import db
from conversation_service.models import ConversationUserCount

COUNTS = ConversationUserCount.__table__
_READ = sa.select(COUNTS.c.live_count).where(COUNTS.c.user_id == sa.bindparam("user_id"))
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def add(user_id: str, delta: int) -> None:
    """Add `delta` (records made live, minus those made not live) to the user's count, in the open
    transaction."""
    if not delta:
        return
    dialect = db.session.get_bind().dialect.name
    bumped = COUNTS.c.live_count + delta
    if dialect in ("mysql", "mariadb"):
        statement = mysql.insert(COUNTS).values(user_id=user_id, live_count=delta)
        statement = statement.on_duplicate_key_update(live_count=bumped)
    else:
        statement = _INSERTS[dialect](COUNTS).values(user_id=user_id, live_count=delta)
        statement = statement.on_conflict_do_update(
            index_elements=[COUNTS.c.user_id], set_={"live_count": bumped}
        )
    db.session.execute(statement)


def of(user_id: str) -> int:
    """The user's count of live records (0 without a row)."""
    return db.session.execute(_READ, {"user_id": user_id}).scalar() or 0


def forget(user_id: str) -> None:
    """Remove the user's row once it counts nothing (erasure): a concurrent create that counted one
    since keeps it."""
    db.session.execute(sa.delete(COUNTS).where(COUNTS.c.user_id == user_id, COUNTS.c.live_count == 0))

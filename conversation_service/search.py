"""`keyword` over record titles, by the rules of chat_service's search (shared.search_text).

A keyword with words or CJK characters in it matches the titles that hold every one of its terms: a
word as a whole word in any case, a CJK run anywhere in the title. The index (migration 0005) finds
them; a run longer than two characters is confirmed on the normalised title (`search_text`) of the
rows the index found. A keyword with no such term (only punctuation or symbols, say `%` or `/`) has no
index term: it matches titles that contain it literally, as `keyword` always did.
"""

from __future__ import annotations

import sqlalchemy as sa

from conversation_service.extensions import db
from conversation_service.models import AiConversation
from shared.search_text import index_match, parse_query


def title_matches(keyword: str) -> sa.ColumnElement[bool]:
    """The condition on AiConversation for `keyword`, to AND with the rest of a listing's filter."""
    query = parse_query(keyword)
    if query is None:
        return AiConversation.title.icontains(keyword, autoescape=True)
    table = AiConversation.__table__
    condition = index_match(db.engine.dialect.name, table, table.c.id, query.tokens)
    runs = [table.c.search_text.contains(run, autoescape=True) for run in query.runs if len(run) > 2]
    return sa.and_(condition, *runs)

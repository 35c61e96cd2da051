"""The records of chat sessions as chat_service's export reads them and its import writes them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from conversation_service.extensions import db
from conversation_service.models import AiConversation
from conversation_service.services import conversations


def of_sessions(user_id: str, chat_session_ids: list[str]) -> list[AiConversation]:
    """The user's records of these chat sessions, deleted or not, in one query."""
    if not chat_session_ids:
        return []
    query = sa.select(AiConversation).where(
        AiConversation.user_id == user_id, AiConversation.chat_session_id.in_(chat_session_ids)
    )
    return list(db.session.scalars(query.order_by(AiConversation.id)))


def imported(user_id: str, chat_session_id: str, state: dict[str, Any], pinned: bool) -> AiConversation:
    """The record of an imported session, made to follow `state` as a sync delivery would, and pinned
    as it was (without touching its update time: a pin is not activity)."""
    record = conversations.mirror_chat_session(user_id, chat_session_id, state)
    if not record.is_deleted and record.is_pinned != pinned:
        db.session.execute(
            sa.update(AiConversation)
            .where(AiConversation.id == record.id, AiConversation.is_deleted == sa.false())
            .values(is_pinned=pinned)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
    return conversations.owned_chat_record(user_id, chat_session_id)

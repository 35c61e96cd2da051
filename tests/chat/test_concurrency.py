"""message_count stays equal to the live rows while many clients write at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from chat_service.extensions import db
from chat_service.models import ChatMessage
from tests.api_client import envelope
from tests.chat.helpers import new_session

WRITERS = 8
MESSAGES_EACH = 10


def test_concurrent_posts_and_deletes_keep_message_count_exact(chat, chat_app):
    sid = new_session(chat)

    def write(worker: int) -> list[int]:
        ids = []
        for i in range(MESSAGES_EACH):
            body = {"session_id": sid, "content": f"w{worker}-{i}"}
            ids.append(envelope(chat.post("/api/chat/message", json=body), 200)["message_id"])
        # Every writer also deletes its first message, twice (only one delete may count).
        chat.delete(f"/api/chat/messages/{ids[0]}")
        chat.delete(f"/api/chat/messages/{ids[0]}")
        return ids

    with ThreadPoolExecutor(WRITERS) as pool:
        written = [mid for ids in pool.map(write, range(WRITERS)) for mid in ids]

    assert len(set(written)) == WRITERS * MESSAGES_EACH
    count = envelope(chat.get(f"/api/chat/sessions/{sid}"), 200)["message_count"]
    with chat_app.app_context():
        live = db.session.scalar(
            sa.select(sa.func.count()).where(ChatMessage.session_id == sid, ChatMessage.is_deleted.is_(False))
        )
    assert count == live == WRITERS * (MESSAGES_EACH - 1)

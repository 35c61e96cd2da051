"""What an AI turn asks: a new message, the last question again (`regenerate`), or an edited question
(`edit`), with the history before it.

Each is planned first, with nothing written (so a refusal leaves everything as it was), then applied
when the turn is admitted: regenerate soft-deletes the replies after the question, edit changes the
question (as `PATCH /api/chat/messages/<id>` does) and soft-deletes every message after it, each
announced to the session's sockets.

Dify keeps a conversation's memory itself and cannot rewind it. Regenerating, or editing the last
question, continues the same Dify conversation (its memory still holds the superseded answer); editing
an earlier question `forks`: the turn starts a new Dify conversation, announced as
`conversation_reset` with `reason: "rewound"`, and the session's record follows the new id.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from chat_service import crud
from chat_service.extensions import db
from chat_service.models import ChatMessage
from chat_service.services import messages
from shared.errors import MessageNotFound, OperationFailed

HISTORY_MESSAGES = 20
MAX_REWOUND = 1000  # messages one rerun may delete after its question


@dataclass
class Ask:
    query: str
    history: list[dict]  # [{"role", "content", "generated"}], oldest first
    user_message_id: int | None = None  # the question already stored; None: store `query` as new
    later: list[int] = field(default_factory=list)  # the messages after it, deleted when applied
    edited: bool = False  # `query` replaces the stored question's content
    fork: bool = False  # Dify remembers turns this one rewinds: start a new Dify conversation


def _history(session_id: str, before_id: int | None = None) -> list[dict]:
    with db.engine.connect() as connection:
        rows = crud.history(connection, session_id, HISTORY_MESSAGES, before_id)
    return [{"role": role, "content": content, "generated": generated} for role, content, generated in rows]


def _later(session_id: str, message_id: int) -> list[int]:
    rows = crud.list_messages_by_cursor(
        db.session, session_id, after_id=message_id, limit=MAX_REWOUND, columns=(ChatMessage.message_id,)
    )
    return [message_id for (message_id,) in rows]


def new_message(session: crud.TurnSession, content: str) -> Ask:
    return Ask(content, _history(session.session_id))


def regenerate(session: crud.TurnSession) -> Ask:
    """Answer the session's last question again; 1004 when it has none."""
    question = crud.last_message(db.session, session.session_id, role="user")
    if question is None:
        raise OperationFailed("there is no question in this session to answer again")
    return _rerun(session, question, question.content)


def edit(session: crud.TurnSession, user_id: str, message_id: int, content: str) -> Ask:
    """Answer an edited question; 7003 for no such message in the session, 1004 for another role."""
    question = messages.owned_message(user_id, str(message_id), session.session_id)
    if question.role != "user":
        raise OperationFailed(f"only user messages can be edited, this one is {question.role!r}")
    last = crud.last_message(db.session, session.session_id, role="user")
    ask = _rerun(session, question, content)
    ask.edited = True
    ask.fork = last is not None and last.message_id != question.message_id
    return ask


def _rerun(session: crud.TurnSession, question: ChatMessage, content: str) -> Ask:
    sid = session.session_id
    history = _history(sid, before_id=question.message_id)
    return Ask(content, history, question.message_id, _later(sid, question.message_id))


def apply(ask: Ask, user_id: str, session_id: str) -> int:
    """Write what the ask changes (idempotent: safe to retry) and return the question's message id;
    `user_id` owns the session."""
    for message_id in ask.later:
        with contextlib.suppress(MessageNotFound):  # deleted meanwhile, or by an earlier try: the same
            messages.delete_message(user_id, str(message_id))
    if ask.user_message_id is None:
        ask.user_message_id = messages.store_message(session_id, ask.query, user_id=user_id).message_id
    elif ask.edited:
        messages.edit_message(user_id, str(ask.user_message_id), ask.query)
    return ask.user_message_id

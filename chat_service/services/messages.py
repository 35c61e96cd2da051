"""Messages as their session's owner sees them: post, find, list, edit, delete."""

from __future__ import annotations

from flask import current_app
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from chat_service import crud, events
from chat_service.extensions import db
from chat_service.models import ChatMessage
from chat_service.services.sessions import owned_session, owned_session_row
from shared.errors import BadRequest, Forbidden, MessageNotFound, OperationFailed, SessionNotFound
from shared.paging import Page

Executor = Session | Connection
Columns = crud.Columns

_MAX_ID = 2**63 - 1


def parse_message_id(raw: str) -> int:
    """A message id is a positive integer; anything else is a 400."""
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= _MAX_ID:
        raise BadRequest(f"malformed message_id: {raw!r} is not a positive integer")
    return int(raw)


def owned_message(user_id: str, message_id: str, session_id: str | None = None) -> ChatMessage:
    """The user's live message (in `session_id`, when given); 7003 if none, 403 if someone else's."""
    parsed = parse_message_id(message_id)
    if session_id is not None:
        session = owned_session(user_id, session_id)
    message = crud.get_message(db.session, parsed)
    if message is None or (session_id is not None and message.session_id != session.session_id):
        raise MessageNotFound()
    if session_id is None:
        owner = crud.get_session(db.session, message.session_id)
        if owner is None:
            raise MessageNotFound()
        if owner.user_id != user_id:
            raise Forbidden("the message belongs to another user")
    return message


def post_message(user_id: str, session_id: str, content: str, role: str = "user") -> ChatMessage:
    """Store a message in the user's session, counted on it atomically."""
    with db.engine.connect() as connection:  # Core, no ORM session: the session's row, then the writes
        session = owned_session_row(user_id, session_id, connection)
        message = _create(connection, session.session_id, content, role, user_id)
    events.message_posted(message)
    return message


def store_message(
    session_id: str, content: str, role: str = "user", *, user_id: str | None = None
) -> ChatMessage:
    """Store a message in a live session and tell its sockets (REST and socket messages alike);
    `user_id`, the session's owner, when the caller has checked it (else the INSERT reads it). It is
    written on a Core connection of its own and committed before the sockets are told."""
    with db.engine.connect() as connection:
        message = _create(connection, session_id, content, role, user_id)
    events.message_posted(message)
    return message


def _create(
    connection: Connection, session_id: str, content: str, role: str, user_id: str | None
) -> ChatMessage:
    message = crud.create_message(connection, session_id, content, role, user_id=user_id)
    if message is None:
        raise SessionNotFound()  # deleted meanwhile
    return message


def list_messages(
    db: Executor, columns: Columns, user_id: str, session_id: str, page: Page, order: str = "asc"
) -> tuple[list, int]:
    """A page of the session's messages (objects, or rows of `columns`) and their total (the session's
    maintained count)."""
    session = owned_session_row(user_id, session_id, db)
    total = session.message_count
    sid = session.session_id
    if page.offset > total // 2:  # nearer the end: walk the index from there (same rows, fewer skipped)
        items = crud.list_messages_from_end(db, sid, page.page, page.page_size, order, total, columns=columns)
    else:
        items = crud.list_messages(db, sid, page.page, page.page_size, order, columns=columns)
    return items, total


def list_messages_by_cursor(
    db: Executor,
    columns: Columns,
    user_id: str,
    session_id: str,
    page_size: int,
    before_id: int | None = None,
    after_id: int | None = None,
) -> tuple[list, int, bool]:
    """The `page_size` messages just older than `before_id` (or just newer than `after_id`), oldest first,
    the session's total, and whether there are more beyond them in that direction."""
    session = owned_session_row(user_id, session_id, db)
    rows = crud.list_messages_by_cursor(
        db, session.session_id, before_id=before_id, after_id=after_id, limit=page_size + 1, columns=columns
    )
    has_more = len(rows) > page_size
    if has_more:  # the extra row is the farthest from the cursor
        rows = rows[:page_size] if after_id is not None else rows[1:]
    return rows, session.message_count, has_more


def edit_message(user_id: str, message_id: str, new_content: str) -> ChatMessage:
    """Replace a user message's content; other roles are not editable (1004)."""
    message = owned_message(user_id, message_id)
    if message.role != "user":
        raise OperationFailed(f"only user messages can be edited, this one is {message.role!r}")
    if not crud.update_message_content(db.session, message.message_id, new_content):
        raise MessageNotFound()  # deleted meanwhile
    events.message_updated(message)
    return message


def rate_message(user_id: str, message_id: str, rating: str | None, content: str | None) -> ChatMessage:
    """Store the user's feedback on a reply of their own session (1004 for other roles), tell the
    session's sockets, and with Dify queue it for Dify's feedback API (delivered by the outbox, retried,
    never failing this call)."""
    message = owned_message(user_id, message_id)
    if message.role != "assistant":
        raise OperationFailed(f"only replies can be rated, this message is {message.role!r}")
    forward = current_app.config["AI_PROVIDER"] == "dify" and message.dify_message_id is not None
    if not crud.set_feedback(db.session, message, rating, content, forward=forward):
        raise MessageNotFound()  # deleted meanwhile
    events.message_updated(message)
    return message


def delete_message(user_id: str, message_id: str) -> None:
    message = owned_message(user_id, message_id)
    if not crud.soft_delete_message(db.session, message.message_id):
        raise MessageNotFound()  # deleted meanwhile
    events.message_deleted(message.session_id, message.message_id)


def message_page(user_id: str, session_id: str, args: dict, *, brief: bool = False) -> dict:
    """A list-messages response from its loaded query: by cursor when `before_id`/`after_id` is given,
    else by page number. `brief`: the REST route's four fields, read as rows on a Core connection (no
    ORM session: its hot path); else whole message objects (the view route)."""
    if not brief:
        return _message_page(db.session, None, user_id, session_id, args)
    with db.engine.connect() as connection:
        return _message_page(connection, crud.BRIEF_COLUMNS, user_id, session_id, args)


def _message_page(db: Executor, columns: Columns, user_id: str, session_id: str, args: dict) -> dict:
    if args["before_id"] is not None or args["after_id"] is not None:
        items, total, has_more = list_messages_by_cursor(
            db, columns, user_id, session_id, args["page_size"], args["before_id"], args["after_id"]
        )
        return {"items": items, "total": total, "page_size": args["page_size"], "has_more": has_more}
    page = Page(args["page"], args["page_size"])
    items, total = list_messages(db, columns, user_id, session_id, page, args["order"])
    return {"items": items, "total": total, "page": page.page, "page_size": page.page_size}

"""Sessions as their owner sees them: create, find, list, rename, delete, restore."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session

from chat_service import crud, events, live
from chat_service.extensions import db
from chat_service.models import DEFAULT_TITLE, ChatMessage, ChatSession, utcnow
from shared.errors import BadRequest, Forbidden, SessionNotFound
from shared.paging import Page

LATEST_MESSAGES = 50


def parse_session_id(raw: str) -> str:
    """The canonical form of a session id; anything that is not a UUID is a 400."""
    try:
        return str(uuid.UUID(raw))
    except (ValueError, TypeError, AttributeError):
        raise BadRequest(f"malformed session_id: {raw!r} is not a UUID") from None


def owned_session(user_id: str, session_id: str) -> ChatSession:
    """The user's live session; 7001 if there is none, 403 if it is someone else's."""
    return _owned(user_id, crud.get_session(db.session, parse_session_id(session_id)))


def owned_session_row(user_id: str, session_id: str, executor: Session | Connection | None = None) -> Row:
    """`owned_session`'s checks, the session as a row of its own columns (crud.SESSION_COLUMNS), read
    with `executor` (else on a Core connection of its own): for the hot read routes."""
    canonical = parse_session_id(session_id)
    if executor is not None:
        return _owned(user_id, crud.session_row(executor, canonical))
    with db.engine.connect() as own:
        return _owned(user_id, crud.session_row(own, canonical))


def _owned(user_id: str, session: ChatSession | Row | None) -> ChatSession | Row:
    if session is None:
        raise SessionNotFound()
    if session.user_id != user_id:
        raise Forbidden("the session belongs to another user")
    return session


def create_session(user_id: str, title: str | None = None) -> ChatSession:
    return crud.create_session(db.session, str(uuid.uuid4()), user_id, title or DEFAULT_TITLE)


def list_sessions(user_id: str, page: Page) -> tuple[list[ChatSession], int]:
    """A page of the user's sessions, most recently updated first, and how many there are."""
    items = crud.list_sessions(db.session, user_id, page.page, page.page_size)
    return items, crud.count_sessions(db.session, user_id)


def rename_session(user_id: str, session_id: str, new_title: str) -> ChatSession:
    session = owned_session(user_id, session_id)
    if not crud.update_session_title(db.session, session.session_id, new_title):
        raise SessionNotFound()  # deleted meanwhile
    events.session_updated(session)
    return session


def delete_session(user_id: str, session_id: str) -> None:
    session = owned_session(user_id, session_id)
    if not remove_session(session.session_id):
        raise SessionNotFound()  # deleted meanwhile


def remove_session(session_id: str, *, mirror_record: bool = True, version: int | None = None) -> bool:
    """Soft-delete a live session, stop its turn and tell its sockets; False if it was not live. Its
    record follows unless the deletion came from there (at `version`); its Dify conversation stays
    until the session is purged, so a restore within the window continues it."""
    deleted = crud.soft_delete_session(db.session, session_id, mirror_record=mirror_record, version=version)
    if not deleted:
        return False
    live.current().turns.stop(session_id)  # nothing more is generated, nor stored
    events.session_deleted(session_id)
    return True


def window_start(now: datetime | None = None) -> datetime:
    """The oldest deletion time still restorable (RESTORE_WINDOW_DAYS before now); older ones are
    purged (chat_service.purge)."""
    return (now or utcnow()) - timedelta(days=current_app.config["RESTORE_WINDOW_DAYS"])


def restorable_until(session: ChatSession) -> datetime:
    """Until when a deleted session can be restored."""
    return session.deleted_at + timedelta(days=current_app.config["RESTORE_WINDOW_DAYS"])


def restore_session(user_id: str, session_id: str) -> ChatSession:
    """Bring back the user's session deleted within the window, with the messages deleted along with
    it; its record follows. Restoring a live session changes nothing (a second click, another tab).
    7001 if it is unknown or deleted longer ago than the window (as if it did not exist), 403 if it is
    someone else's."""
    session = crud.get_any_session(db.session, parse_session_id(session_id))
    if session is None:
        raise SessionNotFound()
    if session.user_id != user_id:
        raise Forbidden("the session belongs to another user")
    if session.is_deleted and not crud.restore_session(db.session, session.session_id, window_start()):
        raise SessionNotFound()  # deleted longer ago than the window (or being purged)
    return crud.get_any_session(db.session, session.session_id)


def list_deleted_sessions(user_id: str, page: Page) -> tuple[list[ChatSession], int]:
    """A page of the user's restorable sessions, newest deletion first, and how many there are."""
    return crud.list_deleted_sessions(db.session, user_id, window_start(), page.page, page.page_size)


def apply_synced(
    session_id: str,
    user_id: str,
    *,
    title: str | None = None,
    title_version: int = 0,
    deleted: bool = False,
    deleted_version: int = 0,
) -> ChatSession:
    """A change made to the session's record, applied here (and not mirrored back): a title newer than
    the session's, a deletion or a restore newer than the session's own (`deleted_version`, ms; 0: from
    before restores existed, a deletion then applies unless the session was ever restored). A deleted
    session takes no title. 7001 if the session never existed, 403 if it is not `user_id`'s."""
    session = crud.get_any_session(db.session, parse_session_id(session_id))
    if session is None:
        raise SessionNotFound()
    if session.user_id != user_id:
        raise Forbidden("the session belongs to another user")
    sid, own_version = session.session_id, crud.lifecycle_version(session)
    if session.is_deleted and not deleted and deleted_version > own_version:
        crud.restore_session(db.session, sid, window_start(), mirror_record=False, version=deleted_version)
        session = crud.get_any_session(db.session, sid)
    if session.is_deleted:
        return session
    newer = title is not None and title_version > session.title_version
    if newer and crud.apply_title(db.session, sid, title, title_version):
        events.session_updated(session)
    if deleted and (deleted_version > own_version or (deleted_version == 0 and own_version == 0)):
        remove_session(sid, mirror_record=False, version=deleted_version or None)
    return crud.get_any_session(db.session, sid)


def latest_messages(session: ChatSession, limit: int = LATEST_MESSAGES) -> list[ChatMessage]:
    """The session's newest `limit` messages, oldest first."""
    newest = crud.list_messages(db.session, session.session_id, 1, limit, order="desc")
    return newest[::-1]

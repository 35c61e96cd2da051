"""The view routes under /aichat: the screens of the chat UI, each in one call."""

from flask import Blueprint

from chat_service.schemas import (
    CreateSessionBody,
    FirstScreenSchema,
    MessageListArgs,
    RenameSessionBody,
    SessionListArgs,
    SessionPageSchema,
    SessionSchema,
    SessionWithMessagesSchema,
    ViewMessagePageSchema,
)
from chat_service.services import messages, sessions
from shared.auth import check_same_user, current_user_id, require_user
from shared.decorators import arguments, body, response
from shared.paging import Page
from shared.rate_limits import limit_requests, limited

bp = Blueprint("aichat", __name__, url_prefix="/aichat")
bp.before_request(require_user)
bp.before_request(limit_requests)


def _session_page(user_id: str, args: dict) -> dict:
    page = Page(args["page"], args["page_size"])
    items, total = sessions.list_sessions(check_same_user(user_id), page)
    return {"items": items, "total": total, "page": page.page, "page_size": page.page_size}


@bp.get("/getsessionlist/<user_id>")
@arguments(SessionListArgs)
@response(SessionPageSchema)
def get_session_list(args, user_id):
    """The user's sessions with paging info."""
    return _session_page(user_id, args)


@bp.get("/getsessionlistshow/<user_id>")
@arguments(SessionListArgs)
@response(FirstScreenSchema)
def get_session_list_show(args, user_id):
    """The first screen: the session list plus the newest 50 messages of the latest session."""
    result = _session_page(user_id, args)
    latest = sessions.list_sessions(user_id, Page(1, 1))[0]
    result["session"] = latest[0] if latest else None
    result["messages"] = sessions.latest_messages(latest[0]) if latest else []
    return result


@bp.get("/sessions/<session_id>")
@response(SessionWithMessagesSchema)
def get_session(session_id):
    """One session with its newest 50 messages."""
    session = sessions.owned_session(current_user_id(), session_id)
    return {"session": session, "messages": sessions.latest_messages(session)}


@bp.post("/createsession")
@limited("sessions_created")
@body(CreateSessionBody)
@response(SessionSchema)
def create_session(data):
    return sessions.create_session(check_same_user(data.get("user_id")), data.get("title"))


@bp.patch("/sessions/<session_id>")
@body(RenameSessionBody)
@response()
def rename_session(data, session_id):
    sessions.rename_session(current_user_id(), session_id, data["new_title"])
    return "标题更新成功"


@bp.delete("/deletesession/<session_id>")
@response()
def delete_session(session_id):
    sessions.delete_session(current_user_id(), session_id)
    return "会话删除成功"


@bp.get("/sessions/<session_id>/messages")
@arguments(MessageListArgs)
@response(ViewMessagePageSchema)
def get_session_messages(args, session_id):
    """The session's message history, a page at a time (oldest first), or by `before_id`/`after_id`."""
    return messages.message_page(current_user_id(), session_id, args)

"""/api/chat/session(s): create, get, list, rename, delete a chat session."""

from chat_service.api import bp
from chat_service.schemas import (
    CreateSessionBody,
    ListSessionsBody,
    RenameSessionBody,
    SeedSessionSchema,
    SessionDetailSchema,
    SessionSummarySchema,
)
from chat_service.services import sessions
from shared.auth import check_same_user, current_user_id
from shared.decorators import body, response
from shared.paging import Page
from shared.rate_limits import limited


@bp.post("/session")
@limited("sessions_created")
@body(CreateSessionBody)
@response(SeedSessionSchema)
def create_session(data):
    """Create a session for the caller (a named `user_id` must be the caller's)."""
    user_id = check_same_user(data.get("user_id"))
    return sessions.create_session(user_id, data.get("title"))


@bp.get("/sessions/<session_id>")
@response(SessionDetailSchema)
def get_session(session_id):
    return sessions.owned_session(current_user_id(), session_id)


@bp.post("/sessions")
@body(ListSessionsBody)
@response(SessionSummarySchema(many=True))
def list_sessions(data):
    """One page of the caller's sessions, most recently updated first."""
    user_id = check_same_user(data.get("user_id"))
    items, _total = sessions.list_sessions(user_id, Page(data["page"], data["page_size"]))
    return items


@bp.delete("/sessions/<session_id>")
@response()
def delete_session(session_id):
    sessions.delete_session(current_user_id(), session_id)
    return "会话删除成功"


@bp.patch("/sessions/<session_id>")
@body(RenameSessionBody)
@response()
def rename_session(data, session_id):
    sessions.rename_session(current_user_id(), session_id, data["new_title"])
    return "标题更新成功"

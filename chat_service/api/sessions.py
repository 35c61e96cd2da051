"""/api/chat/session(s): create, get, list, rename, delete, restore a chat session; the deleted ones."""

from marshmallow import Schema, fields

from chat_service.api import bp
from chat_service.schemas import (
    UTC_FORMAT,
    CreateSessionBody,
    ListSessionsBody,
    RenameSessionBody,
    SeedSessionSchema,
    SessionDetailSchema,
    SessionListArgs,
    SessionSchema,
    SessionSummarySchema,
)
from chat_service.services import sessions
from shared.auth import check_same_user, current_user_id
from shared.decorators import arguments, body, response
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
    return sessions.owned_session_row(current_user_id(), session_id)


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


class DeletedSessionSchema(SessionSchema):
    """A restorable session: the whole session, when it was deleted and until when it can be restored."""

    deleted_at = fields.DateTime(format=UTC_FORMAT)
    restorable_until = fields.Function(lambda s: sessions.restorable_until(s).strftime(UTC_FORMAT))

    class Meta:
        exclude = ("user_id",)


class DeletedSessionPageSchema(Schema):
    items = fields.List(fields.Nested(DeletedSessionSchema))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


# A static segment outranks the `<session_id>` of GET /sessions/<session_id> in Flask's routing.
@bp.get("/sessions/deleted")
@arguments(SessionListArgs)
@response(DeletedSessionPageSchema)
def list_deleted_sessions(args):
    """The caller's sessions deleted within RESTORE_WINDOW_DAYS (restorable), newest deletion first."""
    page = Page(args["page"], args["page_size"])
    items, total = sessions.list_deleted_sessions(current_user_id(), page)
    return {"items": items, "total": total, "page": page.page, "page_size": page.page_size}


@bp.post("/sessions/<session_id>/restore")
@response(SessionDetailSchema)
def restore_session(session_id):
    """Restore the caller's session deleted within RESTORE_WINDOW_DAYS, with the messages deleted along
    with it, and its conversation record; a live session is answered as it is. 7001 after the window."""
    return sessions.restore_session(current_user_id(), session_id)

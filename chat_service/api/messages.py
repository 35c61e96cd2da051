"""/api/chat/message(s): post, get, list, edit, delete a chat message, and rate a reply."""

from chat_service.api import bp
from chat_service.schemas import (
    CreateMessageBody,
    EditMessageBody,
    FeedbackBody,
    MessageBriefSchema,
    MessageListArgs,
    MessagePageSchema,
    MessageSchema,
)
from chat_service.services import messages
from shared.auth import current_user_id
from shared.decorators import arguments, body, response


@bp.post("/message")
@body(CreateMessageBody)
@response(MessageBriefSchema)
def post_message(data):
    return messages.post_message(current_user_id(), data["session_id"], data["content"], data["role"])


@bp.get("/sessions/<session_id>/messages/<message_id>")
@response(MessageBriefSchema)
def get_message(session_id, message_id):
    return messages.owned_message(current_user_id(), message_id, session_id)


@bp.get("/sessions/<session_id>/messages")
@arguments(MessageListArgs)
@response(MessagePageSchema)
def list_messages(args, session_id):
    """A page of the session's messages, oldest first (`order=desc`: from the newest); or, with
    `before_id`/`after_id`, the `page_size` messages just older/newer than that id."""
    return messages.message_page(current_user_id(), session_id, args, brief=True)


@bp.delete("/messages/<message_id>")
@response()
def delete_message(message_id):
    messages.delete_message(current_user_id(), message_id)
    return "消息删除成功"


@bp.put("/messages/<message_id>/feedback")
@body(FeedbackBody)
@response(MessageSchema)
def rate_message(data, message_id):
    """Rate a reply (`like`, `dislike`, or `null` to withdraw) with an optional comment."""
    return messages.rate_message(current_user_id(), message_id, data["rating"], data["content"])


@bp.patch("/messages/<message_id>")
@body(EditMessageBody)
@response()
def edit_message(data, message_id):
    messages.edit_message(current_user_id(), message_id, data["new_content"])
    return "消息编辑成功"

"""/internal/ai/conversation: what other services call with a service token (never through the gateway)."""

from conversation_service.api import internal_bp
from conversation_service.schemas import ConversationSchema, LinkBody
from conversation_service.services import conversations
from conversation_service.services.conversations import parse_dify_path_id
from shared.auth import current_user_id
from shared.decorators import body, response


@internal_bp.put("/dify/<dify_conversation_id>")
@body(LinkBody)
@response(ConversationSchema)
def link_dify_conversation(data, dify_conversation_id):
    """The user's record for this Dify conversation, created with `title` the first time (idempotent)."""
    dify_id = parse_dify_path_id(dify_conversation_id)
    return conversations.link(current_user_id(), dify_id, data["title"])

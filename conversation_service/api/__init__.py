"""The public API under /api/ai/conversation (a user, or a service acting for one) and the internal one."""

from flask import Blueprint, g
from werkzeug.routing import BaseConverter

from shared.auth import USER_HEADER, require_service, require_user
from shared.errors import BadRequest
from shared.rate_limits import limit_requests


class ConversationIdConverter(BaseConverter):
    """An `{id}` path segment: anything but the fixed names `page`, `list` and `batch`.

    So `DELETE /page` is a 405 rather than "malformed id", and a malformed id still reaches the
    service layer, which answers 400.
    """

    regex = r"(?!(?:page|list|batch)$)[^/]+"
    part_isolating = True  # matched against one path segment, where `$` is the segment's end


def require_service_for_user() -> None:
    """`before_request` of internal routes: a service token that names the user in X-User-Id."""
    require_service()
    if "user_id" not in g:
        raise BadRequest(f"name the user in the {USER_HEADER} header")


bp = Blueprint("conversations", __name__, url_prefix="/api/ai/conversation")
bp.before_request(require_user)
bp.before_request(limit_requests)

internal_bp = Blueprint("internal", __name__, url_prefix="/internal/ai/conversation")
internal_bp.before_request(require_service_for_user)

from conversation_service.api import conversations, internal, internal_export  # noqa: E402, F401 - routes register on bps

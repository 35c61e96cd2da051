"""The REST API under /api/chat: every route needs a user (or a service acting for one); and the
internal routes under /internal/chat, for conversation_service only (never through the gateway)."""

from flask import Blueprint, g

from shared.auth import USER_HEADER, require_service, require_user
from shared.errors import BadRequest
from shared.rate_limits import limit_requests

bp = Blueprint("api", __name__, url_prefix="/api/chat")
bp.before_request(require_user)
bp.before_request(limit_requests)


def require_service_for_user() -> None:
    """`before_request` of internal routes: a service token that names the user in X-User-Id."""
    require_service()
    if "user_id" not in g:
        raise BadRequest(f"name the user in the {USER_HEADER} header")


internal_bp = Blueprint("internal", __name__, url_prefix="/internal/chat")
internal_bp.before_request(require_service_for_user)

from chat_service.api import export, inputs, internal, messages, search, sessions  # noqa: E402, F401 - routes register on bps

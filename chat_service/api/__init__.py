"""The REST API under /api/chat: every route needs a user (or a service acting for one)."""

from flask import Blueprint

from shared.auth import require_user

bp = Blueprint("api", __name__, url_prefix="/api/chat")
bp.before_request(require_user)

from chat_service.api import messages, sessions  # noqa: E402, F401 - routes register on bp

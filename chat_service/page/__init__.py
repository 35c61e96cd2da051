"""The reference chat page at /chat (CHAT_PAGE). Being built: issue 13."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("page", __name__, url_prefix="/chat")

"""The reference chat page at /chat (CHAT_PAGE): plain HTML, CSS and one script, no build step.

The page speaks only the documented protocol: the view routes and REST routes of chat_service, the pin
route of conversation_service (at CHAT_PAGE_CONVERSATION_URL, else its own origin: the gateway), and the
socket `/ws/<session_id>` with the token as the `bearer` subprotocol. What it needs to know of the server
(whether dev tokens are on, where conversation_service is) is rendered into the page's attributes.

With DEV_TOKENS on, `POST /chat/dev-token` mints a token for any user id: development only. Off (the
default), that route answers exactly as an unknown route does (404), so it cannot be told apart from one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, render_template
from marshmallow import RAISE, Schema, fields, validate

from shared.auth import _USER_ID, mint_token
from shared.decorators import body, response

DEV_TOKEN_TTL_SECONDS = 3600

bp = Blueprint(
    "page",
    __name__,
    url_prefix="/chat",
    static_folder="static",
    template_folder="templates",
)


class DevTokenBody(Schema):
    class Meta:
        unknown = RAISE

    user_id = fields.String(
        required=True,
        validate=validate.Regexp(f"^{_USER_ID.pattern}$", error="1-64 of A-Z a-z 0-9 _ . @ : -"),
    )


def _content_security_policy() -> str:
    """Nothing from anywhere else: the page's own files, its own origin's API and socket, and
    conversation_service when it lives elsewhere."""
    connect = ["'self'"]
    conversation_url = current_app.config["CHAT_PAGE_CONVERSATION_URL"]
    if conversation_url:
        parts = urlsplit(conversation_url)
        connect.append(f"{parts.scheme}://{parts.netloc}")
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {' '.join(connect)}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@bp.get("")
@bp.get("/")
def chat_page() -> Response:
    """The page itself; its settings travel as attributes of <body>."""
    html = render_template(
        "chat_page.html",
        dev_tokens=current_app.config["DEV_TOKENS"],
        conversation_url=current_app.config["CHAT_PAGE_CONVERSATION_URL"],
    )
    page = Response(html, mimetype="text/html")
    page.headers["Content-Security-Policy"] = _content_security_policy()
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Cache-Control"] = "no-store"  # the attributes follow the settings of the moment
    return page


def dev_only(view: Callable) -> Callable:
    """Answer 404, as an unknown route does, unless DEV_TOKENS is on: checked before the body is read."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_app.config["DEV_TOKENS"]:
            abort(404)
        return view(*args, **kwargs)

    return wrapper


@bp.post("/dev-token")
@dev_only
@body(DevTokenBody)
@response()
def dev_token(data):
    """A token for `user_id`, signed with this deployment's key (DEV_TOKENS only)."""
    return {
        "token": mint_token(data["user_id"], ttl_seconds=DEV_TOKEN_TTL_SECONDS),
        "user_id": data["user_id"],
        "expires_in": DEV_TOKEN_TTL_SECONDS,
    }

"""The security matrix: every public route of both services, attacked.

User A (ALICE) owns a session, a message and a conversation record, each carrying a secret marker.
User B (BOB), and every kind of forged token, try each route on them: every attempt is refused, none
leaks the marker, and afterwards A's records are exactly as they were.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

import jwt
import pytest

from tests.api_client import envelope
from tests.conftest import ALICE, BOB, SECRET

MARKER = "secret-of-alice-7f3a"
PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
PUBLIC |= {"/docs", "/docs/<path:filename>", "/asyncapi.json"}  # Swagger UI and the AsyncAPI document
# The chat page's routes hold no user's data (the page calls the API like any client); its development
# token route answers 404 unless DEV_TOKENS is on (tests/browser/test_chat_page.py).
PAGE_BLUEPRINT = "page."


@dataclass(frozen=True)
class Route:
    service: str  # "chat" or "conv"
    method: str
    rule: str  # the URL rule, to check the matrix covers every route
    path: str  # with {sid}, {mid}, {cid}, {user} to fill in
    body: object = None


ROUTES = [
    Route("chat", "POST", "/api/chat/sessions/<session_id>/restore", "/api/chat/sessions/{sid}/restore"),
    Route(
        "conv",
        "PUT",
        "/api/ai/conversation/<conversation_id:conversation_id>/restore",
        "/api/ai/conversation/{cid}/restore",
    ),
    Route("chat", "GET", "/api/chat/search", "/api/chat/search?q=secret-of-alice-7f3a&session_id={sid}"),
    Route(
        "chat",
        "GET",
        "/api/chat/sessions/<session_id>/export",
        "/api/chat/sessions/{sid}/export?format=ndjson",
    ),
    Route("chat", "POST", "/api/chat/session", "/api/chat/session", {"user_id": "{user}"}),
    Route("chat", "GET", "/api/chat/sessions/<session_id>", "/api/chat/sessions/{sid}"),
    Route("chat", "POST", "/api/chat/sessions", "/api/chat/sessions", {"user_id": "{user}"}),
    Route("chat", "DELETE", "/api/chat/sessions/<session_id>", "/api/chat/sessions/{sid}"),
    Route("chat", "PATCH", "/api/chat/sessions/<session_id>", "/api/chat/sessions/{sid}", {"new_title": "x"}),
    Route("chat", "POST", "/api/chat/message", "/api/chat/message", {"session_id": "{sid}", "content": "x"}),
    Route(
        "chat",
        "GET",
        "/api/chat/sessions/<session_id>/messages/<message_id>",
        "/api/chat/sessions/{sid}/messages/{mid}",
    ),
    Route("chat", "GET", "/api/chat/sessions/<session_id>/messages", "/api/chat/sessions/{sid}/messages"),
    Route("chat", "DELETE", "/api/chat/messages/<message_id>", "/api/chat/messages/{mid}"),
    Route(
        "chat", "PATCH", "/api/chat/messages/<message_id>", "/api/chat/messages/{mid}", {"new_content": "x"}
    ),
    Route(
        "chat",
        "PUT",
        "/api/chat/messages/<message_id>/feedback",
        "/api/chat/messages/{mid}/feedback",
        {"rating": "like"},
    ),
    Route("chat", "GET", "/api/chat/sessions/<session_id>/inputs", "/api/chat/sessions/{sid}/inputs"),
    Route(
        "chat",
        "PUT",
        "/api/chat/sessions/<session_id>/inputs",
        "/api/chat/sessions/{sid}/inputs",
        {"inputs": {"name": "x"}},
    ),
    Route("chat", "GET", "/aichat/getsessionlist/<user_id>", "/aichat/getsessionlist/{user}"),
    Route("chat", "GET", "/aichat/getsessionlistshow/<user_id>", "/aichat/getsessionlistshow/{user}"),
    Route("chat", "GET", "/aichat/sessions/<session_id>", "/aichat/sessions/{sid}"),
    Route("chat", "POST", "/aichat/createsession", "/aichat/createsession", {"user_id": "{user}"}),
    Route("chat", "PATCH", "/aichat/sessions/<session_id>", "/aichat/sessions/{sid}", {"new_title": "x"}),
    Route("chat", "DELETE", "/aichat/deletesession/<session_id>", "/aichat/deletesession/{sid}"),
    Route("chat", "GET", "/aichat/sessions/<session_id>/messages", "/aichat/sessions/{sid}/messages"),
    Route("conv", "PUT", "/api/ai/conversation", "/api/ai/conversation", {"id": "{cid}", "title": "x"}),
    Route(
        "conv", "GET", "/api/ai/conversation/<conversation_id:conversation_id>", "/api/ai/conversation/{cid}"
    ),
    Route(
        "conv",
        "DELETE",
        "/api/ai/conversation/<conversation_id:conversation_id>",
        "/api/ai/conversation/{cid}",
    ),
    Route("conv", "DELETE", "/api/ai/conversation/batch", "/api/ai/conversation/batch", ["{cid}"]),
    Route(
        "conv",
        "PUT",
        "/api/ai/conversation/<conversation_id:conversation_id>/pinned",
        "/api/ai/conversation/{cid}/pinned?isPinned=1",
    ),
]
# Routes with no other user's record to aim at: B only ever sees B's own (checked below).
OWN_ONLY = [
    Route("chat", "GET", "/api/chat/parameters", "/api/chat/parameters"),
    Route("conv", "POST", "/api/ai/conversation", "/api/ai/conversation", {"title": "x"}),
    Route("conv", "GET", "/api/ai/conversation/list", "/api/ai/conversation/list"),
    Route("conv", "GET", "/api/ai/conversation/page", "/api/ai/conversation/page"),
    Route("chat", "GET", "/api/chat/export", "/api/chat/export"),
    Route("chat", "GET", "/api/chat/sessions/deleted", "/api/chat/sessions/deleted"),
    Route("chat", "GET", "/api/chat/search", "/api/chat/search?q=secret-of-alice-7f3a"),
    # An empty export of the caller's: what it may import is its own account's, whatever it names.
    Route(
        "chat",
        "POST",
        "/api/chat/import",
        "/api/chat/import",
        '{"type": "export", "format": "chat_service.export", "version": 1,'
        ' "exported_at": "2025-01-01T00:00:00Z", "user_id": "{user}"}\n'
        '{"type": "end", "sessions": 0, "messages": 0, "records_unavailable": 0}\n',
    ),
]
# For services only (a service token naming the user): a user token is 403, none 401.
INTERNAL = [
    Route(
        "conv",
        "PUT",
        "/internal/ai/conversation/dify/<dify_conversation_id>",
        "/internal/ai/conversation/dify/conv-x",
        {"title": "x"},
    ),
    Route(
        "conv",
        "PUT",
        "/internal/ai/conversation/chat/<chat_session_id>",
        "/internal/ai/conversation/chat/{sid}",
        {"title": "x", "titleVersion": 1},
    ),
    Route(
        "conv",
        "GET",
        "/internal/ai/conversation/chat/<chat_session_id>",
        "/internal/ai/conversation/chat/{sid}",
    ),
    Route(
        "chat",
        "PUT",
        "/internal/chat/sessions/<session_id>/sync",
        "/internal/chat/sessions/{sid}/sync",
        {"title": "x", "titleVersion": 9_999_999_999_999, "deleted": True},
    ),
    # Export and import: the records of a user's sessions, and an imported session's record.
    Route(
        "conv",
        "POST",
        "/internal/ai/conversation/chat-records",
        "/internal/ai/conversation/chat-records",
        {"chatSessionIds": ["{sid}"]},
    ),
    Route(
        "conv",
        "PUT",
        "/internal/ai/conversation/chat/<chat_session_id>/import",
        "/internal/ai/conversation/chat/{sid}/import",
        {"title": "x", "isPinned": 1},
    ),
    # The purge's cascade: a purged session's record goes (a live one is unlinked). After the other {sid}
    # routes: a successful call would change the record they read.
    Route(
        "conv",
        "DELETE",
        "/internal/ai/conversation/chat/<chat_session_id>",
        "/internal/ai/conversation/chat/{sid}",
    ),
    # An operator's erasure of a user (service token only, no X-User-Id: the body names the user).
    Route("chat", "POST", "/internal/chat/erasures", "/internal/chat/erasures", {"user_id": "{user}"}),
    Route("chat", "GET", "/internal/chat/erasures/<user_hash>", "/internal/chat/erasures/" + "0" * 64),
    Route(
        "conv",
        "POST",
        "/internal/ai/conversation/erasures",
        "/internal/ai/conversation/erasures",
        {"userId": "{user}"},
    ),
]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forged_tokens() -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": ALICE, "iat": now, "exp": now + 300}
    return {
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "wrong-key": jwt.encode(claims, "not-the-secret-but-long-enough-0123456789", algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": now - 3600}, SECRET, algorithm="HS256"),
        "no-exp": jwt.encode({"sub": ALICE}, SECRET, algorithm="HS256"),
        "garbage": "garbage",
    }


@pytest.fixture
def alice(chat, conv):
    """A's session, message and conversation record, all carrying MARKER."""
    sid = envelope(chat.post("/api/chat/session", json={"title": MARKER}), 200)["session_id"]
    mid = envelope(chat.post("/api/chat/message", json={"session_id": sid, "content": MARKER}), 200)[
        "message_id"
    ]
    cid = envelope(conv.post("/api/ai/conversation", json={"title": MARKER}), 200)["id"]
    return {"sid": sid, "mid": str(mid), "cid": cid, "user": ALICE}


def _fill(value, ids: dict):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _call(clients: dict, route: Route, ids: dict, **kwargs):
    client = clients[route.service]
    if isinstance(route.body, str):  # a body that is not one JSON document (an NDJSON import)
        data = route.body.replace("{user}", ids["user"])  # JSON's own braces stay
        return client.call(route.method, _fill(route.path, ids), data=data, **kwargs)
    return client.call(route.method, _fill(route.path, ids), json=_fill(route.body, ids), **kwargs)


def _snapshot(chat, conv, ids: dict) -> tuple:
    """A's records as A sees them."""
    return (
        envelope(chat.get(f"/aichat/sessions/{ids['sid']}"), 200),
        envelope(conv.get(f"/api/ai/conversation/{ids['cid']}"), 200),
    )


def test_the_matrix_covers_every_route(chat_app, conversation_app):
    listed = {(r.service, r.method, r.rule) for r in [*ROUTES, *OWN_ONLY, *INTERNAL]}
    for service, app in (("chat", chat_app), ("conv", conversation_app)):
        for rule in app.url_map.iter_rules():
            page = rule.endpoint.startswith(PAGE_BLUEPRINT)
            if rule.rule in PUBLIC or rule.rule.startswith("/ws/") or page:
                continue
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert (service, method, rule.rule) in listed, f"{method} {rule.rule} is not in the matrix"


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.rule}")
def test_another_user_is_refused_and_learns_nothing(chat, conv, alice, route):
    clients = {"chat": chat, "conv": conv}
    before = _snapshot(chat, conv, alice)
    response = _call(clients, route, alice, user=BOB)
    envelope(response, 403)
    assert MARKER not in response.get_data(as_text=True)
    assert _snapshot(chat, conv, alice) == before


@pytest.mark.parametrize("route", ROUTES + OWN_ONLY, ids=lambda r: f"{r.method} {r.rule}")
def test_every_forged_token_is_401(chat, conv, alice, route):
    clients = {"chat": chat, "conv": conv}
    before = _snapshot(chat, conv, alice)
    for kind, token in _forged_tokens().items():
        response = _call(clients, route, alice, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (kind, response.get_json())
        envelope(response, 401)
        assert MARKER not in response.get_data(as_text=True)
    assert _snapshot(chat, conv, alice) == before


@pytest.mark.parametrize("route", OWN_ONLY, ids=lambda r: f"{r.method} {r.rule}")
def test_routes_without_an_id_only_ever_show_the_callers_records(chat, conv, alice, route):
    response = _call({"chat": chat, "conv": conv}, route, alice, user=BOB)
    assert response.status_code == 200
    assert MARKER not in response.get_data(as_text=True)


@pytest.mark.parametrize("route", INTERNAL, ids=lambda r: f"{r.method} {r.rule}")
def test_the_internal_routes_refuse_users_and_anonymous_callers(chat, conv, alice, route):
    clients = {"chat": chat, "conv": conv}
    before = _snapshot(chat, conv, alice)
    envelope(_call(clients, route, alice, user=ALICE), 403)
    envelope(_call(clients, route, alice, user=None), 401)
    for kind, token in _forged_tokens().items():
        response = _call(clients, route, alice, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (kind, response.get_json())
    assert _snapshot(chat, conv, alice) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat/session", {"is_deleted": True}),
        ("/api/chat/session", {"message_count": 99}),
        ("/api/chat/session", {"created_at": "2000-01-01T00:00:00Z"}),
        ("/api/chat/session", {"session_id": "123e4567-e89b-12d3-a456-426614174000"}),
        ("/aichat/createsession", {"updated_at": "2000-01-01T00:00:00Z"}),
        ("/api/chat/message", {"session_id": "{sid}", "content": "x", "is_deleted": True}),
        ("/api/chat/message", {"session_id": "{sid}", "content": "x", "created_at": "2000-01-01T00:00:00Z"}),
        ("/api/chat/message", {"session_id": "{sid}", "content": "x", "user_id": ALICE}),
    ],
)
def test_a_client_cannot_set_server_owned_fields(chat, conv, alice, path, body):
    before = _snapshot(chat, conv, alice)
    envelope(chat.post(path, json=_fill(body, alice)), 400, 1001)
    assert _snapshot(chat, conv, alice) == before


@pytest.mark.parametrize(
    "body",
    [
        {"title": "x", "userId": BOB},
        {"title": "x", "createdTime": "2000-01-01T00:00:00"},
        {"title": "x", "id": "1"},
    ],
)
def test_a_client_cannot_set_server_owned_conversation_fields(conv, body):
    envelope(conv.post("/api/ai/conversation", json=body), 400, 1001)


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("chat", "/api/chat/sessions/{sid}/messages?page_size=101"),
        ("chat", "/aichat/sessions/{sid}/messages?pageSize=101"),
        ("chat", "/aichat/getsessionlist/{user}?page_size=101"),
        ("chat", "/aichat/getsessionlistshow/{user}?page_size=101"),
        ("conv", "/api/ai/conversation/page?pageSize=101"),
    ],
)
def test_page_sizes_are_capped_at_100(chat, conv, alice, service, path):
    client = {"chat": chat, "conv": conv}[service]
    envelope(client.get(_fill(path, alice)), 400, 1001)


def test_list_page_size_in_a_body_is_capped_too(chat):
    envelope(chat.post("/api/chat/sessions", json={"page_size": 101}), 400, 1001)


@pytest.mark.parametrize("service", ["chat", "conv"])
def test_bodies_over_the_limit_are_413(chat, conv, service):
    client, path = {"chat": (chat, "/api/chat/session"), "conv": (conv, "/api/ai/conversation")}[service]
    envelope(client.post(path, data=b'{"title": "' + b"x" * (1024 * 1024 + 10) + b'"}'), 413)

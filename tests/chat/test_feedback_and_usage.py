"""Around a reply: its user's rating, Dify's follow-up suggestions, and what the session cost.

- `PUT /api/chat/messages/<id>/feedback` `{"rating": "like" | "dislike" | null, "content"?}` on a reply of
  one's own session: stored, shown as `feedback` on whole message objects, fanned out as
  `message_updated`, and with Dify forwarded to `POST /messages/{dify id}/feedbacks` as the same `user`
  through the outbox (a Dify failure is retried, never fails the request).
- With Dify, a `suggestions` frame follows `assistant_message` (`SUGGESTED_QUESTIONS`).
- A session's whole object carries its `usage` totals; `ai_tokens_total` counts tokens by provider.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from chat_service.extensions import db
from chat_service.models import ChatMessage
from tests.chat.test_ws import create_session, rest, stored_messages, wait_for
from tests.conftest import ALICE, BOB
from tests.fakes import ErrorReply
from tests.fakes.dify import DEFAULT_SUGGESTIONS, USAGE


def ask(socket, content: str = "hi") -> list[dict]:
    socket.send({"type": "message", "content": content})
    return socket.until("assistant_message")


def rate(base, token, message_id, body, user=None):
    tok = token(user) if user else token()
    return rest(base, tok, "PUT", f"/api/chat/messages/{message_id}/feedback", json=body)


@pytest.fixture
def echo_chat(live_chat_factory):
    base, _app = live_chat_factory(TITLE_GENERATION="false")
    return base


def test_a_reply_is_rated_shown_and_announced(echo_chat, token, open_socket):
    sid = create_session(echo_chat, token)
    socket = open_socket(echo_chat, sid, ready=True)
    reply = ask(socket)[-1]["data"]
    assert reply["feedback"] is None
    response = rate(echo_chat, token, reply["message_id"], {"rating": "like", "content": "spot on"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["message_id"], data["feedback"]) == (
        reply["message_id"],
        {"rating": "like", "content": "spot on"},
    )
    updated = socket.until("message_updated")[-1]["data"]
    assert updated["feedback"] == {"rating": "like", "content": "spot on"}
    assert stored_messages(echo_chat, token, sid)[-1]["feedback"] == {"rating": "like", "content": "spot on"}
    rate(echo_chat, token, reply["message_id"], {"rating": "dislike"})
    assert stored_messages(echo_chat, token, sid)[-1]["feedback"] == {"rating": "dislike", "content": None}
    rate(echo_chat, token, reply["message_id"], {"rating": None})  # withdrawn
    assert stored_messages(echo_chat, token, sid)[-1]["feedback"] is None


def test_feedback_refusals(echo_chat, token, open_socket):
    sid = create_session(echo_chat, token)
    socket = open_socket(echo_chat, sid, ready=True)
    frames = ask(socket)
    question = next(f for f in frames if f["type"] == "user_message")["data"]["message_id"]
    reply = frames[-1]["data"]["message_id"]
    path = f"/api/chat/messages/{reply}/feedback"
    assert requests.put(echo_chat + path, json={"rating": "like"}, timeout=5).status_code == 401
    assert rate(echo_chat, token, reply, {"rating": "like"}, user=BOB).json()["code"] == 403
    assert rate(echo_chat, token, 999999, {"rating": "like"}).json()["code"] == 7003
    assert rate(echo_chat, token, "abc", {"rating": "like"}).json()["code"] == 400
    assert rate(echo_chat, token, question, {"rating": "like"}).json()["code"] == 1004  # not a reply
    for body in (
        {},
        {"rating": "great"},
        {"rating": 1},
        {"rating": "like", "content": "x" * 1001},
        {"rating": "like", "x": 1},
    ):
        response = rate(echo_chat, token, reply, body)
        assert (response.status_code, response.json()["code"]) == (400, 1001), body
    assert stored_messages(echo_chat, token, sid)[-1]["feedback"] is None


def dify_message_id(app, message_id: int) -> str:
    with app.app_context():
        try:
            return db.session.get(ChatMessage, message_id).dify_message_id
        finally:
            db.session.remove()


def test_dify_gets_the_feedback_as_the_same_user(dify_live, dify, token, open_socket):
    base, app = dify_live
    app.extensions["outbox"].start()
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    reply = ask(socket)[-1]["data"]
    assert (
        rate(base, token, reply["message_id"], {"rating": "dislike", "content": "wrong"}).status_code == 200
    )
    sent = wait_for(lambda: dify.feedback_requests)[-1]
    assert sent.json == {"rating": "dislike", "user": ALICE, "content": "wrong"}
    assert sent.path.endswith(f"/messages/{dify_message_id(app, reply['message_id'])}/feedbacks")


def test_a_dify_failure_is_retried_and_never_fails_the_request(dify_live, dify, token, open_socket):
    base, app = dify_live
    dify.script_for(
        "feedbacks", ErrorReply(500, {"code": "internal_server_error", "message": "boom", "status": 500})
    )
    app.extensions["outbox"].start()
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    reply = ask(socket)[-1]["data"]
    assert rate(base, token, reply["message_id"], {"rating": "like"}).status_code == 200
    wait_for(lambda: len(dify.feedback_requests) >= 2, timeout=10)  # the first answered 500
    assert dify.feedback_requests[-1].json["rating"] == "like"


def test_dify_suggests_follow_up_questions_after_the_reply(dify_live, dify, token, open_socket):
    base, _app = dify_live
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    reply = ask(socket)[-1]["data"]
    frame = socket.until("suggestions")[-1]
    assert frame["data"] == {
        "session_id": sid,
        "message_id": reply["message_id"],
        "questions": DEFAULT_SUGGESTIONS,
    }
    asked = dify.suggested_requests[-1]
    assert "user=542738228948500480" in asked.path


def test_suggestions_can_be_turned_off_and_errors_are_ignored(live_chat_factory, dify, token, open_socket):
    settings = {"AI_PROVIDER": "dify", "DIFY_API_URL": dify.url, "DIFY_API_KEY": dify.api_key}
    base, _app = live_chat_factory(SUGGESTED_QUESTIONS="false", **settings)
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    ask(socket)
    socket.send({"type": "ping"})
    assert "suggestions" not in [f["type"] for f in socket.until("pong")]
    assert not dify.suggested_requests

    base, _app = live_chat_factory(**settings)
    dify.script_for(
        "suggested", ErrorReply(400, {"code": "not_support", "message": "disabled", "status": 400})
    )
    socket = open_socket(base, create_session(base, token), ready=True)
    ask(socket)
    socket.send({"type": "ping"})
    assert "suggestions" not in [f["type"] for f in socket.until("pong")]


def test_a_session_shows_what_its_replies_cost(dify_live, dify, token, open_socket):
    base, _app = dify_live
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    ask(socket)
    ask(socket, "again")  # the fake Dify reports USAGE for each reply
    usage = rest(base, token(), "GET", f"/aichat/sessions/{sid}").json()["data"]["session"]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (24, 6, 30)
    assert Decimal(usage["total_price"]) == 2 * Decimal(USAGE["total_price"])
    assert usage["currency"] == "USD"
    assert "usage" not in rest(base, token(), "GET", f"/api/chat/sessions/{sid}").json()["data"]  # the seed's
    metrics = requests.get(base + "/metrics", timeout=5).text
    assert 'ai_tokens_total{kind="completion",provider="dify"}' in metrics


def test_a_new_session_has_zero_usage(echo_chat, token):
    sid = create_session(echo_chat, token)
    usage = rest(echo_chat, token(), "GET", f"/aichat/sessions/{sid}").json()["data"]["session"]["usage"]
    assert usage == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "total_price": None,
        "currency": None,
    }

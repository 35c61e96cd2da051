"""Live turns against the shapes real Dify apps (and OpenAI-compatible servers) send: a real
chat_service on loopback, a real socket, the fake Dify/OpenAI on loopback; every check from the outside
(frames, REST answers, what the fake received).

New Agent replies are announced once and not doubled; `message_file` text is reply text; a conversation
Dify forgot (or closed) is reset and the turn retried once in a new one; a human-input pause keeps the
text so far; usage reaches the reply frame and the view route; Dify's own words never reach users.
"""

from __future__ import annotations

import json

import pytest

from chat_service.extensions import db
from chat_service.models import ChatSession
from chat_service.providers.base import REASONS
from tests.chat.test_ws import create_session, rest, stored_messages, wait_for
from tests.fakes.dify import FULL_USAGE, USAGE, DifyTurn, dify_error
from tests.fakes.openai import USAGE as OPENAI_USAGE

BRIEF_FIELDS = {"message_id", "content", "role", "created_at"}


# --- helpers ------------------------------------------------------------------------------------------


def brief_messages(base_url, token, sid) -> list[dict]:
    """The REST list (`/api/chat/sessions/<sid>/messages`): the seed's brief message fields."""
    response = rest(base_url, token(), "GET", f"/api/chat/sessions/{sid}/messages")
    assert response.status_code == 200, response.text
    return response.json()["data"]["items"]


def linked_conversation(app, sid) -> str | None:
    """The Dify conversation the session continues (it is stored in the background)."""
    with app.app_context():
        try:
            session = db.session.get(ChatSession, sid)
            return session.dify_conversation_id if session is not None else None
        finally:
            db.session.remove()


def wait_linked(app, sid, conversation_id) -> None:
    wait_for(lambda: linked_conversation(app, sid) == conversation_id)


def frames_until_pong(socket) -> list[dict]:
    """Every frame the socket gets before the answer to a ping sent now (what else was announced)."""
    socket.send({"type": "ping"})
    return socket.until("pong")


def without_titles(frames: list[dict]) -> list[dict]:
    """The turn's own frames: a generated title (`session_updated`) and the previous reply's
    follow-up `suggestions` may come at any point between."""
    return [f for f in frames if f["type"] not in ("session_updated", "suggestions")]


def deltas_text(frames: list[dict]) -> str:
    """The reply as a client rebuilds it from `delta` frames (a `replace` delta replaces it)."""
    text = ""
    for frame in frames:
        if frame["type"] == "delta":
            data = frame["data"]
            text = data["content"] if data.get("replace") else text + data["content"]
    return text


def start_turn(base_url, token, open_socket, content="hi"):
    sid = create_session(base_url, token)
    socket = open_socket(base_url, sid, ready=True)
    socket.send({"type": "message", "content": content})
    return sid, socket


# --- 1. New Agent apps: the closing `message` repeats the whole answer -------------------------------


def test_a_new_agent_reply_is_stored_and_announced_once_not_doubled(dify_live, dify, token, open_socket):
    base, _app = dify_live
    turn = DifyTurn()
    dify.script(turn.new_agent_reply("Hel", "lo ", "there"))
    sid, socket = start_turn(base, token, open_socket)
    frames = socket.until("assistant_message")
    assert frames[-1]["data"]["content"] == "Hello there"  # not "Hello thereHello there"
    assert frames[-1]["data"]["stopped"] is False
    assert deltas_text(frames) == "Hello there"
    later = frames_until_pong(socket)
    assert not [f for f in later if f["type"] in ("assistant_message", "delta", "error")]
    assert [(m["role"], m["content"]) for m in brief_messages(base, token, sid)] == [
        ("user", "hi"),
        ("assistant", "Hello there"),
    ]


# --- 2. `message_file` events that carry text -----------------------------------------------------------


def test_message_file_text_is_the_reply(dify_live, dify, token, open_socket):
    base, _app = dify_live
    turn = DifyTurn()
    dify.script(turn.file_first_reply("https://files.example/cat.png", "Here ", "is ", "your cat."))
    sid, socket = start_turn(base, token, open_socket, "draw a cat")
    frames = socket.until("assistant_message")
    assert frames[-1]["data"]["content"] == "Here is your cat."
    assert deltas_text(frames) == "Here is your cat."
    assert [(m["role"], m["content"]) for m in brief_messages(base, token, sid)] == [
        ("user", "draw a cat"),
        ("assistant", "Here is your cat."),
    ]


# --- 3. A conversation Dify forgot, or closed ------------------------------------------------------------


@pytest.mark.parametrize("lose", ["forget", "complete"])
def test_a_lost_dify_conversation_is_reset_and_the_turn_continues_in_a_new_one(
    dify_live, dify, token, open_socket, lose
):
    base, app = dify_live
    first, second = DifyTurn(), DifyTurn()
    dify.script(first.reply("one"), second.reply("two"))
    sid, socket = start_turn(base, token, open_socket, "first")
    assert socket.until("assistant_message")[-1]["data"]["content"] == "one"
    wait_linked(app, sid, first.conversation_id)

    getattr(dify, lose)(first.conversation_id)  # Dify: 404 not_found / 400 conversation_completed
    socket.send({"type": "message", "content": "second"})
    frames = without_titles(socket.until("assistant_message"))
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "user_message" and kinds.count("user_message") == 1
    assert kinds.count("conversation_reset") == 1 and "error" not in kinds
    reset = next(f for f in frames if f["type"] == "conversation_reset")
    assert reset["code"] == 200
    assert reset["data"]["reason"] == "conversation_gone"
    assert reset["data"]["previous_conversation_id"] == first.conversation_id
    assert reset["data"]["session_id"] == sid
    assert kinds.index("conversation_reset") < kinds.index("delta")
    assert frames[-1]["data"]["content"] == "two"

    asked = [r.json["conversation_id"] for r in dify.chat_requests]
    assert asked == ["", first.conversation_id, ""]  # refused, then retried once as a new conversation
    assert [r.json["query"] for r in dify.chat_requests] == ["first", "second", "second"]
    stored = brief_messages(base, token, sid)
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "first"),
        ("assistant", "one"),
        ("user", "second"),
        ("assistant", "two"),
    ]

    wait_linked(app, sid, second.conversation_id)
    socket.send({"type": "message", "content": "third"})
    frames = socket.until("assistant_message")
    assert "conversation_reset" not in [f["type"] for f in frames]
    assert frames[-1]["data"]["content"] == "Hello from Dify"
    assert dify.chat_requests[-1].json["conversation_id"] == second.conversation_id
    assert len(dify.chat_requests) == 4


# --- 4. A Chatflow paused for human input -------------------------------------------------------------


def test_a_human_input_pause_keeps_the_text_so_far_and_says_why(dify_live, dify, token, open_socket):
    base, _app = dify_live
    turn = DifyTurn()
    dify.script(turn.paused_reply("Draft ", "ready."))
    sid, socket = start_turn(base, token, open_socket, "write a draft")
    frames = socket.until("error")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "user_message" and kinds[-2:] == ["assistant_message", "error"]
    reply = frames[-2]["data"]
    assert (reply["content"], reply["stopped"], reply["role"]) == ("Draft ready.", True, "assistant")
    error = frames[-1]
    assert error["code"] == 5000
    assert error["data"]["reason"] == "human_input_required"
    assert error["data"]["detail"]
    assert [(m["role"], m["content"]) for m in brief_messages(base, token, sid)] == [
        ("user", "write a draft"),
        ("assistant", "Draft ready."),
    ]
    assert len(dify.chat_requests) == 1  # a pause is no failure: nothing is retried


# --- 5. Usage ---------------------------------------------------------------------------------------------


def test_difys_usage_reaches_the_reply_frame_and_the_view_route(dify_live, dify, token, open_socket):
    base, _app = dify_live
    turn = DifyTurn()
    dify.script(turn.reply("Hel", "lo", usage=FULL_USAGE))
    sid, socket = start_turn(base, token, open_socket)
    reply = socket.until("assistant_message")[-1]["data"]
    # Tokens, price (Dify's decimal string), currency and latency; Dify's unit prices are not kept.
    assert reply["usage"] == USAGE
    assert reply["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "total_price": "0.0000150",
        "currency": "USD",
        "latency": 0.42,
    }

    viewed = stored_messages(base, token, sid)  # GET /aichat/sessions/<sid>/messages
    assert [(m["role"], m["usage"]) for m in viewed] == [("user", None), ("assistant", USAGE)]
    assert viewed[1]["message_id"] == reply["message_id"]

    # The REST list keeps the seed's brief fields: no usage there.
    brief = brief_messages(base, token, sid)
    assert [set(m) for m in brief] == [BRIEF_FIELDS, BRIEF_FIELDS]


def test_openais_usage_chunk_reaches_the_reply_frame_and_the_view_route(
    live_chat_factory, openai, token, open_socket
):
    base, _app = live_chat_factory(
        AI_PROVIDER="openai",
        OPENAI_BASE_URL=openai.url,
        OPENAI_API_KEY=openai.api_key,
        TITLE_GENERATION="false",
    )
    sid, socket = start_turn(base, token, open_socket)
    reply = socket.until("assistant_message")[-1]["data"]
    assert reply["content"] == "Hello from OpenAI"
    assert openai.requests[0].json["stream_options"] == {"include_usage": True}
    assert reply["usage"] == OPENAI_USAGE == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    viewed = stored_messages(base, token, sid)
    assert [(m["role"], m["usage"]) for m in viewed] == [("user", None), ("assistant", OPENAI_USAGE)]


def test_a_reply_without_usage_has_null_usage(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory()  # echo: no accounting
    sid, socket = start_turn(base, token, open_socket, "one two three four")
    assert socket.until("assistant_message")[-1]["data"]["usage"] is None
    assert [m["usage"] for m in stored_messages(base, token, sid)] == [None, None]


# --- 6. Dify's own words never reach users -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "reason"),
    [
        ("invalid_param", "Invalid parameter value: query is too long for model gpt-4o", "bad_request"),
        (
            "provider_quota_exceeded",
            "Your quota for Dify Hosted Model Provider has been exhausted. Please upgrade your plan "
            "at https://cloud.dify.ai/billing",
            "quota_exceeded",
        ),
        ("app_unavailable", "App unavailable, please check your app configurations.", "unavailable"),
        (
            "completion_request_error",
            "[openai] Error: Incorrect API key provided: sk-abc***xyz. You can find your key at https://x",
            "bad_request",
        ),
    ],
    ids=["invalid_param", "provider_quota_exceeded", "app_unavailable", "completion_request_error"],
)
def test_a_dify_400_is_told_in_our_words_only(dify_live, dify, token, open_socket, code, message, reason):
    base, _app = dify_live
    dify.script(dify_error(400, code, message))
    sid, socket = start_turn(base, token, open_socket)
    frames = socket.until("error")
    assert [f["type"] for f in frames] == ["user_message", "error"]
    error = frames[-1]
    assert (error["code"], error["message"]) == (5000, "AI 服务调用失败")
    assert error["data"]["reason"] == reason
    assert error["data"]["detail"] == REASONS[reason]
    wire = json.dumps(error, ensure_ascii=False)
    for words in (message, message[:20], "Dify", "sk-", "https://"):
        assert words not in wire
    assert [m["role"] for m in brief_messages(base, token, sid)] == ["user"]
    assert len(dify.chat_requests) == 1  # a 400 is never retried

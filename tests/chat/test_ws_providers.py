"""Socket turns against real wire formats: a fake Dify and a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import time

import pytest
import requests

from chat_service.services import links
from tests.chat.test_ws import create_session, rest, stored_messages, wait_for
from tests.conftest import ALICE
from tests.fakes.dify import DifyTurn, dify_error
from tests.fakes.openai import completion


@pytest.fixture
def dify_chat(live_chat_factory, live_conversation, dify):
    """chat_service talking to the fake Dify and to a live conversation_service; yields its URL."""
    conversation_url, _app = live_conversation
    base, _chat = live_chat_factory(
        AI_PROVIDER="dify",
        DIFY_API_URL=dify.url,
        DIFY_API_KEY=dify.api_key,
        CONVERSATION_SERVICE_URL=conversation_url,
        PROVIDER_RETRY_BASE_SECONDS="0.01",
        OUTBOX_WORKER="true",  # the record follows the session (chat_service.sync)
    )
    return base


def conversations(conversation_url, token) -> list[dict]:
    response = requests.get(
        f"{conversation_url}/api/ai/conversation/list",
        headers={"Authorization": f"Bearer {token()}"},
        timeout=5,
    )
    return response.json()["data"]


def test_a_dify_turn_streams_links_the_conversation_and_continues_it(
    dify_chat, dify, live_conversation, token, open_socket
):
    conversation_url, _app = live_conversation
    sid = create_session(dify_chat, token)
    socket = open_socket(dify_chat, sid, ready=True)
    socket.send({"type": "message", "content": "你好"})
    frames = socket.until("assistant_message")
    assert "".join(f["data"]["content"] for f in frames if f["type"] == "delta") == "Hello from Dify"
    assert frames[-1]["data"]["content"] == "Hello from Dify"

    first = dify.chat_requests[0]
    assert first.json["user"] == ALICE
    assert first.json["query"] == "你好"
    assert first.json["response_mode"] == "streaming"
    assert first.json["conversation_id"] == ""
    assert first.headers["Authorization"] == f"Bearer {dify.api_key}"
    assert first.headers["X-Trace-Id"] == frames[-1]["traceId"]

    records = wait_for(lambda: conversations(conversation_url, token))
    assert len(records) == 1
    dify_conversation = records[0]["difyConversationId"]
    assert records[0]["userId"] == ALICE

    socket.send({"type": "message", "content": "继续"})
    socket.until("assistant_message")
    assert dify.chat_requests[1].json["conversation_id"] == dify_conversation
    assert len(conversations(conversation_url, token)) == 1


def test_a_dify_failure_is_an_error_frame_and_keeps_the_user_message(dify_chat, dify, token, open_socket):
    dify.script(dify_error(400, "app_unavailable", "App unavailable, please check your app configurations."))
    sid = create_session(dify_chat, token)
    socket = open_socket(dify_chat, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    error = socket.until("error")[-1]
    assert error["code"] == 5000 and error["message"] == "AI 服务调用失败"
    # Our own words and reason code; Dify's English (which may carry plan-upgrade prose) stays in the log.
    assert error["data"]["reason"] == "unavailable"
    assert "App unavailable" not in error["data"]["detail"] and error["data"]["detail"]
    assert [m["role"] for m in stored_messages(dify_chat, token, sid)] == ["user"]
    socket.send({"type": "message", "content": "again"})
    assert socket.until("assistant_message")[-1]["data"]["content"] == "Hello from Dify"


def test_a_mid_stream_error_stores_no_half_reply(dify_chat, dify, token, open_socket):
    turn = DifyTurn()
    dify.script(turn.stream([turn.message("half "), turn.error("Model overloaded")]))
    sid = create_session(dify_chat, token)
    socket = open_socket(dify_chat, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    frames = socket.until("error")
    assert [f["type"] for f in frames] == ["user_message", "delta", "error"]
    assert frames[-1]["data"]["reason"] == "bad_request"
    assert "Model overloaded" not in frames[-1]["data"]["detail"]
    assert [m["role"] for m in stored_messages(dify_chat, token, sid)] == ["user"]


def test_a_cut_stream_stores_no_half_reply(dify_chat, dify, token, open_socket):
    turn = DifyTurn()
    dify.script(turn.stream([turn.message("half")], cut=True))
    sid = create_session(dify_chat, token)
    socket = open_socket(dify_chat, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    assert socket.until("error")[-1]["code"] == 5000
    assert [m["role"] for m in stored_messages(dify_chat, token, sid)] == ["user"]


def test_429_before_the_first_piece_is_retried(dify_chat, dify, token, open_socket):
    dify.script(dify_error(429, "too_many_requests", "Too many requests", retry_after="0"))
    sid = create_session(dify_chat, token)
    socket = open_socket(dify_chat, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    assert socket.until("assistant_message")[-1]["data"]["content"] == "Hello from Dify"
    assert len(dify.chat_requests) == 2


def test_stop_calls_difys_stop_with_the_same_user(dify_chat, dify, token, open_socket):
    turn = DifyTurn()
    dify.script(turn.stream([turn.message("first "), 10.0, turn.message("never"), turn.end()]))
    sid = create_session(dify_chat, token)
    socket = open_socket(dify_chat, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    socket.until("delta")
    socket.send({"type": "stop"})
    reply = socket.until("assistant_message")[-1]["data"]
    assert (reply["content"], reply["stopped"]) == ("first ", True)
    dify.wait_for(lambda requests: any(r.path.endswith("/stop") for r in requests))
    stop = dify.stop_requests[0]
    assert stop.path.endswith(f"/chat-messages/{turn.task_id}/stop")
    assert stop.json == {"user": ALICE}


def test_message_replace_replaces_the_reply(dify_chat, dify, token, open_socket):
    turn = DifyTurn()
    dify.script(turn.stream([turn.message("bad words"), turn.replace("[moderated]"), turn.end()]))
    sid = create_session(dify_chat, token)
    socket = open_socket(dify_chat, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    frames = socket.until("assistant_message")
    replaced = [f for f in frames if f["type"] == "delta" and f["data"].get("replace")]
    assert replaced[0]["data"]["content"] == "[moderated]"
    assert frames[-1]["data"]["content"] == "[moderated]"


def test_the_chat_goes_on_when_conversation_service_is_down(live_chat_factory, dify, token, open_socket):
    base, _app = live_chat_factory(
        AI_PROVIDER="dify",
        DIFY_API_URL=dify.url,
        DIFY_API_KEY=dify.api_key,
        CONVERSATION_SERVICE_URL="http://127.0.0.1:1",
    )
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    assert socket.until("assistant_message")[-1]["data"]["content"] == "Hello from Dify"
    socket.send({"type": "message", "content": "again"})
    assert socket.until("assistant_message")[-1]["data"]["content"] == "Hello from Dify"
    # The Dify conversation is still continued: it was remembered on the session before linking.
    assert dify.chat_requests[0].json["conversation_id"] == ""
    assert dify.chat_requests[1].json["conversation_id"] != ""


def test_the_next_turn_continues_the_dify_conversation_when_storing_its_id_is_slow(
    live_chat_factory, dify, token, open_socket, monkeypatch
):
    """The Dify conversation id is stored beside the stream, in a thread of its own. A turn that ended
    before that store did let the next turn start a new Dify conversation (seen once in a fresh-clone
    `make test`): the session drifted from it. A turn now ends only once its id is stored."""
    store = links.store
    monkeypatch.setattr(links, "store", lambda *args: time.sleep(0.5) or store(*args))
    base, _app = live_chat_factory(AI_PROVIDER="dify", DIFY_API_URL=dify.url, DIFY_API_KEY=dify.api_key)
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    socket.until("assistant_message")
    socket.send({"type": "message", "content": "again"})
    socket.until("assistant_message")
    assert dify.chat_requests[0].json["conversation_id"] == ""
    assert dify.chat_requests[1].json["conversation_id"] != ""


def test_an_openai_turn_sends_the_sessions_history(live_chat_factory, openai, token, open_socket):
    base, _app = live_chat_factory(
        AI_PROVIDER="openai",
        OPENAI_BASE_URL=openai.url,
        OPENAI_API_KEY=openai.api_key,
        OPENAI_MODEL="test-model",
        TITLE_GENERATION="false",  # no naming call between the two turns
    )
    openai.script(completion("Py", "thon"), completion("Sure"))
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    socket.send({"type": "message", "content": "best language?"})
    assert socket.until("assistant_message")[-1]["data"]["content"] == "Python"
    socket.send({"type": "message", "content": "why?"})
    assert socket.until("assistant_message")[-1]["data"]["content"] == "Sure"
    second = openai.requests[-1].json
    assert second["model"] == "test-model" and second["stream"] is True
    assert second["messages"] == [
        {"role": "user", "content": "best language?"},
        {"role": "assistant", "content": "Python"},
        {"role": "user", "content": "why?"},
    ]


def test_rest_posted_messages_are_part_of_the_history(live_chat_factory, openai, token, open_socket):
    base, _app = live_chat_factory(
        AI_PROVIDER="openai",
        OPENAI_BASE_URL=openai.url,
        OPENAI_API_KEY=openai.api_key,
        TITLE_GENERATION="false",
    )
    sid = create_session(base, token)
    rest(
        base,
        token(),
        "POST",
        "/api/chat/message",
        json={"session_id": sid, "content": "be brief", "role": "user"},
    )
    socket = open_socket(base, sid, ready=True)
    socket.send({"type": "message", "content": "hi"})
    socket.until("assistant_message")
    # A client's `system` message is not (tests/chat/test_model_context.py).
    assert openai.requests[-1].json["messages"][0] == {"role": "user", "content": "be brief"}

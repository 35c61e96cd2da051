"""`regenerate` and `edit` frames: a new reply to the last question, or to an edited one.

Regenerate soft-deletes the replies to the session's last question (`message_deleted` for each) and
streams a new one; edit changes a question as `PATCH` does (`message_updated`), soft-deletes every
message after it and streams a new reply. Both follow a turn's rules (one at a time, limits). With Dify
a regenerate or an edit of the last question continues the conversation; an edit of an earlier one
starts a new Dify conversation (`conversation_reset`, `reason: "rewound"`).
"""

from __future__ import annotations

import pytest

from tests.chat.test_turn_fidelity import linked_conversation
from tests.chat.test_ws import create_session, rest, stored_messages, wait_for
from tests.fakes.openai import completion

ECHO = {"ECHO_DELAY_SECONDS": "0.001", "TITLE_GENERATION": "false"}


@pytest.fixture
def echo_chat(live_chat_factory):
    base, _app = live_chat_factory(**ECHO)
    return base


def ask(socket, content: str) -> dict:
    socket.send({"type": "message", "content": content})
    return socket.until("assistant_message")[-1]["data"]


def kinds(frames: list[dict]) -> list[str]:
    return [f["type"] for f in frames if f["type"] != "delta"]


def stored(base, token, sid) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in stored_messages(base, token, sid)]


def count(base, token, sid) -> int:
    return rest(base, token(), "GET", f"/api/chat/sessions/{sid}").json()["data"]["message_count"]


def test_regenerate_replaces_the_last_reply(echo_chat, token, open_socket):
    sid = create_session(echo_chat, token)
    socket = open_socket(echo_chat, sid, ready=True)
    ask(socket, "first")
    old = ask(socket, "second question")
    socket.send({"type": "regenerate"})
    frames = socket.until("assistant_message")
    assert kinds(frames) == ["message_deleted", "assistant_message"]
    assert frames[0]["data"]["message_id"] == old["message_id"]
    new = frames[-1]["data"]
    assert new["content"] == "second question" and new["message_id"] != old["message_id"]
    assert stored(echo_chat, token, sid) == [
        ("user", "first"),
        ("assistant", "first"),
        ("user", "second question"),
        ("assistant", "second question"),
    ]
    assert count(echo_chat, token, sid) == 4


def test_regenerate_after_a_failed_or_stopped_turn_answers_the_question(echo_chat, token, open_socket):
    sid = create_session(echo_chat, token)
    rest(echo_chat, token(), "POST", "/api/chat/message", json={"session_id": sid, "content": "unanswered"})
    socket = open_socket(echo_chat, sid, ready=True)
    socket.send({"type": "regenerate"})
    frames = socket.until("assistant_message")
    assert kinds(frames) == ["assistant_message"]  # nothing to delete
    assert stored(echo_chat, token, sid) == [("user", "unanswered"), ("assistant", "unanswered")]


def test_regenerate_without_a_question_or_during_a_turn_is_1004(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(ECHO_DELAY_SECONDS="0.2", TITLE_GENERATION="false")
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    socket.send({"type": "regenerate"})
    assert socket.until("error")[-1]["code"] == 1004
    socket.send({"type": "message", "content": "a b c d e f"})
    socket.until("delta")
    socket.send({"type": "regenerate"})
    assert socket.until("error")[-1]["code"] == 1004
    socket.send({"type": "stop"})
    socket.until("assistant_message")


def test_edit_the_last_question_and_resend(echo_chat, token, open_socket):
    sid = create_session(echo_chat, token)
    socket = open_socket(echo_chat, sid, ready=True)
    ask(socket, "hello")
    question = stored_messages(echo_chat, token, sid)[0]
    socket.send({"type": "edit", "message_id": question["message_id"], "content": "hello again"})
    frames = socket.until("assistant_message")
    assert kinds(frames) == ["message_deleted", "message_updated", "assistant_message"]
    assert frames[1]["data"]["content"] == "hello again"
    assert stored(echo_chat, token, sid) == [("user", "hello again"), ("assistant", "hello again")]
    assert count(echo_chat, token, sid) == 2


def test_edit_an_earlier_question_deletes_everything_after_it(echo_chat, token, open_socket):
    sid = create_session(echo_chat, token)
    socket = open_socket(echo_chat, sid, ready=True)
    for content in ("one", "two", "three"):
        ask(socket, content)
    first = stored_messages(echo_chat, token, sid)[0]
    socket.send({"type": "edit", "message_id": first["message_id"], "content": "uno"})
    frames = socket.until("assistant_message")
    assert kinds(frames) == ["message_deleted"] * 5 + ["message_updated", "assistant_message"]
    assert stored(echo_chat, token, sid) == [("user", "uno"), ("assistant", "uno")]
    assert count(echo_chat, token, sid) == 2


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "edit", "content": "x"}, 1001),
        ({"type": "edit", "message_id": 1}, 1001),
        ({"type": "edit", "message_id": "1", "content": "x"}, 1001),
        ({"type": "edit", "message_id": 0, "content": "x"}, 1001),
        ({"type": "edit", "message_id": 999999, "content": "x"}, 7003),
    ],
)
def test_bad_edits_are_refused_and_change_nothing(echo_chat, token, open_socket, frame, code):
    sid = create_session(echo_chat, token)
    socket = open_socket(echo_chat, sid, ready=True)
    ask(socket, "keep me")
    socket.send(frame)
    assert socket.until("error")[-1]["code"] == code
    assert stored(echo_chat, token, sid) == [("user", "keep me"), ("assistant", "keep me")]


def test_only_questions_of_this_session_can_be_edited(echo_chat, token, open_socket):
    sid, other = create_session(echo_chat, token), create_session(echo_chat, token)
    socket = open_socket(echo_chat, sid, ready=True)
    reply = ask(socket, "mine")
    socket.send({"type": "edit", "message_id": reply["message_id"], "content": "x"})
    assert socket.until("error")[-1]["code"] == 1004  # a reply is not a question
    elsewhere = open_socket(echo_chat, other, ready=True)
    foreign = ask(elsewhere, "other session")
    socket.send({"type": "edit", "message_id": foreign["message_id"] - 1, "content": "x"})
    assert socket.until("error")[-1]["code"] == 7003
    assert stored(echo_chat, token, other)[0] == ("user", "other session")


def test_regenerate_and_edit_count_as_turns(live_chat_factory, token, open_socket):
    base, _app = live_chat_factory(LIMIT_TURNS="2/minute", **ECHO)
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    ask(socket, "once")
    socket.send({"type": "regenerate"})
    socket.until("assistant_message")
    socket.send({"type": "regenerate"})
    assert socket.until("error")[-1]["code"] == 429
    assert stored(base, token, sid) == [("user", "once"), ("assistant", "once")]


# --- with Dify ---------------------------------------------------------------------------------------


def test_dify_regenerate_continues_the_same_conversation(dify_live, dify, token, open_socket):
    base, app = dify_live
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    ask(socket, "hi")
    conversation = wait_for(lambda: linked_conversation(app, sid))
    socket.send({"type": "regenerate"})
    frames = socket.until("assistant_message")
    assert "conversation_reset" not in kinds(frames)
    assert dify.chat_requests[-1].json["query"] == "hi"
    assert dify.chat_requests[-1].json["conversation_id"] == conversation


def test_dify_edit_of_an_earlier_question_forks_a_new_conversation(dify_live, dify, token, open_socket):
    base, app = dify_live
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    ask(socket, "one")
    first_conversation = wait_for(lambda: linked_conversation(app, sid))
    ask(socket, "two")
    question = stored_messages(base, token, sid)[0]
    socket.send({"type": "edit", "message_id": question["message_id"], "content": "uno"})
    frames = socket.until("assistant_message")
    reset = next(f for f in frames if f["type"] == "conversation_reset")["data"]
    assert (reset["reason"], reset["previous_conversation_id"]) == ("rewound", first_conversation)
    assert dify.chat_requests[-1].json["query"] == "uno"
    assert dify.chat_requests[-1].json["conversation_id"] in ("", None)
    wait_for(lambda: linked_conversation(app, sid) not in (None, first_conversation))  # the new one


def test_an_openai_rerun_sends_the_history_before_its_question(live_chat_factory, openai, token, open_socket):
    """The model is sent what came before the question only: regenerate leaves out the reply it
    replaces, an edit of an earlier question everything after it; the newest 20 messages at most."""
    base, _app = live_chat_factory(
        AI_PROVIDER="openai",
        OPENAI_BASE_URL=openai.url,
        OPENAI_API_KEY=openai.api_key,
        TITLE_GENERATION="false",
    )
    questions = [f"q{i}" for i in range(12)]
    openai.script(*(completion(f"a{i}") for i in range(12)), completion("again"), completion("edited"))
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    for question in questions:
        ask(socket, question)

    def sent() -> list[str]:
        return [m["content"] for m in openai.requests[-1].json["messages"]]

    newest = [text for i in range(1, 11) for text in (f"q{i}", f"a{i}")]  # 20, then the question
    assert sent() == [*newest, "q11"]
    socket.send({"type": "regenerate"})
    socket.until("assistant_message")
    assert sent() == [*newest, "q11"]  # not "a11", the reply it replaces
    first_q3 = stored_messages(base, token, sid)[6]
    assert first_q3["content"] == "q3"
    socket.send({"type": "edit", "message_id": first_q3["message_id"], "content": "q3 edited"})
    socket.until("assistant_message")
    assert sent() == ["q0", "a0", "q1", "a1", "q2", "a2", "q3 edited"]

"""Context that fits the model's window: `OPENAI_MAX_TOKENS` bounds a reply, `AI_CONTEXT_TOKENS` the prompt.

The history sent is the newest that fits; the new message always goes, cut only when it alone is too
long. A model that still refuses the prompt as too long (`context_length_exceeded`) gets one more try
with half the history, then the turn fails with `data.reason: "context_too_long"`, never retried more.
"""

from __future__ import annotations

import pytest

from chat_service.providers.base import TurnRequest
from chat_service.providers.context import estimate_tokens, model_messages
from tests.chat.test_model_context import turn
from tests.chat.test_ws import create_session
from tests.fakes.openai import completion, openai_error


def history(*pairs: tuple[str, str]) -> list[dict]:
    """Alternating user questions and generated answers, oldest first."""
    messages = []
    for question, answer in pairs:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer, "generated": True},
        ]
    return messages


def contents(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages]


def test_the_estimate_counts_cjk_characters_as_tokens_and_ascii_by_fours():
    assert estimate_tokens("abcd" * 10) == 10 + 4
    assert estimate_tokens("你好世界") == 4 + 4
    assert estimate_tokens("") == 4


def test_without_a_budget_everything_trusted_is_sent():
    turn_request = TurnRequest("u", "now?", history(("q1", "a1"), ("q2", "a2")))
    assert contents(model_messages(turn_request)) == ["q1", "a1", "q2", "a2", "now?"]


def test_the_newest_history_that_fits_is_sent_and_the_new_message_always():
    old = "x" * 400  # 104 tokens each
    turn_request = TurnRequest("u", "now?", history((old, old), ("q2", "a2")))
    sent = model_messages(turn_request, budget_tokens=60)
    assert contents(sent) == ["q2", "a2", "now?"]
    assert sent[0]["role"] == "user"


def test_a_cut_history_never_opens_with_an_answer():
    big = "y" * 400
    turn_request = TurnRequest("u", "now?", history(("q1", "a1"), (big, "a2")))
    assert contents(model_messages(turn_request, budget_tokens=30)) == ["now?"]  # "a2" alone is left out


def test_a_new_message_too_long_alone_is_cut_to_fit_and_sent_alone():
    turn_request = TurnRequest("u", "z" * 10_000, history(("q1", "a1")))
    sent = model_messages(turn_request, "be brief", budget_tokens=200)
    assert [m["role"] for m in sent] == ["system", "user"]
    assert estimate_tokens(sent[1]["content"]) + estimate_tokens("be brief") <= 200
    assert sent[1]["content"] and sent[1]["content"] != "z" * 10_000


def test_each_refusal_halves_what_was_sent():
    answer = "w" * 160  # 44 tokens
    turn_request = TurnRequest("u", "now?", history(("q1", answer), ("q2", answer)), trimmed=0)
    full = model_messages(turn_request, budget_tokens=120)
    trimmed = model_messages(TurnRequest("u", "now?", turn_request.history, trimmed=1), budget_tokens=120)
    assert len(trimmed) < len(full)
    assert contents(trimmed)[-1] == "now?"


TOO_LONG = openai_error(
    400,
    "This model's maximum context length is 2048 tokens. However, you requested 3020 tokens.",
    "invalid_request_error",
    "context_length_exceeded",
)


def test_max_tokens_and_the_budget_reach_the_model(openai_chat, openai, token, open_socket):
    base = openai_chat(OPENAI_MAX_TOKENS="64", AI_CONTEXT_TOKENS="40")
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    openai.script(completion("A" * 200), completion("ok"))
    turn(socket, "first question")
    turn(socket, "second")
    body = openai.requests[-1].json
    assert body["max_tokens"] == 64
    assert contents(body["messages"]) == ["second"]  # the 200-character answer does not fit 40 tokens


def test_a_context_refusal_is_retried_once_with_half_the_history(openai_chat, openai, token, open_socket):
    base = openai_chat()
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    openai.script(completion("one"), completion("two"), TOO_LONG, completion("three"))
    for content in ("q1", "q2"):
        turn(socket, content)
    reply = turn(socket, "q3")
    assert reply["content"] == "three"
    refused, accepted = openai.requests[-2].json["messages"], openai.requests[-1].json["messages"]
    assert len(accepted) < len(refused) and contents(accepted)[-1] == "q3"


@pytest.mark.parametrize("refusals", [2, 3])
def test_a_prompt_refused_twice_fails_as_context_too_long(openai_chat, openai, token, open_socket, refusals):
    base = openai_chat()
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    openai.script(*([TOO_LONG] * refusals))
    socket.send({"type": "message", "content": "hello"})
    error = socket.until("error")[-1]
    assert (error["code"], error["data"]["reason"]) == (5000, "context_too_long")
    assert "context length" not in error["data"]["detail"]  # our words, never the provider's
    assert len(openai.requests) == 2  # one try, one shorter: never retried as a passing failure

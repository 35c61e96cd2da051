"""Dify fidelity at the provider level (issue 10): the shapes real Dify apps send, against the fake
Dify (and the fake OpenAI) on loopback, in their real wire formats.

New Agent replies are not doubled; `message_file` text is reply text; a human-input pause is a
`Paused` event; `message_end` gives the message id and normalized usage; a conversation Dify lost is
`conversation_gone`; `inputs` and the app's parameters; naming and deleting conversations; errors
reach users as our own short reasons only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest

from chat_service.config import Config
from chat_service.providers import (
    REASONS,
    Delta,
    DifyProvider,
    Finished,
    OpenAIProvider,
    Paused,
    ProviderError,
    Replace,
    TurnRequest,
    normalize_usage,
)
from tests.chat.test_providers import TRACE, USER, build, reply_text, run, turn
from tests.fakes import ErrorReply
from tests.fakes.dify import (
    FULL_USAGE,
    NOT_EXISTS,
    USAGE,
    DifyTurn,
    FakeDify,
    app_parameters,
    dify_error,
    form_field,
)
from tests.fakes.openai import (
    chat_completion,
    completion,
    openai_error,
)

OTHER_USER = "542738228948500999"


def dify_env(fake: FakeDify, **extra: str) -> dict[str, str]:
    return {"AI_PROVIDER": "dify", "DIFY_API_URL": fake.url, "DIFY_API_KEY": fake.api_key, **extra}


@pytest.fixture
def dify_provider(dify) -> Iterator[DifyProvider]:
    provider = build(dify_env(dify))
    yield provider
    provider.close()


@pytest.fixture
def openai_provider(openai) -> Iterator[OpenAIProvider]:
    env = {"AI_PROVIDER": "openai", "OPENAI_BASE_URL": openai.url, "OPENAI_API_KEY": openai.api_key}
    provider = build({**env, "OPENAI_MODEL": "fake-model"})
    yield provider
    provider.close()


# --- New Agent: the closing `message` repeats the whole answer -----------------------------------------


def test_a_new_agent_closing_message_replaces_the_reply_instead_of_doubling_it(dify, dify_provider):
    t = DifyTurn()
    dify.script(t.new_agent_reply("Hel", "lo ", "there"))
    events, error = run(dify_provider.start(turn()))
    assert error is None
    pieces = [e for e in events if isinstance(e, Delta | Replace)]
    assert pieces == [Delta("Hel"), Delta("lo "), Delta("there"), Replace("Hello there")]
    assert reply_text(events) == "Hello there"  # not "Hello thereHello there"
    assert events[-1] == Finished(USAGE, t.message_id)

    # A normal chat app's `message` chunks still append: only a seen `agent_message` makes it a closing one.
    plain = DifyTurn()
    dify.script(plain.reply("Hel", "lo"))
    events, error = run(dify_provider.start(turn()))
    assert error is None and [e for e in events if isinstance(e, Delta | Replace)] == [
        Delta("Hel"),
        Delta("lo"),
    ]


def test_a_new_agent_closing_message_after_a_moderation_replace_is_still_the_final_answer(
    dify, dify_provider
):
    t = DifyTurn()
    parts = [t.agent_message("bad "), t.replace("[removed]"), t.message("[removed]"), t.end()]
    dify.script(t.stream(parts))
    events, error = run(dify_provider.start(turn()))
    assert error is None and reply_text(events) == "[removed]"
    assert [e for e in events if isinstance(e, Delta | Replace)][-1] == Replace("[removed]")


# --- message_file -----------------------------------------------------------------------------------------


def test_message_file_events_with_an_answer_are_reply_text_and_files_are_kept(dify, dify_provider):
    t = DifyTurn()
    dify.script(t.file_first_reply("https://files.example/cat.png", "Here ", "is ", "your cat."))
    events, error = run(dify_provider.start(turn()))
    assert error is None and reply_text(events) == "Here is your cat."
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.message_id == t.message_id
    assert [f["url"] for f in finished.files] == ["https://files.example/cat.png"]
    assert finished.files[0]["type"] == "image" and finished.files[0]["belongs_to"] == "assistant"


# --- a human-input pause ----------------------------------------------------------------------------------


def test_a_human_input_pause_is_a_paused_event_that_ends_the_stream(dify, dify_provider):
    t = DifyTurn()
    dify.script(t.paused_reply("Draft ", "ready.", form_token="tok_abc123"))
    events, error = run(dify_provider.start(turn()))
    assert error is None
    assert reply_text(events) == "Draft ready."
    assert events[-1] == Paused("human_input_required", "tok_abc123", t.workflow_run_id)
    assert not any(isinstance(e, Finished) for e in events)
    assert len(dify.chat_requests) == 1  # a pause is no failure: nothing is retried


def test_a_pause_whose_stream_ends_right_after_human_input_required_is_still_a_pause(dify, dify_provider):
    t = DifyTurn()
    dify.script(t.stream([t.message("partial"), t.human_input_required(form_token=None)]))
    events, error = run(dify_provider.start(turn()))
    assert error is None and reply_text(events) == "partial"
    # An Email-delivered form has no token: the pause is still told, without one.
    assert events[-1] == Paused("human_input_required", None, t.workflow_run_id)


# --- message_end: message id and usage ----------------------------------------------------------------


def test_message_end_gives_difys_message_id_and_the_usage_normalized(dify, dify_provider):
    t = DifyTurn()
    dify.script(t.stream([t.message("ok"), t.end(FULL_USAGE, retriever_resources=[{"position": 1}])]))
    events, error = run(dify_provider.start(turn()))
    assert error is None
    assert events[-1] == Finished(
        {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "total_tokens": 15,
            "total_price": "0.0000150",
            "currency": "USD",
            "latency": 0.42,
        },
        t.message_id,
    )


def test_usage_normalization_keeps_only_what_is_usable():
    assert normalize_usage(None) is None and normalize_usage({}) is None and normalize_usage([1]) is None
    assert normalize_usage(
        {"prompt_tokens": "7", "completion_tokens": 2.0, "total_tokens": True, "total_price": 0.25}
    ) == {"prompt_tokens": 7, "completion_tokens": 2, "total_price": "0.25"}
    assert normalize_usage(
        {"latency": "1.5", "currency": " CNY ", "total_price": "not a price", "prompt_tokens": -1}
    ) == {"latency": 1.5, "currency": "CNY"}
    assert normalize_usage({"latency": math.nan, "total_price": "NaN", "total_tokens": math.inf}) is None


def test_openai_asks_for_usage_and_reports_the_usage_chunk(openai, openai_provider):
    usage = {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}
    openai.script(completion("Py", "thon", usage=usage))
    events, error = run(openai_provider.start(turn()))
    assert error is None and reply_text(events) == "Python"
    assert openai.requests[0].json["stream_options"] == {"include_usage": True}
    # The fake's usage chunk also carries `*_details`, which are not kept.
    assert events[-1] == Finished(usage)


# --- a conversation Dify no longer knows --------------------------------------------------------------------


def test_a_forgotten_conversation_is_conversation_gone_and_not_retried(dify, dify_provider):
    dify.forget("conv-old")
    _, error = run(dify_provider.start(turn(conversation_id="conv-old")))
    assert isinstance(error, ProviderError) and error.conversation_gone
    assert (error.status, error.code, error.reason_code) == (404, "not_found", "conversation_gone")
    assert error.upstream_message == NOT_EXISTS and str(error) == REASONS["conversation_gone"]
    assert len(dify.chat_requests) == 1


def test_a_longer_conversation_not_exists_message_is_conversation_gone_too(dify, dify_provider):
    dify.script(dify_error(404, "not_found", "Conversation Not Exists. (id conv-9, user 1)"))
    _, error = run(dify_provider.start(turn(conversation_id="conv-9")))
    assert error.conversation_gone and "conv-9" not in str(error)


def test_a_completed_conversation_is_conversation_gone(dify, dify_provider):
    dify.complete("conv-done")
    _, error = run(dify_provider.start(turn(conversation_id="conv-done")))
    assert error.conversation_gone and (error.status, error.code) == (400, "conversation_completed")
    assert len(dify.chat_requests) == 1


def test_another_users_conversation_is_gone_for_this_user(dify, dify_provider):
    t = DifyTurn(conversation_id="conv-alice")
    dify.script(t.reply("hi"))
    run(dify_provider.start(turn(user_id=OTHER_USER)))
    _, error = run(dify_provider.start(turn(conversation_id="conv-alice")))
    assert error.conversation_gone


@pytest.mark.parametrize(
    ("conversation_id", "message"),
    [
        (None, NOT_EXISTS),  # no conversation was named: it cannot be the one that is gone
        ("conv-1", "The requested URL was not found on the server."),  # a wrong DIFY_API_URL
    ],
)
def test_other_404s_are_not_conversation_gone(dify, dify_provider, conversation_id, message):
    dify.script(dify_error(404, "not_found", message))
    _, error = run(dify_provider.start(turn(conversation_id=conversation_id)))
    assert error is not None and not error.conversation_gone and error.reason_code == "bad_request"


# --- inputs and the app's parameters ----------------------------------------------------------------------


def test_inputs_are_sent_over_the_dify_inputs_defaults(dify):
    provider = build(dify_env(dify, DIFY_INPUTS='{"city": "Paris", "lang": "en"}'))
    request = TurnRequest(USER, "hi", [], None, TRACE, {"lang": "zh", "tone": "brief"})
    events, error = run(provider.start(request))
    provider.close()
    assert error is None and reply_text(events) == "Hello from Dify"
    assert dify.chat_requests[0].json["inputs"] == {"city": "Paris", "lang": "zh", "tone": "brief"}
    assert dify.chat_requests[0].json["auto_generate_name"] is False


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("{city: Paris}", "not valid JSON"),
        ('["a"]', "must be a JSON object"),
        ('"x"', "must be a JSON object"),
    ],
)
def test_dify_inputs_that_are_not_a_json_object_fail_at_startup(value, complaint):
    with pytest.raises(ValueError, match=f"DIFY_INPUTS.*{complaint}|DIFY_INPUTS {complaint}"):
        Config({"DIFY_INPUTS": value})
    assert Config({}).DIFY_INPUTS == {} and Config({"DIFY_INPUTS": ""}).DIFY_INPUTS == {}


def test_parameters_are_difys_answer_cached(dify):
    dify.parameters = app_parameters(
        form_field("name"), opening_statement="Hi! Ask me anything.", suggested_questions=["What's new?"]
    )
    provider = build(dify_env(dify, DIFY_PARAMETERS_CACHE_SECONDS="0.3"))
    first = provider.parameters()
    assert first["opening_statement"] == "Hi! Ask me anything."
    assert first["suggested_questions"] == ["What's new?"]
    assert provider.parameters() == first and len(dify.parameters_requests) == 1
    request = dify.parameters_requests[0]
    assert request.headers["Authorization"] == f"Bearer {dify.api_key}" and request.headers["X-Trace-Id"]

    time.sleep(0.35)
    dify.parameters = app_parameters(opening_statement="Changed.")
    assert provider.parameters()["opening_statement"] == "Changed." and len(dify.parameters_requests) == 2
    provider.parameters(refresh=True)
    assert len(dify.parameters_requests) == 3
    provider.close()


def test_parameters_failure_is_a_provider_error_unless_an_earlier_answer_is_cached(dify):
    provider = DifyProvider(dify.url, dify.api_key, parameters_ttl=0)
    dify.script_for("parameters", dify_error(500, "internal_server_error", "Internal Server Error."))
    with pytest.raises(ProviderError) as failure:
        provider.parameters()
    assert failure.value.reason_code == "unavailable" and failure.value.status == 500

    answer = provider.parameters()
    dify.script_for("parameters", ErrorReply(502, "<html>Bad Gateway</html>"))
    assert provider.parameters() == answer  # the last answer, while Dify fails
    provider.close()


def test_missing_inputs_lists_required_variables_absent_or_blank_in_the_merged_inputs(dify):
    dify.parameters = app_parameters(
        form_field("name"),
        form_field("nickname", required=False),
        form_field("tone", kind="select", options=["brief", "long"]),
        form_field("bio", kind="paragraph"),
        form_field("age", kind="number"),
    )
    provider = build(dify_env(dify, DIFY_INPUTS='{"tone": "brief"}'))
    assert provider.missing_inputs({}) == ["name", "bio", "age"]
    assert provider.missing_inputs({"name": "  ", "bio": "", "age": 0}) == ["name", "bio"]
    assert provider.missing_inputs({"name": "Bo", "bio": "x", "age": 3, "tone": None}) == ["tone"]
    assert provider.missing_inputs({"name": "Bo", "bio": "x", "age": 3}) == []
    assert len(dify.parameters_requests) == 1
    provider.close()


# --- naming and deleting conversations ---------------------------------------------------------------------


def test_generate_name_asks_dify_to_name_the_conversation_as_the_same_user(dify, dify_provider):
    t = DifyTurn(conversation_id="conv-7")
    dify.script(t.reply("你好！"))
    run(dify_provider.start(turn("你好，帮我写一首诗")))
    assert dify_provider.generate_name("conv-7", USER) == "Chat: 你好，帮我写一首诗"
    request = dify.name_requests[0]
    assert request.path == "/v1/conversations/conv-7/name"
    assert request.json == {"auto_generate": True, "user": USER}
    assert request.headers["Authorization"] == f"Bearer {dify.api_key}"

    dify.names["conv-7"] = "诗歌创作"
    assert dify_provider.generate_name("conv-7", USER) == "诗歌创作"


def test_generate_name_failures_are_provider_errors(dify, dify_provider):
    dify.forget("conv-gone")
    with pytest.raises(ProviderError) as failure:
        dify_provider.generate_name("conv-gone", USER)
    assert failure.value.conversation_gone

    dify.script_for("name", dify_error(400, "completion_request_error", "[openai] Error: quota upgrade plan"))
    with pytest.raises(ProviderError) as failure:
        dify_provider.generate_name("conv-1", USER)
    assert failure.value.reason_code == "bad_request" and "openai" not in str(failure.value)

    dify.script_for("name", ErrorReply(200, {"id": "conv-1", "name": ""}))
    with pytest.raises(ProviderError):
        dify_provider.generate_name("conv-1", USER)


def test_delete_conversation_is_done_on_204_and_on_404(dify, dify_provider):
    t = DifyTurn(conversation_id="conv-del")
    dify.script(t.reply("hi"))
    run(dify_provider.start(turn()))
    assert dify_provider.delete_conversation("conv-del", USER) is True
    request = dify.delete_requests[0]
    assert request.path == "/v1/conversations/conv-del" and request.json == {"user": USER}
    assert request.headers["Authorization"] == f"Bearer {dify.api_key}"
    assert dify_provider.delete_conversation("conv-del", USER) is True  # 404: already gone
    # And Dify no longer continues it.
    _, error = run(dify_provider.start(turn(conversation_id="conv-del")))
    assert error.conversation_gone

    dify.script_for("delete", ErrorReply(200, {"result": "success"}))
    assert dify_provider.delete_conversation("conv-x", USER) is True  # older Dify answers 200
    dify.script_for("delete", dify_error(500, "internal_server_error", "Internal Server Error."))
    assert dify_provider.delete_conversation("conv-x", USER) is False
    assert len(dify.delete_requests) == 4


# --- OpenAI: one short completion (titles) ---------------------------------------------------------------


def test_openai_complete_is_one_non_streamed_call_with_reasoning_stripped(openai, openai_provider):
    openai.script(chat_completion("<think>The user wants\na title.</think>\n\n  Trip to Paris  "))
    messages = [{"role": "system", "content": "Title this."}, {"role": "user", "content": "Paris?", "id": 3}]
    assert openai_provider.complete(messages, max_tokens=20) == "Trip to Paris"
    request = openai.requests[0]
    assert request.json == {
        "model": "fake-model",
        "stream": False,
        "messages": [{"role": "system", "content": "Title this."}, {"role": "user", "content": "Paris?"}],
        "max_tokens": 20,
    }
    assert request.headers["Authorization"] == f"Bearer {openai.api_key}"

    openai.script(chat_completion("<think>never closed, all reasoning"))
    assert openai_provider.complete(messages) == ""
    assert "max_tokens" not in openai.requests[-1].json


def test_openai_complete_failures_are_provider_errors_with_our_reason(openai, openai_provider):
    openai.script(
        openai_error(429, "You exceeded your current quota.", "insufficient_quota", "insufficient_quota")
    )
    with pytest.raises(ProviderError) as failure:
        openai_provider.complete([{"role": "user", "content": "hi"}], max_tokens=10)
    assert failure.value.reason_code == "quota_exceeded" and "quota." not in str(failure.value)
    assert len(openai.requests) == 1


# --- errors: our reason, never Dify's words -------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "reason_code", "tries"),
    [
        (
            dify_error(
                400, "provider_quota_exceeded", "Your quota is used up. Upgrade to Pro at cloud.dify.ai"
            ),
            "quota_exceeded",
            1,
        ),
        (
            dify_error(429, "rate_limit_error", "Daily limit of 200 reached. Upgrade your plan."),
            "quota_exceeded",
            1,
        ),
        (
            dify_error(429, "too_many_requests", "Too many requests on api-internal.corp:5001."),
            "rate_limited",
            3,
        ),
        (ErrorReply(502, "<html><body>Bad Gateway nginx/1.25 at 10.0.3.7</body></html>"), "unavailable", 3),
        (dify_error(500, "internal_server_error", "Traceback at /app/api/core.py"), "unavailable", 3),
        (
            dify_error(400, "app_unavailable", "App unavailable, please check your app configurations."),
            "unavailable",
            1,
        ),
        (dify_error(401, "unauthorized", "Access token is invalid"), "unauthorized", 1),
        (dify_error(400, "invalid_param", "name is required in input form"), "bad_request", 1),
        (
            dify_error(400, "completion_request_error", "[openai] Bad Request Error: model x"),
            "bad_request",
            1,
        ),
        (dify_error(413, "file_too_large", "File size exceeded."), "bad_request", 1),
    ],
)
def test_dify_errors_reach_users_as_our_reason_only(dify, dify_provider, reply, reason_code, tries):
    dify.script(*[reply] * 3)
    _, error = run(dify_provider.start(turn()))
    assert error.reason_code == reason_code
    assert error.reason == str(error) == REASONS[reason_code]
    assert error.upstream_message and error.upstream_message not in error.reason
    assert len(dify.chat_requests) == tries


def test_mid_stream_errors_and_cuts_get_our_reason_too(dify, dify_provider):
    t = DifyTurn()
    dify.script(t.stream([t.message("half"), t.error("Model overloaded at 10.0.0.5", status=500, code="x")]))
    _, error = run(dify_provider.start(turn()))
    assert error.reason_code == "unavailable" and "10.0.0.5" not in str(error)

    t = DifyTurn()
    dify.script(t.stream([t.message("half")], cut=True))
    _, error = run(dify_provider.start(turn()))
    assert error.reason_code == "stream_cut" and str(error) == REASONS["stream_cut"]


@pytest.mark.parametrize(
    ("reply", "reason_code"),
    [
        (
            openai_error(
                400, "The response was filtered (Azure).", "invalid_request_error", "content_filter"
            ),
            "content_filtered",
        ),
        (
            openai_error(
                401, "Incorrect API key provided: sk-abc***", "invalid_request_error", "invalid_api_key"
            ),
            "unauthorized",
        ),
        (
            openai_error(404, "The model `gpt-9` does not exist", "invalid_request_error", "model_not_found"),
            "bad_request",
        ),
    ],
)
def test_openai_errors_reach_users_as_our_reason_only(openai, openai_provider, reply, reason_code):
    openai.script(reply)
    _, error = run(openai_provider.start(turn()))
    assert error.reason_code == reason_code and str(error) == REASONS[reason_code]
    assert error.upstream_message not in str(error)


def test_provider_error_defaults_and_its_table():
    plain = ProviderError("something odd")
    assert (plain.reason_code, plain.upstream_message, plain.conversation_gone) == (
        "internal",
        "something odd",
        False,
    )
    assert ProviderError().upstream_message == REASONS["internal"]
    assert ProviderError("x", reason_code="conversation_gone").conversation_gone
    assert "something odd" in repr(plain)
    with pytest.raises(ValueError, match="reason_code"):
        ProviderError("x", reason_code="made_up")
    assert {"quota_exceeded", "rate_limited", "unavailable", "bad_request", "unauthorized"} <= set(REASONS)
    assert {"conversation_gone", "content_filtered", "stream_cut", "internal"} <= set(REASONS)

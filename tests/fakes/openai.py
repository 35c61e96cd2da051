"""A fake OpenAI-compatible server (`/v1/chat/completions`, streamed or not) speaking its chunk format."""

from __future__ import annotations

import json
import time

from tests.fakes import ErrorReply, FakeServer, RecordedRequest, Reply, SSEReply

DONE = b"data: [DONE]\n\n"
USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def chunk(content: str | None = None, *, role: str | None = None, finish_reason: str | None = None) -> bytes:
    """One `chat.completion.chunk` frame."""
    delta: dict = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    return _frame(payload)


def usage_chunk(usage: dict | None = None) -> bytes:
    """The last chunk `stream_options.include_usage` asks for: no choices, the whole turn's usage."""
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [],
        "usage": {
            **(usage or USAGE),
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    return _frame(payload)


def _frame(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def completion(*pieces: str, done: bool = True, finish: bool = True, usage: dict | None = None) -> SSEReply:
    """A normal stream: a role chunk, one chunk per piece, a `finish_reason` chunk, the usage chunk
    when `usage` is given, then `[DONE]`."""
    parts: list[bytes | float] = [chunk("", role="assistant")]
    parts += [chunk(piece) for piece in pieces]
    if finish:
        parts.append(chunk(finish_reason="stop"))
    if usage is not None:
        parts.append(usage_chunk(usage))
    if done:
        parts.append(DONE)
    return SSEReply(parts)


def chat_completion(content: str, usage: dict | None = None, finish_reason: str = "stop") -> ErrorReply:
    """A non-streamed answer (`stream: false`): one `chat.completion` object."""
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage or USAGE,
    }
    return ErrorReply(200, body)


def openai_error(
    status: int, message: str, type_: str, code: str | None = None, retry_after: str | None = None
) -> ErrorReply:
    """OpenAI's error answer: `{"error": {"message", "type", "param", "code"}}`."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return ErrorReply(status, body, {"Retry-After": retry_after} if retry_after is not None else {})


def wants_usage(request: RecordedRequest) -> bool:
    """The request asked for the usage chunk (`stream_options: {"include_usage": true}`)."""
    options = request.json.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class FakeOpenAI(FakeServer):
    """Fake OpenAI: by default answers "Hello from OpenAI" in three pieces (with the usage chunk when
    the request asks for it), or, to a non-streamed request, "Hello from OpenAI" whole."""

    api_key = "sk-test-key"

    def default_reply(self, request: RecordedRequest) -> Reply:
        if not request.json.get("stream"):
            return chat_completion("Hello from OpenAI")
        return completion("Hello", " from", " OpenAI", usage=USAGE if wants_usage(request) else None)

    def route(self, request: RecordedRequest) -> Reply:
        if not self.authorized(request):
            reason = "Incorrect API key provided."
            return openai_error(401, reason, "invalid_request_error", "invalid_api_key")
        if request.method == "POST" and request.path == f"{self.prefix}/chat/completions":
            return self.next_reply(request)
        return openai_error(404, "Not found", "invalid_request_error")

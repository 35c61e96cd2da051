"""A fake OpenAI-compatible server (`/v1/chat/completions`, streaming) speaking its chunk format."""

from __future__ import annotations

import json
import time

from tests.fakes import ErrorReply, FakeServer, RecordedRequest, Reply, SSEReply

DONE = b"data: [DONE]\n\n"


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
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def completion(*pieces: str, done: bool = True, finish: bool = True) -> SSEReply:
    """A normal stream: a role chunk, one chunk per piece, a `finish_reason` chunk, then `[DONE]`."""
    parts: list[bytes | float] = [chunk("", role="assistant")]
    parts += [chunk(piece) for piece in pieces]
    if finish:
        parts.append(chunk(finish_reason="stop"))
    if done:
        parts.append(DONE)
    return SSEReply(parts)


def openai_error(
    status: int, message: str, type_: str, code: str | None = None, retry_after: str | None = None
) -> ErrorReply:
    """OpenAI's error answer: `{"error": {"message", "type", "param", "code"}}`."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return ErrorReply(status, body, {"Retry-After": retry_after} if retry_after is not None else {})


class FakeOpenAI(FakeServer):
    """Fake OpenAI: by default answers "Hello from OpenAI" in three pieces."""

    api_key = "sk-test-key"

    def default_reply(self, request: RecordedRequest) -> Reply:
        return completion("Hello", " from", " OpenAI")

    def route(self, request: RecordedRequest) -> Reply:
        if not self.authorized(request):
            reason = "Incorrect API key provided."
            return openai_error(401, reason, "invalid_request_error", "invalid_api_key")
        if request.path == f"{self.prefix}/chat/completions":
            return self.next_reply(request)
        return openai_error(404, "Not found", "invalid_request_error")

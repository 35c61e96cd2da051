"""chat_service with `AI_PROVIDER=openai` against a real small model (Gemma 3 270M in llama.cpp's server).

A long conversation keeps working against a 2,048-token window: replies are bounded by
`OPENAI_MAX_TOKENS`, the history sent is the newest that fits `AI_CONTEXT_CHARS`. Stop ends a reply
mid-stream, regenerate replaces the last reply. And the relay adds next to nothing to the model's own
time to first token (printed, not asserted: speed is a benchmark's job).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator

import pytest
import requests

from chat_service import create_app
from tests.chat.test_ws import create_session, stored_messages
from tests.conftest import base_environ
from tests.live import serve
from tests.live_probe import migrated_sqlite, release
from tests.real_model.conftest import N_CTX

MAX_TOKENS = 48


@pytest.fixture
def gemma_chat(llama, tmp_path) -> Iterator[str]:
    """chat_service (on SQLite alone: the model is the subject here, not the database) talking to it."""
    environ = base_environ(
        migrated_sqlite(tmp_path, base_environ),
        AI_PROVIDER="openai",
        OPENAI_BASE_URL=llama.url,
        OPENAI_API_KEY="not-needed",
        OPENAI_MODEL=llama.model,
        OPENAI_MAX_TOKENS=str(MAX_TOKENS),
        AI_CONTEXT_TOKENS=str(N_CTX - MAX_TOKENS - 400),  # the estimate errs long; keep a margin too
        PROVIDER_READ_TIMEOUT_SECONDS="120",
        TITLE_GENERATION="false",
    )
    app = create_app(environ)
    with serve(app) as base:
        yield base
    release(app)


def reply_to(socket, content: str, timeout: float = 120) -> dict:
    socket.send({"type": "message", "content": content})
    frames = socket.until("assistant_message", timeout=timeout)
    errors = [f for f in frames if f["type"] == "error"]
    assert not errors, errors
    return frames[-1]["data"]


LONG_QUESTION = (
    "Please describe, in as much detail as you can, how a bicycle works: the frame, the wheels, the "
    "chain, the gears, the brakes and how a rider keeps balance. "
) * 6


def test_a_long_conversation_keeps_working_within_the_models_window(gemma_chat, token, open_socket):
    sid = create_session(gemma_chat, token)
    socket = open_socket(gemma_chat, sid, ready=True)
    for n in range(6):
        reply = reply_to(socket, f"Question {n + 1}. {LONG_QUESTION}")
        assert reply["content"].strip()
        # llama.cpp's server reports no usage when streaming: bound the reply by its length instead
        # (a token is rarely more than a dozen characters).
        assert len(reply["content"]) <= MAX_TOKENS * 12, len(reply["content"])
    assert len(stored_messages(gemma_chat, token, sid)) == 12


PROMPT = "Say hello in one short sentence."
ROUNDS = 3


def direct_stream(llama) -> tuple[float, int, float]:
    """Straight from llama.cpp's server: seconds to the first token, tokens streamed, seconds in all."""
    started = time.monotonic()
    first, pieces = None, 0
    body = {"model": llama.model, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    body["max_tokens"] = MAX_TOKENS
    with requests.post(llama.url + "/chat/completions", json=body, stream=True, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = first or time.monotonic() - started
                    pieces += 1
    assert first is not None, "the model streamed no content"
    return first, pieces, time.monotonic() - started


def relayed_stream(socket) -> tuple[float, int, float]:
    """The same through chat_service's socket: seconds to the first delta, deltas, seconds in all."""
    started = time.monotonic()
    socket.send({"type": "message", "content": PROMPT})
    first, pieces = None, 0
    while (frame := socket.next(timeout=120))["type"] != "assistant_message":
        if frame["type"] == "delta":
            first = first or time.monotonic() - started
            pieces += 1
    assert first is not None, "no delta was relayed"
    return first, pieces, time.monotonic() - started


def test_stop_regenerate_and_the_relays_first_delta(gemma_chat, llama, token, open_socket):
    sid = create_session(gemma_chat, token)
    socket = open_socket(gemma_chat, sid, ready=True)
    direct, relayed = [], []
    for _ in range(ROUNDS):  # alternated; each relayed turn in a new session, so both send one prompt
        direct.append(direct_stream(llama))
        fresh = open_socket(gemma_chat, create_session(gemma_chat, token), ready=True)
        relayed.append(relayed_stream(fresh))
    for name, runs in (("direct", direct), ("through chat_service", relayed)):
        first = statistics.median(r[0] * 1000 for r in runs)
        rate = statistics.median(r[1] / r[2] for r in runs)
        print(f"\ngemma {name}: first token median {first:.0f} ms, {rate:.0f} pieces/s")

    socket.send({"type": "message", "content": "Count from one to one hundred, one number per line."})
    socket.until("delta", timeout=120)
    socket.send({"type": "stop"})
    stopped = socket.until("assistant_message", timeout=60)[-1]["data"]
    assert stopped["stopped"] is True

    socket.send({"type": "regenerate"})
    frames = socket.until("assistant_message", timeout=120)
    deleted = [f["data"]["message_id"] for f in frames if f["type"] == "message_deleted"]
    assert deleted == [stopped["message_id"]]
    regenerated = frames[-1]["data"]
    assert regenerated["stopped"] is False and regenerated["content"].strip()
    contents = [m["content"] for m in stored_messages(gemma_chat, token, sid)]
    assert contents[-2] == "Count from one to one hundred, one number per line."
    assert contents[-1] == regenerated["content"]

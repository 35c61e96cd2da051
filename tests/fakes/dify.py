"""A fake Dify (`/v1/chat-messages` and its stop endpoint) speaking DIFY.md's wire format."""

from __future__ import annotations

import json
import time
import uuid

from tests.fakes import ErrorReply, FakeServer, RecordedRequest, Reply, SSEReply

PING = b"event: ping\n\n"
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 3,
    "total_tokens": 15,
    "total_price": "0.0000150",
    "currency": "USD",
    "latency": 0.42,
}


def frame(payload: dict, legacy: bool = False) -> bytes:
    """One `data:` frame: compact raw UTF-8 (current Dify) or spaced `\\uXXXX` escapes (older Dify)."""
    text = json.dumps(payload) if legacy else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def dify_error(status: int, code: str, message: str, retry_after: str | None = None) -> ErrorReply:
    """Dify's error answer before a stream: `{"code", "message", "status"}`."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return ErrorReply(status, {"code": code, "message": message, "status": status}, headers)


class DifyTurn:
    """The frames of one Dify turn, sharing its conversation, message and task ids."""

    def __init__(
        self, conversation_id: str | None = None, task_id: str | None = None, legacy: bool = False
    ) -> None:
        self.conversation_id = conversation_id or str(uuid.uuid4())
        self.task_id = task_id or str(uuid.uuid4())
        self.message_id = str(uuid.uuid4())
        self.legacy = legacy

    def event(self, event: str, **fields: object) -> bytes:
        """Any frame, with the ids every frame carries (and `task_id`, except on `error`)."""
        payload: dict = {
            "event": event,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "created_at": int(time.time()),
        }
        if event != "error":
            payload["task_id"] = self.task_id
        payload.update(fields)
        return frame(payload, self.legacy)

    def message(self, answer: str, event: str = "message") -> bytes:
        return self.event(event, id=self.message_id, answer=answer)

    def replace(self, answer: str) -> bytes:
        return self.event("message_replace", answer=answer, reason="moderation")

    def end(self, usage: dict | None = None) -> bytes:
        return self.event("message_end", id=self.message_id, metadata={"usage": usage or USAGE})

    def error(self, message: str, code: str = "completion_request_error", status: int = 400) -> bytes:
        return self.event("error", status=status, code=code, message=message)

    def workflow(self, event: str, status: str = "succeeded", error: str | None = None) -> bytes:
        """Chatflow progress: `workflow_started`, `node_started`, `node_finished`, `workflow_finished`."""
        data = {"id": str(uuid.uuid4()), "workflow_id": "wf-1", "created_at": int(time.time())}
        if event in ("workflow_finished", "node_finished"):
            data.update(status=status, error=error, elapsed_time=0.1, outputs={"answer": ""})
        return self.event(event, workflow_run_id="run-1", data=data)

    def stream(self, parts: list[bytes | float], cut: bool = False) -> SSEReply:
        """These parts as a stream a stop call for this task can halt (it then ends with `message_end`)."""
        return SSEReply(parts, cut=cut, task_id=self.task_id, on_stop=[self.end()])

    def reply(self, *pieces: str, pings: int = 0, usage: dict | None = None) -> SSEReply:
        """A normal turn: `pings` keep-alives first, one `message` per piece, then `message_end`."""
        parts: list[bytes | float] = [PING] * pings
        parts += [self.message(piece) for piece in pieces]
        return self.stream([*parts, self.end(usage)])


class FakeDify(FakeServer):
    """Fake Dify: by default answers "Hello from Dify" in three pieces, continuing the asked conversation."""

    api_key = "app-test-key"

    def default_reply(self, request: RecordedRequest) -> Reply:
        return DifyTurn(request.json.get("conversation_id") or None).reply("Hello", " from", " Dify")

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == f"{self.prefix}/chat-messages"]

    @property
    def stop_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/stop")]

    def route(self, request: RecordedRequest) -> Reply:
        if not self.authorized(request):
            return dify_error(401, "unauthorized", "Access token is invalid")
        if request.path == f"{self.prefix}/chat-messages":
            return self.next_reply(request)
        parts = request.path.removeprefix(f"{self.prefix}/chat-messages/").split("/")
        if len(parts) == 2 and parts[1] == "stop":
            self.halt(parts[0])  # Dify obeys only the task's own user; the tests check the user sent
            return ErrorReply(200, {"result": "success"})
        return dify_error(404, "not_found", "The requested URL was not found on the server.")

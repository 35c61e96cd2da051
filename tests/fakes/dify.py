"""A fake Dify speaking DIFY.md's wire format: `/v1/chat-messages` (streamed) and its stop endpoint,
`GET /parameters`, `POST /conversations/{id}/name` and `DELETE /conversations/{id}`.

It keeps the conversations it streamed (by id, with their `user` and first query) so that the
naming and delete calls, and a continued turn, answer as Dify does: a conversation that was
deleted, forgotten (`forget`) or belongs to another user answers 404 `not_found`
"Conversation Not Exists."; one closed by `complete` answers 400 `conversation_completed`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

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
# Dify's usage carries more than we keep (unit prices); `normalize_usage` of this is `USAGE`.
FULL_USAGE = {
    "prompt_tokens": 12,
    "prompt_unit_price": "0.001",
    "prompt_price_unit": "0.001",
    "prompt_price": "0.0000120",
    "completion_tokens": 3,
    "completion_unit_price": "0.001",
    "completion_price_unit": "0.001",
    "completion_price": "0.0000030",
    "total_tokens": 15,
    "total_price": "0.0000150",
    "currency": "USD",
    "latency": 0.42,
}
NOT_EXISTS = "Conversation Not Exists."
DEFAULT_NAME = "New conversation"


def frame(payload: dict, legacy: bool = False) -> bytes:
    """One `data:` frame: compact raw UTF-8 (current Dify) or spaced `\\uXXXX` escapes (older Dify)."""
    text = json.dumps(payload) if legacy else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def dify_error(status: int, code: str, message: str, retry_after: str | None = None) -> ErrorReply:
    """Dify's error answer before a stream: `{"code", "message", "status"}`."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return ErrorReply(status, {"code": code, "message": message, "status": status}, headers)


def conversation_gone() -> ErrorReply:
    """Dify's answer about a conversation it does not know (any more)."""
    return dify_error(404, "not_found", NOT_EXISTS)


def conversation_completed() -> ErrorReply:
    return dify_error(400, "conversation_completed", "The conversation has ended. Please start a new one.")


def form_field(variable: str, *, kind: str = "text-input", required: bool = True, **extra: object) -> dict:
    """One item of `user_input_form`: `{kind: {"label", "variable", "required", "default", ...}}`."""
    spec: dict = {"label": variable.replace("_", " ").title(), "variable": variable, "required": required}
    spec["default"] = ""
    spec.update(extra)
    return {kind: spec}


def app_parameters(
    *form: dict,
    opening_statement: str = "",
    suggested_questions: list[str] | None = None,
    suggested_after_answer: bool = False,
) -> dict:
    """A whole `GET /parameters` answer with this input form."""
    return {
        "opening_statement": opening_statement,
        "suggested_questions": list(suggested_questions or []),
        "suggested_questions_after_answer": {"enabled": suggested_after_answer},
        "speech_to_text": {"enabled": False},
        "text_to_speech": {"enabled": False, "voice": "", "language": ""},
        "retriever_resource": {"enabled": True},
        "annotation_reply": {"enabled": False},
        "more_like_this": {"enabled": False},
        "sensitive_word_avoidance": {"enabled": False},
        "user_input_form": list(form),
        "file_upload": {"image": {"enabled": False, "number_limits": 3, "transfer_methods": ["local_file"]}},
        "system_parameters": {
            "file_size_limit": 15,
            "image_file_size_limit": 10,
            "audio_file_size_limit": 50,
            "video_file_size_limit": 100,
            "workflow_file_upload_limit": 10,
        },
    }


@dataclass
class DifyStreamReply(SSEReply):
    """A streamed Dify turn that names its conversation, so the fake knows the conversation exists."""

    conversation_id: str | None = None


class DifyTurn:
    """The frames of one Dify turn, sharing its conversation, message, task and workflow run ids."""

    def __init__(
        self, conversation_id: str | None = None, task_id: str | None = None, legacy: bool = False
    ) -> None:
        self.conversation_id = conversation_id or str(uuid.uuid4())
        self.task_id = task_id or str(uuid.uuid4())
        self.message_id = str(uuid.uuid4())
        self.workflow_run_id = str(uuid.uuid4())
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

    def agent_message(self, answer: str) -> bytes:
        return self.message(answer, event="agent_message")

    def agent_thought(self, thought: str = "", tool: str = "", position: int = 1) -> bytes:
        return self.event(
            "agent_thought",
            id=str(uuid.uuid4()),
            position=position,
            thought=thought,
            observation="",
            tool=tool,
            tool_input="",
            message_files=[],
        )

    def file_text(self, answer: str) -> bytes:
        """A text piece as Chatbot/Agent apps send it once a file came first: `message_file` + `answer`."""
        return self.event("message_file", id=self.message_id, answer=answer, from_variable_selector=None)

    def file(self, url: str, type: str = "image", file_id: str | None = None) -> bytes:
        """A file of the reply (e.g. a tool-generated image)."""
        return self.event(
            "message_file", id=file_id or str(uuid.uuid4()), type=type, belongs_to="assistant", url=url
        )

    def replace(self, answer: str) -> bytes:
        return self.event("message_replace", answer=answer, reason="moderation")

    def end(self, usage: dict | None = None, retriever_resources: list | None = None) -> bytes:
        metadata: dict = {"usage": usage or USAGE}
        if retriever_resources is not None:
            metadata["retriever_resources"] = retriever_resources
        return self.event("message_end", id=self.message_id, metadata=metadata, files=None)

    def error(self, message: str, code: str = "completion_request_error", status: int = 400) -> bytes:
        return self.event("error", status=status, code=code, message=message)

    def workflow(self, event: str, status: str = "succeeded", error: str | None = None) -> bytes:
        """Chatflow progress: `workflow_started`, `node_started`, `node_finished`, `workflow_finished`."""
        data = {"id": self.workflow_run_id, "workflow_id": "wf-1", "created_at": int(time.time())}
        if event in ("workflow_finished", "node_finished"):
            data.update(status=status, error=error, elapsed_time=0.1, outputs={"answer": ""})
        return self.event(event, workflow_run_id=self.workflow_run_id, data=data)

    def human_input_required(self, form_token: str | None = "form-token-1") -> bytes:
        """A Chatflow's Human Input node asks for a form (`form_token` null: Email delivery)."""
        return self.event(
            "human_input_required",
            workflow_run_id=self.workflow_run_id,
            data={
                "form_id": "form-1",
                "form_token": form_token,
                "node_id": "approval_node",
                "node_title": "Approval",
                "form_content": "Please review the draft.",
                "inputs": [{"type": "paragraph", "output_variable_name": "comment", "default": None}],
                "actions": [{"id": "approve", "title": "Approve", "button_style": "primary"}],
                "display_in_ui": False,
                "resolved_default_values": {"comment": ""},
                "expiration_time": int(time.time()) + 86400,
            },
        )

    def workflow_paused(self, form_token: str | None = "form-token-1") -> bytes:
        """The run pauses (the stream ends after this frame)."""
        reason = {"TYPE": "human_input_required", "form_id": "form-1", "form_token": form_token}
        return self.event(
            "workflow_paused",
            workflow_run_id=self.workflow_run_id,
            data={
                "workflow_run_id": self.workflow_run_id,
                "paused_nodes": ["approval_node"],
                "outputs": {},
                "reasons": [reason],
                "status": "paused",
                "created_at": int(time.time()),
                "elapsed_time": 0.5,
                "total_tokens": 0,
                "total_steps": 1,
            },
        )

    def stream(self, parts: list[bytes | float], cut: bool = False) -> DifyStreamReply:
        """These parts as a stream a stop call for this task can halt (it then ends with `message_end`)."""
        return DifyStreamReply(
            parts, cut=cut, task_id=self.task_id, on_stop=[self.end()], conversation_id=self.conversation_id
        )

    def reply(self, *pieces: str, pings: int = 0, usage: dict | None = None) -> DifyStreamReply:
        """A normal turn: `pings` keep-alives first, one `message` per piece, then `message_end`."""
        parts: list[bytes | float] = [PING] * pings
        parts += [self.message(piece) for piece in pieces]
        return self.stream([*parts, self.end(usage)])

    def new_agent_reply(self, *pieces: str, usage: dict | None = None) -> DifyStreamReply:
        """A New Agent app: a thought, `agent_message` pieces, then one closing `message` carrying the
        complete answer, then `message_end`."""
        parts: list[bytes | float] = [self.agent_thought("thinking")]
        parts += [self.agent_message(piece) for piece in pieces]
        return self.stream([*parts, self.message("".join(pieces)), self.end(usage)])

    def file_first_reply(self, url: str, *pieces: str) -> DifyStreamReply:
        """A Chatbot/Agent turn whose tool made a file before any text: the text then comes as
        `message_file` events with an `answer`."""
        parts = [self.file(url), *[self.file_text(piece) for piece in pieces]]
        return self.stream([*parts, self.end()])

    def paused_reply(self, *pieces: str, form_token: str | None = "form-token-1") -> DifyStreamReply:
        """A Chatflow that answers `pieces`, then pauses at a Human Input node: the stream ends at
        `workflow_paused`, with no `message_end`."""
        parts = [self.workflow("workflow_started"), *[self.message(piece) for piece in pieces]]
        parts += [self.human_input_required(form_token), self.workflow_paused(form_token)]
        return self.stream(parts)


@dataclass
class Conversation:
    """A conversation the fake streamed: whose it is, its first query, its name."""

    user: str
    first_query: str
    name: str = DEFAULT_NAME


DEFAULT_SUGGESTIONS = ["What else can you do?", "Can you give an example?", "Tell me more."]


class FakeDify(FakeServer):
    """Fake Dify: by default answers "Hello from Dify" in three pieces, continuing the asked conversation.

    Scriptable beyond `script` (the chat replies): `parameters` (the `GET /parameters` answer),
    `names` (conversation id -> the name `auto_generate` gives; default "Chat: <first query>"),
    `forget(id)` / `complete(id)` (the conversation answers 404 `not_found` / 400
    `conversation_completed`), and `script_for(endpoint, *replies)` to answer the next calls of
    "parameters", "name" or "delete" with given replies (e.g. `dify_error(500, ...)`).
    """

    api_key = "app-test-key"

    def __init__(self) -> None:
        super().__init__()
        self.parameters: dict = app_parameters()
        self.names: dict[str, str] = {}
        self.conversations: dict[str, Conversation] = {}
        self.forgotten: set[str] = set()
        self.completed: set[str] = set()
        self.deleted: set[str] = set()
        self.suggestions: dict[str, list[str]] = {}  # Dify message id -> its suggested questions
        self._endpoint_queues: dict[str, deque[Reply]] = {}

    def default_reply(self, request: RecordedRequest) -> Reply:
        return DifyTurn(request.json.get("conversation_id") or None).reply("Hello", " from", " Dify")

    # -- what tests look at --------------------------------------------------------------------------

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and self._path(r) == "/chat-messages"]

    @property
    def stop_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and self._path(r).endswith("/stop")]

    @property
    def parameters_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "GET" and self._path(r) == "/parameters"]

    @property
    def name_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and self._path(r).endswith("/name")]

    @property
    def feedback_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and self._path(r).endswith("/feedbacks")]

    @property
    def suggested_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "GET" and self._path(r).endswith("/suggested")]

    @property
    def delete_requests(self) -> list[RecordedRequest]:
        return [
            r for r in self.requests if r.method == "DELETE" and self._path(r).startswith("/conversations/")
        ]

    # -- scripting ---------------------------------------------------------------------------------

    def forget(self, conversation_id: str) -> None:
        """Dify no longer knows the conversation (a rotated key, a console delete, a cleanup)."""
        self.forgotten.add(conversation_id)

    def complete(self, conversation_id: str) -> None:
        """Dify closed the conversation: continuing it answers 400 `conversation_completed`."""
        self.completed.add(conversation_id)

    def script_for(self, endpoint: str, *replies: Reply) -> None:
        """Answer the next calls of `endpoint` ("parameters", "name", "delete", "feedbacks" or
        "suggested") with `replies`."""
        if endpoint not in ("parameters", "name", "delete", "feedbacks", "suggested"):
            raise ValueError(f"no such endpoint to script: {endpoint!r}")
        with self._lock:
            self._endpoint_queues.setdefault(endpoint, deque()).extend(replies)

    # -- answering -----------------------------------------------------------------------------------

    def _path(self, request: RecordedRequest) -> str:
        return urlsplit(request.path).path.removeprefix(self.prefix)

    def _scripted(self, endpoint: str) -> Reply | None:
        with self._lock:
            queue = self._endpoint_queues.get(endpoint)
            return queue.popleft() if queue else None

    def _refusal(self, conversation_id: str, user: str | None) -> ErrorReply | None:
        """Dify's answer when the conversation cannot be used by `user`; None when it can."""
        known = self.conversations.get(conversation_id)
        if conversation_id in self.forgotten or conversation_id in self.deleted:
            return conversation_gone()
        if known is not None and user is not None and known.user != user:
            return conversation_gone()  # conversations are scoped to their `user`
        if conversation_id in self.completed:
            return conversation_completed()
        return None

    def route(self, request: RecordedRequest) -> Reply:
        if not self.authorized(request):
            return dify_error(401, "unauthorized", "Access token is invalid")
        path, method = self._path(request), request.method
        if method == "POST" and path == "/chat-messages":
            return self._chat(request)
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 3 and parts[0] == "chat-messages" and parts[2] == "stop":
            self.halt(parts[1])  # Dify obeys only the task's own user; the tests check the user sent
            return ErrorReply(200, {"result": "success"})
        if method == "GET" and path == "/parameters":
            return self._scripted("parameters") or ErrorReply(200, self.parameters)
        if method == "POST" and len(parts) == 3 and parts[0] == "conversations" and parts[2] == "name":
            return self._name(unquote(parts[1]), request)
        if method == "DELETE" and len(parts) == 2 and parts[0] == "conversations":
            return self._delete(unquote(parts[1]), request)
        if method == "POST" and len(parts) == 3 and parts[0] == "messages" and parts[2] == "feedbacks":
            return self._scripted("feedbacks") or ErrorReply(200, {"result": "success"})
        if method == "GET" and len(parts) == 3 and parts[0] == "messages" and parts[2] == "suggested":
            questions = self.suggestions.get(unquote(parts[1]), DEFAULT_SUGGESTIONS)
            return self._scripted("suggested") or ErrorReply(200, {"result": "success", "data": questions})
        return dify_error(404, "not_found", "The requested URL was not found on the server.")

    def _chat(self, request: RecordedRequest) -> Reply:
        body = request.json
        asked = body.get("conversation_id") or None
        if asked is not None:
            refusal = self._refusal(asked, body.get("user"))
            if refusal is not None:
                return refusal
        reply = self.next_reply(request)
        if not isinstance(reply, SSEReply):
            return reply
        conversation_id = getattr(reply, "conversation_id", None) or asked
        if conversation_id and conversation_id not in self.conversations:
            with self._lock:
                self.conversations[conversation_id] = Conversation(
                    str(body.get("user") or ""), str(body.get("query") or "")
                )
        return reply

    def _name(self, conversation_id: str, request: RecordedRequest) -> Reply:
        scripted = self._scripted("name")
        if scripted is not None:
            return scripted
        body = request.json
        refusal = self._refusal(conversation_id, body.get("user"))
        if refusal is not None and refusal.status == 404:
            return refusal
        known = self.conversations.get(conversation_id)
        if body.get("auto_generate"):
            default = f"Chat: {known.first_query}"[:40] if known else DEFAULT_NAME
            name = self.names.get(conversation_id, default)
        elif isinstance(body.get("name"), str) and body["name"].strip():
            name = body["name"]
        else:
            return dify_error(400, "invalid_param", "name is required when auto_generate is false")
        if known is not None:
            known.name = name
        now = int(time.time())
        return ErrorReply(
            200,
            {
                "id": conversation_id,
                "name": name,
                "inputs": {},
                "status": "normal",
                "introduction": "",
                "created_at": now,
                "updated_at": now,
            },
        )

    def _delete(self, conversation_id: str, request: RecordedRequest) -> Reply:
        scripted = self._scripted("delete")
        if scripted is not None:
            return scripted
        refusal = self._refusal(conversation_id, request.json.get("user"))
        if refusal is not None and refusal.status == 404:
            return refusal
        with self._lock:
            self.deleted.add(conversation_id)
        return ErrorReply(204, "")

"""Loopback HTTP servers that play an AI provider, scripted per test (see `FakeServer`)."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from requests.structures import CaseInsensitiveDict


@dataclass
class RecordedRequest:
    """A request the fake received; `writes` holds the monotonic time of each piece of its reply.

    `client_closed_at` is the monotonic time the fake saw the client close (or reset) the connection
    while the reply was still streaming (noticed within ~20 ms, even during a sleep); None otherwise."""

    method: str
    path: str
    headers: CaseInsensitiveDict
    body: bytes
    writes: list[float] = field(default_factory=list)
    client_closed_at: float | None = None

    @property
    def json(self) -> dict:
        return json.loads(self.body or b"{}")


@dataclass
class SSEReply:
    """HTTP 200 `text/event-stream`, chunked. `parts`: bytes are sent (and flushed) as they stand,
    a float sleeps that many seconds (cut short by a stop or the server closing).
    `cut` drops the connection after the parts instead of ending the stream.
    `task_id` lets a stop call for that task halt the sleeps and jump to `on_stop`."""

    parts: list[bytes | float]
    cut: bool = False
    task_id: str | None = None
    on_stop: list[bytes] = field(default_factory=list)


@dataclass
class ErrorReply:
    """An HTTP error answer with a JSON (dict) or raw body."""

    status: int
    body: dict | str = ""
    headers: dict = field(default_factory=dict)


@dataclass
class Drop:
    """Close the connection without any answer (what a crashed upstream looks like)."""


Reply = SSEReply | ErrorReply | Drop


def endless_line(start: bytes, total_bytes: int, piece_bytes: int = 65536) -> list[bytes | float]:
    """SSE parts for one line of `total_bytes` that starts with `start` and has no end in sight
    (the same piece object repeated, so a 60 MiB line costs the fake no memory)."""
    piece = b"x" * piece_bytes
    return [start, *[piece] * (total_bytes // piece_bytes)]


ReplyMaker = Callable[[RecordedRequest], Reply]


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 and a free port; use it as a context manager.

    `script(r1, r2, ...)` queues the replies to the next calls of the main endpoint (a reply or a
    function of the `RecordedRequest`); when the queue is empty `default` answers. `requests` lists
    every request received, in order.
    """

    api_key = "test-key"
    prefix = "/v1"

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.default: ReplyMaker = self.default_reply
        self._queue: deque[Reply | ReplyMaker] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._halts: dict[str, threading.Event] = {}
        self._connections: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = False  # joined on close: no thread outlives the fake
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL a provider is configured with (ends in /v1)."""
        return f"http://127.0.0.1:{self._server.server_port}{self.prefix}"

    def script(self, *replies: Reply | ReplyMaker) -> None:
        with self._lock:
            self._queue.extend(replies)

    def default_reply(self, request: RecordedRequest) -> Reply:
        raise NotImplementedError

    def route(self, request: RecordedRequest) -> Reply:
        """The reply to a request; subclasses add endpoints and call `next_reply` for the main one."""
        raise NotImplementedError

    def next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            scripted = self._queue.popleft() if self._queue else self.default
        return scripted(request) if callable(scripted) else scripted

    def halt(self, task_id: str) -> bool:
        """Cut a running stream's sleeps short (as a stop call does); False if no such stream."""
        with self._lock:
            event = self._halts.get(task_id)
        if event is not None:
            event.set()
        return event is not None

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float = 5.0) -> None:
        """Block until `predicate(requests)` holds (for calls made by another thread)."""
        deadline = time.monotonic() + timeout
        while not predicate(list(self.requests)):
            if time.monotonic() > deadline:
                raise AssertionError(f"the fake never saw the expected requests: {self.requests}")
            time.sleep(0.01)

    def authorized(self, request: RecordedRequest) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def __enter__(self) -> FakeServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name=type(self).__name__
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, end every open connection and join every thread."""
        self._closing.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_POST(self) -> None:
                self._serve("POST")

            def do_GET(self) -> None:
                self._serve("GET")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def _serve(self, method: str) -> None:
                """Record the request, then answer it with what `route` says (any method)."""
                length = int(self.headers.get("Content-Length") or 0)
                request = RecordedRequest(
                    method, self.path, CaseInsensitiveDict(self.headers.items()), self.rfile.read(length)
                )
                with fake._lock:
                    fake.requests.append(request)
                try:
                    fake._answer(self, request, fake.route(request))
                except (BrokenPipeError, ConnectionResetError):
                    if request.client_closed_at is None:
                        request.client_closed_at = time.monotonic()
                    self.close_connection = True  # the client went away: nothing to finish

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler, request: RecordedRequest, reply: Reply) -> None:
        if isinstance(reply, Drop):
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
        elif isinstance(reply, ErrorReply):
            body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            data = body.encode()
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json" if body.startswith("{") else "text/plain")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        else:
            self._stream(handler, request, reply)

    def _stream(self, handler: BaseHTTPRequestHandler, request: RecordedRequest, reply: SSEReply) -> None:
        halt = threading.Event()
        if reply.task_id:
            with self._lock:
                self._halts[reply.task_id] = halt
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.flush()

        def send(data: bytes) -> None:
            request.writes.append(time.monotonic())
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()

        def client_gone() -> bool:
            """The client closed or reset its end (it sends nothing else while a reply streams)."""
            if request.client_closed_at is None and _closed_by_peer(handler.connection):
                request.client_closed_at = time.monotonic()
            return request.client_closed_at is not None

        try:
            for part in reply.parts:
                if halt.is_set() or self._closing.is_set() or client_gone():
                    break
                if isinstance(part, bytes):
                    send(part)
                elif _sleep(part, halt, self._closing, gone=client_gone):
                    break
            if request.client_closed_at is not None:
                handler.close_connection = True
                return
            if halt.is_set():
                for data in reply.on_stop:
                    send(data)
            if reply.cut or self._closing.is_set():
                handler.close_connection = True
                return
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        finally:
            if reply.task_id:
                with self._lock:
                    self._halts.pop(reply.task_id, None)


def _sleep(seconds: float, *wake: threading.Event, gone: Callable[[], bool] | None = None) -> bool:
    """Sleep, or return True as soon as one of `wake` is set (or `gone()` holds)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if any(event.wait(min(left, 0.02)) for event in wake):
            return True
        if gone is not None and gone():
            return True
    return any(event.is_set() for event in wake)


def _closed_by_peer(connection: socket.socket) -> bool:
    """True when the peer has closed or reset the connection (readable, and reading finds its end)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return False
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True

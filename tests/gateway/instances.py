"""Three chat_service instances behind a real nginx gateway, on loopback with Redis: what a deployment
with three replicas runs, in miniature.

- `databases`: one chat database shared by every instance and one conversation database (PostgreSQL
  when TEST_POSTGRES_URL is set, else SQLite files), migrated to head;
- `Instances`: three chat_service instances under gunicorn with the production config (one gevent
  worker each), kept across a module's tests, an instance a test stopped replaced by a new one;
- `cluster`: a new nginx from the gateway template in front of them, all three in the chat upstream
  (the template's `server ${CHAT_UPSTREAM};` rendered as three `server` lines), and conversation_service;
- `Cluster.place`: sockets opened through the gateway, one per instance, each one's instance found by
  the instances' own `ws_open_sockets` gauges (nginx logs a socket's upstream only once it closes);
- `KeptAlive`: one keep-alive connection to an instance, as nginx keeps them for its upstreams, on
  which a WebSocket handshake can be sent later (after the instance was told to stop, say).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from chat_service import create_app as create_chat_app
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from tests.conftest import base_environ
from tests.databases import DatabaseServer, migrated_database
from tests.gateway.conftest import host_port
from tests.gateway.nginx import run_gateway
from tests.live import Socket, serve
from tests.live_probe import RawSocket, eventually, open_sockets, production_server
from tests.processes import ServerProcess

INSTANCES = 3


# --- databases and the services around the instances -------------------------------------------------


def backend() -> str:
    """PostgreSQL when the run has one (what three replicas share in production), else SQLite."""
    return "postgresql" if os.environ.get("TEST_POSTGRES_URL") else "sqlite"


@contextmanager
def databases(directory: Path) -> Iterator[tuple[str, str]]:
    """(chat URL, conversation URL): new databases migrated to head, dropped afterwards."""
    server = DatabaseServer(backend(), directory)
    try:
        chat = migrated_database(server, "chat_gw", create_chat_app, chat_db, base_environ)
        conversation = migrated_database(
            server, "conversation_gw", create_conversation_app, conversation_db, base_environ
        )
        yield chat, conversation
    finally:
        server.drop_all()


@contextmanager
def conversation_service(database_url: str) -> Iterator[str]:
    """conversation_service in this process, behind one trusted proxy as compose runs it; its URL."""
    app = create_conversation_app(base_environ(database_url, TRUSTED_PROXIES="1"))
    try:
        with serve(app) as url:
            yield url
    finally:
        with app.app_context():
            conversation_db.engine.dispose()


# --- the cluster -------------------------------------------------------------------------------------


@dataclass
class Cluster:
    gateway: str  # nginx's base URL: the only address a client uses
    instances: list[ServerProcess]  # each instance's own address: /metrics, and signals to its master
    access_log: Path  # nginx's JSON access log (the template's `gateway` format)
    token: Callable[..., str]
    sockets: list[Socket] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)  # what the test created (Redis keys to forget)

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return requests.request(method, self.gateway + path, headers=headers, timeout=10, **kwargs)

    def data(self, method: str, path: str, **kwargs):
        """The envelope's `data` of a successful call through the gateway."""
        response = self.rest(method, path, **kwargs)
        assert response.status_code == 200, (response.status_code, response.text[:300])
        return response.json()["data"]

    def new_session(self) -> str:
        self.session_ids.append(self.data("POST", "/api/chat/session", json={})["session_id"])
        return self.session_ids[-1]

    def connect(self, session_id: str) -> Socket:
        """A socket through the gateway, subscribed on whichever instance nginx picked (a ping answered);
        its `seen` keeps what came before the pong (a `turn_state`, live frames)."""
        url = self.gateway.replace("http", "ws", 1) + f"/ws/{session_id}"
        socket = Socket(url, headers={"Authorization": f"Bearer {self.token()}"})
        self.sockets.append(socket)
        socket.send({"type": "ping"})
        assert socket.until("pong")[-1]["type"] == "pong"
        socket.seen = [frame for frame in socket.seen if frame["type"] != "pong"]
        return socket

    def gauges(self, among: list[int] | None = None) -> dict[int, float]:
        """Each running instance's `ws_open_sockets`, by index."""
        indexes = range(len(self.instances)) if among is None else among
        return {i: open_sockets(self.instances[i].url) for i in indexes}

    def connect_and_locate(self, session_id: str, among: list[int] | None = None) -> tuple[Socket, int]:
        """A socket through the gateway, and the index of the instance holding it (its gauge rose)."""
        before = self.gauges(among)
        socket = self.connect(session_id)
        after = self.gauges(among)
        [index] = [i for i in after if after[i] == before[i] + 1] or [None]
        assert index is not None, f"no instance of {sorted(after)} took the socket: {before} -> {after}"
        return socket, index

    def place(self, session_id: str) -> dict[int, Socket]:
        """One socket per instance, all opened through the gateway one after another (nginx's round
        robin spreads them); fails if nginx put two on one instance."""
        placed: dict[int, Socket] = {}
        for _ in range(INSTANCES):
            socket, index = self.connect_and_locate(session_id)
            assert index not in placed, f"nginx put two sockets on instance {index}"
            placed[index] = socket
        return placed

    def upstream_port(self, index: int) -> str:
        return host_port(self.instances[index].url)


class Instances:
    """A module's chat_service instances, kept from test to test: booting one costs seconds of CPU
    (more with three at once on two cores), so only those a test stopped are replaced, by new ones."""

    def __init__(self, environ: dict[str, str], directory: Path) -> None:
        self._environ = environ
        self._directory = directory
        self._booted = 0
        self._slots: list[tuple[contextlib.AbstractContextManager, ServerProcess] | None] = [None] * INSTANCES

    def running(self) -> list[ServerProcess]:
        """Three running instances: the ones still up, and new ones (booted side by side) for the rest."""
        for slot in self._slots:
            if slot is not None and slot[1].process.poll() is not None:
                slot[0].__exit__(None, None, None)  # its log closed; the process is already gone
        missing = [
            i for i, slot in enumerate(self._slots) if slot is None or slot[1].process.poll() is not None
        ]
        contexts = {i: production_server(self._environ, self._next_log()) for i in missing}
        with ThreadPoolExecutor(max(1, len(contexts))) as pool:
            outcomes = {i: pool.submit(context.__enter__) for i, context in contexts.items()}
        for i, outcome in outcomes.items():
            self._slots[i] = None if outcome.exception() else (contexts[i], outcome.result())
        for outcome in outcomes.values():
            if outcome.exception() is not None:
                raise outcome.exception()
        return [slot[1] for slot in self._slots if slot is not None]

    def close(self) -> None:
        """Stop them all at once (each waits for its own turns), then wait for each."""
        live = [slot for slot in self._slots if slot is not None]
        for _context, server in live:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        for context, _server in live:
            context.__exit__(None, None, None)
        self._slots = [None] * INSTANCES

    def _next_log(self) -> Path:
        self._booted += 1
        return self._directory / f"chat-{self._booted}.log"


@contextmanager
def cluster(
    nginx: str,
    prefix: Path,
    instances: Instances,
    conversation_url: str,
    token: Callable[..., str],
) -> Iterator[Cluster]:
    """Three chat_service instances on one database and Redis, behind a new nginx (one that has not
    seen any instance fail: `max_fails`/`fail_timeout` would keep it off a replaced one for 10 s)."""
    running = instances.running()
    eventually(
        lambda: all(open_sockets(server.url) == 0 for server in running),
        10,
        what="no socket left open from before (each instance's gauge at 0)",
    )
    upstreams = {
        # Three `server` lines in `upstream chat_service`, as a deployment with three instances writes.
        "CHAT_UPSTREAM": "; server ".join(host_port(server.url) for server in running),
        "CONVERSATION_UPSTREAM": host_port(conversation_url),
    }
    with run_gateway(nginx, prefix / "nginx", upstreams) as gateway:
        deployed = Cluster(gateway, running, prefix / "nginx" / "access.log", token)
        try:
            yield deployed
        finally:
            for socket in deployed.sockets:
                socket.close()


class KeptAlive(RawSocket):
    """A keep-alive HTTP/1.1 connection to an instance, as nginx keeps up to 16 per upstream
    (`keepalive 16`) and reuses for any request, a WebSocket handshake included: a request answered now,
    an upgrade sent on the same connection later; then `drain()` reads the socket's frames."""

    def __init__(self, base_url: str) -> None:  # RawSocket's __init__ would send a handshake at once
        parts = urlsplit(base_url)
        self.host = parts.netloc
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
        self._buffer = b""
        self.closed_by_peer = False

    def get(self, path: str) -> int:
        """A GET answered on this connection, which stays open; its status."""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        status, headers = self._head()
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            self._buffer += self._receive()
        self._buffer = self._buffer[length:]
        return status

    def upgrade(self, path: str, headers: dict[str, str]) -> int:
        """A WebSocket handshake on this connection; its status (101: frames follow)."""
        key = base64.b64encode(os.urandom(16)).decode()
        request = [
            f"GET {path} HTTP/1.1",
            f"Host: {self.host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(request) + "\r\n\r\n").encode())
        return self._head()[0]

    def _head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._receive()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(":", 1) for line in lines)
        return int(status_line.split()[1]), {k.strip().lower(): v.strip() for k, v in fields.items()}

    def _receive(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the instance closed the connection: {self._buffer[:200]!r}")
        return chunk

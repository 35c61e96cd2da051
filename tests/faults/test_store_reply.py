"""The database goes away while an AI reply streams: the reply is never lost (PostgreSQL and MariaDB).

chat_service runs under the production gunicorn config and reaches its database through a TcpProxy.
The turn's reply streams while the database is cut; storing it is retried for `STORE_RETRY_SECONDS`.

- The cut lasts longer than that: every socket of the session gets an `error` frame 12001 that carries
  the whole reply (`data.content`) and its `turn_id`, so the client still has it; the log says so in
  JSON, under the traceId the client sent in its handshake, and holds no bare traceback.
- The cut heals within it: the reply is stored and announced (`assistant_message`) as if nothing happened.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chat_service import create_app as create_chat_app
from chat_service.extensions import db as chat_db
from tests.chat.test_ws import create_session, stored_messages
from tests.conftest import base_environ
from tests.databases import clear_tables
from tests.faults.conftest import proxy_for, through
from tests.faults.proxy import BLACKHOLE, REFUSE, TcpProxy
from tests.live_probe import foreign_lines, log_lines, log_size, production_server, release
from tests.processes import ServerProcess

TEXT = "one two three four five six seven eight nine ten"  # ten pieces, 0.2 s apart: a 2 s reply
BOUND_SECONDS = 20  # reply 2 s + retries 2 s + a connect timeout (3 s) or two, generous for CI


@pytest.fixture
def proxy(networked, chat_database) -> Iterator[TcpProxy]:
    """The chat database behind a proxy; its tables are emptied afterwards (read directly)."""
    with proxy_for(chat_database) as proxy:
        yield proxy
        proxy.restore()
    app = create_chat_app(base_environ(chat_database))
    with app.app_context():
        clear_tables(chat_db, ["chat_messages", "chat_sessions"])
        chat_db.engine.dispose()
    release(app)


@contextmanager
def server_through(
    proxy: TcpProxy, chat_database: str, log: Path, store_retry: float
) -> Iterator[ServerProcess]:
    environ = base_environ(
        through(chat_database, proxy),
        ECHO_DELAY_SECONDS="0.2",
        STORE_RETRY_SECONDS=str(store_retry),
        LOG_LEVEL="INFO",
    )
    with production_server(environ, log) as server:
        yield server


def deltas(frames: list[dict]) -> str:
    return "".join(f["data"]["content"] for f in frames if f["type"] == "delta")


@pytest.mark.parametrize("mode", [REFUSE, BLACKHOLE])
def test_a_reply_that_cannot_be_stored_reaches_every_socket_in_an_error_frame(
    proxy, chat_database, tmp_path, token, open_socket, mode
):
    log = tmp_path / "chat.log"
    trace_id = uuid.uuid4().hex
    with server_through(proxy, chat_database, log, store_retry=2) as server:
        sid = create_session(server.url, token)
        headers = {"Authorization": f"Bearer {token()}", "X-Trace-Id": trace_id}
        sender = open_socket(server.url, sid, ready=True, headers=headers)
        other = open_socket(server.url, sid, ready=True)
        sender.send({"type": "message", "content": TEXT})
        first = sender.until("delta")
        turn_id = first[-1]["data"]["turn_id"]
        cut_at = log_size(log)
        proxy.cut(mode)

        for socket in (sender, other):
            frames = socket.seen[:]
            frames += socket.until("error", timeout=BOUND_SECONDS)
            error = frames[-1]
            assert error["code"] == 12001, error
            assert error["data"]["content"] == TEXT, error
            assert error["data"]["turn_id"] == turn_id, error
            assert deltas(frames) == TEXT
            assert "assistant_message" not in [f["type"] for f in frames]
        proxy.restore()

    lines = log_lines(log)
    assert foreign_lines(lines) == [], "the log holds lines that are not JSON"
    failure = [
        line.fields
        for line in log_lines(log, cut_at)
        if line.get("traceId") == trace_id and line.get("level") in ("WARNING", "ERROR", "CRITICAL")
    ]
    assert failure, "no JSON line about the failed store carries the client's traceId"


@pytest.mark.parametrize("mode", [REFUSE, BLACKHOLE])
def test_a_cut_that_heals_within_the_retries_stores_the_reply(
    proxy, chat_database, tmp_path, token, open_socket, mode
):
    log = tmp_path / "chat.log"
    with server_through(proxy, chat_database, log, store_retry=10) as server:
        sid = create_session(server.url, token)
        sender = open_socket(server.url, sid, ready=True)
        other = open_socket(server.url, sid, ready=True)
        sender.send({"type": "message", "content": TEXT})
        sender.until("delta")
        proxy.cut(mode)
        # The whole reply streams while the database is away; it comes back a moment later.
        while deltas(sender.seen) != TEXT:
            sender.until("delta", timeout=5)
        time.sleep(1)
        proxy.restore()

        for socket in (sender, other):
            frames = socket.seen[:]
            frames += socket.until("assistant_message", timeout=BOUND_SECONDS)
            assert "error" not in [f["type"] for f in frames], frames
            assert frames[-1]["data"]["content"] == TEXT
            assert frames[-1]["data"]["message_id"] is not None
        assert [(m["role"], m["content"]) for m in stored_messages(server.url, token, sid)] == [
            ("user", TEXT),
            ("assistant", TEXT),
        ]
    assert foreign_lines(log_lines(log)) == [], "the log holds lines that are not JSON"

"""Graceful shutdown under the production gunicorn config: sockets are told, turns are finished."""

from __future__ import annotations

import signal

import sqlalchemy as sa

from chat_service.models import ChatMessage
from tests.chat.test_ws import create_session
from tests.conftest import base_environ
from tests.processes import gunicorn_process


def test_sigterm_closes_sockets_with_1001_and_stores_the_reply_in_flight(
    clean_chat_database, token, open_socket
):
    chat_database = clean_chat_database
    environ = base_environ(chat_database, ECHO_DELAY_SECONDS="0.15", GRACEFUL_TIMEOUT="10")
    with gunicorn_process(
        "chat_service:create_app()", environ, worker=["-c", "chat_service/gunicorn.conf.py"]
    ) as server:
        sid = create_session(server.url, token)
        socket = open_socket(server.url, sid, ready=True)
        text = "one two three four five six seven eight"
        socket.send({"type": "message", "content": text})
        socket.until("delta")
        server.process.send_signal(signal.SIGTERM)
        assert socket.closed_with(timeout=5) == 1001
        assert server.process.wait(timeout=15) == 0
    engine = sa.create_engine(chat_database)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(ChatMessage.role, ChatMessage.content).where(ChatMessage.session_id == sid)
            ).all()
    finally:
        engine.dispose()
    assert sorted(rows) == [("assistant", text), ("user", text)]

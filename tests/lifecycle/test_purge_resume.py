"""`flask --app chat_service purge` killed with SIGKILL mid-way leaves a consistent database (every batch
committed whole or not at all), and the next run finishes the job; live data is never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from chat_service.extensions import db as chat_db
from chat_service.models import ChatMessage, ChatSession
from tests.conftest import ALICE, base_environ
from tests.lifecycle import restore_fixtures
from tests.lifecycle.restore_fixtures import WINDOW_DAYS, chat_rows, deleted_at_ago

FLASK = Path(sys.executable).with_name("flask")
ROOT = Path(__file__).resolve().parents[2]
SESSIONS, MESSAGES = 20, 100  # 2,000 expired messages: 2,000 one-row batches, seconds of work

lifecycle_stack = restore_fixtures.lifecycle_stack


def insert_sessions(app, count: int, messages: int, *, deleted_at=None) -> list[str]:
    """`count` sessions of ALICE's with `messages` messages each, written straight to the tables
    (deleted at `deleted_at`, session and messages alike, when given)."""
    sids = [str(uuid.uuid4()) for _ in range(count)]
    now = deleted_at_ago(0)
    deleted = {"is_deleted": deleted_at is not None, "deleted_at": deleted_at}
    with app.app_context(), chat_db.engine.begin() as connection:  # Core: no ORM hooks, one transaction
        connection.execute(
            sa.insert(ChatSession.__table__),
            [
                {"session_id": sid, "user_id": ALICE, "title": "bulk", "message_count": messages}
                | {"created_at": now, "updated_at": now}
                | deleted
                for sid in sids
            ],
        )
        connection.execute(
            sa.insert(ChatMessage.__table__),
            [
                {"session_id": sid, "role": "user", "content": f"m{n}", "created_at": now, "updated_at": now}
                | deleted
                for sid in sids
                for n in range(messages)
            ],
        )
    return sids


def purge_process(stack, batch_size: int) -> subprocess.Popen:
    environ = base_environ(
        stack.chat_database,
        CONVERSATION_SERVICE_URL=stack.conversation_url,
        PURGE_BATCH_SIZE=str(batch_size),
        PATH=os.environ.get("PATH", ""),
    )
    return subprocess.Popen(
        [str(FLASK), "--app", "chat_service", "purge"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def count(app, model) -> int:
    [(n,)] = chat_rows(app, sa.select(sa.func.count()).select_from(model))
    return n


def test_a_purge_killed_mid_way_is_consistent_and_the_next_run_finishes(lifecycle_stack):
    lifecycle_stack.start_conversation()
    app = lifecycle_stack.chat_app(OUTBOX_WORKER="false")  # nothing serving: only the purge processes
    expired = insert_sessions(app, SESSIONS, MESSAGES, deleted_at=deleted_at_ago(WINDOW_DAYS + 1))
    live = insert_sessions(app, 2, 10)
    total = count(app, ChatMessage)

    process = purge_process(lifecycle_stack, 1)
    deadline = time.monotonic() + 60
    while count(app, ChatMessage) > total - 200:  # well under way, far from done
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the purge made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL

    left = count(app, ChatMessage)
    assert 20 < left < total - 200 + 1  # stopped part-way
    assert count(app, ChatSession) == SESSIONS + 2  # no session went before its messages
    live_messages = sa.select(sa.func.count()).where(ChatMessage.session_id.in_(live))
    assert chat_rows(app, live_messages) == [(20,)]

    finished = purge_process(lifecycle_stack, 50)
    output, errors = finished.communicate(timeout=120)
    assert finished.returncode == 0, errors
    assert f"and {SESSIONS} sessions" in output
    assert {row.session_id for row in chat_rows(app, sa.select(ChatSession.session_id))} == set(live)
    assert count(app, ChatMessage) == 20
    assert not set(expired) & {row.session_id for row in chat_rows(app, sa.select(ChatMessage.session_id))}

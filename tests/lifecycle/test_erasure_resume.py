"""An erasure killed with SIGKILL in the middle (a Dify conversation deleted, its session not yet) is
finished by running the command again: nothing forgotten, nothing counted twice in the database's rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from chat_service.extensions import db as chat_db
from chat_service.models import ChatMessage, ChatSession, utcnow
from conversation_service.extensions import db as conversation_db
from conversation_service.models import AiConversation
from tests.conftest import ALICE, BOB
from tests.fakes.dify import FakeDify
from tests.lifecycle import erasure_fixtures

world = erasure_fixtures.world  # the fixture

ROOT = Path(__file__).resolve().parents[2]
SESSIONS, MESSAGES_EACH, KILL_AT = 60, 8, 12


def seed(world, user: str, sessions: int) -> list[str]:
    """`sessions` sessions of `user` (every other one linked to Dify) with their messages and records,
    written straight to the databases (fast); the Dify ids."""
    now = utcnow()
    dify_ids = []
    with world.chat.app.app_context():
        for n in range(sessions):
            sid = str(uuid.uuid4())
            dify = f"d-{user[-3:]}-{n}" if n % 2 == 0 else None
            dify_ids += [dify] if dify else []
            chat_db.session.add(
                ChatSession(
                    session_id=sid,
                    user_id=user,
                    title=f"t{n}",
                    created_at=now,
                    updated_at=now,
                    dify_conversation_id=dify,
                )
            )
            chat_db.session.flush()
            chat_db.session.add_all(
                ChatMessage(session_id=sid, role="user", content=f"m{n}-{i}", created_at=now, updated_at=now)
                for i in range(MESSAGES_EACH)
            )
        chat_db.session.commit()
        chat_db.session.remove()
    with world.conv.app.app_context():
        base = int(uuid.uuid4().int % 10**15) * 1000
        conversation_db.session.add_all(
            AiConversation(id=base + i, user_id=user, title=f"r{i}", dify_conversation_id=dify)
            for i, dify in enumerate([*dify_ids, None, None])
        )
        conversation_db.session.commit()
        conversation_db.session.remove()
    return dify_ids


class KillingDify(FakeDify):
    """The fake Dify, which kills the erasing process with SIGKILL right after the `KILL_AT`th
    conversation it deleted (before answering): the worst moment, Dify done and the row still there."""

    process: subprocess.Popen | None = None

    def _delete(self, conversation_id, request):
        reply = super()._delete(conversation_id, request)
        if self.process is not None and len(self.deleted) == KILL_AT:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process = None
        return reply


def erase_in_a_process(world, dify: KillingDify | None = None) -> subprocess.CompletedProcess | int:
    environ = {**os.environ, **world.chat_environ(PURGE_BATCH_SIZE="3")}
    command = [sys.executable, "-m", "flask", "--app", "chat_service", "erase-user", ALICE]
    process = subprocess.Popen(
        command, env=environ, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if dify is not None:
        dify.process = process
    output, _ = process.communicate(timeout=120)
    return process.returncode, output.decode()


def counted(world, user: str) -> dict[str, int]:
    rows = world.chat_rows(user) | world.conversation_rows(user)
    return {
        name: n for name, n in rows.items() if name in ("chat_sessions", "chat_messages", "ai_conversations")
    }


def test_a_killed_erasure_is_finished_by_running_it_again(chat_database, conversation_database):
    with (
        KillingDify() as dify,
        erasure_fixtures.running_world(chat_database, conversation_database, dify) as w,
    ):
        dify_ids = seed(w, ALICE, SESSIONS)
        seed(w, BOB, 3)
        bob = counted(w, BOB)

        code, output = erase_in_a_process(w, dify)

        assert code == -signal.SIGKILL, output
        left = counted(w, ALICE)
        assert 0 < left["chat_sessions"] < SESSIONS, left  # killed half-way
        assert w.chat_tombstone()["finished_at"] == "None"

        code, output = erase_in_a_process(w)

        assert code == 0, output
        assert counted(w, ALICE) == {"chat_sessions": 0, "chat_messages": 0, "ai_conversations": 0}
        assert w.chat_rows(ALICE)["chat_sync_outbox"] == 0
        assert set(dify_ids) <= dify.deleted  # none forgotten, the one deleted at the kill included
        assert {r.json["user"] for r in dify.delete_requests} == {ALICE}
        totals = w.chat_tombstone()["counts"]
        # Rows are counted in the transaction that deletes them: exact across the kill.
        assert (totals["chat_sessions"], totals["chat_messages"]) == (SESSIONS, SESSIONS * MESSAGES_EACH)
        assert totals["dify_conversations"] >= len(dify_ids)
        assert counted(w, BOB) == bob


def test_the_rows_counted_are_the_rows_removed(world):
    """No kill: the tombstone's counts equal what was there."""
    dify_ids = seed(world, ALICE, 7)
    with world.chat.app.app_context():
        assert (
            chat_db.session.scalar(sa.select(sa.func.count()).select_from(ChatMessage)) == 7 * MESSAGES_EACH
        )
        chat_db.session.remove()
    result = world.erase(ALICE)
    assert result.exit_code == 0, result.output
    assert world.chat_tombstone()["counts"] == {
        "ai_conversations": len(dify_ids) + 2,
        "chat_messages": 7 * MESSAGES_EACH,
        "chat_sessions": 7,
        "dify_conversations": len(dify_ids),
    }

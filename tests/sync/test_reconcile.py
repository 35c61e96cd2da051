"""`flask --app chat_service reconcile [--user]`: drift made by writing one side directly (nothing in
either outbox) is found, repaired in the right direction, and printed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from chat_service.extensions import db as chat_db
from chat_service.models import OUTBOX, ChatSession, epoch_ms
from conversation_service.extensions import db as conversation_db
from conversation_service.models import AiConversation
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, BOB
from tests.sync.conftest import record_state


@pytest.fixture
def quiet(stack):
    """Both services, no worker delivering on its own: only what the test drains, and reconcile."""
    stack.start_conversation(OUTBOX_WORKER="false")
    chat = stack.start_chat(OUTBOX_WORKER="false")
    return stack, chat, ApiClient(chat, default_user=ALICE)


def new_session(client: ApiClient, title: str, user: str = ALICE) -> str:
    return envelope(client.post("/api/chat/session", json={"title": title}, user=user), 200)["session_id"]


def drop_chat_outbox(app) -> None:
    with app.app_context():
        chat_db.session.execute(sa.delete(OUTBOX))
        chat_db.session.commit()
        chat_db.session.remove()


def write_record(app, session_id: str, **values) -> None:
    with app.app_context():
        conversation_db.session.execute(
            sa.update(AiConversation).where(AiConversation.chat_session_id == session_id).values(**values)
        )
        conversation_db.session.commit()
        conversation_db.session.remove()


def write_session(app, session_id: str, **values) -> None:
    with app.app_context():
        chat_db.session.execute(
            sa.update(ChatSession).where(ChatSession.session_id == session_id).values(**values)
        )
        chat_db.session.commit()
        chat_db.session.remove()


def reconcile(app, *args: str):
    result = app.test_cli_runner().invoke(args=["reconcile", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_reconcile_repairs_drift_both_ways_and_prints_it(quiet):
    stack, chat, client = quiet
    in_sync = new_session(client, "一致")
    renamed_there = new_session(client, "会话里的")
    deleted_there = new_session(client, "记录删了")
    deleted_here = new_session(client, "会话删了")
    renamed_here = new_session(client, "旧标题")
    assert chat.extensions["outbox"].drain(timeout=10) == 0  # every record made

    conversation = stack.conversation.app
    write_record(conversation, renamed_there, title="记录里改的", title_version=epoch_ms() + 1000)
    write_record(conversation, deleted_there, is_deleted=True, delete_token=AiConversation.id)
    write_session(chat, deleted_here, is_deleted=True)
    write_session(chat, renamed_here, title="会话里改的", title_version=epoch_ms() + 1000)
    never_sent = new_session(client, "从没送过")
    drop_chat_outbox(chat)

    output = reconcile(chat, "--user", ALICE)
    lines = output.strip().splitlines()
    assert lines[-1] == "reconciled 6 sessions: 5 repaired, 0 failed", output
    changed = {line.split()[1] for line in lines[:-1]}
    assert changed == {renamed_there, deleted_there, deleted_here, renamed_here, never_sent}
    assert in_sync not in output

    assert envelope(client.get(f"/api/chat/sessions/{renamed_there}"), 200)["title"] == "记录里改的"
    envelope(client.get(f"/api/chat/sessions/{deleted_there}"), 404, 7001)
    assert record_state(stack, deleted_here)["deleted"] is True
    assert record_state(stack, renamed_here)["title"] == "会话里改的"
    assert record_state(stack, never_sent)["title"] == "从没送过"

    again = reconcile(chat)
    assert again.strip().splitlines() == ["reconciled 6 sessions: 0 repaired, 0 failed"]


def test_reconcile_for_one_user_leaves_the_others(quiet):
    stack, chat, client = quiet
    mine = new_session(client, "我的")
    theirs = new_session(client, "别人的", user=BOB)
    drop_chat_outbox(chat)
    output = reconcile(chat, "--user", BOB)
    assert theirs in output and mine not in output
    assert record_state(stack, mine) is None
    assert record_state(stack, theirs, user=BOB)["title"] == "别人的"


def test_reconcile_with_conversation_service_down_queues_and_exits_0(stack):
    chat = stack.start_chat(OUTBOX_WORKER="false")
    client = ApiClient(chat, default_user=ALICE)
    sid = new_session(client, "离线")
    drop_chat_outbox(chat)
    output = reconcile(chat)
    assert f"session {sid}" in output and "FAILED" in output
    assert "reconciled 1 sessions: 0 repaired, 1 failed" in output
    assert chat.extensions["outbox"].pending() == 1  # the outbox retries it

"""crud.py's ten functions of the seed, as units against each database."""

from __future__ import annotations

import uuid

import pytest

from chat_service import crud
from chat_service.extensions import db


@pytest.fixture
def session(chat_app):
    with chat_app.app_context():
        yield db.session


def new_id() -> str:
    return str(uuid.uuid4())


def test_create_and_get_session(session):
    sid = new_id()
    created = crud.create_session(session, sid, "u1")
    assert (created.session_id, created.user_id, created.title, created.message_count) == (
        sid,
        "u1",
        "新会话",
        0,
    )
    assert crud.get_session(session, sid).session_id == sid
    assert crud.get_session(session, new_id()) is None


def test_list_sessions_returns_a_page_of_the_users_live_sessions(session):
    ids = [crud.create_session(session, new_id(), "u1", f"t{i}").session_id for i in range(3)]
    crud.create_session(session, new_id(), "u2")
    crud.soft_delete_session(session, ids[0])
    listed = crud.list_sessions(session, "u1", 1, 20)
    assert isinstance(listed, list)
    assert {s.session_id for s in listed} == set(ids[1:])
    assert len(crud.list_sessions(session, "u1", 2, 1)) == 1
    assert crud.count_sessions(session, "u1") == 2


def test_soft_delete_session_is_true_once(session):
    sid = crud.create_session(session, new_id(), "u1").session_id
    assert crud.soft_delete_session(session, sid) is True
    assert crud.soft_delete_session(session, sid) is False
    assert crud.get_session(session, sid) is None


def test_update_session_title(session):
    sid = crud.create_session(session, new_id(), "u1", "old").session_id
    assert crud.update_session_title(session, sid, "new") is True
    assert crud.get_session(session, sid).title == "new"
    assert crud.update_session_title(session, sid) is True
    assert crud.get_session(session, sid).title == "新会话"
    assert crud.update_session_title(session, new_id(), "x") is False


def test_create_message_counts_and_bumps_the_session(session):
    created = crud.create_session(session, new_id(), "u1")
    sid, updated = created.session_id, created.updated_at
    message = crud.create_message(session, sid, "hello", "user")
    assert (message.session_id, message.content, message.role) == (sid, "hello", "user")
    stored = crud.get_session(session, sid)
    assert stored.message_count == 1
    assert stored.updated_at >= updated
    assert crud.create_message(session, new_id(), "x", "user") is None


def test_get_message_hides_deleted_messages_and_sessions(session):
    sid = crud.create_session(session, new_id(), "u1").session_id
    mid = crud.create_message(session, sid, "x", "user").message_id
    assert crud.get_message(session, mid).message_id == mid
    crud.soft_delete_session(session, sid)
    assert crud.get_message(session, mid) is None


def test_list_messages_in_both_orders(session):
    sid = crud.create_session(session, new_id(), "u1").session_id
    ids = [crud.create_message(session, sid, f"m{i}", "user").message_id for i in range(4)]
    assert [m.message_id for m in crud.list_messages(session, sid, 1, 3)] == ids[:3]
    assert [m.message_id for m in crud.list_messages(session, sid, 2, 3)] == ids[3:]
    assert [m.message_id for m in crud.list_messages(session, sid, 1, 2, order="desc")] == ids[:1:-1]


def test_soft_delete_message_uncounts_once(session):
    sid = crud.create_session(session, new_id(), "u1").session_id
    mid = crud.create_message(session, sid, "x", "user").message_id
    assert crud.soft_delete_message(session, mid) is True
    assert crud.soft_delete_message(session, mid) is False
    assert crud.get_session(session, sid).message_count == 0


def test_update_message_content_only_for_user_messages(session):
    sid = crud.create_session(session, new_id(), "u1").session_id
    user_message = crud.create_message(session, sid, "old", "user").message_id
    reply = crud.create_message(session, sid, "old", "assistant").message_id
    assert crud.update_message_content(session, user_message, "new") is True
    assert crud.get_message(session, user_message).content == "new"
    assert crud.update_message_content(session, reply, "new") is False
    assert crud.get_message(session, reply).content == "old"
    assert crud.update_message_content(session, 10**12, "new") is False


def test_a_message_carries_its_sessions_owner_given_or_read_in_the_insert(session):
    sid = new_id()
    crud.create_session(session, sid, "u1")
    given = crud.create_message(session, sid, "told", "user", user_id="u1")
    read = crud.create_message(session, sid, "a reply", "assistant", is_generated=True)
    assert (read.message_id, read.content, read.is_generated) == (given.message_id + 1, "a reply", True)
    ids = (given.message_id, read.message_id)
    session.remove()
    assert [crud.get_message(session, message_id).user_id for message_id in ids] == ["u1", "u1"]

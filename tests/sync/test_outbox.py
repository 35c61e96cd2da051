"""shared/outbox.py on every backend: coalescing, the transaction, the conditional claim and delete,
backoff, and the traceId carried to the delivery."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from chat_service.extensions import db
from chat_service.models import OUTBOX
from shared import outbox
from shared.tracing import bound_trace_id, current_trace_id


def rows(app) -> list[sa.Row]:
    with app.app_context():
        try:
            return list(db.session.execute(sa.select(OUTBOX).order_by(OUTBOX.c.topic, OUTBOX.c.key)).all())
        finally:
            db.session.remove()


def enqueue(app, topic: str = "t", key: str = "k", commit: bool = True) -> None:
    with app.app_context():
        outbox.enqueue(db.session, OUTBOX, topic, key)
        if commit:
            db.session.commit()
        else:
            db.session.rollback()
        db.session.remove()


def make_worker(app, handlers, **kwargs) -> outbox.OutboxWorker:
    return outbox.OutboxWorker(app, db, OUTBOX, handlers, **kwargs)


def test_changes_to_one_key_coalesce_into_one_row(chat_app):
    for _ in range(3):
        enqueue(chat_app, "record", "a")
    enqueue(chat_app, "record", "b")
    enqueue(chat_app, "dify_delete", "a")
    found = rows(chat_app)
    assert [(r.topic, r.key, r.version, r.attempts) for r in found] == [
        ("dify_delete", "a", 1, 0),
        ("record", "a", 3, 0),
        ("record", "b", 1, 0),
    ]


def test_an_enqueue_rolls_back_with_its_transaction(chat_app):
    enqueue(chat_app, commit=False)
    assert rows(chat_app) == []


def test_a_delivered_row_is_deleted(chat_app):
    delivered = []
    enqueue(chat_app, "t", "one")
    enqueue(chat_app, "t", "two")
    worker = make_worker(chat_app, {"t": delivered.append})
    assert worker.drain(timeout=5) == 0
    assert sorted(delivered) == ["one", "two"]
    assert rows(chat_app) == []


def test_a_change_during_delivery_leaves_the_row_for_another_round(chat_app):
    delivered = []

    def handler(key: str) -> None:
        delivered.append(key)
        if len(delivered) == 1:
            enqueue(chat_app, "t", key)  # a change committed while this delivery runs

    enqueue(chat_app, "t", "k")
    worker = make_worker(chat_app, {"t": handler})
    assert worker.run_once() == 1
    [left] = rows(chat_app)
    assert (left.version, left.attempts) == (2, 0)
    assert worker.drain(timeout=5) == 0
    assert delivered == ["k", "k"]


def test_a_failed_delivery_backs_off_and_is_retried(chat_app):
    calls = []

    def flaky(key: str) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise ConnectionError("the other side is down")

    enqueue(chat_app)
    worker = make_worker(chat_app, {"t": flaky})
    assert worker.run_once() == 1
    [row] = rows(chat_app)
    assert row.attempts == 1
    assert worker.run_once() == 0  # not due yet: 0.5 s later
    time.sleep(0.6)
    assert worker.drain(timeout=5) == 0
    assert calls == ["k", "k"]


def test_backoff_is_capped(chat_app):
    enqueue(chat_app)
    with chat_app.app_context():
        db.session.execute(sa.update(OUTBOX).values(attempts=40))
        db.session.commit()
        db.session.remove()
    worker = make_worker(chat_app, {"t": lambda key: 1 / 0}, max_backoff=2)
    [before] = rows(chat_app)
    worker.run_once()
    [after] = rows(chat_app)
    assert after.attempts == 41
    assert timedelta(seconds=1.5) < after.due_at - before.due_at < timedelta(seconds=3)


def test_a_row_being_delivered_is_not_delivered_by_another_worker(chat_app):
    started, release, seen = threading.Event(), threading.Event(), []

    def slow(key: str) -> None:
        seen.append(key)
        started.set()
        release.wait(5)

    enqueue(chat_app)
    first = make_worker(chat_app, {"t": slow})
    second = make_worker(chat_app, {"t": seen.append})
    thread = threading.Thread(target=first.run_once)
    thread.start()
    assert started.wait(5)
    assert second.run_once() == 0  # claimed: its lease moved it out of reach
    release.set()
    thread.join(5)
    assert seen == ["k"]
    assert rows(chat_app) == []


def test_the_delivery_carries_the_changes_trace_id(chat_app):
    seen = []
    with chat_app.app_context(), bound_trace_id("ab" * 16):
        outbox.enqueue(db.session, OUTBOX, "t", "k")
        db.session.commit()
        db.session.remove()
    make_worker(chat_app, {"t": lambda key: seen.append(current_trace_id())}).drain(timeout=5)
    assert seen == ["ab" * 16]


def test_an_unknown_topic_is_kept_and_retried_later(chat_app):
    enqueue(chat_app, "nobody", "k")
    make_worker(chat_app, {}).run_once()
    [row] = rows(chat_app)
    assert row.attempts == 1


def test_the_worker_thread_delivers_and_stops(chat_app):
    delivered = threading.Event()
    worker = make_worker(chat_app, {"t": lambda key: delivered.set()}, interval=0.05)
    worker.start()
    try:
        enqueue(chat_app)
        assert delivered.wait(5)
    finally:
        worker.stop()
    assert not worker.running


@pytest.mark.parametrize("argv", [["flask", "db", "upgrade"], ["flask", "reconcile"]])
def test_cli_commands_start_no_worker(monkeypatch, argv):
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    monkeypatch.setattr("sys.argv", argv)
    assert outbox.in_cli_command()
    monkeypatch.setattr("sys.argv", ["flask", "run"])
    assert not outbox.in_cli_command()

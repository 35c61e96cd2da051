"""Admission control: requests beyond the bound wait for a slot, and past the wait answer 503 with
`Retry-After`, without taking a database connection (both services, every backend)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event

import shared.admission
from chat_service import create_app as create_chat_app
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from shared.admission import Slots
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ

WAIT = "0.3"  # ADMISSION_TIMEOUT_SECONDS in these tests


@pytest.fixture(params=["chat", "conversation"])
def service(request, chat_database, conversation_database):
    """A service with one admission slot and a 0.3 s wait; yields (client, app, a path using the db)."""
    make, db, database, path = {
        "chat": (create_chat_app, chat_db, chat_database, "/api/chat/sessions/" + "0" * 32),
        "conversation": (
            create_conversation_app,
            conversation_db,
            conversation_database,
            "/api/ai/conversation/list",
        ),
    }[request.param]
    app = make(base_environ(database, ADMISSION_MAX_IN_FLIGHT="1", ADMISSION_TIMEOUT_SECONDS=WAIT))
    app.config["TESTING"] = True
    yield ApiClient(app, default_user=ALICE), app, db, path
    with app.app_context():
        db.engine.dispose()


class Checkouts:
    """Counts the pool checkouts of an engine."""

    def __init__(self, engine) -> None:
        self.count = 0
        event.listen(engine, "checkout", self._seen)

    def _seen(self, *_args) -> None:
        self.count += 1


def occupy(app) -> shared.admission.Admission:
    """Take the app's only slot, as a request in flight would."""
    with app.app_context():
        admission = shared.admission.current()
    assert admission.slots.acquire(0)
    return admission


def test_a_request_beyond_the_bound_waits_then_is_admitted(service):
    client, app, _db, path = service
    admission = occupy(app)
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(client.get(path)))
    waiting.start()
    deadline = time.monotonic() + 2
    while admission.slots.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert admission.slots.waiting == 1 and not answers  # queued, not answered
    admission.slots.release()
    waiting.join(timeout=5)
    assert answers and answers[0].status_code in (200, 404), answers[0].get_json()
    assert admission.slots.in_flight == 0  # released after the request's teardown


def test_a_request_not_admitted_in_time_is_503_with_retry_after_and_no_connection(service):
    client, app, db, path = service
    admission = occupy(app)
    with app.app_context():
        checkouts = Checkouts(db.engine)
    started = time.monotonic()
    response = client.get(path)
    waited = time.monotonic() - started
    data = envelope(response, 503, 12001)
    assert response.headers["Retry-After"] == "2"
    assert data["retry_after"] == 2 and "busy" in data["detail"]
    assert float(WAIT) <= waited < 3
    assert checkouts.count == 0
    assert admission.slots.in_flight == 1 and admission.slots.waiting == 0  # only the occupied slot
    admission.slots.release()
    assert client.get(path).status_code in (200, 404)


def test_probes_and_unknown_paths_are_never_queued(service):
    """The only slot stays taken throughout: a request that queued for it would answer 503 after the
    wait, so each answer below shows its request went past the queue (no timing: CI's load made a
    0.3 s bound on the four requests fail once)."""
    client, app, _db, _path = service
    admission = occupy(app)
    assert client.get("/healthz", user=None).status_code == 200
    assert client.get("/readyz", user=None).status_code == 200
    assert client.get("/metrics", user=None).status_code == 200
    envelope(client.get("/no/such/route"), 404)
    assert admission.slots.in_flight == 1 and admission.slots.waiting == 0  # only the occupied slot


def test_admission_off(chat_database):
    app = create_chat_app(base_environ(chat_database, ADMISSION_MAX_IN_FLIGHT="0"))
    with app.app_context():
        assert shared.admission.current() is None
        chat_db.engine.dispose()


def test_slots_go_to_the_longest_waiter_first():
    slots = Slots(1)
    assert slots.acquire(0)
    order: list[int] = []

    def wait(n: int) -> None:
        assert slots.acquire(5)
        order.append(n)
        slots.release()

    threads = []
    for n in range(5):
        threads.append(threading.Thread(target=wait, args=(n,)))
        threads[-1].start()
        while slots.waiting < n + 1:
            time.sleep(0.001)
    slots.release()
    for thread in threads:
        thread.join(timeout=5)
    assert order == [0, 1, 2, 3, 4]
    assert slots.in_flight == 0


def test_a_slot_freed_while_a_wait_times_out_is_not_lost():
    slots = Slots(1)
    assert slots.acquire(0)
    assert not slots.acquire(0.05)
    slots.release()
    assert slots.in_flight == 0 and slots.waiting == 0
    assert slots.acquire(0) and not slots.acquire(0)

"""The database goes away behind a running service, then comes back (PostgreSQL and MariaDB).

Each service reaches its database through a TcpProxy. Cutting it must turn requests into a quick
503/12001 (never a hang, a 500 or a traceback), fail `/readyz`, and restoring it must bring the same
app back by itself, with every write that was acknowledged with a 200 still stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from chat_service import create_app as create_chat_app
from chat_service import live
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from shared.db import PING_AFTER_IDLE_SECONDS, engine_options, unbounded
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, base_environ
from tests.databases import clear_tables
from tests.faults.conftest import proxy_for, through
from tests.faults.proxy import BLACKHOLE, DROP, REFUSE, TcpProxy

# A behaviour bound, generous for CI: the engine's timeouts are 3 s (connect), 5 s (pool) and 5.5 s
# (an answer on a pooled connection: DB_STATEMENT_TIMEOUT_SECONDS 5 plus 0.5); the worst request pays
# a dead pooled connection's 5.5 s and then a reconnect's 3 s.
BOUND_SECONDS = 10
# The writers here write as fast as they can: the per-user limits are not what these tests are about.
UNLIMITED = {"RATE_LIMITS": "false"}


@dataclass
class Service:
    """One service on a proxied database, with what a test needs to write, read and check it."""

    app: object
    api: ApiClient
    direct_url: str
    write_path: str
    write_body: Callable[[int], dict]  # the i-th write's body
    id_field: str  # the stored id's field in a write's answer
    read_path: str
    stored_ids: Callable[[sa.Connection], set]
    acknowledged: set = field(default_factory=set)

    def write(self, api: ApiClient, i: int):
        """The i-th write: its response and, on a 200, the id it stored."""
        response = self.timed("POST", self.write_path, api, json=self.write_body(i))
        data = (response.get_json() or {}).get("data") or {}
        return response, data.get(self.id_field)

    def timed(self, method: str, path: str, api: ApiClient | None = None, **kwargs):
        started = time.monotonic()
        response = (api or self.api).call(method, path, **kwargs)
        elapsed = time.monotonic() - started
        assert elapsed < BOUND_SECONDS, f"{method} {path} took {elapsed:.1f}s"
        return response

    def check_stored(self) -> None:
        """Every acknowledged write is in the database (read directly, not through the proxy)."""
        engine = sa.create_engine(self.direct_url)
        try:
            with engine.connect() as connection:
                missing = self.acknowledged - self.stored_ids(connection)
        finally:
            engine.dispose()
        assert not missing, f"acknowledged writes lost: {sorted(missing)}"


def chat_service(url: str, direct_url: str) -> Iterator[Service]:
    app = create_chat_app(base_environ(url, **UNLIMITED))
    app.config["TESTING"] = True
    api = ApiClient(app, default_user=ALICE)
    session_id = envelope(api.post("/api/chat/session", json={"title": "faults"}), 200)["session_id"]

    def stored_ids(connection: sa.Connection) -> set:
        rows = connection.execute(
            sa.text("SELECT message_id FROM chat_messages WHERE session_id = :sid"), {"sid": session_id}
        )
        ids = {row[0] for row in rows}
        count = connection.execute(
            sa.text("SELECT message_count FROM chat_sessions WHERE session_id = :sid"), {"sid": session_id}
        ).scalar_one()
        assert count == len(ids), "message_count differs from the stored rows"
        return ids

    yield Service(
        app,
        api,
        direct_url,
        "/api/chat/message",
        lambda i: {"session_id": session_id, "content": f"m{i}"},
        "message_id",
        f"/api/chat/sessions/{session_id}",
        stored_ids,
    )
    with app.app_context():
        chat_db.engine.dispose()
    live.of(app).close()
    cleanup = create_chat_app(base_environ(direct_url))
    with cleanup.app_context():
        clear_tables(chat_db, ["chat_messages", "chat_sessions"])
        chat_db.engine.dispose()
    live.of(cleanup).close()


def conversation_service(url: str, direct_url: str) -> Iterator[Service]:
    app = create_conversation_app(base_environ(url, **UNLIMITED))
    app.config["TESTING"] = True
    api = ApiClient(app, default_user=ALICE)

    def stored_ids(connection: sa.Connection) -> set:
        rows = connection.execute(sa.text("SELECT id FROM ai_conversations WHERE user_id = :u"), {"u": ALICE})
        return {str(row[0]) for row in rows}  # ids are 64-bit: answered as strings

    yield Service(
        app,
        api,
        direct_url,
        "/api/ai/conversation",
        lambda i: {"title": f"t{i}"},
        "id",
        "/api/ai/conversation/list",
        stored_ids,
    )
    with app.app_context():
        conversation_db.engine.dispose()
    cleanup = create_conversation_app(base_environ(direct_url))
    with cleanup.app_context():
        clear_tables(conversation_db, ["ai_conversations", "conversation_user_counts"])
        conversation_db.engine.dispose()


@pytest.fixture
def proxy(networked, chat_database) -> Iterator[TcpProxy]:
    with proxy_for(chat_database) as proxy:
        yield proxy


@pytest.fixture(params=["chat", "conversation"])
def service(request, networked, proxy) -> Iterator[Service]:
    direct_url = request.getfixturevalue(f"{request.param}_database")
    make = chat_service if request.param == "chat" else conversation_service
    generator = make(through(direct_url, proxy), direct_url)
    yield next(generator)
    proxy.restore()
    next(generator, None)


def assert_unavailable(response) -> None:
    body = envelope(response, 503, 12001)
    assert b"Traceback" not in response.data and b'File "' not in response.data
    return body


class Writer(threading.Thread):
    """Writes one after another until stopped; each answer is a 200 or a 503, within the bound."""

    def __init__(self, service: Service) -> None:
        super().__init__(name="fault-writer", daemon=True)
        self.service = service
        self.api = ApiClient(service.app, default_user=ALICE)
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set():
                i += 1
                response, stored_id = self.service.write(self.api, i)
                self.statuses.append(response.status_code)
                if response.status_code == 200:
                    self.service.acknowledged.add(stored_id)
                else:
                    assert_unavailable(response)
                    time.sleep(0.05)
        except BaseException as error:  # reported by the test thread
            self.error = error

    def finish(self) -> list[int]:
        self.stop.set()
        self.join(timeout=2 * BOUND_SECONDS)
        assert not self.is_alive(), "the writer hung"
        if self.error is not None:
            raise self.error
        return self.statuses


def ready(service: Service):
    return service.timed("GET", "/readyz", user=None)


@pytest.mark.parametrize("mode", [REFUSE, BLACKHOLE])
def test_a_cut_database_answers_503_quickly_and_recovers_with_no_lost_write(service, proxy, mode):
    for i in range(3):
        response, stored_id = service.write(service.api, i)
        envelope(response, 200)
        service.acknowledged.add(stored_id)
    envelope(ready(service), 200)

    writer = Writer(service)
    writer.start()
    time.sleep(0.2)
    proxy.cut(mode)

    # At once, each on its own connection attempt: a blackhole costs each one the connect timeout.
    with ThreadPoolExecutor(max_workers=3) as pool:
        write = pool.submit(service.timed, "POST", service.write_path, json=service.write_body(1000))
        read = pool.submit(service.timed, "GET", service.read_path)
        readiness = pool.submit(ready, service)
        assert_unavailable(write.result())
        assert_unavailable(read.result())
        data = assert_unavailable(readiness.result())
    assert data["failed"] == ["database"], data
    # The writer meets the outage too before it ends: under CI's load its thread could miss the moment
    # the three requests above took (it once wrote only 200s).
    deadline = time.monotonic() + BOUND_SECONDS
    while 503 not in writer.statuses and writer.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)

    proxy.restore()
    # The same app, no restart: the pool's ping drops the dead connections and opens new ones.
    response, stored_id = service.write(service.api, 2000)
    envelope(response, 200)
    service.acknowledged.add(stored_id)
    envelope(service.timed("GET", service.read_path), 200)
    envelope(ready(service), 200)
    time.sleep(0.2)

    statuses = writer.finish()
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses and statuses[-1] == 200, statuses
    service.check_stored()


def test_a_connection_lost_after_the_last_statement_does_not_fail_the_answer(networked, chat_database, proxy):
    """The request has done its work (here a read; a committed write is the same) when the database goes
    away; ending its session must not turn the answer into a bare 500 (it did: the teardown's rollback
    raised outside every error handler)."""
    app = create_chat_app(base_environ(through(chat_database, proxy)))

    @app.get("/faults/read-then-cut")
    def read_then_cut():
        chat_db.session.execute(sa.text("SELECT 1"))  # opens the transaction the teardown rolls back
        proxy.cut()
        return {"read": True}

    try:
        response = app.test_client().get("/faults/read-then-cut")
        assert response.status_code == 200 and response.get_json() == {"read": True}
        proxy.restore()
        envelope(app.test_client().get("/readyz"), 200)
    finally:
        with app.app_context():
            chat_db.engine.dispose()
        live.of(app).close()


def test_mysql_connects_under_the_connect_timeout_and_queries_keep_their_read_timeout(
    networked, chat_database
):
    if networked.backend != "mysql":
        pytest.skip("PyMySQL only: libpq's connect_timeout already bounds the whole handshake")
    engine = sa.create_engine(chat_database, **engine_options(chat_database))
    try:
        with engine.connect() as connection:
            assert connection.connection.dbapi_connection._read_timeout == 5.5
    finally:
        engine.dispose()


def warm(service: Service, connections: int = 4) -> None:
    """Fill the pool: `connections` requests at once, each holding a connection of its own."""
    with ThreadPoolExecutor(max_workers=connections) as pool:
        answers = list(pool.map(lambda _: service.timed("GET", service.read_path), range(connections)))
    for response in answers:
        envelope(response, 200)


def test_a_silent_database_on_a_warm_pool_answers_503_within_seconds(service, proxy):
    """Traffic dropped, not reset (issue 11): requests on warm pooled connections hung for the whole
    outage (90 s). Each now gives up on a silent connection after DB_STATEMENT_TIMEOUT_SECONDS."""
    response, stored_id = service.write(service.api, 0)
    envelope(response, 200)
    service.acknowledged.add(stored_id)
    warm(service)
    accepted = proxy.accepted
    proxy.cut(DROP)

    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        answers = [
            pool.submit(service.api.call, "POST", service.write_path, json=service.write_body(i))
            for i in (1, 2)
        ]
        answers += [pool.submit(service.api.call, "GET", service.read_path), pool.submit(ready, service)]
        _, waiting = wait(answers, timeout=BOUND_SECONDS)
        elapsed = time.monotonic() - started
        assert not waiting, f"{len(waiting)} requests still wait on the silent database after {elapsed:.1f}s"
    finally:
        pool.shutdown(wait=False)  # a request left waiting is freed when the fixture restores the proxy
    for answer in answers:
        assert_unavailable(answer.result())
    assert accepted >= 2, "the pool was not warm: the requests did not run on pooled connections"

    proxy.restore()
    response, stored_id = service.write(service.api, 3)
    envelope(response, 200)
    service.acknowledged.add(stored_id)
    envelope(ready(service), 200)
    service.check_stored()


@pytest.fixture
def bounded_engine(networked, chat_database) -> Iterator[sa.Engine]:
    """An engine on this backend whose statements may run 1 s."""
    engine = sa.create_engine(chat_database, **engine_options(chat_database, statement_timeout=1))
    yield engine
    engine.dispose()


SLEEP = {"postgresql": "SELECT pg_sleep({})", "mysql": "SELECT SLEEP({})"}


def test_a_statement_past_the_bound_fails_within_it(networked, bounded_engine):
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError), bounded_engine.connect() as connection:
        connection.execute(sa.text(SLEEP[networked.backend].format(3)))
    assert time.monotonic() - started < 2.5


def test_migrations_run_without_the_bounds_and_leave_none_lifted_in_the_pool(networked, bounded_engine):
    """`flask db upgrade` runs through the same engine (shared/migrations_env.py): its connection has
    no statement or socket bound, and is discarded afterwards."""
    with bounded_engine.connect() as connection, unbounded(connection):
        assert connection.execute(sa.text(SLEEP[networked.backend].format(1.5))).scalar() in (None, "", 0)
    test_a_statement_past_the_bound_fails_within_it(networked, bounded_engine)


def test_pooled_connections_idle_through_a_restart_are_pinged_and_replaced(service, proxy):
    """A database restart resets every pooled connection. The pool pings a connection idle for
    PING_AFTER_IDLE_SECONDS or more before handing it out, so none of the dead ones reaches a request:
    every request after the restart answers 200."""
    warm(service)
    proxy.cut(REFUSE)  # every live connection reset, as a restart does
    proxy.restore()
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
    for _ in range(6):  # more than the warm pool: each dead connection is met once
        envelope(service.timed("GET", service.read_path), 200)


def test_a_connection_used_a_moment_ago_is_not_pinged(service, monkeypatch):
    """The ping is paid only after idleness: back-to-back requests cost no extra round trip."""
    with service.app.app_context():
        dialect = service.app.extensions["sqlalchemy"].engine.dialect
    pings = []
    ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda connection: pings.append(1) or ping(connection))
    for _ in range(5):
        envelope(service.timed("GET", service.read_path), 200)
    assert pings == []
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
    envelope(service.timed("GET", service.read_path), 200)
    assert pings == [1]


def test_a_burst_finds_the_connections_the_last_burst_opened(networked, chat_database):
    """As many requests at once as a worker admits each get a connection, and the next burst gets the
    same ones. QueuePool closes a connection beyond `pool_size` as it comes back, so with 5 + 10 every
    burst above five opened (and closed) connections again: under load on MariaDB that was 57 % of the
    worker's time (PyMySQL builds an SSL context per connection; bench/rest_overhead.py)."""
    app = create_chat_app(base_environ(chat_database))
    burst = app.config["ADMISSION_MAX_IN_FLIGHT"]
    opened = []
    with app.app_context():
        engine = chat_db.engine
        sa.event.listen(engine, "connect", lambda *_: opened.append(1))
        try:
            for _ in range(3):
                held = [engine.connect() for _ in range(burst)]
                for connection in held:
                    connection.close()
            assert len(opened) == burst
            assert engine.pool.checkedin() == burst
        finally:
            engine.dispose()
            live.of(app).close()

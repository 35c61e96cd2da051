"""Per-user REST limits on both services: requests per minute, sessions and records created per minute.

A refusal is HTTP 429 in the envelope (`data.retry_after`, `data.limit`), with `Retry-After` and the IETF
`RateLimit-Policy` / `RateLimit` headers, and nothing is done; one user's spending never refuses another.
"""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from chat_service import create_app as create_chat_app
from chat_service import live
from conversation_service import create_app as create_conversation_app
from shared.rate_limits import RateLimits, parse_rule
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, BOB, base_environ
from tests.live_probe import redis_url_or_skip

POLICY = re.compile(r'^"requests";q=3;w=60$')
REMAINING = re.compile(r'^"requests";r=(\d+);t=(\d+)$')


@pytest.fixture
def limited(chat_database, conversation_database):
    """Both services with small limits, in-process counts (no Redis)."""
    apps = []

    def make(service: str, **settings: str) -> ApiClient:
        create, url = (
            (create_chat_app, chat_database)
            if service == "chat"
            else (create_conversation_app, conversation_database)
        )
        app = create(base_environ(url, **settings))
        app.config["TESTING"] = True
        apps.append(app)
        return ApiClient(app, default_user=ALICE)

    yield make
    for app in apps:
        release(app)


def release(app) -> None:
    """Stop an app's background work and close its pooled connections."""
    if "chat_service.live" in app.extensions:
        live.of(app).close()
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()


ROUTES = {
    "chat": ("GET", "/api/chat/sessions/00000000-0000-4000-8000-000000000000"),
    "conversation": ("GET", "/api/ai/conversation/1"),
}


def refusal(response) -> dict:
    data = envelope(response, 429)
    assert response.get_json()["message"] == "请求过于频繁"
    assert int(response.headers["Retry-After"]) == data["retry_after"] >= 1
    assert data["limit"] == "3 per 1 minute"
    return data


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_requests_past_the_limit_are_429_with_when_to_retry(limited, service):
    api = limited(service, LIMIT_REQUESTS="3/minute")
    method, path = ROUTES[service]
    seen = []
    for _ in range(3):
        response = api.call(method, path)
        assert response.status_code == 404  # counted, then answered as usual
        assert POLICY.match(response.headers["RateLimit-Policy"])
        seen.append(int(REMAINING.match(response.headers["RateLimit"]).group(1)))
    assert seen == [2, 1, 0]
    data = refusal(api.call(method, path))
    assert data["retry_after"] <= 60
    assert REMAINING.match(api.call(method, path).headers["RateLimit"]).group(1) == "0"


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_one_users_spending_never_refuses_another(limited, service):
    api = limited(service, LIMIT_REQUESTS="3/minute")
    method, path = ROUTES[service]
    for _ in range(4):
        api.call(method, path)
    assert api.call(method, path).status_code == 429
    assert api.call(method, path, user=BOB).status_code == 404


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_a_service_token_counts_for_the_user_it_acts_for(limited, service):
    api = limited(service, LIMIT_REQUESTS="3/minute")
    method, path = ROUTES[service]
    service_token = api.token("chat_service", service=True)
    for_alice = {"Authorization": f"Bearer {service_token}", "X-User-Id": ALICE}
    for _ in range(3):
        assert api.call(method, path, headers=for_alice).status_code == 404
    assert api.call(method, path).status_code == 429  # ALICE's own token: her budget is spent
    for_bob = {"Authorization": f"Bearer {service_token}", "X-User-Id": BOB}
    assert api.call(method, path, headers=for_bob).status_code == 404


@pytest.mark.parametrize("service", ["chat", "conversation"])
def test_unauthenticated_requests_are_401_and_count_for_nobody(limited, service):
    api = limited(service, LIMIT_REQUESTS="3/minute")
    method, path = ROUTES[service]
    for _ in range(5):
        envelope(api.call(method, path, user=None), 401)
    assert api.call(method, path).status_code == 404


def test_the_view_routes_are_limited_too(limited):
    api = limited("chat", LIMIT_REQUESTS="3/minute")
    for _ in range(3):
        api.get(f"/aichat/getsessionlist/{ALICE}")
    refusal(api.get(f"/aichat/getsessionlist/{ALICE}"))


def test_sessions_created_past_the_limit_are_refused_and_not_created(limited):
    api = limited("chat", LIMIT_SESSIONS_CREATED="3/minute")
    user = api.default_user = f"limits-{uuid.uuid4().hex[:12]}"  # a user with no sessions yet
    for path in ("/api/chat/session", "/aichat/createsession", "/api/chat/session"):
        envelope(api.post(path, json={}), 200)
    refusal(api.post("/api/chat/session", json={}))
    refusal(api.post("/aichat/createsession", json={}))
    sessions = envelope(api.post("/api/chat/sessions", json={"user_id": user}), 200)
    assert len(sessions) == 3
    assert api.post("/api/chat/session", json={}, user=BOB).status_code == 200


def test_records_created_past_the_limit_are_refused_and_not_created(limited):
    api = limited("conversation", LIMIT_RECORDS_CREATED="3/minute")
    api.default_user = f"limits-{uuid.uuid4().hex[:12]}"  # a user with no records from other tests
    for n in range(3):
        envelope(api.post("/api/ai/conversation", json={"title": f"t{n}"}), 200)
    refusal(api.post("/api/ai/conversation", json={"title": "one too many"}))
    assert len(envelope(api.get("/api/ai/conversation/list"), 200)) == 3


def test_the_defaults_are_generous_and_on(limited):
    chat = limited("chat").app.config
    assert (chat["LIMIT_REQUESTS"], chat["LIMIT_SESSIONS_CREATED"], chat["LIMIT_TURNS"]) == (
        "600/minute",
        "60/minute",
        "20/minute",
    )
    assert (chat["LIMIT_TURNS_IN_FLIGHT"], chat["LIMIT_SOCKETS"], chat["LIMIT_TOKENS"]) == (3, 20, "off")
    assert limited("conversation").app.config["LIMIT_RECORDS_CREATED"] == "60/minute"


def test_rate_limits_false_turns_every_limit_off(limited):
    api = limited("chat", LIMIT_REQUESTS="1/minute", RATE_LIMITS="false")
    for _ in range(3):
        response = api.call(*ROUTES["chat"])
        assert response.status_code == 404 and "RateLimit" not in response.headers


@pytest.mark.parametrize("value", ["600 a minute", "fast", "-1/minute"])
def test_a_rule_that_does_not_parse_fails_at_startup(limited, value):
    with pytest.raises(ValueError, match="LIMIT_REQUESTS"):
        limited("chat", LIMIT_REQUESTS=value)


@pytest.mark.parametrize("value", ["", "0", "off", "OFF", "none"])
def test_a_rule_can_be_turned_off_alone(value):
    assert parse_rule("LIMIT_TOKENS", value) is None


def test_spent_tokens_past_the_limit_refuse_until_the_window_slides():
    limits = RateLimits({"tokens": parse_rule("LIMIT_TOKENS", "100/day")})
    limits.check("tokens", ALICE)
    limits.spend("tokens", ALICE, 60)
    limits.check("tokens", ALICE)  # 40 left: the next turn may run
    limits.spend("tokens", ALICE, 60)  # a reply may go past what is left: it is counted all the same
    with pytest.raises(Exception) as refused:
        limits.check("tokens", ALICE)
    assert refused.value.code == 429 and refused.value.data["limit"] == "100 per 1 day"
    limits.check("tokens", BOB)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_redis_that_is_down_falls_back_to_this_processes_counts_quickly():
    url = f"redis://127.0.0.1:{closed_port()}/0"
    limits = RateLimits({"requests": parse_rule("LIMIT_REQUESTS", "3/minute")}, url, timeout=0.5)
    started = time.monotonic()
    for _ in range(3):
        limits.hit("requests", ALICE)
    with pytest.raises(Exception) as refused:
        limits.hit("requests", ALICE)
    assert refused.value.code == 429
    assert time.monotonic() - started < 5  # one failed attempt, then the process's own counts


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


def test_with_redis_every_app_of_a_deployment_shares_one_count(redis_url, chat_database):
    environ = base_environ(chat_database, REDIS_URL=redis_url, LIMIT_REQUESTS="3/minute")
    first, second = create_chat_app(environ), create_chat_app(environ)
    try:
        apis = [ApiClient(app, default_user=ALICE) for app in (first, second)]
        for api in (apis[0], apis[1], apis[0]):
            assert api.call(*ROUTES["chat"]).status_code == 404
        refusal(apis[1].call(*ROUTES["chat"]))
        # Another deployment on the same Redis (its own key prefix) counts apart.
        other = create_chat_app(base_environ(chat_database, REDIS_URL=redis_url, LIMIT_REQUESTS="3/minute"))
        try:
            assert ApiClient(other, default_user=ALICE).call(*ROUTES["chat"]).status_code == 404
        finally:
            release(other)
    finally:
        for app in (first, second):
            release(app)


def test_this_processes_counts_answer_as_the_limits_librarys_memory_storage(monkeypatch):
    """ProcessCounts against the library's sliding window counter on MemoryStorage, on one fake clock:
    the same hits allowed, the same remaining and reset times, windows sliding, keys cleared."""
    import random

    from limits.storage import MemoryStorage
    from limits.strategies import SlidingWindowCounterRateLimiter

    from shared.rate_limits import ProcessCounts

    clock = [1_796_000_000.123]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    library = SlidingWindowCounterRateLimiter(MemoryStorage())
    ours = ProcessCounts()
    rules = [parse_rule("x", "5/second"), parse_rule("y", "20/minute"), parse_rule("z", "3/10 seconds")]
    rng = random.Random(15)
    for step in range(4000):
        clock[0] += rng.choice([0.0, 0.001, 0.05, 0.3, 1.0, 7.5, 61.0])
        rule, user, action = rng.choice(rules), rng.choice(["a", "b"]), rng.random()
        if action < 0.7:
            cost = rng.choice([1, 1, 1, 2, 50])
            assert ours.hit(rule, "n", user, cost=cost) == library.hit(rule, "n", user, cost=cost), step
        elif action < 0.97:
            got, expected = ours.get_window_stats(rule, "n", user), library.get_window_stats(rule, "n", user)
            assert got.remaining == expected.remaining, step
            assert got.reset_time == pytest.approx(expected.reset_time, abs=1e-6), step
        else:
            ours.clear(rule, "n", user)
            library.clear(rule, "n", user)
    library.storage.timer.cancel()


def test_this_processes_counts_forget_users_no_longer_seen(monkeypatch):
    from shared.rate_limits import ProcessCounts

    clock = [1_796_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    counts, rule = ProcessCounts(), parse_rule("x", "100/minute")
    monkeypatch.setattr(ProcessCounts, "SWEEP_EVERY", 10)
    for user in range(10):
        counts.hit(rule, "n", str(user))
    assert len(counts) == 10
    clock[0] += 121  # both windows of those ten are over
    for _ in range(10):
        counts.hit(rule, "n", "still-here")
    assert len(counts) == 1

"""`/metrics`: requests by route template and status, latency histograms, chat_service's own metrics,
and gunicorn's multiprocess mode. Counters are process-wide, so tests compare before and after."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chat_service import metrics as chat_metrics
from conversation_service import create_app as create_conversation_app
from tests.api_client import ApiClient
from tests.conftest import ALICE, base_environ
from tests.live import Socket, serve


def scrape(client) -> dict[tuple[str, frozenset], float]:
    """Every sample of `/metrics` by (name, labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def api(bare_app) -> ApiClient:
    return ApiClient(bare_app, default_user=ALICE)


def test_requests_are_counted_by_route_template_never_by_raw_path(chat):
    client = chat.client
    before = scrape(client)
    session_id = chat.post("/api/chat/session", json={"title": "t"}).get_json()["data"]["session_id"]
    chat.get(f"/api/chat/sessions/{session_id}")
    chat.get(f"/api/chat/sessions/{uuid.uuid4()}")
    after = scrape(client)

    route = "/api/chat/sessions/<session_id>"
    labels = {"service": "chat_service", "method": "GET", "route": route}
    assert (
        value(after, "http_requests_total", **labels, status="200")
        - value(before, "http_requests_total", **labels, status="200")
        == 1
    )
    assert (
        value(after, "http_requests_total", **labels, status="404")
        - value(before, "http_requests_total", **labels, status="404")
        == 1
    )
    created = {"service": "chat_service", "method": "POST", "route": "/api/chat/session", "status": "200"}
    assert (
        value(after, "http_requests_total", **created) - value(before, "http_requests_total", **created) == 1
    )
    assert not any(session_id in str(labels) for _, labels in after)


def test_latency_is_a_histogram_by_route(api):
    before = scrape(api.client)
    api.get("/healthz", user=None)
    after = scrape(api.client)

    labels = {"service": "chat_service", "method": "GET", "route": "/healthz"}
    count = "http_request_duration_seconds_count"
    assert value(after, count, **labels) - value(before, count, **labels) == 1
    buckets = [
        le
        for (name, lbls) in after
        if name == "http_request_duration_seconds_bucket"
        for key, le in lbls
        if key == "le" and dict(lbls)["route"] == "/healthz"
    ]
    assert {"0.005", "0.1", "1.0", "+Inf"} <= set(buckets)
    assert value(after, "http_request_duration_seconds_bucket", **labels, le="+Inf") >= 1


def test_unknown_paths_share_one_series(api):
    before = scrape(api.client)
    for n in range(3):
        api.get(f"/no/such/path/{n}", user=None)
    after = scrape(api.client)

    labels = {"service": "chat_service", "method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(after, "http_requests_total", **labels) - value(before, "http_requests_total", **labels) == 3
    assert not any("/no/such/path" in str(labels) for _, labels in after)


def test_unusual_methods_share_one_label(api):
    before = scrape(api.client)
    api.call("BREW", "/healthz", user=None)
    after = scrape(api.client)
    labels = {"service": "chat_service", "method": "OTHER", "route": "<unmatched>", "status": "405"}
    assert value(after, "http_requests_total", **labels) - value(before, "http_requests_total", **labels) == 1


def test_auth_failures_are_counted_under_their_route(api):
    before = scrape(api.client)
    api.post("/api/chat/sessions", json={}, user=None)
    after = scrape(api.client)
    labels = {"service": "chat_service", "method": "POST", "route": "/api/chat/sessions", "status": "401"}
    assert value(after, "http_requests_total", **labels) - value(before, "http_requests_total", **labels) == 1


def test_metrics_needs_no_token_and_conversation_service_labels_itself(tmp_path):
    app = create_conversation_app(base_environ(f"sqlite:///{tmp_path}/c.sqlite3"))
    client = app.test_client()
    client.get("/healthz")
    samples = scrape(client)
    labels = {"service": "conversation_service", "method": "GET", "route": "/healthz", "status": "200"}
    assert value(samples, "http_requests_total", **labels) >= 1


def test_chat_service_metrics_helpers(api):
    before = scrape(api.client)
    chat_metrics.socket_opened()
    chat_metrics.socket_opened()
    chat_metrics.socket_closed()
    chat_metrics.turn_finished("echo", "completed")
    chat_metrics.turn_finished("echo", "stopped")
    chat_metrics.turn_finished("dify", "failed")
    chat_metrics.first_token("echo", 0.3)
    after = scrape(api.client)
    chat_metrics.socket_closed()

    assert value(after, "ws_open_sockets") - value(before, "ws_open_sockets") == 1
    for provider, outcome in [("echo", "completed"), ("echo", "stopped"), ("dify", "failed")]:
        labels = {"provider": provider, "outcome": outcome}
        assert value(after, "ai_turns_total", **labels) - value(before, "ai_turns_total", **labels) == 1
    ttft = "ai_time_to_first_token_seconds_bucket"
    assert value(after, ttft, provider="echo", le="0.5") - value(before, ttft, provider="echo", le="0.5") == 1
    assert value(after, ttft, provider="echo", le="0.25") == value(before, ttft, provider="echo", le="0.25")


def test_an_unknown_turn_outcome_is_a_bug():
    with pytest.raises(ValueError, match="outcome"):
        chat_metrics.turn_finished("echo", "exploded")


MULTIPROCESS_WORKER = textwrap.dedent(
    """
    import sys
    from conversation_service import create_app
    app = create_app({"DATABASE_URL": sys.argv[1], "JWT_SECRET": "x" * 40, "LOG_LEVEL": "WARNING"})
    client = app.test_client()
    for _ in range(int(sys.argv[2])):
        assert client.get("/healthz").status_code == 200
    if sys.argv[3] == "scrape":
        sys.stdout.write(client.get("/metrics").get_data(as_text=True))
    """
)


def test_multiprocess_mode_adds_up_every_worker(tmp_path):
    """Two processes share PROMETHEUS_MULTIPROC_DIR: the second one's /metrics counts both."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    environ = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONWARNINGS": "error"}
    database = f"sqlite:///{tmp_path}/c.sqlite3"

    def run(requests: int, mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_WORKER, database, str(requests), mode],
            env={**{k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS")}, **environ},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run(3, "quiet")
    text = run(2, "scrape")
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    labels = {"service": "conversation_service", "method": "GET", "route": "/healthz", "status": "200"}
    assert value(samples, "http_requests_total", **labels) == 5
    assert list(directory.glob("*.db"))


def test_a_websocket_is_counted_under_its_route_but_not_timed(chat_app, token):
    client = chat_app.test_client()
    route = {"service": "chat_service", "method": "GET", "route": "/ws/<session_id>"}
    before = scrape(client)
    with serve(chat_app) as url:
        socket = Socket(
            url.replace("http", "ws", 1) + f"/ws/{uuid.uuid4()}",
            headers={"Authorization": f"Bearer {token()}"},
        )
        assert socket.until("error")[-1]["code"] == 7001
        socket.close()
        deadline = time.monotonic() + 5
        while value(scrape(client), "http_requests_total", **route, status="200") == value(
            before, "http_requests_total", **route, status="200"
        ):
            assert time.monotonic() < deadline, "the socket's request was never counted"
            time.sleep(0.05)
    after = scrape(client)
    count = "http_request_duration_seconds_count"
    assert value(after, count, **route) == value(before, count, **route)

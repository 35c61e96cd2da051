"""Several gunicorn workers under a service's production config add up their metrics by default.

No `PROMETHEUS_MULTIPROC_DIR` in the environment: the config makes a private directory itself, every
worker's `/metrics` counts every worker's requests, and the directory goes when the master stops.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.parser import text_string_to_metric_families

from conversation_service.snowflake import MAX_WORKER_ID, SEQUENCE_BITS
from shared.auth import mint_token
from tests.conftest import ALICE, SECRET, base_environ
from tests.processes import gunicorn_process

CREATED = {
    "service": "conversation_service",
    "method": "POST",
    "route": "/api/ai/conversation",
    "status": "200",
}
BASE_WORKER_ID = 100  # the config gives its workers 100 and 101: an id tells which worker made it


def created_count(text: str) -> float:
    """`http_requests_total` of successful creations in a Prometheus text exposition."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels == CREATED
    )


def test_two_workers_count_every_request_without_prometheus_multiproc_dir(
    conversation_database, tmp_path, monkeypatch
):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    environ = base_environ(
        conversation_database,
        TMPDIR=str(tmp_path),  # where the config's directory goes
        SNOWFLAKE_WORKER_ID=str(BASE_WORKER_ID),
        # Records are created until both workers have answered: under load the second one boots late,
        # and the per-user 60/minute (per worker without Redis) refused the 61st (CI, 2026-12-04).
        LIMIT_RECORDS_CREATED="off",
    )
    headers = {"Authorization": f"Bearer {mint_token(ALICE, config={'JWT_SECRET': SECRET})}"}

    with gunicorn_process(
        "conversation_service:create_app()",
        environ,
        worker=["-c", "conversation_service/gunicorn.conf.py"],
        workers=2,
    ) as server:

        def create(_n: int) -> int:
            """Create a record over a new connection (either worker may take it); the worker's id."""
            response = requests.post(
                server.url + "/api/ai/conversation", json={"title": "t"}, headers=headers, timeout=30
            )
            assert response.status_code == 200, response.text
            return (int(response.json()["data"]["id"]) >> SEQUENCE_BITS) & MAX_WORKER_ID

        # Until both workers have answered (the second may still be loading the app at first).
        sent, workers = 0, set()
        deadline = time.monotonic() + 30
        with ThreadPoolExecutor(4) as pool:
            while workers != {BASE_WORKER_ID, BASE_WORKER_ID + 1}:
                assert time.monotonic() < deadline, f"only workers {workers} answered"
                workers |= set(pool.map(create, range(10)))
                sent += 10

        counts = []
        for _ in range(12):  # whichever worker answers /metrics
            response = requests.get(server.url + "/metrics", timeout=10)
            assert response.status_code == 200
            counts.append(created_count(response.text))
        directories = list(tmp_path.glob("conversation_service-prometheus-*"))
        files = [path.name for directory in directories for path in directory.iterdir()]

    assert counts == [sent] * len(counts), "a worker's /metrics missed the other worker's requests"
    assert len(directories) == 1 and any(name.startswith("counter_") for name in files)
    assert not directories[0].exists(), "the master left its metrics directory behind"

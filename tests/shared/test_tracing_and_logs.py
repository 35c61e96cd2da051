"""traceId in and out, and the JSON log lines that carry it."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import threading

import pytest

from shared.logs import JsonFormatter
from shared.tracing import bound_trace_id
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE

GOOD = "5d0b8880becc47f5870b57aa3cef3a0c"


@pytest.fixture
def api(bare_app) -> ApiClient:
    return ApiClient(bare_app, default_user=ALICE)


def trace_of(response) -> str:
    return response.get_json()["traceId"]


def test_a_valid_incoming_trace_id_is_kept(api):
    response = api.get("/nope", headers={"X-Trace-Id": GOOD})
    assert trace_of(response) == GOOD == response.headers["X-Trace-Id"]


def test_an_uppercase_trace_id_is_normalised(api):
    assert trace_of(api.get("/nope", headers={"X-Trace-Id": GOOD.upper()})) == GOOD


def test_a_w3c_traceparent_is_used(api):
    traceparent = f"00-{GOOD}-00f067aa0ba902b7-01"
    assert trace_of(api.get("/nope", headers={"traceparent": traceparent})) == GOOD


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Trace-Id": "short"},
        {"X-Trace-Id": GOOD + "ab"},
        {"X-Trace-Id": "z" * 32},
        {"X-Trace-Id": "0" * 32},
        {"X-Trace-Id": f"{GOOD};x=1"},
        {"traceparent": "00-not-a-trace-01"},
        {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"},
    ],
)
def test_a_malformed_trace_id_is_replaced(api, headers):
    response = api.get("/nope", headers=headers)
    data = envelope(response, 404)
    assert data is not None
    assert trace_of(response) != GOOD
    assert "Set-Cookie" not in response.headers


def test_each_request_without_a_trace_id_gets_a_new_one(api):
    assert trace_of(api.get("/nope")) != trace_of(api.get("/nope"))


def test_one_json_access_line_per_request_with_trace_user_and_no_query(api, caplog):
    caplog.set_level(logging.INFO, logger="access")
    api.get("/api/chat/sessions/nope?token=SECRET-TOKEN", headers={"X-Trace-Id": GOOD})
    records = [r for r in caplog.records if r.name == "access"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["traceId"] == GOOD
    assert line["method"] == "GET"
    assert line["path"] == "/api/chat/sessions/nope"
    assert line["status"] == 400
    assert line["user"] == ALICE
    assert isinstance(line["duration_ms"], float)
    assert "SECRET-TOKEN" not in json.dumps(line)


def test_errors_are_logged_with_the_trace_id(bare_app, caplog):
    @bare_app.get("/boom")
    def boom():
        raise RuntimeError("kaput")

    bare_app.test_client().get("/boom", headers={"X-Trace-Id": GOOD})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors
    with bare_app.test_request_context(headers={"X-Trace-Id": GOOD}):
        line = json.loads(JsonFormatter().format(errors[0]))
    assert line["traceId"] == GOOD
    assert "kaput" in line["exception"]


def test_a_background_thread_logs_with_the_trace_id_it_was_bound_to():
    """No request context in a thread: its lines carry the id its work was bound to, else none."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())  # formats in the thread that logs, as in production
    log = logging.getLogger("tests.background")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    def work():
        with bound_trace_id(GOOD):
            log.warning("provider retry")
        log.warning("unbound")

    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    finally:
        log.removeHandler(handler)
        log.propagate = True
    bound, unbound = (json.loads(line) for line in stream.getvalue().splitlines())
    assert bound["message"] == "provider retry" and bound["traceId"] == GOOD
    assert unbound["message"] == "unbound" and "traceId" not in unbound  # never a made-up id


UNCAUGHT = textwrap.dedent(
    """
    import sys
    import threading

    if sys.argv[2] == "greenlet":
        import gevent
    from {service} import create_app

    create_app({{"DATABASE_URL": sys.argv[1], "JWT_SECRET": "x" * 40, "LOG_LEVEL": "WARNING"}})

    def fail():
        raise RuntimeError("kaput in the background")

    if sys.argv[2] == "greenlet":
        gevent.spawn(fail).join()
    else:
        worker = threading.Thread(target=fail, name="turn-7")
        worker.start()
        worker.join()
    """
)


@pytest.mark.parametrize("service", ["chat_service", "conversation_service"])
@pytest.mark.parametrize("runner", ["thread", "greenlet"])
def test_an_uncaught_background_exception_is_one_json_line(service, runner, tmp_path):
    """What a thread or greenlet raises and nothing catches: one ERROR line, no plain-text traceback."""
    done = subprocess.run(
        [sys.executable, "-c", UNCAUGHT.format(service=service), f"sqlite:///{tmp_path}/s.sqlite3", runner],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = []
    for text in done.stderr.splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            pytest.fail(f"not a JSON line on stderr: {text!r}\n{done.stderr}")
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1, done.stderr
    (error,) = errors
    assert error["logger"] == "shared.threads"
    assert "RuntimeError: kaput in the background" in error["exception"]
    if runner == "thread":
        assert error["thread_name"] == "turn-7"
    else:
        assert "fail" in error["greenlet"]
    assert done.stdout == ""

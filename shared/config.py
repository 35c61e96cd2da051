"""Configuration from environment variables, the same names in both services (CONTRACT.md).

Each service's `Config` reads its settings in `read` through `shared.settings.Settings`, so every wrong
value is reported at once, one line each (`ConfigError`). What only a serving process needs (a key to
check tokens, an AI provider's key) is checked in `require_serving`: `flask db upgrade` needs no secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sqlalchemy.exc import ArgumentError

from shared.cors import origin_problems
from shared.db import engine_options
from shared.settings import Settings

MIN_SECRET_BYTES = 32


class SharedConfig:
    """Settings both services read; each service subclasses it with its own defaults."""

    SERVICE_NAME = "service"
    # The service's own database setting, read before the shared DATABASE_URL (one server, two databases).
    DATABASE_SETTING = "SERVICE_DATABASE_URL"
    SUCCESS_MESSAGE = "success"
    # OPTIONS answers 405 with `Allow` in the envelope, not Flask's empty HTML 200; a CORS preflight from
    # an allowed origin is answered before that (shared.cors).
    PROVIDE_AUTOMATIC_OPTIONS = False

    def __init__(self, environ: Mapping[str, str] = os.environ, *, serving: bool = False) -> None:
        settings = Settings(environ, self.SERVICE_NAME)
        self.read(settings)
        if serving:
            self.require_serving(settings)
        settings.raise_problems()

    def read(self, s: Settings) -> None:
        self.SQLALCHEMY_DATABASE_URI = (
            s.text(self.DATABASE_SETTING)
            or s.text("DATABASE_URL")
            or f"sqlite:///{self.SERVICE_NAME}.sqlite3"
        )
        # Every connection opened is kept: no overflow to close and reopen in each burst (shared.db).
        pool_size = s.integer("DB_POOL_SIZE", 15, minimum=1)
        max_overflow = s.integer("DB_MAX_OVERFLOW", 0, minimum=0)
        try:
            self.SQLALCHEMY_ENGINE_OPTIONS = engine_options(
                self.SQLALCHEMY_DATABASE_URI,
                pool_size=pool_size,
                max_overflow=max_overflow,
                # The longest a statement may run, and a request wait on a silent database (0: no bound).
                statement_timeout=s.number("DB_STATEMENT_TIMEOUT_SECONDS", 5, minimum=0),
            )
        except ArgumentError as error:
            s.problem(f"{self.DATABASE_SETTING} / DATABASE_URL is not a database URL: {error}")
            self.SQLALCHEMY_ENGINE_OPTIONS = {}
        self.JWT_SECRET = s.text("JWT_SECRET")
        self.JWT_PUBLIC_KEY = s.text("JWT_PUBLIC_KEY")
        self.JWT_PRIVATE_KEY = s.text("JWT_PRIVATE_KEY")
        self.JWT_JWKS_URL = s.text("JWT_JWKS_URL")
        self.JWT_ISSUER = s.text("JWT_ISSUER")
        self.JWT_AUDIENCE = s.text("JWT_AUDIENCE")
        self.JWT_LEEWAY_SECONDS = s.integer("JWT_LEEWAY_SECONDS", 30, minimum=0)
        self.REDIS_URL = s.text("REDIS_URL")
        self.CONVERSATION_SERVICE_URL = s.text("CONVERSATION_SERVICE_URL", "http://127.0.0.1:5002")
        self.MAX_CONTENT_LENGTH = s.integer("MAX_CONTENT_LENGTH", 1024 * 1024, minimum=1)
        self.LOG_LEVEL = s.text("LOG_LEVEL", "INFO")
        self.TIMEZONE = s.text("TIMEZONE", "UTC")
        # Per-user rate limits (shared.rate_limits): a rule such as "600/minute", or "off".
        self.RATE_LIMITS = s.flag("RATE_LIMITS", True)
        self.LIMIT_REQUESTS = s.text("LIMIT_REQUESTS", "600/minute")
        # Where the counts live in Redis (deployments that share one Redis give each its own).
        self.LIMITS_KEY_PREFIX = s.text("LIMITS_KEY_PREFIX", "limits")
        # Proxies in front of the service whose X-Forwarded-For/-Proto/-Host are believed (gateway: 1).
        self.TRUSTED_PROXIES = s.integer("TRUSTED_PROXIES", 0, minimum=0)
        # Admission control (shared.admission): requests in flight per worker, sized to the pool; 0: off.
        self.ADMISSION_MAX_IN_FLIGHT = s.integer(
            "ADMISSION_MAX_IN_FLIGHT", pool_size + max_overflow, minimum=0
        )
        self.ADMISSION_TIMEOUT_SECONDS = s.number("ADMISSION_TIMEOUT_SECONDS", 10, minimum=0)
        self.ADMISSION_RETRY_AFTER_SECONDS = s.integer("ADMISSION_RETRY_AFTER_SECONDS", 2, minimum=0)
        # Under gevent, a request body must arrive within this (408 otherwise); 0: no bound.
        self.REQUEST_BODY_TIMEOUT_SECONDS = s.number("REQUEST_BODY_TIMEOUT_SECONDS", 30, minimum=0)
        # Browser origins (scheme://host[:port]) whose pages may call the API (shared.cors); none by default.
        self.CORS_ALLOWED_ORIGINS = s.items("CORS_ALLOWED_ORIGINS")
        for problem in origin_problems(self.CORS_ALLOWED_ORIGINS):
            s.problem(problem)
        # How long a browser may reuse a preflight's answer.
        self.CORS_MAX_AGE_SECONDS = s.integer("CORS_MAX_AGE_SECONDS", 600, minimum=0)
        # The key of erasure tombstones' user hash (shared.tombstones); empty: JWT_SECRET.
        self.ERASURE_HASH_KEY = s.text("ERASURE_HASH_KEY")
        # A deleted session or record can be restored this long; `purge` hard-deletes it after.
        self.RESTORE_WINDOW_DAYS = s.number("RESTORE_WINDOW_DAYS", 30, minimum=0)
        # Purge: rows per batch (each batch its own short transaction), and how often a serving process
        # purges by itself (0: never; run `flask --app <service> purge` or the Kubernetes CronJob).
        self.PURGE_BATCH_SIZE = s.integer("PURGE_BATCH_SIZE", 500, minimum=1)
        self.PURGE_INTERVAL_SECONDS = s.number("PURGE_INTERVAL_SECONDS", 0, minimum=0)
        # Swagger UI for /openapi.json at /docs (shared.docs), served from the installed package.
        self.API_DOCS = s.flag("API_DOCS", True)

    def require_serving(self, s: Settings) -> None:
        """What a process that answers requests needs beyond well-formed settings: a key for tokens."""
        if not (self.JWT_SECRET or self.JWT_PUBLIC_KEY or self.JWT_JWKS_URL):
            s.problem("set JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL: no token could be checked")
        if self.JWT_SECRET and len(self.JWT_SECRET.encode()) < MIN_SECRET_BYTES:
            s.problem(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long")

    def as_dict(self) -> dict:
        names = {name for name in dir(self) if name.isupper()}
        return {name: getattr(self, name) for name in names}


def setting_names(config_class: type[SharedConfig]) -> dict[str, str]:
    """Every setting `config_class` reads, with its default, in the order read (docs and tests)."""
    settings = Settings({}, config_class.SERVICE_NAME)
    config_class.read(config_class.__new__(config_class), settings)
    return settings.names

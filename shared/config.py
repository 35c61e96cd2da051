"""Configuration from environment variables, the same names in both services (CONTRACT.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from shared.db import engine_options


class SharedConfig:
    """Settings both services read; each service subclasses it with its own defaults."""

    SERVICE_NAME = "service"
    SUCCESS_MESSAGE = "success"
    # OPTIONS answers 405 with `Allow` in the envelope, not Flask's empty HTML 200 (CORS is the gateway's).
    PROVIDE_AUTOMATIC_OPTIONS = False

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        env = environ.get
        self.SQLALCHEMY_DATABASE_URI = env("DATABASE_URL") or f"sqlite:///{self.SERVICE_NAME}.sqlite3"
        self.SQLALCHEMY_ENGINE_OPTIONS = engine_options(
            self.SQLALCHEMY_DATABASE_URI,
            pool_size=int(env("DB_POOL_SIZE", "5")),
            max_overflow=int(env("DB_MAX_OVERFLOW", "10")),
            # The longest a statement may run, and a request wait on a silent database (0: no bound).
            statement_timeout=float(env("DB_STATEMENT_TIMEOUT_SECONDS", "5")),
        )
        self.JWT_SECRET = env("JWT_SECRET", "")
        self.JWT_PUBLIC_KEY = env("JWT_PUBLIC_KEY", "")
        self.JWT_PRIVATE_KEY = env("JWT_PRIVATE_KEY", "")
        self.JWT_JWKS_URL = env("JWT_JWKS_URL", "")
        self.JWT_ISSUER = env("JWT_ISSUER", "")
        self.JWT_AUDIENCE = env("JWT_AUDIENCE", "")
        self.JWT_LEEWAY_SECONDS = int(env("JWT_LEEWAY_SECONDS", "30"))
        self.REDIS_URL = env("REDIS_URL", "")
        self.CONVERSATION_SERVICE_URL = env("CONVERSATION_SERVICE_URL", "http://127.0.0.1:5002")
        self.MAX_CONTENT_LENGTH = int(env("MAX_CONTENT_LENGTH", str(1024 * 1024)))
        self.LOG_LEVEL = env("LOG_LEVEL", "INFO")
        self.TIMEZONE = env("TIMEZONE", "UTC")
        # Per-user rate limits (shared.rate_limits): a rule such as "600/minute", or "off".
        self.RATE_LIMITS = env("RATE_LIMITS", "true").strip().lower() not in ("0", "false", "no", "off")
        self.LIMIT_REQUESTS = env("LIMIT_REQUESTS", "600/minute")
        # Where the counts live in Redis (deployments that share one Redis give each its own).
        self.LIMITS_KEY_PREFIX = env("LIMITS_KEY_PREFIX", "limits")
        # Proxies in front of the service whose X-Forwarded-For/-Proto/-Host are believed (gateway: 1).
        self.TRUSTED_PROXIES = int(env("TRUSTED_PROXIES", "0"))
        # Admission control (shared.admission): requests in flight per worker, sized to the pool; 0: off.
        pool_slots = int(env("DB_POOL_SIZE", "5")) + int(env("DB_MAX_OVERFLOW", "10"))
        self.ADMISSION_MAX_IN_FLIGHT = int(env("ADMISSION_MAX_IN_FLIGHT", str(pool_slots)))
        self.ADMISSION_TIMEOUT_SECONDS = float(env("ADMISSION_TIMEOUT_SECONDS", "10"))
        self.ADMISSION_RETRY_AFTER_SECONDS = int(env("ADMISSION_RETRY_AFTER_SECONDS", "2"))
        # Under gevent, a request body must arrive within this (408 otherwise); 0: no bound.
        self.REQUEST_BODY_TIMEOUT_SECONDS = float(env("REQUEST_BODY_TIMEOUT_SECONDS", "30"))
        # Browser origins (scheme://host[:port]) whose pages may call the API (shared.cors); none by default.
        origins = env("CORS_ALLOWED_ORIGINS", "").split(",")
        self.CORS_ALLOWED_ORIGINS = [origin.strip() for origin in origins if origin.strip()]
        # How long a browser may reuse a preflight's answer.
        self.CORS_MAX_AGE_SECONDS = int(env("CORS_MAX_AGE_SECONDS", "600"))
        # Swagger UI for /openapi.json at /docs (shared.docs), served from the installed package.
        self.API_DOCS = env("API_DOCS", "true").strip().lower() not in ("0", "false", "no", "off")

    def as_dict(self) -> dict:
        names = {name for name in dir(self) if name.isupper()}
        return {name: getattr(self, name) for name in names}

"""chat_service's settings: the shared ones plus its own defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping

from shared.config import SharedConfig


class Config(SharedConfig):
    SERVICE_NAME = "chat_service"
    SUCCESS_MESSAGE = "success"

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        super().__init__(environ)
        env = environ.get
        # The AI provider (chat_service.providers): `echo` (offline default), `dify` or `openai`.
        self.AI_PROVIDER = env("AI_PROVIDER", "echo").strip().lower() or "echo"
        self.DIFY_API_URL = env("DIFY_API_URL", "https://api.dify.ai/v1")
        self.DIFY_API_KEY = env("DIFY_API_KEY", "")
        self.OPENAI_BASE_URL = env("OPENAI_BASE_URL", "https://api.openai.com/v1")
        self.OPENAI_API_KEY = env("OPENAI_API_KEY", "")
        self.OPENAI_MODEL = env("OPENAI_MODEL", "gpt-4o-mini")
        self.ECHO_DELAY_SECONDS = float(env("ECHO_DELAY_SECONDS", "0.05"))
        # Read timeout well above Dify's 10 s keep-alive pings; it bounds a silent stream, not a turn.
        self.PROVIDER_CONNECT_TIMEOUT_SECONDS = float(env("PROVIDER_CONNECT_TIMEOUT_SECONDS", "5"))
        self.PROVIDER_READ_TIMEOUT_SECONDS = float(env("PROVIDER_READ_TIMEOUT_SECONDS", "60"))
        # Before a reply's first piece: at most this many calls, waits doubling from base up to cap.
        self.PROVIDER_RETRY_TRIES = int(env("PROVIDER_RETRY_TRIES", "3"))
        self.PROVIDER_RETRY_BASE_SECONDS = float(env("PROVIDER_RETRY_BASE_SECONDS", "0.5"))
        self.PROVIDER_RETRY_CAP_SECONDS = float(env("PROVIDER_RETRY_CAP_SECONDS", "8"))

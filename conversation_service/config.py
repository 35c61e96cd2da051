"""conversation_service's settings: the shared ones plus its own defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from conversation_service.snowflake import parse_worker_id
from shared.config import SharedConfig


class Config(SharedConfig):
    SERVICE_NAME = "conversation_service"
    SUCCESS_MESSAGE = "操作成功"

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        super().__init__(environ)
        ZoneInfo(self.TIMEZONE)  # an unknown zone fails at start, not on the first response
        # Unset: derived per process from the host name and pid (see snowflake.py and the docs).
        self.SNOWFLAKE_WORKER_ID = parse_worker_id(environ.get("SNOWFLAKE_WORKER_ID"))

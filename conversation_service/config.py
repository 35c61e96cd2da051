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
        # chat_service, where changes to a chat session's record are mirrored (conversation_service.sync).
        self.CHAT_SERVICE_URL = environ.get("CHAT_SERVICE_URL", "http://127.0.0.1:5001")
        # The outbox worker that delivers them: on in every server process; polls every interval; a
        # failed delivery is retried after 0.5 s, 1 s, ... up to the cap.
        self.OUTBOX_WORKER = environ.get("OUTBOX_WORKER", "true").strip().lower() not in (
            "0",
            "false",
            "no",
            "off",
        )
        # GET /list answers at most this many records (pinned first, then newest); /page pages them all.
        self.LIST_MAX_RECORDS = _positive_int(environ, "LIST_MAX_RECORDS", "1000")
        self.OUTBOX_INTERVAL_SECONDS = float(environ.get("OUTBOX_INTERVAL_SECONDS", "0.5"))
        self.OUTBOX_MAX_BACKOFF_SECONDS = float(environ.get("OUTBOX_MAX_BACKOFF_SECONDS", "10"))
        # Records one user may create per window (shared.rate_limits notation; "off" for none).
        self.LIMIT_RECORDS_CREATED = environ.get("LIMIT_RECORDS_CREATED", "60/minute")


def _positive_int(environ: Mapping[str, str], name: str, default: str) -> int:
    """A setting that must be a positive integer in ASCII digits; anything else stops the start."""
    raw = environ.get(name, default).strip()
    if not (raw.isascii() and raw.isdigit() and int(raw) > 0):
        raise ValueError(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)

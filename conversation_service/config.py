"""conversation_service's settings: the shared ones plus its own defaults."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conversation_service.snowflake import parse_worker_id
from shared.config import SharedConfig
from shared.settings import Settings


class Config(SharedConfig):
    SERVICE_NAME = "conversation_service"
    DATABASE_SETTING = "CONVERSATION_DATABASE_URL"
    SUCCESS_MESSAGE = "操作成功"

    def read(self, s: Settings) -> None:
        super().read(s)
        try:
            ZoneInfo(self.TIMEZONE)  # an unknown zone fails at start, not on the first response
        except (ZoneInfoNotFoundError, ValueError):
            s.problem(f"TIMEZONE must be an IANA time zone such as Asia/Shanghai, not {self.TIMEZONE!r}")
        # Unset: derived per process from the host name and pid (see snowflake.py and the docs).
        self.SNOWFLAKE_WORKER_ID = s.parse("SNOWFLAKE_WORKER_ID", "", parse_worker_id, None)
        # chat_service, where changes to a chat session's record are mirrored (conversation_service.sync).
        self.CHAT_SERVICE_URL = s.text("CHAT_SERVICE_URL", "http://127.0.0.1:5001")
        # The outbox worker that delivers them: on in every server process; polls every interval; a
        # failed delivery is retried after 0.5 s, 1 s, ... up to the cap.
        self.OUTBOX_WORKER = s.flag("OUTBOX_WORKER", True)
        # GET /list answers at most this many records (pinned first, then newest); /page pages them all.
        self.LIST_MAX_RECORDS = s.integer("LIST_MAX_RECORDS", 1000, minimum=1)
        self.OUTBOX_INTERVAL_SECONDS = s.number("OUTBOX_INTERVAL_SECONDS", 0.5, minimum=0.01)
        self.OUTBOX_MAX_BACKOFF_SECONDS = s.number("OUTBOX_MAX_BACKOFF_SECONDS", 10, minimum=0)
        # Records one user may create per window (shared.rate_limits notation; "off" for none).
        self.LIMIT_RECORDS_CREATED = s.text("LIMIT_RECORDS_CREATED", "60/minute")

"""When and how long to wait before trying a provider call again."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RetryPolicy:
    """At most `tries` calls in all; waits grow from `base` doubling, never above `cap` (Retry-After too)."""

    tries: int = 3
    base: float = 0.5
    cap: float = 8.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RetryPolicy:
        """The policy from chat_service's `PROVIDER_RETRY_*` settings."""
        return cls(
            tries=int(config.get("PROVIDER_RETRY_TRIES", cls.tries)),
            base=float(config.get("PROVIDER_RETRY_BASE_SECONDS", cls.base)),
            cap=float(config.get("PROVIDER_RETRY_CAP_SECONDS", cls.cap)),
        )

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed call number `attempt` (1-based), honouring a `Retry-After` value."""
        wait = self.base * 2 ** (attempt - 1)
        asked = parse_retry_after(retry_after)
        if asked is not None:
            wait = asked
        return max(0.0, min(wait, self.cap))


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: either delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())

"""chat_service's own metrics: open sockets and AI turns (see shared/metrics.py for requests).

The socket handler calls `socket_opened()`/`socket_closed()`; the turn runner calls
`first_token(provider, seconds)` when a reply's first piece arrives and `turn_finished(provider,
outcome)` once per turn. `provider` is the provider's `name` (`echo`, `dify`, `openai`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTCOMES = ("completed", "stopped", "failed")

ws_open_sockets = Gauge(
    "ws_open_sockets",
    "WebSockets open on this service, all workers together.",
    multiprocess_mode="livesum",
)
ai_turns_total = Counter(
    "ai_turns_total",
    "AI turns ended: completed, stopped by the user, or failed at the provider.",
    ["provider", "outcome"],
)
ai_time_to_first_token_seconds = Histogram(
    "ai_time_to_first_token_seconds",
    "Time from a turn's start to the first piece of its reply, retries included.",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60),
)


def socket_opened() -> None:
    ws_open_sockets.inc()


def socket_closed() -> None:
    ws_open_sockets.dec()


def turn_finished(provider: str, outcome: str) -> None:
    """Count one ended turn; `outcome` is one of OUTCOMES (anything else is a bug: ValueError)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    ai_turns_total.labels(provider, outcome).inc()


def first_token(provider: str, seconds: float) -> None:
    ai_time_to_first_token_seconds.labels(provider).observe(seconds)

"""chat_service's own metrics: open sockets and AI turns (see shared/metrics.py for requests).

The socket handler calls `socket_opened()`/`socket_closed()`; the turn runner calls
`first_token(provider, seconds)` when a reply's first piece arrives, `turn_finished(provider,
outcome)` once per turn and `tokens_used(provider, usage)` for a reply the provider accounted.
`provider` is the provider's `name` (`echo`, `dify`, `openai`).
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


ai_tokens_total = Counter(
    "ai_tokens_total",
    "Tokens the providers reported for stored replies, by kind (prompt, completion).",
    ["provider", "kind"],
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


def tokens_used(provider: str, usage: dict) -> None:
    """Count a reply's reported tokens (`usage` as normalize_usage gives it)."""
    for kind in ("prompt", "completion"):
        tokens = usage.get(f"{kind}_tokens")
        if isinstance(tokens, int) and tokens > 0:
            ai_tokens_total.labels(provider, kind).inc(tokens)

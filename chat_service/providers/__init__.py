"""AI providers behind one interface (`Provider.start(turn) -> Stream`), chosen by `AI_PROVIDER`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chat_service.providers.base import (
    REASONS,
    Delta,
    Event,
    Finished,
    Linked,
    Paused,
    Provider,
    ProviderError,
    Replace,
    Started,
    Stream,
    TurnRequest,
    normalize_usage,
)
from chat_service.providers.dify import DifyProvider
from chat_service.providers.echo import EchoProvider
from chat_service.providers.openai import OpenAIProvider

PROVIDERS = {"echo": EchoProvider, "dify": DifyProvider, "openai": OpenAIProvider}

__all__ = [
    "PROVIDERS",
    "REASONS",
    "Delta",
    "DifyProvider",
    "EchoProvider",
    "Event",
    "Finished",
    "Linked",
    "OpenAIProvider",
    "Paused",
    "Provider",
    "ProviderError",
    "Replace",
    "Started",
    "Stream",
    "TurnRequest",
    "make_provider",
    "normalize_usage",
]


def make_provider(config: Mapping[str, Any]) -> Provider:
    """The provider `AI_PROVIDER` names (default `echo`); a ValueError at startup for anything unknown."""
    name = str(config.get("AI_PROVIDER") or "echo").strip().lower()
    if name not in PROVIDERS:
        raise ValueError(f"AI_PROVIDER={name!r} is not one of {', '.join(sorted(PROVIDERS))}")
    return PROVIDERS[name].from_config(config)

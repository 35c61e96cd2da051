"""chat_service's settings: the shared ones plus its own defaults."""

from __future__ import annotations

from shared.config import SharedConfig


class Config(SharedConfig):
    SERVICE_NAME = "chat_service"
    SUCCESS_MESSAGE = "success"

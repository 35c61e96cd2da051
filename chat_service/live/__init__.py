"""The live path: sockets (`socket`), fan-out to them (`hub`), across instances (`bus`), and AI turns
(`turns`). A frame in goes to a service function, a turn streams the provider's reply as deltas, the
stored reply is announced, and every frame reaches every socket of its session through bus → hub.

`current()` (or `of(app)`) is the one typed way to reach these collaborators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from chat_service.live.bus import Bus
    from chat_service.live.hub import Hub
    from chat_service.live.slots import Slots
    from chat_service.live.turns import Turns
    from chat_service.providers.base import Provider
    from shared.http import ServiceClient

_KEY = "chat_service.live"


@dataclass(frozen=True)
class Live:
    bus: Bus
    hub: Hub
    turns: Turns
    provider: Provider
    conversations: ServiceClient  # conversation_service, for the Dify link
    sockets: Slots  # each user's open sockets (LIMIT_SOCKETS)

    def close(self) -> None:
        """Stop the background work and release connections (at exit, and in tests)."""
        self.sockets.close()
        self.turns.close()
        self.bus.close()
        self.provider.close()


def init_app(app: Flask, provider: Provider, conversations: ServiceClient) -> Live:
    from chat_service.live.bus import Bus
    from chat_service.live.hub import Hub
    from chat_service.live.slots import Slots
    from chat_service.live.turns import Turns

    bus = Bus(app.config["REDIS_URL"], timeout=float(app.config["REDIS_TIMEOUT_SECONDS"]))
    hub = Hub()
    turns = Turns(app, bus, hub, provider)
    bus.start(on_frame=hub.deliver, on_control=turns.on_control)
    sockets = Slots(
        bus, "sockets", int(app.config["LIMIT_SOCKETS"]), key_prefix=app.config["LIMITS_KEY_PREFIX"]
    )
    app.extensions[_KEY] = live = Live(bus, hub, turns, provider, conversations, sockets)
    return live


def of(app: Flask) -> Live:
    return app.extensions[_KEY]


def current() -> Live:
    return current_app.extensions[_KEY]

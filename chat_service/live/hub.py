"""The hub: the sockets open in this process, by session, and the one job of handing each a frame."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Frame:
    """One server frame: its JSON text, with what a socket needs to know of it without parsing it."""

    type: str
    text: str
    turn_id: str | None = None
    seq: int | None = None

    @classmethod
    def of(cls, text: str, payload: dict[str, Any] | None = None) -> Frame:
        payload = json.loads(text) if payload is None else payload
        data = payload.get("data")
        if payload.get("type") == "delta" and isinstance(data, dict):
            return cls("delta", text, data.get("turn_id"), data.get("seq"))
        return cls(str(payload.get("type", "")), text)


class Peer(Protocol):
    """A socket as the hub sees it."""

    def offer(self, frame: Frame) -> None:
        """Queue the frame for the client, never blocking; a client too far behind is disconnected."""

    def close(self, code: int, reason: str) -> None:
        """Close the socket with this code."""


class Hub:
    def __init__(self) -> None:
        self._peers: dict[str, set[Peer]] = {}
        self._lock = threading.Lock()
        self._going_away = False

    def add(self, session_id: str, peer: Peer) -> None:
        """Take a new socket; once the process is going away, close it with 1001 at once instead: past
        SIGTERM a worker still serves the connections it has (a gateway's kept-alive one carries a
        handshake), and a socket held there would be cut without a close frame at the graceful timeout
        and keep the worker to it."""
        with self._lock:
            if not self._going_away:
                self._peers.setdefault(session_id, set()).add(peer)
                return
        peer.close(1001, "server shutting down")

    def remove(self, session_id: str, peer: Peer) -> None:
        with self._lock:
            peers = self._peers.get(session_id)
            if peers is not None:
                peers.discard(peer)
                if not peers:
                    del self._peers[session_id]

    def count(self, session_id: str | None = None) -> int:
        """Sockets open on the session in this process (all sessions when None)."""
        with self._lock:
            if session_id is not None:
                return len(self._peers.get(session_id, ()))
            return sum(len(peers) for peers in self._peers.values())

    def deliver(self, session_id: str, text: str, payload: dict[str, Any] | None = None) -> None:
        """Hand one frame to every socket of the session in this process (parsed once, not per socket)."""
        with self._lock:
            peers = list(self._peers.get(session_id, ()))
        if not peers:
            return
        frame = Frame.of(text, payload)
        for peer in peers:
            peer.offer(frame)

    def going_away(self) -> None:
        """At shutdown: close every socket of this process with 1001, and every one opened after."""
        with self._lock:
            self._going_away = True
            peers = [peer for group in self._peers.values() for peer in group]
        for peer in peers:
            peer.close(1001, "server shutting down")

"""The live chat socket, `/ws/<session_id>`: a user sends messages and sees every frame of the session.

The handshake is refused (403) only for a browser `Origin` that is not allowed; a bad token or a
session that is unknown or someone else's is told in an `error` frame and the socket closed with
4401/4403/4404 (browsers cannot read a refused handshake's status, but do get the frame). No session
data flows before those checks pass. The session is resolved once, here; each client frame then goes
to a service function. Every byte to the client goes through the socket's `Outbox` (one writer); a
client that falls behind by more than the outbox's bound is closed with 1013, one whose token expires
with 4401.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
import time
import uuid
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from simple_websocket import ConnectionClosed

import shared.cors
from chat_service import events, live, metrics
from chat_service.extensions import db, sock
from chat_service.live.hub import Frame
from chat_service.live.outbox import Outbox
from chat_service.schemas import Content
from chat_service.services.sessions import owned_session
from shared.auth import authenticate, bearer_token
from shared.errors import BadRequest, Forbidden, OperationFailed, Unauthorized, as_api_error
from shared.inputs import parse_json

log = logging.getLogger(__name__)
bp = Blueprint("ws", __name__)

CLOSE_CODES = {400: 4400, 401: 4401, 403: 4403, 429: 4429, 7001: 4404, 12001: 1011}
TOO_SLOW = 1013
CLOSE_GRACE_SECONDS = 2  # for the client to read our last frames and answer the close (RFC 6455)
SLOW_CLOSE_GRACE_SECONDS = 1  # a client too far behind gets this long before its socket is shut
_RAW_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


class ClientFrame(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(
        required=True, validate=validate.OneOf(("message", "stop", "ping", "regenerate", "edit"))
    )
    content = Content()
    message_id = fields.Integer(strict=True, validate=validate.Range(min=1, max=2**63 - 1))


@bp.before_request
def check_handshake() -> None:
    """Refuse (400) what is not an RFC 6455 handshake before flask-sock's `Server` parses it (it
    would raise: a 500)."""
    headers = request.headers
    if "websocket" not in headers.get("Upgrade", "").lower():
        raise BadRequest("this route opens a WebSocket: send an upgrade handshake")
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise BadRequest("Sec-WebSocket-Version must be 13")
    try:
        key = base64.b64decode(headers.get("Sec-WebSocket-Key", ""), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 16:
        raise BadRequest("Sec-WebSocket-Key must be 16 bytes in base64")


@bp.before_request
def check_origin() -> None:
    """Refuse cross-site handshakes (CSWSH); clients that send no Origin are judged by their token.

    WS_ALLOWED_ORIGINS, when set, is the whole list; when empty, the page's own host may open sockets
    and so may the origins CORS_ALLOWED_ORIGINS lets call the REST API (a frontend needs both)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = current_app.config["WS_ALLOWED_ORIGINS"]
    if "*" in allowed or origin in allowed:
        return
    if not allowed and (_same_host(origin) or shared.cors.policy().allows(origin)):
        return
    raise Forbidden(f"origin {origin!r} may not open this socket")


def _same_host(origin: str) -> bool:
    try:
        return urlsplit(origin).netloc == request.host
    except ValueError:  # e.g. an unclosed IPv6 bracket: no host at all
        return False


@bp.before_request
def install_outbox() -> None:
    """Give the handshake our single-writer socket, before flask-sock's `Server` takes the raw one."""
    for key in _RAW_SOCKET_KEYS:
        if key in request.environ:
            request.environ[key] = g.outbox = Outbox(
                request.environ[key],
                max_frames=current_app.config["WS_QUEUE_MAX_FRAMES"],
                max_bytes=current_app.config["WS_QUEUE_MAX_BYTES"],
            )
            return


@sock.route("/ws/<session_id>", bp=bp)
def chat_socket(ws, session_id: str) -> None:
    SessionSocket(ws, g.outbox).serve(session_id)


def _subprotocol_token() -> str | None:
    """The token of a browser's `Sec-WebSocket-Protocol: bearer, <token>` pair."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if len(offered) >= 2 and offered[0].lower() == "bearer":
        return offered[1]
    return None


class SessionSocket:
    """One client's socket on one session: the hub's peer, and the reader of the client's frames."""

    def __init__(self, ws, outbox: Outbox) -> None:
        self.ws = ws
        self.outbox = outbox
        self.live = live.current()
        self._lock = threading.Lock()
        self._pending: list[Frame] | None = []  # frames that came before `turn_state` went out
        self._skip: tuple[str, int] | None = None  # deltas already in the `turn_state` sent
        self._closed = False
        self._too_slow_closed = False
        self.holder = uuid.uuid4().hex  # this socket, among its user's open sockets (LIMIT_SOCKETS)

    def serve(self, session_id: str) -> None:
        try:
            authenticate(bearer_token([_subprotocol_token(), request.args.get("token")]))
            if "user_id" not in g:
                raise Forbidden("a service token must name the user in the X-User-Id header")
            self.session_id = owned_session(g.user_id, session_id).session_id
            self.live.sockets.acquire(g.user_id, self.holder)
        except Exception as error:
            api_error = as_api_error(error)
            self._send_now(events.error_frame(api_error))
            self.close(CLOSE_CODES.get(api_error.code, 4400), api_error.message)
            self._finish(CLOSE_GRACE_SECONDS)
            return
        finally:
            db.session.remove()
        self.expires_at = g.token_expires_at + current_app.config["JWT_LEEWAY_SECONDS"]
        hub = self.live.hub
        hub.add(self.session_id, self)
        metrics.socket_opened()
        try:
            self._start()
            self._read()
        finally:
            hub.remove(self.session_id, self)
            self.live.sockets.release(g.user_id, self.holder)
            metrics.socket_closed()
            self._finish(SLOW_CLOSE_GRACE_SECONDS if self._too_slow_closed else CLOSE_GRACE_SECONDS)

    def _finish(self, grace: float) -> None:
        """Let the client read what is queued and answer our close, for up to `grace` seconds; then the
        socket is shut whatever the client does."""
        deadline = time.monotonic() + grace
        self.ws.thread.join(timeout=grace)  # simple-websocket's reader ends on the client's close answer
        self.outbox.finish(max(0.0, deadline - time.monotonic()))

    # -- the hub's side ----------------------------------------------------------------------------------

    def offer(self, frame: Frame) -> None:
        with self._lock:
            if self._pending is not None:
                self._pending.append(frame)
                if len(self._pending) > self.outbox.max_frames:
                    self._too_slow()
                return
            self._send(frame)

    def close(self, code: int, reason: str) -> None:
        """Send the close frame (after what is queued) and wake the reader; idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ConnectionClosed):
            self.ws.close(code, reason)
        self.ws.event.set()  # `receive` returns at once

    def _send(self, frame: Frame) -> None:
        if self._closed:
            return
        if frame.type == "delta" and self._skip and (frame.turn_id, frame.seq or 0) <= self._skip:
            return  # already in the `turn_state` this socket was sent
        if not self.outbox.has_room(len(frame.text)):
            self._too_slow()
            return
        self._send_now(frame.text)
        if frame.type == "session_deleted":
            self.close(1000, "session deleted")

    def _send_now(self, payload: dict | str) -> None:
        text = payload if isinstance(payload, str) else events.encode(payload)
        with contextlib.suppress(ConnectionClosed):
            self.ws.send(text)

    def _too_slow(self) -> None:
        frames, size = self.outbox.pending
        log.warning(
            "closing a socket whose client is not reading",
            extra={"session_id": self.session_id, "queued_frames": frames, "queued_bytes": size},
        )
        self._too_slow_closed = True
        self.close(TOO_SLOW, "client too slow: too many frames waiting to be sent")

    def _start(self) -> None:
        """Send `turn_state` for a turn in flight (taken after subscribing, so no piece is missed), then
        the frames that arrived meanwhile."""
        snapshot = self.live.turns.snapshot(self.session_id)
        with self._lock:
            if snapshot is not None:
                self._skip = (snapshot["turn_id"], snapshot["seq"])
                self._send_now(events.frame("turn_state", snapshot))
            pending, self._pending = self._pending or [], None
            for frame in pending:
                self._send(frame)

    # -- the client's side -------------------------------------------------------------------------------

    def _read(self) -> None:
        """Act on the client's frames until it goes, the socket is closed, or the token expires."""
        while not self._closed:
            remaining = self.expires_at - time.time()
            if remaining <= 0:
                self._reply(Unauthorized("token expired"))
                self.close(4401, "token expired")
                return
            try:
                raw = self.ws.receive(timeout=remaining)
            except ConnectionClosed:
                return
            if raw is not None:
                self._handle(raw)

    def _handle(self, raw: str | bytes) -> None:
        """Act on one client frame; whatever goes wrong is told in an `error` frame, never fatal."""
        try:
            if isinstance(raw, bytes):
                raise BadRequest("frames must be JSON text")
            payload = ClientFrame().load(parse_json(raw, detail="frames must be JSON text"))
            getattr(self, f"_on_{payload['type']}")(payload)
        except Exception as error:
            self._reply(error)
        finally:
            db.session.remove()

    def _on_message(self, payload: dict) -> None:
        if not payload.get("content"):
            raise ValidationError({"content": ["Missing data for required field."]})
        self.live.turns.start(g.user_id, self.session_id, payload["content"])

    def _on_regenerate(self, _payload: dict) -> None:
        self.live.turns.regenerate(g.user_id, self.session_id)

    def _on_edit(self, payload: dict) -> None:
        missing = [name for name in ("message_id", "content") if not payload.get(name)]
        if missing:
            raise ValidationError({name: ["Missing data for required field."] for name in missing})
        self.live.turns.edit(g.user_id, self.session_id, payload["message_id"], payload["content"])

    def _on_stop(self, _payload: dict) -> None:
        if self.live.turns.snapshot(self.session_id) is None:
            raise OperationFailed("no reply is being generated in this session")
        self.live.turns.stop(self.session_id)

    def _on_ping(self, _payload: dict) -> None:
        self.offer(Frame("pong", events.encode(events.frame("pong"))))

    def _reply(self, error: Exception) -> None:
        """An `error` frame to this socket only, in order with its other frames."""
        self.offer(Frame("error", events.encode(events.error_frame(as_api_error(error)))))

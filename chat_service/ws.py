"""The live chat socket, `/ws/<session_id>`: a user sends messages and sees every frame of the session.

The handshake is refused (403) only for a browser `Origin` that is not allowed; a bad token or a
session that is unknown or someone else's is told in an `error` frame and the socket closed with
4401/4403/4404 (browsers cannot read a refused handshake's status, but do get the frame). No session
data flows before those checks pass. Each socket has one sender thread that writes its frames in order;
the handler thread only reads the client's frames.
"""

from __future__ import annotations

import json
import logging
import threading
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from simple_websocket import ConnectionClosed
from sqlalchemy.exc import SQLAlchemyError

from chat_service import events, metrics
from chat_service.extensions import db, sock
from chat_service.hub import GOING_AWAY, Frame, Subscription
from chat_service.schemas import Content
from chat_service.services import turns
from chat_service.services.sessions import owned_session
from shared.auth import authenticate, bearer_token
from shared.errors import (
    ApiError,
    BadRequest,
    DatabaseUnavailable,
    Forbidden,
    OperationFailed,
    ValidationFailed,
)

log = logging.getLogger(__name__)
bp = Blueprint("ws", __name__)

CLOSE_CODES = {400: 4400, 401: 4401, 403: 4403, 7001: 4404}
CLOSE_WAIT_SECONDS = 2
_STOP_SENDING = object()


def close(ws, code: int, reason: str) -> None:
    """Close, then give the client a moment to finish the closing handshake, as RFC 6455 asks:
    closing the TCP connection at once can lose the frames just sent."""
    ws.close(code, reason)
    ws.thread.join(timeout=CLOSE_WAIT_SECONDS)


class ClientFrame(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(("message", "stop", "ping")))
    content = Content()


@bp.before_request
def check_origin() -> None:
    """Refuse cross-site handshakes (CSWSH); clients that send no Origin are judged by their token."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = current_app.config["WS_ALLOWED_ORIGINS"]
    if "*" in allowed or origin in allowed:
        return
    if not allowed and urlsplit(origin).netloc == request.host:
        return
    raise Forbidden(f"origin {origin!r} may not open this socket")


@sock.route("/ws/<session_id>", bp=bp)
def chat_socket(ws, session_id: str) -> None:
    SessionSocket(ws).serve(session_id)


def _subprotocol_token() -> str | None:
    """The token of a browser's `Sec-WebSocket-Protocol: bearer, <token>` pair."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if len(offered) >= 2 and offered[0].lower() == "bearer":
        return offered[1]
    return None


class SessionSocket:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.subscription: Subscription | None = None

    def serve(self, session_id: str) -> None:
        try:
            authenticate(bearer_token([_subprotocol_token(), request.args.get("token")]))
            if "user_id" not in g:
                raise Forbidden("a service token must name the user in the X-User-Id header")
            session_id = owned_session(g.user_id, session_id).session_id
        except SQLAlchemyError:
            log.exception("socket refused: the database failed while checking it")
            self._refuse(DatabaseUnavailable(), 1011)
            return
        except ApiError as error:
            self._refuse(error, CLOSE_CODES.get(error.code, 4400))
            return
        finally:
            db.session.remove()
        self.session_id = session_id
        hub = current_app.extensions["hub"]
        self.subscription = hub.subscribe(session_id)
        metrics.socket_opened()
        sender = threading.Thread(target=self._send_loop, args=(self._turn_state(),), daemon=True)
        sender.start()
        try:
            while True:
                raw = self.ws.receive()
                if raw is not None:
                    self._handle(raw)
        except ConnectionClosed:
            pass
        finally:
            metrics.socket_closed()
            hub.unsubscribe(self.subscription)
            self.subscription.inbox.put(_STOP_SENDING)
            sender.join(timeout=5)

    def _refuse(self, error: ApiError, code: int) -> None:
        """Tell the client why in an `error` frame (browsers get no reliable close code), then close."""
        self.ws.send(json.dumps(self._error(error), ensure_ascii=False))
        close(self.ws, code, error.message)

    def _turn_state(self) -> dict | None:
        """Send the turn in flight (after subscribing, so no later piece is missed); return it."""
        snapshot = current_app.extensions["turns"].snapshot(self.session_id)
        if snapshot is not None:
            self.ws.send(json.dumps(events.frame("turn_state", snapshot), ensure_ascii=False))
        return snapshot

    def _send_loop(self, snapshot: dict | None) -> None:
        while (frame := self.subscription.get()) is not _STOP_SENDING:
            if snapshot and frame.type == "delta" and _already_sent(frame, snapshot):
                continue
            try:
                if frame.type == GOING_AWAY:
                    close(self.ws, 1001, "server shutting down")
                    return
                self.ws.send(frame.text)
                if frame.type == "session_deleted":
                    close(self.ws, 1000, "session deleted")
                    return
            except (ConnectionClosed, OSError):
                return

    def _handle(self, raw: str | bytes) -> None:
        """Act on one client frame; whatever goes wrong is told in an `error` frame, never fatal."""
        try:
            if isinstance(raw, bytes):
                raise BadRequest("frames must be JSON text")
            try:
                payload = json.loads(raw)
            except ValueError:
                raise BadRequest("frames must be JSON text") from None
            try:
                payload = ClientFrame().load(payload)
            except ValidationError as error:
                raise ValidationFailed(error.normalized_messages()) from None
            getattr(self, f"_on_{payload['type']}")(payload)
        except ApiError as error:
            self._push(self._error(error))
        except SQLAlchemyError:
            log.exception("socket frame failed on the database")
            self._push(self._error(DatabaseUnavailable()))
        except Exception:
            log.exception("socket frame failed")
            self._push(events.frame("error", code=500, message="服务器内部错误"))
        finally:
            db.session.remove()

    def _on_message(self, payload: dict) -> None:
        if not payload.get("content"):
            raise ValidationFailed({"content": ["Missing data for required field."]})
        turns.start_turn(g.user_id, self.session_id, payload["content"])

    def _on_stop(self, _payload: dict) -> None:
        registry = current_app.extensions["turns"]
        if registry.snapshot(self.session_id) is None:
            raise OperationFailed("no reply is being generated in this session")
        registry.request_stop(self.session_id)

    def _on_ping(self, _payload: dict) -> None:
        self._push(events.frame("pong"))

    def _push(self, payload: dict) -> None:
        """Send to this socket only, in order with its other frames."""
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        self.subscription.inbox.put(Frame(self.session_id, payload["type"], text))

    @staticmethod
    def _error(error: ApiError) -> dict:
        return events.frame("error", error.data, code=error.code, message=error.message)


def _already_sent(frame: Frame, snapshot: dict) -> bool:
    """A delta already contained in the `turn_state` this socket was sent."""
    data = json.loads(frame.text)["data"]
    return data.get("turn_id") == snapshot["turn_id"] and data.get("seq", 0) <= snapshot["seq"]

"""Our own NDJSON export taken back (docs/export.md): validated whole, then imported session by session.

- The body is spooled to a temporary file as it arrives (in memory up to 1 MiB, then on disk), at most
  IMPORT_MAX_BYTES: never held in memory whole, and read twice. The first pass validates every line
  (JSON, shape, order, counts against the end line); any fault is a 1001 naming the line, and nothing
  is stored. The second pass imports.
- Each session is one transaction (the session, all its messages, its outbox row): atomic. A failure
  midway keeps the sessions already committed; importing the same file again skips those as duplicates
  and imports the rest.
- New ids: a session's id is derived (uuid5) from the importing user and the session's exported id, so
  the same session imported twice collides on its primary key and is skipped as a duplicate, with no
  column to remember it by. Messages get new ids, in their exported order.
- Kept: titles, contents, roles, order, times (created and updated, as exported), usage, feedback,
  `is_generated`, Dify inputs. Not kept: Dify ids (they name conversations of the exporting
  deployment's Dify app; an imported session starts a new one).
- The record in conversation_service follows through the normal sync (the outbox row); a pinned
  session's record is created at once with its pin (`PUT .../chat/<id>/import`), since the sync never
  carries a pin.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any

import requests
import sqlalchemy as sa
from flask import current_app
from marshmallow import ValidationError
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from chat_service import crud, live
from chat_service.export_schemas import LINES
from chat_service.extensions import db
from chat_service.models import DEFAULT_TITLE, ChatMessage, ChatSession, epoch_ms
from chat_service.services.export import fetch_records
from shared.errors import ValidationFailed
from shared.inputs import text_problem
from shared.search_text import index_tokens

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024  # a message of 32,000 four-byte characters, JSON-escaped, fits many times
SPOOL_MEMORY_BYTES = 1024 * 1024
CHUNK_BYTES = 64 * 1024
INSERT_BATCH = 1000
BODY_SECONDS_PER = 16 * 1024 * 1024  # REQUEST_BODY_TIMEOUT_SECONDS per this many bytes of body
NOT_AN_OBJECT = "not a JSON object (NDJSON: one object per line)"
IMPORT_PATH = "/internal/ai/conversation/chat/{}/import"
# The namespace of imported session ids: uuid5(IMPORTED, "<user id>/<exported session id>").
IMPORTED = uuid.UUID("6f1b0e2c-3c1d-5b8e-9a57-0c2f4d1e8a90")


class LineInvalid(ValidationFailed):
    """A line of the import breaks a rule: 1001, with the line's number and what is wrong with it."""

    def __init__(self, number: int, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.detail = f"line {number}: {_first_message(errors)}; nothing was imported"
        self.data = {"detail": self.detail, "line": number, "errors": errors}


def _first_message(errors: Any) -> str:
    while isinstance(errors, dict) and errors:
        key, errors = next(iter(errors.items()))
        if not isinstance(errors, dict | list):
            return f"{key}: {errors}"
    if isinstance(errors, list) and errors:
        return str(errors[0])
    return str(errors)


def max_bytes() -> int:
    return int(current_app.config.get("IMPORT_MAX_BYTES", DEFAULT_MAX_BYTES))


def imported_session_id(user_id: str, exported_id: str) -> str:
    """The id an exported session gets when `user_id` imports it: the same every time."""
    return str(uuid.uuid5(IMPORTED, f"{user_id}/{exported_id}"))


# --- the body ---------------------------------------------------------------------------------------


def spool(stream: IO[bytes], limit: int, content_length: int | None) -> IO[bytes]:
    """The request body copied to a temporary file as it arrives; 413 beyond `limit` bytes. Under
    gevent the body must arrive within REQUEST_BODY_TIMEOUT_SECONDS per 16 MiB (408 otherwise)."""
    body = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - the caller closes it
    try:
        with _body_deadline(content_length or limit):
            size = 0
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise RequestEntityTooLarge(f"an import is at most IMPORT_MAX_BYTES ({limit}) bytes")
                body.write(chunk)
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body


@contextmanager
def _body_deadline(expected: int) -> Iterator[None]:
    seconds = current_app.config.get("REQUEST_BODY_TIMEOUT_SECONDS", 0)
    monkey = sys.modules.get("gevent.monkey")
    if seconds <= 0 or monkey is None or not monkey.is_module_patched("socket"):
        yield
        return
    import gevent

    total = seconds * max(1, math.ceil(expected / BODY_SECONDS_PER))
    with gevent.Timeout(total, RequestTimeout(f"the import's body did not arrive within {total:g} s")):
        yield


def numbered_lines(body: IO[bytes]) -> Iterator[tuple[int, dict]]:
    """Each non-empty line as (its number, the object it holds); a line that is not a JSON object of
    storable text is a LineInvalid."""
    body.seek(0)
    number = 0
    while raw := body.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise LineInvalid(number, {"_line": [f"longer than {MAX_LINE_BYTES} bytes"]})
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            raise LineInvalid(number, {"_line": [NOT_AN_OBJECT]}) from None
        if not isinstance(obj, dict):
            raise LineInvalid(number, {"_line": [NOT_AN_OBJECT]})
        yield number, obj


def _problem_in_text(obj: Any) -> str | None:
    """A string anywhere in `obj` that no database can store (lone surrogate, NUL)."""
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if problem := text_problem(value):
                return problem
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None


def _load(number: int, obj: dict) -> dict:
    kind = obj.get("type")
    schema = LINES.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise LineInvalid(number, {"type": [f"must be one of {', '.join(LINES)}"]})
    if problem := _problem_in_text(obj):
        raise LineInvalid(number, {"_line": [problem]})
    try:
        return schema.load(obj)
    except ValidationError as error:
        raise LineInvalid(number, error.normalized_messages()) from None


def parsed_lines(body: IO[bytes]) -> Iterator[tuple[int, dict]]:
    """Every line validated (its shape, and its place: the header first, each message after its
    session, the end line last with the right counts)."""
    sessions = messages = 0
    current: str | None = None
    seen: set[str] = set()
    state = "start"
    last = 0
    for number, obj in numbered_lines(body):
        last = number
        data = _load(number, obj)
        kind = data["type"]
        if state == "start" and kind != "export":
            raise LineInvalid(number, {"type": ["the first line must be the export line (type export)"]})
        if state == "ended":
            raise LineInvalid(number, {"type": ["nothing may follow the end line"]})
        if kind == "export" and state != "start":
            raise LineInvalid(number, {"type": ["the export line comes first, once"]})
        if kind == "session":
            current = str(data["session_id"])
            if current in seen:
                raise LineInvalid(number, {"session_id": [f"session {current} appears twice"]})
            if len(seen) < 1_000_000:  # a bound on memory; the end line's counts still check the rest
                seen.add(current)
            sessions += 1
        elif kind == "message":
            if current is None or str(data["session_id"]) != current:
                raise LineInvalid(number, {"session_id": ["a message must follow its own session's line"]})
            messages += 1
        elif kind == "end":
            if (data["sessions"], data["messages"]) != (sessions, messages):
                raise LineInvalid(
                    number,
                    {
                        "_line": [
                            f"the end line counts {data['sessions']} sessions and {data['messages']} "
                            f"messages, the file holds {sessions} and {messages}"
                        ]
                    },
                )
            state = "ended"
            yield number, data
            continue
        state = "body"
        yield number, data
    if state != "ended":
        raise LineInvalid(
            last + 1 if state != "start" else 1,
            {"_line": ["the end line is missing: the export was cut off (download it again)"]},
        )


def validate(body: IO[bytes]) -> list[bool]:
    """The first pass: every line checked; answers, per session in order, whether it is pinned."""
    return [
        bool(data["record"] and data["record"]["pinned"])
        for _number, data in parsed_lines(body)
        if data["type"] == "session"
    ]


# --- storing ----------------------------------------------------------------------------------------


@dataclass
class Summary:
    sessions_imported: int = 0
    messages_imported: int = 0
    duplicates_skipped: int = 0
    sessions: list[dict] = field(default_factory=list)
    pins_not_applied: list[str] = field(default_factory=list)


def _usage_json(usage: dict | None) -> str | None:
    return json.dumps(usage, ensure_ascii=False, separators=(",", ":")) if usage is not None else None


class SessionWriter:
    """One imported session in one transaction: the row, then its messages in batches."""

    def __init__(self, user_id: str, number: int, data: dict) -> None:
        self.number = number
        self.data = data
        self.exported_id = str(data["session_id"])
        self.session_id = imported_session_id(user_id, self.exported_id)
        self.user_id = user_id
        self.pending: list[dict] = []
        self.count = 0
        self.duplicate_of = self._existing()
        if self.duplicate_of is None:
            try:
                self._insert_session()
            except IntegrityError:  # imported concurrently by another request
                db.session.rollback()
                self.duplicate_of = self.session_id

    def _existing(self) -> str | None:
        """The user's session this one would duplicate: imported before, or the exported session itself
        (the file comes back where it was exported), deleted or not."""
        found = db.session.scalar(
            sa.select(ChatSession.session_id).where(
                ChatSession.session_id.in_([self.session_id, self.exported_id]),
                ChatSession.user_id == self.user_id,
            )
        )
        db.session.rollback()
        return found

    def _insert_session(self) -> None:
        data, usage = self.data, self.data["usage"]
        title = data["title"]
        db.session.execute(
            sa.insert(ChatSession).values(
                session_id=self.session_id,
                user_id=self.user_id,
                title=title,
                message_count=0,
                created_at=data["created_at"],
                updated_at=data["updated_at"],
                is_deleted=False,
                title_version=epoch_ms() if title != DEFAULT_TITLE else 0,
                dify_version=0,
                inputs=json.dumps(data["inputs"], ensure_ascii=False) if data["inputs"] else None,
                prompt_tokens=usage["prompt_tokens"],
                completion_tokens=usage["completion_tokens"],
                total_tokens=usage["total_tokens"],
                total_price=Decimal(usage["total_price"]) if usage["total_price"] is not None else None,
                currency=usage["currency"],
                search_tokens=index_tokens(title),
            )
        )

    def add(self, message: dict) -> None:
        if self.duplicate_of is not None:
            return
        feedback = message["feedback"] or {}
        self.pending.append(
            {
                "session_id": self.session_id,
                "user_id": self.user_id,
                "role": message["role"],
                "content": message["content"],
                "search_tokens": index_tokens(message["content"]),
                "created_at": message["created_at"],
                "updated_at": message["updated_at"],
                "is_deleted": False,
                "is_generated": message["is_generated"],
                "usage": _usage_json(message["usage"]),
                "feedback_rating": feedback.get("rating"),
                "feedback_content": feedback.get("content"),
            }
        )
        if len(self.pending) >= INSERT_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            # A multi-row INSERT numbers its rows in their order: the new ids keep the exported order.
            # On the table (Core): the rows carry their search tokens already.
            db.session.execute(ChatMessage.__table__.insert(), self.pending)
            self.count += len(self.pending)
            self.pending = []

    def finish(self, summary: Summary) -> None:
        """Commit the session (its count, its outbox row) or report it as a duplicate."""
        entry = {"line": self.number, "from_session_id": self.exported_id, "session_id": self.session_id}
        if self.duplicate_of is None:
            try:
                self._flush()
                db.session.execute(
                    sa.update(ChatSession)
                    .where(ChatSession.session_id == self.session_id)
                    .values(message_count=self.count)
                )
                crud.mirror(db.session, self.session_id)  # its record follows, by the normal sync
                db.session.commit()
            except IntegrityError:  # imported concurrently by another request
                db.session.rollback()
                self.duplicate_of = self.session_id
            finally:
                db.session.remove()
        if self.duplicate_of is not None:
            summary.duplicates_skipped += 1
            summary.sessions.append(
                entry
                | {
                    "session_id": self.duplicate_of,
                    "status": "duplicate",
                    "messages": 0,
                    "detail": f"already here as session {self.duplicate_of}: skipped",
                }
            )
            return
        summary.sessions_imported += 1
        summary.messages_imported += self.count
        summary.sessions.append(entry | {"status": "imported", "messages": self.count})
        record = self.data["record"]
        if record and record["pinned"] and not self._pin():
            summary.pins_not_applied.append(self.session_id)

    def _pin(self) -> bool:
        """Create the session's record with its pin now (the sync would create it unpinned)."""
        state = {
            "title": self.data["title"],
            "titleVersion": 0,
            "createdTime": epoch_ms(self.data["created_at"]),
            "activityTime": epoch_ms(self.data["updated_at"]),
            "isPinned": 1,
        }
        session = db.session.get(ChatSession, self.session_id)
        state["titleVersion"] = int(session.title_version) if session is not None else 0
        db.session.remove()
        for attempt in range(3):
            try:
                response = live.current().conversations.request(
                    "PUT", IMPORT_PATH.format(self.session_id), user_id=self.user_id, json=state
                )
                if response.ok:
                    return True
                log.warning("pinning imported session %s: HTTP %s", self.session_id, response.status_code)
            except requests.RequestException as error:
                log.warning("pinning imported session %s: %s", self.session_id, error)
            time.sleep(0.2 * (attempt + 1))
        return False


def import_export(user_id: str, body: IO[bytes]) -> Summary:
    """Validate the whole body, then import it session by session (see the module's docstring)."""
    pins = validate(body)
    if any(pins):
        fetch_records(user_id, [])  # conversation_service must be up to take the pins: 503 otherwise
    summary = Summary()
    writer: SessionWriter | None = None
    for number, data in parsed_lines(body):
        if data["type"] == "session":
            if writer is not None:
                writer.finish(summary)
            writer = SessionWriter(user_id, number, data)
        elif data["type"] == "message" and writer is not None:
            writer.add(data)
    if writer is not None:
        writer.finish(summary)
    return summary

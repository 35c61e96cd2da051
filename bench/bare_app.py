"""The baseline of bench/rest_overhead.py: a bare Flask app doing what three chat_service routes do, with
SQLAlchemy Core and hand-written checks instead of the ORM, marshmallow and our hooks.

Same tables (chat_service's migrations), same SQL (the ownership SELECT, then the page SELECT, or the
counter UPDATE, the outbox upsert and the INSERT with the message's search tokens and owner, in one
transaction), same JWT check (pyjwt, HS256, `exp`/`sub` required,
30 s leeway), same JSON (envelope fields and data, `ensure_ascii=False`), same X-Trace-Id header.

    gunicorn --pythonpath bench 'bare_app:create_app()'   (DATABASE_URL, JWT_SECRET from the environment)

`create_conversation_app()` does the same for conversation_service's `GET /page` and `GET /list`, on a
database migrated by conversation_service: the user's count row, then the records' columns in index
order, the same JSON.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime

import jwt
import sqlalchemy as sa
from flask import Flask, request
from sqlalchemy.dialects import mysql, postgresql, sqlite

from shared.search_text import index_tokens

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
ROLES = ("user", "assistant", "system")
BODY_FIELDS = {"session_id", "content", "role"}

metadata = sa.MetaData()
sessions = sa.Table(
    "chat_sessions",
    metadata,
    sa.Column("session_id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(64)),
    sa.Column("title", sa.String(255)),
    sa.Column("message_count", sa.Integer),
    sa.Column("created_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("is_deleted", sa.Boolean),
)
messages = sa.Table(
    "chat_messages",
    metadata,
    sa.Column("message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("session_id", sa.String(36)),
    sa.Column("role", sa.String(16)),
    sa.Column("content", sa.Text),
    sa.Column("created_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("is_deleted", sa.Boolean),
    sa.Column("user_id", sa.String(64)),
    sa.Column("is_generated", sa.Boolean),
    sa.Column("search_tokens", sa.Text),
)
outbox = sa.Table(
    "chat_sync_outbox",
    metadata,
    sa.Column("topic", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger),
    sa.Column("due_at", sa.DateTime),
    sa.Column("attempts", sa.Integer),
    sa.Column("trace_id", sa.String(64)),
)


def outbox_upsert(dialect: str, session_id: str, now: datetime, trace_id: str):
    """The session's record made due (chat_service's `mirror`): the same upsert."""
    values = {
        "topic": "record",
        "key": session_id,
        "version": 1,
        "due_at": now,
        "attempts": 0,
        "trace_id": trace_id,
    }
    changes = {"version": outbox.c.version + 1, "due_at": now, "attempts": 0, "trace_id": trace_id}
    if dialect in ("mysql", "mariadb"):
        return mysql.insert(outbox).values(values).on_duplicate_key_update(**changes)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(outbox).values(values).on_conflict_do_update(index_elements=["topic", "key"], set_=changes)


def bare_engine(url: str) -> sa.Engine:
    """An engine with ours' pool (shared.db.engine_options): every connection opened is kept. With
    SQLAlchemy's default 5 + 10 the bare app reconnected in each burst above five requests, which
    measured the pool rather than the stack."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 15})
    return sa.create_engine(url, pool_size=15, max_overflow=0)


class Refused(Exception):
    def __init__(self, status: int, code: int, message: str, data=None) -> None:
        self.status, self.code, self.message, self.data = status, code, message, data


def enveloping(app: Flask, success: str):
    """The app's envelope (`success`: the service's success message), refusals answered in it."""

    def envelope(data, status=200, code=200, message=success):
        trace_id = uuid.uuid4().hex
        body = {
            "code": code,
            "message": message,
            "data": data,
            "timestamp": time.time_ns() // 1_000_000,
            "traceId": trace_id,
        }
        response = app.json.response(body)
        response.status_code = status
        response.headers["X-Trace-Id"] = trace_id
        return response

    @app.errorhandler(Refused)
    def _refused(error: Refused):
        return envelope(error.data, error.status, error.code, error.message)

    return envelope


def bearer_user(secret: str) -> str:
    """The request's user: the bearer token's `sub` (HS256, `exp` and `sub` required, 30 s leeway)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise Refused(401, 401, "未认证")
    try:
        claims = jwt.decode(
            token.strip(), secret, algorithms=["HS256"], leeway=30, options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        raise Refused(401, 401, "未认证") from None
    return str(claims["sub"])


def create_app() -> Flask:
    app = Flask(__name__)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    url = os.environ["DATABASE_URL"]
    secret = os.environ["JWT_SECRET"]
    engine = bare_engine(url)
    if url.startswith("sqlite"):

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    envelope = enveloping(app, "success")

    def user_id() -> str:
        return bearer_user(secret)

    def owned_session(conn, user: str, raw_id: str):
        try:
            session_id = str(uuid.UUID(raw_id))
        except ValueError:
            raise Refused(400, 400, "请求参数错误") from None
        row = conn.execute(
            sa.select(sessions).where(sessions.c.session_id == session_id, sessions.c.is_deleted.is_(False))
        ).first()
        if row is None:
            raise Refused(404, 7001, "会话不存在")
        if row.user_id != user:
            raise Refused(403, 403, "禁止访问（无权操作）")
        return row

    def brief(row) -> dict:
        return {
            "message_id": row.message_id,
            "content": row.content,
            "role": row.role,
            "created_at": row.created_at.strftime(UTC_FORMAT),
        }

    def integer(name: str, default: int, high: int) -> int:
        raw = request.args.get(name, default)
        try:
            value = int(raw)
        except ValueError:
            raise Refused(400, 1001, "数据验证失败", {"errors": {name: ["Not a valid integer."]}}) from None
        if not 1 <= value <= high:
            raise Refused(400, 1001, "数据验证失败", {"errors": {name: ["out of range"]}})
        return value

    @app.get("/api/chat/sessions/<session_id>")
    def get_session(session_id):
        user = user_id()
        with engine.connect() as conn:
            row = owned_session(conn, user, session_id)
        return envelope(
            {
                "session_id": row.session_id,
                "title": row.title,
                "message_count": row.message_count,
                "created_at": row.created_at.strftime(UTC_FORMAT),
                "updated_at": row.updated_at.strftime(UTC_FORMAT),
                "is_deleted": row.is_deleted,
            }
        )

    @app.get("/api/chat/sessions/<session_id>/messages")
    def list_messages(session_id):
        user = user_id()
        page = integer("page", 1, 1_000_000)
        page_size = integer("page_size", 50, 100)
        order = request.args.get("order", "asc")
        if order not in ("asc", "desc"):
            raise Refused(400, 1001, "数据验证失败", {"errors": {"order": ["Must be one of: asc, desc."]}})
        key = messages.c.message_id.asc() if order == "asc" else messages.c.message_id.desc()
        with engine.connect() as conn:
            session = owned_session(conn, user, session_id)
            rows = conn.execute(
                sa.select(messages)
                .where(messages.c.session_id == session.session_id, messages.c.is_deleted.is_(False))
                .order_by(key)
                .offset((page - 1) * page_size)
                .limit(page_size)
            ).all()
        items = [brief(row) for row in rows]
        return envelope(
            {"items": items, "total": session.message_count, "page": page, "page_size": page_size}
        )

    @app.post("/api/chat/message")
    def post_message():
        user = user_id()
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise Refused(400, 400, "请求参数错误")
        errors = {name: ["Unknown field."] for name in body.keys() - BODY_FIELDS}
        content, role, raw_id = body.get("content"), body.get("role", "user"), body.get("session_id")
        if not isinstance(raw_id, str) or not 1 <= len(raw_id) <= 64:
            errors["session_id"] = ["Not a valid session id."]
        if not isinstance(content, str) or not content.strip() or len(content) > 32_000 or "\x00" in content:
            errors["content"] = ["Not a valid content."]
        if role not in ROLES:
            errors["role"] = ["Must be one of: user, assistant, system."]
        if errors:
            raise Refused(400, 1001, "数据验证失败", {"errors": errors})
        now = datetime.now(UTC).replace(tzinfo=None)
        with engine.begin() as conn:
            session = owned_session(conn, user, raw_id)
            bumped = conn.execute(
                sa.update(sessions)
                .where(sessions.c.session_id == session.session_id, sessions.c.is_deleted.is_(False))
                .values(message_count=sessions.c.message_count + 1, updated_at=now)
            )
            if bumped.rowcount != 1:
                raise Refused(404, 7001, "会话不存在")
            conn.execute(outbox_upsert(engine.dialect.name, session.session_id, now, uuid.uuid4().hex))
            message_id = conn.execute(
                sa.insert(messages).values(
                    session_id=session.session_id,
                    user_id=user,
                    role=role,
                    content=content,
                    created_at=now,
                    updated_at=now,
                    is_deleted=False,
                    is_generated=False,
                    search_tokens=index_tokens(content),
                )
            ).inserted_primary_key[0]
        return envelope(
            {
                "message_id": message_id,
                "content": content,
                "role": role,
                "created_at": now.strftime(UTC_FORMAT),
            }
        )

    return app


# -- conversation_service's page and list routes ----------------------------------------------------------

LOCAL_FORMAT = "%Y-%m-%dT%H:%M:%S"  # TIMEZONE is UTC in the bench: stored times as they are
conversations = sa.Table(
    "ai_conversations",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("user_id", sa.String(64)),
    sa.Column("title", sa.String(255)),
    sa.Column("dify_conversation_id", sa.String(100)),
    sa.Column("is_pinned", sa.Boolean),
    sa.Column("created_time", sa.DateTime),
    sa.Column("updated_time", sa.DateTime),
    sa.Column("is_deleted", sa.Boolean),
    sa.Column("delete_token", sa.BigInteger),
    sa.Column("chat_session_id", sa.String(36)),
)
user_counts = sa.Table(
    "conversation_user_counts",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("live_count", sa.BigInteger),
)
LIST_MAX_RECORDS = 1000


def create_conversation_app() -> Flask:
    """What conversation_service's `GET /page` (page numbers, the default order) and `GET /list` do: the
    user's count row, then one index-ordered SELECT of the record columns; the same JSON."""
    app = Flask(__name__)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    url = os.environ["DATABASE_URL"]
    secret = os.environ["JWT_SECRET"]
    engine = bare_engine(url)
    columns = [conversations.c[name] for name in ("id", "user_id", "title", "dify_conversation_id")]
    columns += [conversations.c[name] for name in ("is_pinned", "created_time", "updated_time")]
    columns.append(conversations.c.chat_session_id)
    order = (conversations.c.is_pinned.desc(), conversations.c.created_time.desc(), conversations.c.id.desc())

    envelope = enveloping(app, "操作成功")

    def user_id() -> str:
        return bearer_user(secret)

    def integer(name: str, default: int, high: int) -> int:
        raw = request.args.get(name, default)
        try:
            value = int(raw)
        except ValueError:
            raise Refused(400, 1001, "数据验证失败", {"errors": {name: ["Not a valid integer."]}}) from None
        if not 1 <= value <= high:
            raise Refused(400, 1001, "数据验证失败", {"errors": {name: ["out of range"]}})
        return value

    def record(row) -> dict:
        return {
            "id": str(row.id),
            "userId": row.user_id,
            "title": row.title,
            "difyConversationId": row.dify_conversation_id,
            "isPinned": int(row.is_pinned),
            "createdTime": row.created_time.strftime(LOCAL_FORMAT),
            "updatedTime": row.updated_time.strftime(LOCAL_FORMAT),
            "chatSessionId": row.chat_session_id,
        }

    def live(user: str):
        return sa.and_(conversations.c.user_id == user, conversations.c.is_deleted == sa.false())

    @app.get("/api/ai/conversation/page")
    def page():
        user = user_id()
        page_no = integer("pageNo", 1, 1_000_000)
        size = integer("pageSize", 10, 100)
        with engine.connect() as conn:
            total = conn.execute(
                sa.select(user_counts.c.live_count).where(user_counts.c.user_id == user)
            ).scalar()
            rows = conn.execute(
                sa.select(*columns)
                .where(live(user))
                .order_by(*order)
                .offset((page_no - 1) * size)
                .limit(size)
            ).all()
        total = total or 0
        return envelope(
            {
                "records": [record(row) for row in rows],
                "total": total,
                "current": page_no,
                "size": size,
                "pages": -(-total // size),
            }
        )

    @app.get("/api/ai/conversation/list")
    def list_all():
        user = user_id()
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(*columns).where(live(user)).order_by(*order).limit(LIST_MAX_RECORDS)
            ).all()
        return envelope([record(row) for row in rows])

    return app

"""The error-code table of CONTRACT.md as exceptions, and the one place that renders every failure."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from marshmallow import ValidationError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from shared.envelope import envelope_response

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A failure the client should see: a business `code`, its message, the HTTP status, optional data."""

    code = 400
    message = "请求参数错误"
    http_status = 400
    headers: Mapping[str, str] = {}  # response headers that go with it (e.g. Retry-After)

    def __init__(self, detail: str | None = None, *, data: Any = None) -> None:
        super().__init__(detail or self.message)
        self.detail = detail
        self.data = data if data is not None else ({"detail": detail} if detail else None)


class BadRequest(ApiError):
    """Malformed id, bad query value, body that is not JSON."""


class Unauthorized(ApiError):
    code, message, http_status = 401, "未认证", 401


class Forbidden(ApiError):
    code, message, http_status = 403, "禁止访问（无权操作）", 403


class NotFound(ApiError):
    code, message, http_status = 404, "资源不存在", 404


class ValidationFailed(ApiError):
    """A field breaks its rule; `data.errors` maps each field to its messages."""

    code, message, http_status = 1001, "数据验证失败", 400

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(data={"errors": errors})


class OperationFailed(ApiError):
    """A rule of the domain forbids the operation."""

    code, message, http_status = 1004, "操作失败", 409


class SessionNotFound(ApiError):
    code, message, http_status = 7001, "会话不存在", 404


class ConversationNotFound(ApiError):
    code, message, http_status = 7002, "AI会话不存在", 404


class MessageNotFound(ApiError):
    code, message, http_status = 7003, "消息不存在", 404


class TooManyRequests(ApiError):
    """A per-user limit (shared.rate_limits): when to try again, and which limit."""

    code, message, http_status = 429, "请求过于频繁", 429

    def __init__(
        self, *, retry_after: int, limit: str, name: str, headers: Mapping[str, str] | None = None
    ) -> None:
        detail = f"too many requests: the limit {name} is {limit}; retry after {retry_after} s"
        super().__init__(
            detail, data={"detail": detail, "retry_after": retry_after, "limit": limit, "name": name}
        )
        self.headers = {**(headers or {}), "Retry-After": str(retry_after)}


class UpstreamFailed(ApiError):
    code, message, http_status = 5000, "AI 服务调用失败", 502


class DatabaseUnavailable(ApiError):
    code, message, http_status = 12001, "数据库操作失败", 503


class InternalError(ApiError):
    """A bug: the client learns nothing more than that (the traceback goes to the log)."""

    code, message, http_status = 500, "服务器内部错误", 500

    def __init__(self) -> None:
        super().__init__()


# Werkzeug's HTTP errors that can reach a client before or around our views, in the contract's words.
_HTTP_MESSAGES = {
    400: "请求参数错误",
    401: "未认证",
    403: "禁止访问（无权操作）",
    404: "资源不存在",
    405: "请求方法不允许",
    408: "请求超时",
    413: "请求体过大",
    415: "请求参数错误",
    429: "请求过于频繁",
}


def render(code: int, message: str, http_status: int, data: Any = None) -> Response:
    return envelope_response(data, code=code, message=message, status=http_status)


def as_api_error(error: BaseException) -> ApiError:
    """Any failure as the client sees it, on every transport (REST answers, socket `error` frames);
    database failures and bugs are logged here, once."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, ValidationError):
        return ValidationFailed(error.normalized_messages())
    if isinstance(error, sa_exc.SQLAlchemyError):
        log.error("database error: %s", error.__class__.__name__, exc_info=error)
        if isinstance(error, sa_exc.IntegrityError):
            return OperationFailed("the change conflicts with stored data")
        return DatabaseUnavailable()
    log.error("unhandled exception", exc_info=error)
    return InternalError()


def _api_error(error: Exception) -> Response:
    api_error = as_api_error(error)
    response = render(api_error.code, api_error.message, api_error.http_status, api_error.data)
    response.headers.extend(api_error.headers)
    return response


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    # 415 (wrong content type) is, for a client, a body that could not be read: the contract's 400.
    http_status = 400 if status == 415 else status
    message = _HTTP_MESSAGES.get(status, error.name)
    response = render(http_status, message, http_status, {"detail": error.description})
    for name, value in error.get_headers():
        if name in ("Allow", "Retry-After"):
            response.headers[name] = value
    return response


def init_app(app: Flask) -> None:
    """Route every failure, ours and the framework's, through the envelope."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _api_error)

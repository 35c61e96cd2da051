"""Reading what a client sends (a JSON body, a query string, a socket frame), refusing once, here, what no
route should have to handle itself.

Python's `json` turns `"\\ud800"` (or CESU-8 bytes) into a lone surrogate that no database driver can
encode (psycopg raises deep inside), and nests only to the recursion limit; a NUL is refused by
PostgreSQL in any text; and werkzeug cuts a chunked body at MAX_CONTENT_LENGTH instead of refusing it.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from shared.errors import BadRequest, ValidationFailed

NOT_JSON = "request body must be JSON"
LONE_SURROGATE = "must be valid Unicode text (no lone surrogates)"
NUL = "must not contain NUL characters"


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored (a lone surrogate, a NUL), or None when it can."""
    if "\x00" in text:
        return NUL
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return LONE_SURROGATE
    return None


def printable(name: str) -> str:
    """A field name fit to be sent back in JSON (a lone surrogate shown as its escape)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def check_text(payload: Any) -> None:
    """Refuse (1001, naming the top-level field) any string or key in `payload` that cannot be stored.

    Walks without recursion: the payload may be as deep as `json` allows."""
    errors: dict[str, list[str]] = {}
    stack = list(_fields(payload))
    while stack:
        field, value = stack.pop()
        if isinstance(value, str):
            if problem := text_problem(value):
                errors.setdefault(field, [problem])
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((field, key))  # a name is text too
                stack.append((field, item))
        elif isinstance(value, list):
            stack.extend((field, item) for item in value)
    if errors:
        raise ValidationFailed(errors)


def _fields(payload: Any) -> list[tuple[str, Any]]:
    """The top-level fields of a payload, by the name a client knows them (a name that is bad text
    itself is named by its escape, and checked as a value of its own field)."""
    if isinstance(payload, dict):
        named = [(printable(str(key)), value) for key, value in payload.items()]
        return named + [(printable(key), key) for key in payload if isinstance(key, str)]
    if isinstance(payload, list):
        return [(str(index), value) for index, value in enumerate(payload)]
    return [("_schema", payload)]


def parse_json(data: str | bytes, *, detail: str = NOT_JSON) -> Any:
    """JSON text as Python values, every string storable; malformed or too deeply nested is 400."""
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise BadRequest(detail) from None
    check_text(payload)
    return payload


def json_body() -> Any:
    """The request's body as JSON (any content type). A body without Content-Length (chunked) that
    reaches MAX_CONTENT_LENGTH is 413, as one that declares a larger length is."""
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(data) >= limit:
        raise RequestEntityTooLarge()
    return parse_json(data)


def query_args() -> dict[str, str]:
    """The query string (the first of repeated names), every name and value storable."""
    try:
        args = request.args.to_dict()
    except UnicodeDecodeError:
        raise BadRequest("the query string must be UTF-8") from None
    check_text(args)
    return args

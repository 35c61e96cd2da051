"""View decorators that declare a route's input and output: `body`, `arguments`, `response`.

The schema that validates is the schema that documents; the envelope is added here, never by a view.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response
from marshmallow import EXCLUDE, Schema

from shared.dumping import dumper
from shared.envelope import envelope_response
from shared.inputs import json_body, query_args


def _instance(schema: Schema | type[Schema]) -> Schema:
    return schema() if isinstance(schema, type) else schema


def _annotate(view: Callable, key: str, value: Any) -> None:
    view.__dict__.setdefault("_api", {})[key] = value


def body(schema: Schema | type[Schema]) -> Callable:
    """Load the JSON body (shared.inputs: storable text, bounded size) through `schema`; pass it first."""
    schema = _instance(schema)

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            return view(schema.load(json_body()), *args, **kwargs)

        _annotate(wrapper, "body", schema)
        return wrapper

    return decorator


def arguments(schema: Schema | type[Schema]) -> Callable:
    """Load the query string through `schema` (unknown names ignored) and pass it as first argument."""
    schema = _instance(schema)

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            return view(schema.load(query_args(), unknown=EXCLUDE), *args, **kwargs)

        _annotate(wrapper, "arguments", schema)
        return wrapper

    return decorator


def response(schema: Schema | type[Schema] | None = None, *, status: int = 200) -> Callable:
    """Dump the view's return value through `schema` (as is without one) into the success envelope;
    `shared.dumping` compiles the schema's dump once."""
    schema = _instance(schema) if schema is not None else None
    dump = dumper(schema) if schema is not None else None

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            result = view(*args, **kwargs)
            if isinstance(result, Response):
                return result
            data = dump(result) if dump is not None else result
            return envelope_response(data, status=status)

        _annotate(wrapper, "response", schema)
        _annotate(wrapper, "status", status)
        return wrapper

    return decorator

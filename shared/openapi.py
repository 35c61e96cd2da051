"""The OpenAPI 3 document of a service, built from its url_map and the schemas its decorators record.

`body`, `arguments` and `response` (shared.decorators) leave their schemas on each view's `_api`; the
same schemas validate, so the document cannot drift from what the service does. Served at
`/openapi.json` (no token) and written by `flask --app <service> openapi [--output FILE]`.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import textwrap
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, current_app, jsonify
from flask.cli import with_appcontext
from marshmallow import ValidationError, fields
from werkzeug.routing import Rule

from shared import docs
from shared.auth import _USER_ID

OPENAPI_VERSION = "3.0.3"
DOCUMENT_PATH = "/openapi.json"
# Operational routes (probes, metrics) are not part of the API: left out of the document.
OPERATIONAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PAGE_BLUEPRINT = "page"
_IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
SERVICE_ONLY = "For services only: a service token (claim `typ: service`) naming the user in `X-User-Id`."
_POSITIVE_ID = {"type": "string", "pattern": r"^[1-9][0-9]{0,18}$"}

# Path parameters by name: what the service layer accepts (anything else is a 400).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "session_id": {
        "type": "string",
        "format": "uuid",
        "description": "A chat session id: a UUID (any case).",
    },
    "message_id": {**_POSITIVE_ID, "description": "A chat message id: a positive integer."},
    "conversation_id": {**_POSITIVE_ID, "description": "An AI conversation id: a positive 64-bit integer."},
    "user_id": {
        "type": "string",
        "pattern": f"^{_USER_ID.pattern}$",
        "description": "Must be the caller's own user id (403 otherwise).",
    },
    "dify_conversation_id": {"type": "string", "minLength": 1, "description": "A Dify conversation id."},
}

ENVELOPE = {
    "type": "object",
    "description": "Every response, errors included, is this envelope; `data` varies per route.",
    "required": ["code", "message", "data", "timestamp", "traceId"],
    "properties": {
        "code": {"type": "integer", "description": "200 on success, else the business error code."},
        "message": {"type": "string"},
        "data": {"description": "The route's result."},
        "timestamp": {"type": "integer", "description": "Epoch milliseconds."},
        "traceId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    },
}
ERROR_DATA = {
    "type": "object",
    "nullable": True,
    "description": "null, `{detail}`, or `{errors}` (code 1001: each field mapped to its messages).",
    "properties": {
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": True},
        "notFound": {"type": "array", "items": {"type": "string"}},
        "forbidden": {"type": "array", "items": {"type": "string"}},
    },
}
# status: (component name, what it means), in the words of the contract's error table.
ERRORS = {
    400: (
        "BadRequest",
        "400: malformed id, bad query value, body that is not JSON; 1001: a field breaks its rule",
    ),
    401: ("Unauthorized", "401: token missing, malformed, expired, badly signed, wrong issuer/audience"),
    403: ("Forbidden", "403: the record belongs to someone else, or a named user id is not the caller's"),
    404: ("NotFound", "7001/7002/7003: the session, conversation or message does not exist (or was deleted)"),
    405: ("MethodNotAllowed", "405: wrong method; the `Allow` header lists the right ones"),
    409: ("Conflict", "1004: a rule of the domain forbids it, or the change conflicts with stored data"),
    413: ("PayloadTooLarge", "413: body larger than MAX_CONTENT_LENGTH"),
    503: ("DatabaseUnavailable", "12001: the database is unreachable or failing"),
}


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of every HTTP route of `app` (WebSocket and operational routes left out)."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=app.name,
        version=_version(),
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={"description": _description(app)},
    )
    plugin.converter.add_attribute_function(_strftime_pattern)
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Envelope", component=ENVELOPE)
    spec.components.schema("ErrorData", component=ERROR_DATA)
    error_envelope = _enveloped({"$ref": "#/components/schemas/ErrorData"})
    spec.components.schema("ErrorEnvelope", component=error_envelope)
    for name, description in ERRORS.values():
        spec.components.response(name, _json(description, {"$ref": "#/components/schemas/ErrorEnvelope"}))

    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not documented(rule):
            continue
        view = app.view_functions[rule.endpoint]
        path = _RULE_ARGUMENT.sub(r"{\1}", rule.rule)
        for method in sorted(rule.methods - _IMPLICIT_METHODS):
            paths.setdefault(path, {})[method.lower()] = _operation(plugin, rule, view, method)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)

    document = _without_empty_keywords(spec.to_dict())
    document["security"] = [{"bearerAuth": []}]
    document["tags"] = _tags(app)
    return document


def _without_empty_keywords(node: Any) -> Any:
    """Drop the `format: null` / `pattern: null` that apispec leaves on DateTimes with an strftime format."""
    if isinstance(node, dict):
        return {
            key: _without_empty_keywords(value)
            for key, value in node.items()
            if not (key in ("format", "pattern") and value is None)
        }
    if isinstance(node, list):
        return [_without_empty_keywords(value) for value in node]
    return node


def documented(rule: Rule) -> bool:
    """Whether `rule` belongs in the document: HTTP routes of the API, not sockets, probes or pages."""
    operational = rule.websocket or rule.endpoint == "static" or rule.rule in OPERATIONAL_PATHS
    return not (operational or is_page(rule))


def is_page(rule: Rule) -> bool:
    """A page for people, not an API operation: Swagger UI and its files, the AsyncAPI document
    (shared.docs), and any route of a blueprint named `page` (chat_service's chat page)."""
    return rule.endpoint in docs.ENDPOINTS or rule.endpoint.startswith(PAGE_BLUEPRINT + ".")


def _operation(plugin: MarshmallowPlugin, rule: Rule, view: Callable, method: str) -> dict[str, Any]:
    api = getattr(view, "_api", {})
    fallback = rule.endpoint.rpartition(".")[2].replace("_", " ").capitalize()
    summary, _, description = (inspect.getdoc(view) or fallback).partition("\n")
    operation: dict[str, Any] = {
        "operationId": rule.endpoint,
        "tags": [rule.endpoint.rpartition(".")[0] or "openapi"],
        "summary": summary.strip(),
    }
    if description.strip():
        operation["description"] = description.strip()
    if rule.rule == DOCUMENT_PATH:
        schema = {"type": "object", "required": ["openapi", "info", "paths"]}
        operation["security"] = []
        operation["responses"] = {"200": _json("This document (not in the envelope).", schema)}
        return operation

    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": dict(PATH_PARAMETERS.get(name, {"type": "string"})),
        }
        for name in _RULE_ARGUMENT.findall(rule.rule)
    ]
    if "arguments" in api:
        parameters += plugin.converter.schema2parameters(api["arguments"], location="query")
    if rule.rule.startswith("/internal/"):
        operation["description"] = f"{operation.get('description', '')}\n\n{SERVICE_ONLY}".strip()
        parameters.append(
            {"name": "X-User-Id", "in": "header", "required": True, "schema": PATH_PARAMETERS["user_id"]}
        )
    if parameters:
        operation["parameters"] = parameters
    if "body" in api:
        body_schema = _body(plugin, api["body"])
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema}},
        }

    status = str(api.get("status", 200))
    schema = api.get("response")
    data = plugin.converter.resolve_nested_schema(schema) if schema is not None else _literal_returns(view)
    responses = {
        status: _json("Success: the envelope with the route's `data`.", _enveloped(data, success=True))
    }
    for code in _error_statuses(method, "body" in api):
        responses[str(code)] = {"$ref": f"#/components/responses/{ERRORS[code][0]}"}
    operation["responses"] = responses
    return operation


def _body(plugin: MarshmallowPlugin, schema: Any) -> Any:
    """A body schema; one that loads a JSON array into its one List field documents as that array."""
    declared = list(schema.fields.values())
    if len(declared) == 1 and isinstance(declared[0], fields.List) and _accepts_array(schema):
        return plugin.converter.field2property(declared[0])
    return schema


def _accepts_array(schema: Any) -> bool:
    try:
        schema.load([])
    except ValidationError as error:
        return "_schema" not in error.messages
    return True


def _literal_returns(view: Callable) -> dict[str, Any]:
    """`data` of a view that returns without a schema: the string literals it returns, or null."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(view))))
    except (OSError, TypeError, SyntaxError):
        return {"type": "string", "nullable": True}
    returned = [node.value for node in ast.walk(tree) if isinstance(node, ast.Return) and node.value]
    literals = [node.value for node in returned if isinstance(node, ast.Constant)]
    if not returned:
        return {"type": "string", "nullable": True, "enum": [None]}
    if len(literals) == len(returned) and all(isinstance(value, str) for value in literals):
        return {"type": "string", "enum": literals}
    return {"type": "string", "nullable": True}


def _enveloped(data: dict[str, Any], *, success: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"data": data}
    if success:
        properties["code"] = {"type": "integer", "enum": [200]}
    return {
        "allOf": [{"$ref": "#/components/schemas/Envelope"}, {"type": "object", "properties": properties}]
    }


def _error_statuses(method: str, has_body: bool) -> list[int]:
    statuses = [400, 401, 403, 404, 405]
    statuses += [409] if method != "GET" else []
    statuses += [413] if has_body else []
    return [*statuses, 503]


def _json(description: str, schema: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _strftime_pattern(_converter: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """A DateTime with an strftime format documents as a string with that format's pattern."""
    if not isinstance(field, fields.DateTime) or not field.format or "%" not in field.format:
        return {}
    pattern = re.escape(field.format).replace("%Y", r"\d{4}")
    for directive in ("%m", "%d", "%H", "%M", "%S"):
        pattern = pattern.replace(directive, r"\d{2}")
    return {"type": "string", "pattern": f"^{pattern}$"}


def _tags(app: Flask) -> list[dict[str, str]]:
    """One tag per blueprint, described by its module's docstring; WebSocket ones say where they are."""
    tags = []
    for name, blueprint in app.blueprints.items():
        rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith(f"{name}.")]
        sockets = [r.rule for r in rules if r.websocket]
        if not sockets and not any(documented(r) for r in rules):
            continue
        doc = inspect.cleandoc(sys.modules[blueprint.import_name].__doc__ or name)
        if sockets:
            doc = f"WebSocket, not an HTTP operation, so not among the paths: {', '.join(sockets)}.\n\n{doc}"
        tags.append({"name": name, "description": doc})
    return [*tags, {"name": "openapi", "description": "This document."}]


def _description(app: Flask) -> str:
    service = inspect.cleandoc(sys.modules[app.import_name].__doc__ or app.name)
    parts = [
        service,
        "Every response, errors included, is the envelope `{code, message, data, timestamp, traceId}`; "
        "the HTTP status matches the kind of failure and `code` carries the business code.",
        "Every route needs `Authorization: Bearer <jwt>` (the user is the token's `sub`), except this "
        f"document ({DOCUMENT_PATH}), Swagger UI (/docs) and the socket's AsyncAPI document (/asyncapi.json, "
        "chat_service). A service token (claim `typ: service`) may act for a user it names "
        "in the `X-User-Id` header.",
        f"Not listed: the operational routes ({', '.join(sorted(OPERATIONAL_PATHS))}).",
    ]
    sockets = sorted(r.rule for r in app.url_map.iter_rules() if r.websocket)
    if sockets:
        parts.append(
            f"WebSocket routes cannot be described in OpenAPI 3 and are not among the paths: "
            f"{', '.join(sockets)}; their protocol is at /asyncapi.json (AsyncAPI 3) and in "
            "docs/websocket.md."
        )
    return "\n\n".join(parts)


def _version() -> str:
    try:
        return version("aichat-backend")
    except PackageNotFoundError:
        return "0.0.0"


def document() -> dict[str, Any]:
    """The current app's document, built once (routes cannot change after the first request)."""
    cache = current_app.extensions.setdefault("shared.openapi", {})
    if "document" not in cache:
        cache["document"] = build_spec(current_app)
    return cache["document"]


def openapi_json():
    """The OpenAPI 3 document of this service (no token needed)."""
    return jsonify(document())


@click.command("openapi")
@click.option(
    "--output", "-o", type=click.File("w", encoding="utf-8"), default="-", help="File (default: stdout)."
)
@with_appcontext
def openapi_command(output) -> None:
    """Write this service's OpenAPI 3 document as JSON."""
    output.write(json.dumps(build_spec(current_app), ensure_ascii=False, indent=2) + "\n")


def init_app(app: Flask) -> None:
    """Serve the document at /openapi.json (no token) and add the `openapi` CLI command."""
    app.add_url_rule(DOCUMENT_PATH, "openapi", openapi_json, methods=["GET"])
    app.cli.add_command(openapi_command)

"""The OpenAPI documents: complete (every HTTP route and method), public, in wire names, and on the CLI."""

from __future__ import annotations

import json
import re

import pytest

from chat_service import create_app as create_chat_app
from conversation_service import create_app as create_conversation_app
from shared import docs
from shared.openapi import OPERATIONAL_PATHS
from tests.conftest import base_environ

FACTORIES = {"chat_service": create_chat_app, "conversation_service": create_conversation_app}


@pytest.fixture(params=sorted(FACTORIES))
def app(request, tmp_path):
    app = FACTORIES[request.param](base_environ(f"sqlite:///{tmp_path}/doc.sqlite3"))
    app.config["TESTING"] = True
    return app


def _document(app) -> dict:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def _operation(doc: dict, path: str, method: str) -> dict:
    return doc["paths"][path][method]


def _success_data(operation: dict) -> dict:
    return operation["responses"]["200"]["content"]["application/json"]["schema"]["allOf"][1]["properties"][
        "data"
    ]


def test_document_is_served_without_a_token(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    doc = response.get_json()
    assert doc["openapi"] == "3.0.3"
    assert doc["info"]["title"] == app.name
    assert _operation(doc, "/openapi.json", "get")["security"] == []


def test_every_http_route_and_method_is_documented(app):
    """Every rule but the WebSocket, static and operational ones, with each of its methods; nothing else."""
    doc = _document(app)
    expected, left_out = set(), set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        page = rule.endpoint in docs.ENDPOINTS or rule.endpoint.startswith("page.")  # for people, not the API
        if rule.websocket or rule.endpoint == "static" or rule.rule in OPERATIONAL_PATHS or page:
            left_out.add(path)
            continue
        expected |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    found = {(path, method) for path, operations in doc["paths"].items() for method in operations}
    assert found == expected
    assert not left_out & set(doc["paths"])
    assert ("/openapi.json", "get") in found


def test_protected_operations_use_the_global_bearer_scheme_and_list_their_errors(app):
    doc = _document(app)
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if path == "/openapi.json":
                continue
            assert "security" not in operation, (method, path)
            statuses = set(operation["responses"])
            success = "202" if "202" in statuses else "200"  # an accepted job (an erasure) answers 202
            assert {success, "400", "401", "403", "404", "405", "503"} <= statuses, (method, path)
            envelope = operation["responses"][success]["content"]["application/json"]["schema"]["allOf"]
            assert envelope[0] == {"$ref": "#/components/schemas/Envelope"}
            assert "data" in envelope[1]["properties"]
            if "requestBody" in operation:
                assert "413" in statuses, (method, path)


def test_chat_service_document():
    doc = _document(create_chat_app(base_environ("sqlite://")))
    assert "/ws/<session_id>" in doc["info"]["description"]
    assert "/ws/<session_id>" in next(tag for tag in doc["tags"] if tag["name"] == "ws")["description"]
    assert not any(path.startswith("/ws/") for path in doc["paths"])

    delete = _operation(doc, "/api/chat/sessions/{session_id}", "delete")
    assert delete["parameters"][0]["schema"]["format"] == "uuid"
    assert _success_data(delete) == {"type": "string", "enum": ["会话删除成功"]}
    message = _operation(doc, "/api/chat/sessions/{session_id}/messages/{message_id}", "get")
    assert message["parameters"][1]["schema"]["pattern"] == r"^[1-9][0-9]{0,18}$"
    listing = _operation(doc, "/api/chat/sessions/{session_id}/messages", "get")
    query = {p["name"] for p in listing["parameters"]}
    assert {"page", "page_size", "order"} <= query
    body = doc["components"]["schemas"]["CreateMessageBody"]
    assert set(body["required"]) == {"session_id", "content"}
    assert body["additionalProperties"] is False


def test_conversation_service_document_uses_wire_names():
    doc = _document(create_conversation_app(base_environ("sqlite://")))
    schemas = doc["components"]["schemas"]
    assert set(schemas["Conversation"]["properties"]) >= {
        "id",
        "userId",
        "title",
        "difyConversationId",
        "isPinned",
        "createdTime",
        "updatedTime",
        "chatSessionId",
    }
    assert {"title", "difyConversationId", "isPinned"} <= set(schemas["CreateBody"]["properties"])
    for name, schema in schemas.items():
        assert not [key for key in schema.get("properties", {}) if "_" in key], name
    query = {p["name"] for p in _operation(doc, "/api/ai/conversation/page", "get")["parameters"]}
    assert {"pageNo", "pageSize", "sortBy", "sortOrder", "keyword"} <= query

    batch = _operation(doc, "/api/ai/conversation/batch", "delete")
    body = batch["requestBody"]["content"]["application/json"]["schema"]
    assert body["type"] == "array"
    assert body["items"]["type"] == "string"
    assert _success_data(batch)["enum"] == [None]

    internal = _operation(doc, "/internal/ai/conversation/dify/{dify_conversation_id}", "put")
    assert {"name": "X-User-Id", "in": "header"}.items() <= internal["parameters"][1].items()


def test_cli_writes_the_served_document(app, tmp_path):
    output = tmp_path / "openapi.json"
    result = app.test_cli_runner().invoke(args=["openapi", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert json.loads(output.read_text(encoding="utf-8")) == _document(app)


def test_cli_prints_to_stdout_by_default(app):
    result = app.test_cli_runner().invoke(args=["openapi"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["info"]["title"] == app.name

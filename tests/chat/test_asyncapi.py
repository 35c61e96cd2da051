"""The AsyncAPI document of `/ws/<session_id>` (chat_service/asyncapi.json): valid AsyncAPI 3.0.0, in step
with the code both ways (the client frames the socket handles, the server frames the code builds, the
close codes it uses, the fields of the objects it sends), and every frame of real sessions valid against
the document's payload schema for its type."""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import simple_websocket.ws
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from wsproto.frame_protocol import CloseReason

import chat_service
from chat_service.config import Config
from chat_service.live import socket as live_socket
from chat_service.live.turns import Turn
from chat_service.schemas import MessageSchema, SessionSchema, SessionUsageSchema
from shared import docs
from tests.chat.test_turn_fidelity import linked_conversation
from tests.chat.test_ws import UNKNOWN, create_session, rest, stored_messages, wait_for
from tests.conftest import base_environ

PACKAGE = Path(chat_service.__file__).parent
DOCUMENT = json.loads((PACKAGE / docs.ASYNCAPI_FILE).read_text(encoding="utf-8"))
ASYNCAPI_SCHEMA = json.loads((Path(__file__).parents[1] / "schemas" / "asyncapi-3.0.0.json").read_text())
DOCUMENT_URI = "urn:chat-service:asyncapi"
CHANNEL = DOCUMENT["channels"]["session"]
# The providers speak other protocols: dicts with a `type` key there are not our frames.
# Dicts with a `type` key that are not socket frames: the providers' wire formats, and the lines of an
# NDJSON export and import (docs/export.md).
NOT_OUR_FRAMES = ("chat_service.providers", "chat_service.services.export", "chat_service.services.importing")
EVENTS = "chat_service.events"  # its `frame` builds every server frame


# --- reading the document ------------------------------------------------------------------------------


def resolve(reference: str, document: dict = DOCUMENT) -> dict:
    node = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part]
    return node


def messages_of(action: str) -> dict[str, str]:
    """Frame type -> its message's name, for the messages of the operations with `action` (replies of
    the received frames are sent)."""
    found = {}
    for operation in DOCUMENT["operations"].values():
        references = operation["messages"] if operation["action"] == action else []
        if action == "send" and "reply" in operation:
            references = [*references, *operation["reply"]["messages"]]
        for reference in references:
            name = reference["$ref"].rsplit("/", 1)[1]
            found[frame_type(name)] = name
    return found


def frame_type(message_name: str) -> str:
    return DOCUMENT["components"]["messages"][message_name]["payload"]["properties"]["type"]["const"]


def payload_validator(message_name: str) -> jsonschema.Draft7Validator:
    """A validator of one message's payload, its `$ref`s resolved within the document."""
    registry = Registry().with_resource(DOCUMENT_URI, Resource(contents=DOCUMENT, specification=DRAFT7))
    pointer = f"{DOCUMENT_URI}#/components/messages/{message_name}/payload"
    return jsonschema.Draft7Validator({"$ref": pointer}, registry=registry)


SERVER_FRAMES = messages_of("send")
CLIENT_FRAMES = messages_of("receive")


def assert_valid(frame: dict) -> None:
    assert frame["type"] in SERVER_FRAMES, f"{frame['type']} is not in the document"
    errors = list(payload_validator(SERVER_FRAMES[frame["type"]]).iter_errors(frame))
    assert not errors, (frame, [f"{list(e.absolute_path)}: {e.message}" for e in errors])


# --- reading the code ----------------------------------------------------------------------------------


def modules() -> Iterator[tuple[str, ast.Module]]:
    """chat_service's modules (not its migrations), by dotted name, parsed."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if "migrations" in relative.parts or path.name == "gunicorn.conf.py":
            continue
        name = ".".join(relative.parts).removesuffix(".__init__")
        yield name, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _literal_strings(node: ast.expr, where: str) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _literal_strings(node.body, where) | _literal_strings(node.orelse, where)
    raise AssertionError(
        f"{where}: a frame whose type is not a literal ({ast.unparse(node)}): list it by hand"
    )


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def server_frame_types_in_code() -> dict[str, str]:
    """Every frame type the code builds with `events.frame(...)` (the one way to build a server frame),
    with where; and no frame built as a dict literal with a `type` key."""
    found: dict[str, str] = {}
    for name, tree in modules():
        builder = {id(node) for node in ast.walk(_function(tree, "frame"))} if name == EVENTS else set()
        for node in ast.walk(tree):
            where = f"{name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and node.args:
                callee = (
                    node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                )
                if callee == "frame":
                    for kind in _literal_strings(node.args[0], where):
                        found.setdefault(kind, where)
            if isinstance(node, ast.Dict) and id(node) not in builder and not name.startswith(NOT_OUR_FRAMES):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
                assert "type" not in keys, f"{where}: a frame built by hand; use events.frame"
    return found


def _close_codes(node: ast.expr, module: object, parameters: set[str], where: str) -> set[int]:
    """The codes a `close(...)` argument can be: a literal, a module constant, or `MAPPING.get(key,
    default)` of a module-level mapping; a parameter passes its caller's code through (nothing new)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return {node.value}
    if isinstance(node, ast.Name) and node.id in parameters:
        return set()
    if isinstance(node, ast.Name) and isinstance(getattr(module, node.id, None), int):
        return {getattr(module, node.id)}
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and isinstance(node.func.value, ast.Name)
        and isinstance(getattr(module, node.func.value.id, None), dict)
        and len(node.args) == 2
    ):
        mapping = getattr(module, node.func.value.id)
        return set(mapping.values()) | _close_codes(node.args[1], module, parameters, where)
    raise AssertionError(f"{where}: a close code the test cannot read ({ast.unparse(node)})")


def close_codes_in_code() -> dict[int, str]:
    """Every code the code closes a socket with (`<socket>.close(code, ...)`), with where."""
    found: dict[int, str] = {}
    for name, tree in modules():
        module = importlib.import_module(name)
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            parameters = {a.arg for a in [*function.args.args, *function.args.kwonlyargs]}
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "close"
                    and node.args
                ):
                    where = f"{name}:{node.lineno}"
                    for code in _close_codes(node.args[0], module, parameters, where):
                        found.setdefault(code, where)
    return found


def close_codes_of_the_library() -> dict[int, str]:
    """What simple-websocket closes with, by the options chat_service gives it."""
    options = Config(base_environ("sqlite://")).SOCK_SERVER_OPTIONS
    source = inspect.getsource(simple_websocket.ws)
    found = {}
    if options.get("ping_interval"):  # no pong by the next ping
        assert "CloseReason.POLICY_VIOLATION" in source
        found[CloseReason.POLICY_VIOLATION.value] = "simple-websocket (ping_interval)"
    if options.get("max_message_size"):
        assert "CloseReason.MESSAGE_TOO_BIG" in source
        found[CloseReason.MESSAGE_TOO_BIG.value] = "simple-websocket (max_message_size)"
    return found


# --- the document is AsyncAPI 3.0.0 ---------------------------------------------------------------------


def test_the_document_is_valid_asyncapi_3():
    assert DOCUMENT["asyncapi"] == "3.0.0"
    jsonschema.Draft7Validator(ASYNCAPI_SCHEMA).validate(DOCUMENT)


BREAKAGES = {
    "an AsyncAPI 2 operation": lambda d: d["operations"]["receive_ping"].update(action="publish"),
    "another version": lambda d: d.update(asyncapi="2.6.0"),
    "a payload type that is no type": lambda d: d["components"]["messages"]["pong"]["payload"].update(type=5),
    "an AsyncAPI 2 channel field": lambda d: d["channels"]["session"].update(subscribe={}),
    "a WebSocket handshake by PUT": lambda d: d["channels"]["session"]["bindings"]["ws"].update(method="PUT"),
    "an unknown security scheme": lambda d: d["components"]["securitySchemes"]["tokenQuery"].update(type="x"),
    "no info": lambda d: d.pop("info"),
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=list(BREAKAGES))
def test_the_vendored_schema_refuses_a_broken_document(breakage):
    broken = copy.deepcopy(DOCUMENT)
    BREAKAGES[breakage](broken)
    assert list(jsonschema.Draft7Validator(ASYNCAPI_SCHEMA).iter_errors(broken))


def test_every_reference_resolves_and_operations_use_their_channels_messages():
    """What the JSON Schema cannot check: `$ref`s point at something, an operation's messages are its
    channel's, and each message's payload is a JSON Schema its examples pass."""
    text = json.dumps(DOCUMENT)
    for reference in re.findall(r'"\$ref": "([^"]+)"', text):
        assert isinstance(resolve(reference), dict), reference
    for name, operation in DOCUMENT["operations"].items():
        channel = resolve(operation["channel"]["$ref"])
        for reference in [*operation["messages"], *operation.get("reply", {}).get("messages", [])]:
            assert reference["$ref"].startswith(operation["channel"]["$ref"] + "/messages/"), name
            assert reference["$ref"].rsplit("/", 1)[1] in channel["messages"], name
    for name, message in DOCUMENT["components"]["messages"].items():
        jsonschema.Draft7Validator.check_schema(message["payload"])
        for example in message["examples"]:
            payload_validator(name).validate(example["payload"])
    assert set(CLIENT_FRAMES.values()) | set(SERVER_FRAMES.values()) == set(CHANNEL["messages"])


def test_the_document_ships_in_the_package():
    """`pip install .` (the Docker image) copies only listed data files: without the line, an installed
    chat_service would serve no /asyncapi.json."""
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert docs.ASYNCAPI_FILE in pyproject["tool"]["setuptools"]["package-data"]["chat_service"]


def test_the_served_document_is_the_packaged_one_and_valid(tmp_path):
    from chat_service import create_app

    app = create_app(base_environ(f"sqlite:///{tmp_path}/a.sqlite3"))
    served = app.test_client().get("/asyncapi.json").get_json()
    jsonschema.Draft7Validator(ASYNCAPI_SCHEMA).validate(served)
    assert {k: v for k, v in served.items() if k != "servers"} == {
        k: v for k, v in DOCUMENT.items() if k != "servers"
    }


# --- in step with the code, both ways -------------------------------------------------------------------


def test_client_frames_are_the_ones_the_socket_handles():
    accepted = set(live_socket.ClientFrame._declared_fields["type"].validate.choices)
    handlers = {
        name.removeprefix("_on_") for name in vars(live_socket.SessionSocket) if name.startswith("_on_")
    }
    assert accepted == handlers
    assert set(CLIENT_FRAMES) == accepted, "documented vs handled"
    fields = set()
    for name in CLIENT_FRAMES.values():
        fields |= set(DOCUMENT["components"]["messages"][name]["payload"]["properties"])
    assert fields == set(live_socket.ClientFrame._declared_fields)


def test_server_frames_are_the_ones_the_code_builds():
    built = server_frame_types_in_code()
    assert set(built) - set(SERVER_FRAMES) == set(), f"built but not documented: {built}"
    assert set(SERVER_FRAMES) - set(built) == set(), "documented but never built"


def test_close_codes_are_the_ones_the_code_and_its_library_use():
    used = close_codes_in_code() | close_codes_of_the_library()
    documented = {int(code) for code in CHANNEL["x-close-codes"]}
    assert set(used) - documented == set(), f"used but not documented: {used}"
    assert documented - set(used) == set(), "documented but never used"
    for code in documented:
        assert f"`{code}`" in CHANNEL["description"], code


def test_the_objects_frames_carry_have_the_fields_the_code_sends():
    schemas = DOCUMENT["components"]["schemas"]
    assert set(schemas["Message"]["properties"]) - {"stopped"} == set(MessageSchema().fields)
    assert set(schemas["Session"]["properties"]) == set(SessionSchema().fields)
    assert set(schemas["Session"]["properties"]["usage"]["properties"]) == set(SessionUsageSchema().fields)
    turn_state = DOCUMENT["components"]["messages"]["turn_state"]["payload"]["properties"]["data"]
    assert set(turn_state["properties"]) == set(Turn("s", "u", "t").snapshot())


# --- real frames are valid ------------------------------------------------------------------------------


@pytest.fixture
def echo_live(live_chat_factory):
    """chat_service with the echo provider, slow enough to join a reply in flight."""
    return live_chat_factory(ECHO_DELAY_SECONDS="0.05")[0]


def test_every_frame_of_a_real_session_is_valid(echo_live, token, open_socket):
    base = echo_live
    sid = create_session(base, token)
    one = open_socket(base, sid, ready=True)
    one.send({"type": "ping"})
    one.send({"type": "message", "content": "how do I learn Python"})
    one.until("assistant_message")
    one.send("not json")
    one.send({"type": "nope"})
    one.send({"type": "stop"})  # none running: 1004
    assert [one.until("error")[-1]["code"] for _ in range(3)] == [400, 1001, 1004]

    one.send({"type": "message", "content": " ".join(f"word{i}" for i in range(60))})
    one.until("delta")
    two = open_socket(base, sid)  # joins the reply in flight
    assert two.next()["type"] == "turn_state"
    one.send({"type": "message", "content": "again"})
    assert one.until("error")[-1]["code"] == 1004
    one.send({"type": "stop"})
    assert one.until("assistant_message")[-1]["data"]["stopped"] is True

    first = stored_messages(base, token, sid)[0]
    rest(base, token(), "PATCH", f"/api/chat/messages/{first['message_id']}", json={"new_content": "edited"})
    one.until("message_updated")
    rest(base, token(), "PATCH", f"/api/chat/sessions/{sid}", json={"new_title": "renamed"})
    one.until("session_updated")
    one.send({"type": "regenerate"})
    one.until("assistant_message")
    one.send({"type": "edit", "message_id": first["message_id"], "content": "edited again"})
    one.until("assistant_message")
    rest(base, token(), "DELETE", f"/api/chat/sessions/{sid}")
    one.until("session_deleted")
    closes = {one.closed_with()}

    refused = open_socket(base, UNKNOWN)
    refused.next()
    closes.add(refused.closed_with())

    seen = [*one.seen, *two.seen, *refused.seen]
    for frame in seen:
        assert_valid(frame)
    kinds = {frame["type"] for frame in seen}
    assert {"pong", "user_message", "delta", "assistant_message", "turn_state", "error"} <= kinds
    assert {"message_updated", "message_deleted", "session_updated", "session_deleted"} <= kinds
    assert closes == {1000, 4404} and closes <= {int(code) for code in CHANNEL["x-close-codes"]}


def test_dify_frames_are_valid(dify_live, token, open_socket):
    """What only Dify causes: `suggestions` after a reply, `conversation_reset` when an edit rewinds."""
    base, app = dify_live
    sid = create_session(base, token)
    socket = open_socket(base, sid, ready=True)
    socket.send({"type": "message", "content": "one"})
    socket.until("suggestions")
    wait_for(lambda: linked_conversation(app, sid))
    socket.send({"type": "message", "content": "two"})
    socket.until("suggestions")
    question = stored_messages(base, token, sid)[0]
    socket.send({"type": "edit", "message_id": question["message_id"], "content": "uno"})
    socket.until("conversation_reset")
    socket.until("assistant_message")
    for frame in socket.seen:
        assert_valid(frame)
    assert {"suggestions", "conversation_reset"} <= {frame["type"] for frame in socket.seen}


def test_a_frame_that_breaks_the_document_is_caught():
    """The live checks can fail: a delta without its seq, an error frame claiming success."""
    delta = DOCUMENT["components"]["messages"]["delta"]["examples"][0]["payload"]
    with pytest.raises(AssertionError):
        assert_valid({**delta, "data": {"content": "x", "turn_id": delta["data"]["turn_id"]}})
    error = DOCUMENT["components"]["messages"]["error"]["examples"][0]["payload"]
    with pytest.raises(AssertionError):
        assert_valid({**error, "code": 200})
    with pytest.raises(AssertionError):
        assert_valid({**delta, "type": "typing"})


def test_the_guides_python_client_chats(echo_live, token, capsys):
    """docs/websocket.md's Python example, run as written against a live server."""
    guide = (PACKAGE.parent / "docs" / "websocket.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```python\n(.*?)```", guide, flags=re.DOTALL)
    settings = re.compile(r"^BASE, TOKEN = .*$", flags=re.MULTILINE)
    assert settings.search(example)
    address = echo_live.removeprefix("http://")
    exec(settings.sub(f"BASE, TOKEN = {address!r}, {token()!r}", example), {})  # the example, as printed
    out = capsys.readouterr().out
    assert out.startswith("你好") and re.search(r"\n\[stored as message \d+\]\n$", out), out

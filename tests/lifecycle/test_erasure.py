"""Erasing a user: `flask --app chat_service erase-user` removes every row of theirs in both services and
their Dify conversations, leaves a tombstone holding no personal data, and the account then looks new."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import requests

from chat_service import erasure as chat_erasure
from conversation_service import erasure as conversation_erasure
from shared.tombstones import user_hash
from tests.api_client import ApiClient, envelope
from tests.conftest import ALICE, BOB, SECRET
from tests.fakes.dify import dify_error
from tests.lifecycle import erasure_fixtures
from tests.lifecycle.erasure_fixtures import service_headers, unique
from tests.live import serve
from tests.live_probe import redis_url_or_skip

world = erasure_fixtures.world  # the fixture

EMPTY_CHAT = {"chat_sessions": 0, "chat_messages": 0, "chat_sync_outbox": 0}
EMPTY_CONVERSATION = {"ai_conversations": 0, "conversation_sync_outbox": 0}


def seed_alice(world) -> dict:
    """ALICE's account: a linked session, a plain one, a deleted linked one, a standalone linked record;
    the secrets a tombstone must not hold."""
    titles = [unique("title") for _ in range(4)]
    contents = [unique("content") for _ in range(4)]
    dify = [unique("d") for _ in range(3)]
    linked = world.session(title=titles[0], messages=(contents[0], contents[1]), dify=dify[0])
    world.session(title=titles[1], messages=(contents[2],))
    gone = world.session(title=titles[2], messages=(contents[3],), dify=dify[1])
    envelope(world.chat.delete(f"/api/chat/sessions/{gone}"), 200)
    world.deliver()  # the records follow their sessions (and the deleted one's Dify conversation goes)
    world.record(title=titles[3], dify=dify[2])
    return {"titles": titles, "contents": contents, "dify": dify, "linked": linked}


def seed_bob(world) -> dict:
    sid = world.session(user=BOB, title="bob's", messages=("hello from bob",), dify="d-bob")
    world.deliver()
    world.record(user=BOB, title="bob's record", dify="d-bob-2")
    return {"session": sid}


def test_erase_user_removes_every_row_in_both_services_and_the_dify_conversations(world):
    alice = seed_alice(world)
    seed_bob(world)
    bob_before = world.chat_rows(BOB) | world.conversation_rows(BOB)
    assert world.chat_rows(ALICE)["chat_messages"] == 4
    world.dify.requests.clear()

    result = world.erase(ALICE)

    assert result.exit_code == 0, result.output
    assert world.chat_rows(ALICE) == EMPTY_CHAT
    assert world.conversation_rows(ALICE) == EMPTY_CONVERSATION
    deleted = {r.path.rsplit("/", 1)[-1]: r.json["user"] for r in world.dify.delete_requests}
    assert deleted == {d: ALICE for d in alice["dify"]}
    assert world.chat_rows(BOB) | world.conversation_rows(BOB) == bob_before
    assert "d-bob" not in world.dify.deleted


def test_the_tombstone_proves_the_erasure_and_holds_no_personal_data(world):
    alice = seed_alice(world)
    assert world.erase(ALICE).exit_code == 0

    rows = world.tombstones()
    assert {r["table"] for r in rows} == {"chat_erasures", "conversation_erasures"}
    secrets = [ALICE, alice["linked"], *alice["titles"], *alice["contents"], *alice["dify"]]
    for row in rows:
        for column, value in row.items():
            assert not any(secret in value for secret in secrets), (column, value)
    # An operator holding the key proves the erasure of a given id; without it the hash names nobody.
    proof = hmac.new(SECRET.encode(), b"erasure:" + ALICE.encode(), hashlib.sha256).hexdigest()
    assert {r["user_hash"] for r in rows} == {proof}
    assert proof != hashlib.sha256(ALICE.encode()).hexdigest()
    tombstone = world.chat_tombstone()
    assert tombstone["finished_at"] != "None"
    assert tombstone["counts"] == {
        "ai_conversations": 4,
        "chat_messages": 4,
        "chat_sessions": 3,
        "dify_conversations": 3,
    }


def test_a_later_request_sees_an_empty_account_that_works_as_new(world, open_socket):
    alice = seed_alice(world)
    assert world.erase(ALICE).exit_code == 0

    assert envelope(world.chat.post("/api/chat/sessions", json={}), 200) == []
    envelope(world.chat.get(f"/api/chat/sessions/{alice['linked']}"), 404, 7001)
    with serve(world.chat.app) as base:
        socket = open_socket(base, alice["linked"])
        assert (socket.next()["code"], socket.closed_with()) == (7001, 4404)
    page = envelope(world.conv.get("/api/ai/conversation/page"), 200)
    assert page["total"] == 0 and page["records"] == []
    # Not blocked: the account works as a new one.
    sid = world.session(title="after", messages=("again",))
    assert [s["session_id"] for s in envelope(world.chat.post("/api/chat/sessions", json={}), 200)] == [sid]


def test_erasing_twice_finds_nothing_left_the_second_time(world):
    seed_alice(world)
    assert world.erase(ALICE).exit_code == 0
    first = world.chat_tombstone()

    again = world.erase(ALICE)

    assert again.exit_code == 0, again.output
    assert "this run removed {}" in again.output
    second = world.chat_tombstone()
    assert second["counts"] == first["counts"]
    assert second["finished_at"] != "None"


def test_a_user_who_never_existed_gets_an_empty_tombstone(world):
    result = world.erase("never-seen-1")
    assert result.exit_code == 0, result.output
    tombstone = world.chat_tombstone()
    assert tombstone["counts"] == {} and tombstone["finished_at"] != "None"


def test_a_dify_failure_keeps_the_session_until_a_rerun_deletes_it(world):
    dify_id = unique("d")
    sid = world.session(title="t", messages=("m",), dify=dify_id)
    world.deliver()
    world.dify.script_for("delete", dify_error(500, "internal_server_error", "boom"))

    first = world.erase(ALICE)

    assert first.exit_code == 1 and "not finished" in first.output
    # The messages are gone, the session stays (deleted, invisible) as the note of its Dify conversation.
    assert world.chat_rows(ALICE)["chat_messages"] == 0
    assert world.chat_rows(ALICE)["chat_sessions"] == 1
    envelope(world.chat.get(f"/api/chat/sessions/{sid}"), 404, 7001)
    assert world.chat_tombstone()["finished_at"] == "None"

    second = world.erase(ALICE)

    assert second.exit_code == 0, second.output
    assert world.chat_rows(ALICE) == EMPTY_CHAT and world.conversation_rows(ALICE) == EMPTY_CONVERSATION
    assert [r.path.rsplit("/", 1)[-1] for r in world.dify.delete_requests] == [dify_id, dify_id]


def test_conversation_service_down_leaves_the_erasure_unfinished(world):
    world.session(title="t", messages=("m",))
    app = world.chat.app
    app.extensions["chat_service.live"].conversations.base_url = "http://127.0.0.1:9"  # nobody there
    result = world.erase(ALICE)
    assert result.exit_code == 1 and "could not be reached" in result.output
    assert world.chat_rows(ALICE) == EMPTY_CHAT
    assert world.chat_tombstone()["finished_at"] == "None"


def test_a_session_created_while_the_erasure_runs_is_erased_by_its_next_pass(world):
    world.session(title="first", dify="d-first")
    late = []

    class WritingWhileErased:
        """Dify's delete, during which the user creates another session (a write racing the erasure)."""

        def delete_conversation(self, conversation_id, user_id):
            if not late:
                late.append(world.session(title="late", messages=("racing",)))
            return True

    with world.chat.app.app_context():
        removed = chat_erasure.erase_user(ALICE, WritingWhileErased())
    assert late and removed["chat_sessions"] == 2
    assert world.chat_rows(ALICE) == EMPTY_CHAT


# -- the internal routes ---------------------------------------------------------------------------


def test_the_operators_route_queues_the_erasure_and_reports_its_progress(world):
    seed_alice(world)
    response = world.chat.post(
        "/internal/chat/erasures", user=None, json={"user_id": ALICE}, headers=service_headers()
    )
    state = envelope(response, 202, 200)
    assert state["finished_at"] is None and len(state["user_hash"]) == 64
    assert ALICE not in str(state)

    world.deliver()  # a serving process's outbox worker runs it

    done = envelope(
        world.chat.get(f"/internal/chat/erasures/{state['user_hash']}", user=None, headers=service_headers()),
        200,
    )
    assert done["finished_at"] is not None and done["counts"]["chat_messages"] == 4
    assert world.chat_rows(ALICE) == EMPTY_CHAT and world.conversation_rows(ALICE) == EMPTY_CONVERSATION


@pytest.mark.parametrize("method, path, payload", [
    ("POST", "/internal/chat/erasures", {"user_id": ALICE}),
    ("GET", "/internal/chat/erasures/" + "0" * 64, None),
])  # fmt: skip
def test_the_operators_routes_refuse_users_and_anonymous_callers(world, method, path, payload):
    assert envelope(world.chat.call(method, path, user=None, json=payload), 401, 401)
    # Not even the user's own token, naming themselves.
    own = {"Authorization": f"Bearer {world.chat.token(ALICE)}", "X-User-Id": ALICE}
    assert envelope(world.chat.call(method, path, json=payload, headers=own), 403, 403)
    assert world.chat_rows(ALICE) == EMPTY_CHAT and world.tombstones() == []


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"user_id": ""},
        {"user_id": "a b"},
        {"user_id": "x" * 65},
        {"user_id": 7},
        {"user_id": ALICE, "x": 1},
    ],
)
def test_the_operators_route_refuses_invalid_input(world, payload):
    response = world.chat.post("/internal/chat/erasures", user=None, json=payload, headers=service_headers())
    assert envelope(response, 400, 1001)["errors"]


def test_the_progress_route_answers_404_and_400(world):
    headers = service_headers()
    assert envelope(
        world.chat.get("/internal/chat/erasures/" + "a" * 64, user=None, headers=headers), 404, 404
    )
    assert envelope(
        world.chat.get("/internal/chat/erasures/not-a-hash", user=None, headers=headers), 400, 400
    )


def test_conversation_services_route_takes_a_service_token_only(world):
    world.record(title="r", dify=None)
    url = f"{world.conversation_url}/internal/ai/conversation/erasures"
    assert requests.post(url, json={"userId": ALICE}, timeout=10).json()["code"] == 401
    own = {"Authorization": f"Bearer {world.conv.token(ALICE)}"}
    assert requests.post(url, json={"userId": ALICE}, headers=own, timeout=10).json()["code"] == 403
    bad = requests.post(
        url, json={"userId": ALICE, "difyDeleted": "x"}, headers=service_headers(), timeout=10
    )
    assert bad.status_code == 400 and bad.json()["code"] == 1001

    answer = requests.post(url, json={"userId": ALICE}, headers=service_headers(), timeout=10)

    assert answer.status_code == 200
    data = answer.json()["data"]
    assert data["done"] is True and data["removed"] == {"ai_conversations": 1}
    assert data["difyConversationIds"] == [] and data["finishedTime"] is not None


def test_conversation_services_own_command_keeps_records_naming_dify_unless_told(world):
    world.record(title="plain")
    world.record(title="linked", dify="d-kept")
    runner = world.conv.app.test_cli_runner()

    kept = runner.invoke(args=["erase-user", ALICE])

    assert kept.exit_code == 1 and "--without-dify" in kept.output
    assert world.conversation_rows(ALICE)["ai_conversations"] == 1
    assert runner.invoke(args=["erase-user", ALICE, "--without-dify"]).exit_code == 0
    assert world.conversation_rows(ALICE) == EMPTY_CONVERSATION


# -- units --------------------------------------------------------------------------------------------


def test_the_hash_prefers_the_erasure_key_and_both_services_use_it():
    config = {"JWT_SECRET": SECRET}
    keyed = {"JWT_SECRET": SECRET, "ERASURE_HASH_KEY": "another-key"}
    assert user_hash(ALICE, keyed) != user_hash(ALICE, config)
    assert chat_erasure.user_hash is conversation_erasure.user_hash is user_hash
    with pytest.raises(RuntimeError, match="ERASURE_HASH_KEY"):
        user_hash(ALICE, {})


def test_the_users_shared_rate_limit_counts_are_cleared(world):
    from chat_service import create_app, live
    from chat_service.extensions import db as chat_db

    redis_url = redis_url_or_skip()
    app = create_app(world.chat_environ(REDIS_URL=redis_url, LIMIT_REQUESTS="3/minute"))
    app.config["TESTING"] = True
    try:
        chat = ApiClient(app, ALICE)
        for _ in range(3):
            envelope(chat.post("/api/chat/sessions", json={}), 200)
        envelope(chat.post("/api/chat/sessions", json={}), 429, 429)
        envelope(chat.post("/api/chat/sessions", user=BOB, json={}), 200)

        assert world.erase(ALICE, app).exit_code == 0

        envelope(chat.post("/api/chat/sessions", json={}), 200)
        assert (
            chat.post("/api/chat/sessions", user=BOB, json={})
            .headers["RateLimit"]
            .startswith('"requests";r=1;')
        )
    finally:
        live.of(app).close()
        with app.app_context():
            chat_db.engine.dispose()

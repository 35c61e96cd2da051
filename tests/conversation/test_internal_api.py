"""PUT /internal/ai/conversation/dify/{difyConversationId}: the idempotent link other services call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api_client import envelope
from tests.conftest import ALICE, BOB
from tests.conversation.helpers import BASE, FIELDS, service_headers

LINK = "/internal/ai/conversation/dify"


def link(conv, dify_id: str = "conv-1", user: str = ALICE, **body):
    return conv.put(f"{LINK}/{dify_id}", json=body, headers=service_headers(conv, user))


def records(conv, user: str = ALICE) -> list[dict]:
    return envelope(conv.get(f"{BASE}/list", user=user), 200)


def test_link_creates_the_users_record(conv):
    data = envelope(link(conv, title="技术讨论"), 200)
    assert list(data) == FIELDS
    assert (data["userId"], data["title"], data["difyConversationId"], data["isPinned"]) == (
        ALICE, "技术讨论", "conv-1", 0,
    )  # fmt: skip
    assert records(conv) == [data]


def test_link_defaults_the_title(conv):
    assert envelope(link(conv), 200)["title"] == "新会话"
    assert envelope(link(conv, "conv-2", title=None), 200)["title"] == "新会话"


def test_link_is_idempotent_and_keeps_the_users_changes(conv):
    first = envelope(link(conv, title="第一次"), 200)
    envelope(conv.put(BASE, json={"id": first["id"], "title": "用户改的"}), 200)
    again = envelope(link(conv, title="第二次"), 200)
    assert again["id"] == first["id"]
    assert again["title"] == "用户改的"
    assert len(records(conv)) == 1


def test_link_is_per_user(conv):
    mine = envelope(link(conv), 200)
    theirs = envelope(link(conv, user=BOB), 200)
    assert mine["id"] != theirs["id"]
    assert theirs["userId"] == BOB
    assert len(records(conv)) == len(records(conv, BOB)) == 1


def test_link_after_the_user_deleted_the_record_creates_a_new_one(conv):
    first = envelope(link(conv), 200)
    envelope(conv.delete(f"{BASE}/{first['id']}"), 200)
    again = envelope(link(conv), 200)
    assert again["id"] != first["id"]
    assert [record["id"] for record in records(conv)] == [again["id"]]
    envelope(conv.delete(f"{BASE}/{again['id']}"), 200)
    assert envelope(link(conv), 200)["id"] not in (first["id"], again["id"])


def test_concurrent_links_make_one_record(conv):
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: envelope(link(conv, "conv-race"), 200)["id"], range(16)))
    assert len(ids) == 1
    assert [record["id"] for record in records(conv)] == list(ids)


def test_link_needs_a_token(conv):
    envelope(conv.put(f"{LINK}/conv-1", user=None, json={}, headers={"X-User-Id": ALICE}), 401)


def test_link_refuses_a_user_token(conv):
    envelope(conv.put(f"{LINK}/conv-1", json={}), 403)
    envelope(conv.put(f"{LINK}/conv-1", json={}, headers={"X-User-Id": ALICE}), 403)
    assert records(conv) == []


def test_link_needs_the_user_named(conv):
    envelope(conv.put(f"{LINK}/conv-1", json={}, headers=service_headers(conv, None)), 400)


def test_link_rejects_a_malformed_dify_id(conv):
    envelope(link(conv, "d" * 101), 400, 400)
    envelope(link(conv, "%20"), 400, 400)


@pytest.mark.parametrize("body", [{"title": ""}, {"title": "x" * 256}, {"title": 1}, {"userId": BOB}])
def test_link_rejects_invalid_bodies(conv, body):
    envelope(link(conv, **body), 400, 1001)

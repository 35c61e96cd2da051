"""DELETE /api/ai/conversation/batch: every listed record is deleted, or none is."""

from __future__ import annotations

import pytest

from tests.api_client import envelope
from tests.conftest import BOB
from tests.conversation.helpers import BASE, UNKNOWN, new_conversation

BATCH = f"{BASE}/batch"


def live_ids(conv) -> set[str]:
    return {record["id"] for record in envelope(conv.get(f"{BASE}/list"), 200)}


def test_batch_deletes_every_listed_record(conv):
    ids = [new_conversation(conv, f"t{i}")["id"] for i in range(3)]
    keep = new_conversation(conv, "keep")["id"]
    assert envelope(conv.delete(BATCH, json=ids), 200) is None
    assert live_ids(conv) == {keep}
    for rid in ids:
        envelope(conv.get(f"{BASE}/{rid}"), 404, 7002)


def test_batch_accepts_repeated_ids(conv):
    rid = new_conversation(conv)["id"]
    envelope(conv.delete(BATCH, json=[rid, rid]), 200)
    assert live_ids(conv) == set()


def test_batch_with_an_unknown_id_deletes_nothing_and_names_it(conv):
    ids = [new_conversation(conv, f"t{i}")["id"] for i in range(2)]
    data = envelope(conv.delete(BATCH, json=[*ids, UNKNOWN]), 404, 7002)
    assert data["notFound"] == [UNKNOWN]
    assert data["forbidden"] == []
    assert UNKNOWN in data["detail"]
    assert live_ids(conv) == set(ids)


def test_batch_with_a_deleted_id_deletes_nothing(conv):
    ids = [new_conversation(conv, f"t{i}")["id"] for i in range(2)]
    envelope(conv.delete(f"{BASE}/{ids[0]}"), 200)
    data = envelope(conv.delete(BATCH, json=ids), 404, 7002)
    assert data["notFound"] == [ids[0]]
    assert live_ids(conv) == {ids[1]}


def test_batch_with_another_users_id_is_forbidden_and_deletes_nothing(conv):
    mine = new_conversation(conv)["id"]
    theirs = new_conversation(conv, user=BOB)["id"]
    data = envelope(conv.delete(BATCH, json=[mine, theirs, UNKNOWN]), 403)
    assert data["forbidden"] == [theirs]
    assert data["notFound"] == [UNKNOWN]
    assert live_ids(conv) == {mine}
    envelope(conv.get(f"{BASE}/{theirs}", user=BOB), 200)


def test_batch_needs_a_token(conv):
    rid = new_conversation(conv)["id"]
    envelope(conv.delete(BATCH, user=None, json=[rid]), 401)
    assert live_ids(conv) == {rid}


@pytest.mark.parametrize(
    "body",
    [[], {}, {"ids": ["1"]}, "1", 1, [1], [None], [""], ["abc"], ["-1"], [["1"]], ["1"] * 1001],
)
def test_batch_rejects_anything_but_an_array_of_id_strings(conv, body):
    rid = new_conversation(conv)["id"]
    data = envelope(conv.delete(BATCH, json=body), 400, 1001)
    assert "ids" in data["errors"]
    assert live_ids(conv) == {rid}


def test_batch_rejects_a_null_body(conv):
    response = conv.delete(BATCH, data=b"null", headers={"Content-Type": "application/json"})
    assert "ids" in envelope(response, 400, 1001)["errors"]


def test_batch_rejects_a_body_that_is_not_json(conv):
    envelope(conv.delete(BATCH, data=b"[1,", headers={"Content-Type": "application/json"}), 400, 400)

"""REST changes to a session reach every subscriber of that session, as frames."""

from __future__ import annotations

import json

from tests.chat.helpers import new_message, new_session


def frames(subscription) -> list[dict]:
    out = []
    while (frame := subscription.get(timeout=0.01)) is not None:
        out.append(json.loads(frame.text))
    return out


def test_rest_changes_are_published_to_the_sessions_subscribers(chat, chat_app):
    hub = chat_app.extensions["hub"]
    sid, other = new_session(chat), new_session(chat)
    first, second, elsewhere = hub.subscribe(sid), hub.subscribe(sid), hub.subscribe(other)

    mid = new_message(chat, sid, content="hi")["message_id"]
    new_message(chat, sid, content="reply", role="assistant")
    chat.patch(f"/api/chat/messages/{mid}", json={"new_content": "edited"})
    chat.delete(f"/api/chat/messages/{mid}")
    chat.patch(f"/api/chat/sessions/{sid}", json={"new_title": "renamed"})
    chat.delete(f"/api/chat/sessions/{sid}")

    received = frames(first)
    assert [f["type"] for f in received] == [
        "user_message", "assistant_message", "message_updated", "message_deleted", "session_updated",
        "session_deleted",
    ]  # fmt: skip
    assert received == frames(second)
    assert frames(elsewhere) == []
    for f in received:
        assert list(f) == ["type", "code", "message", "data", "timestamp", "traceId"]
        assert f["code"] == 200
    assert received[0]["data"]["content"] == "hi"
    assert received[2]["data"]["content"] == "edited"
    assert received[3]["data"] == {"session_id": sid, "message_id": mid}
    assert received[4]["data"]["title"] == "renamed"


def test_an_unsubscribed_inbox_gets_nothing(chat, chat_app):
    hub = chat_app.extensions["hub"]
    sid = new_session(chat)
    subscription = hub.subscribe(sid)
    hub.unsubscribe(subscription)
    new_message(chat, sid)
    assert frames(subscription) == []
    assert hub.subscriber_count(sid) == 0

"""REST changes to a session reach every subscriber of that session, as frames."""

from __future__ import annotations

import json

from chat_service import live
from tests.chat.helpers import new_message, new_session


class Recorder:
    """A hub peer that keeps what it is offered."""

    def __init__(self, hub, session_id: str) -> None:
        self.offered = []
        hub.add(session_id, self)

    def offer(self, frame) -> None:
        self.offered.append(frame)

    def close(self, code: int, reason: str) -> None:
        pass


def frames(recorder: Recorder) -> list[dict]:
    return [json.loads(frame.text) for frame in recorder.offered]


def test_rest_changes_are_published_to_the_sessions_subscribers(chat, chat_app):
    hub = live.of(chat_app).hub
    sid, other = new_session(chat), new_session(chat)
    first, second, elsewhere = Recorder(hub, sid), Recorder(hub, sid), Recorder(hub, other)

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


def test_a_removed_peer_gets_nothing(chat, chat_app):
    hub = live.of(chat_app).hub
    sid = new_session(chat)
    recorder = Recorder(hub, sid)
    hub.remove(sid, recorder)
    new_message(chat, sid)
    assert frames(recorder) == []
    assert hub.count(sid) == 0

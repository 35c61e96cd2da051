"""Three chat_service instances behind the nginx gateway, sharing Redis and one database: one conversation.

Three production instances (gunicorn, gevent, one worker each) serve the module, an instance a test
stopped replaced by a new one before the next; each test gets its own nginx, so none inherits nginx's
memory of a dead instance (`max_fails`/`fail_timeout`).
Sockets are opened through the gateway only; which instance holds each is read from the instances'
own gauges, and nginx's access log shows where each request went.

- Sockets on three instances see one turn: the same deltas in the same order, one stored reply; REST
  through the gateway and the conversation record agree.
- The instance running a turn is SIGKILLed: its claim lapses within TURN_CLAIM_TTL_SECONDS, the other
  sockets get `error` 5000 with the turn's id, the gateway sends everything to the two survivors, and
  the session takes a new message whose reply streams from a survivor.
- The instance running a turn is SIGTERMed (a rolling update): its sockets close with 1001, the reply
  is finished and stored, the client reconnects through the gateway, and the two others keep serving;
  a socket opened on it after the signal (a kept-alive connection still carries one) gets 1001 too.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from chat_service.services.titles import first_words
from tests.chat.test_live_instances import kill_instance, offer
from tests.conftest import base_environ
from tests.gateway.instances import INSTANCES, Instances, KeptAlive, cluster, conversation_service, databases
from tests.live_probe import eventually, forget_session_keys, redis_url_or_skip

CLAIM_TTL_SECONDS = 3
ECHO_DELAY_SECONDS = 0.1  # one word every 0.1 s: a turn of 30 words runs 3 s
GRACEFUL_SECONDS = 8  # GRACEFUL_TIMEOUT: well above the ~3.5 s an instance takes to go by itself


@pytest.fixture(scope="module")
def redis_url() -> str:
    return redis_url_or_skip()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    with databases(tmp_path_factory.mktemp("instances-db")) as urls:
        yield urls


@pytest.fixture(scope="module")
def conversation_url(stores):
    with conversation_service(stores[1]) as url:
        yield url


@pytest.fixture(scope="module")
def instances(redis_url, stores, conversation_url, tmp_path_factory):
    environ = base_environ(
        stores[0],
        REDIS_URL=redis_url,
        TRUSTED_PROXIES="1",
        CONVERSATION_SERVICE_URL=conversation_url,
        OUTBOX_WORKER="true",  # each session's record in conversation_service
        OUTBOX_INTERVAL_SECONDS="0.2",
        TURN_CLAIM_TTL_SECONDS=str(CLAIM_TTL_SECONDS),
        ECHO_DELAY_SECONDS=str(ECHO_DELAY_SECONDS),
        GRACEFUL_TIMEOUT=str(GRACEFUL_SECONDS),
        WEB_CONCURRENCY="1",  # one worker: an instance is one process to find and to kill
    )
    pool = Instances(environ, tmp_path_factory.mktemp("instances"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def deployed(nginx, instances, conversation_url, redis_url, tmp_path, token):
    with cluster(nginx, tmp_path, instances, conversation_url, token) as running:
        try:
            yield running
        finally:
            for sid in running.session_ids:
                forget_session_keys(redis_url, sid)


def words(count: int) -> str:
    return " ".join(f"word{i}" for i in range(count))


def turn_frames(socket, timeout: float = 20) -> tuple[list[tuple[int, str, str]], dict, dict]:
    """(deltas as (seq, turn id, content), user_message data, assistant_message data) of the turn the
    socket saw since it connected, read up to its `assistant_message`."""
    reply_or_error(socket, timeout)
    frames = socket.seen
    [user] = [f["data"] for f in frames if f["type"] == "user_message"]
    deltas = [
        (f["data"]["seq"], f["data"]["turn_id"], f["data"]["content"]) for f in frames if f["type"] == "delta"
    ]
    return deltas, user, [f["data"] for f in frames if f["type"] == "assistant_message"][-1]


def reply_or_error(socket, timeout: float = 20) -> dict:
    """The turn's `assistant_message`; an `error` frame instead fails, saying what it was."""
    deadline = time.monotonic() + timeout
    while True:
        frame = socket.next(timeout=max(0.05, deadline - time.monotonic()))
        assert frame["type"] != "error", f"an error instead of the reply: {frame}"
        if frame["type"] == "assistant_message":
            return frame


def logged(deployed) -> list[dict]:
    return [json.loads(line) for line in deployed.access_log.read_text().splitlines() if line.strip()]


# --- one conversation across three instances ---------------------------------------------------------


def test_sockets_on_three_instances_see_one_turn_and_rest_agrees(deployed):
    sid = deployed.new_session()
    placed = deployed.place(sid)
    assert sorted(placed) == list(range(INSTANCES))

    text = "three instances one conversation through one gateway"
    placed[1].send({"type": "message", "content": text})
    seen = {index: turn_frames(socket) for index, socket in placed.items()}

    deltas, user, reply = seen[1]
    assert "".join(content for _seq, _turn, content in deltas) == text == reply["content"]
    assert [seq for seq, _turn, _content in deltas] == list(range(1, len(deltas) + 1))
    assert len({turn for _seq, turn, _content in deltas}) == 1
    for index, (other_deltas, other_user, other_reply) in seen.items():
        assert other_deltas == deltas, f"instance {index} saw other deltas"
        assert other_user["message_id"] == user["message_id"]
        assert other_reply["message_id"] == reply["message_id"] and other_reply["content"] == text

    # The title generated after the reply reaches every socket, then the record in conversation_service.
    title = first_words(text)
    for socket in placed.values():
        assert socket.until("session_updated")[-1]["data"]["title"] == title

    stored = deployed.data("GET", f"/aichat/sessions/{sid}/messages")["items"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", text), ("assistant", text)]
    assert [m["message_id"] for m in stored] == [user["message_id"], reply["message_id"]]
    session = deployed.data("GET", f"/api/chat/sessions/{sid}")
    assert session["message_count"] == 2 and session["title"] == title

    def record():
        records = deployed.data("GET", "/api/ai/conversation/list")
        return next((r for r in records if r["chatSessionId"] == sid and r["title"] == title), None)

    assert eventually(record, 10, interval=0.2, what="the record titled as the session")

    # nginx logged each socket (once closed) with the instance it went to: all three.
    for socket in placed.values():
        socket.close()
    ports = {deployed.upstream_port(i) for i in range(INSTANCES)}

    def socket_upstreams():
        return {line["upstream"] for line in logged(deployed) if line["uri"] == f"/ws/{sid}"} == ports

    eventually(socket_upstreams, 5, what="each socket's upstream in nginx's access log")


# --- an instance stopped mid-turn --------------------------------------------------------------------


def interrupted(socket, turn_id: str, timeout: float) -> dict:
    """The `error` 5000 frame that tells this socket the turn died with its instance."""
    deadline = time.monotonic() + timeout
    while True:
        frame = socket.next(timeout=max(0.05, deadline - time.monotonic()))
        if frame["type"] == "error" and frame["code"] == 5000:
            assert frame["data"]["turn_id"] == turn_id, frame
            return frame


def test_the_instance_running_a_turn_is_killed_and_the_gateway_carries_on(deployed):
    sid = deployed.new_session()
    placed = deployed.place(sid)
    survivors = {index: socket for index, socket in placed.items() if index != 0}
    placed[0].send({"type": "message", "content": words(120)})  # 12 s of reply: it cannot end first
    for socket in survivors.values():
        socket.until("delta")
    turn_id = survivors[1].until("delta")[-1]["data"]["turn_id"]

    kill_instance(deployed.instances[0])
    killed_at = time.monotonic()
    # nginx cuts the client's side of a socket whose upstream died; the client sees no close frame.
    assert placed[0].closed_with(timeout=5) in (1005, 1006)

    # Both survivors hear that the turn died, within a few heartbeats of the claim's TTL.
    for socket in survivors.values():
        interrupted(socket, turn_id, timeout=CLAIM_TTL_SECONDS * 4)
    assert time.monotonic() - killed_at < CLAIM_TTL_SECONDS * 4

    # The client reconnects through the gateway: nginx skips the dead instance (refused connection,
    # next upstream), and the session takes a new message once the claim has lapsed.
    again, _where = deployed.connect_and_locate(sid, among=list(survivors))
    question = "are you still there"
    while not offer(again, question):
        assert time.monotonic() - killed_at < CLAIM_TTL_SECONDS * 4, "the session stayed claimed"
        time.sleep(0.2)
    deltas, _user, reply = turn_frames(again)
    assert "".join(content for _seq, _turn, content in deltas) == question == reply["content"]
    assert reply["stopped"] is False
    for index, socket in survivors.items():
        socket.seen.clear()
        assert socket.until("assistant_message")[-1]["data"]["message_id"] == reply["message_id"], index

    # Every request after the kill is answered by a survivor: never a 502 from the gateway.
    mark = len(logged(deployed))
    for _ in range(2 * INSTANCES):
        assert deployed.data("GET", f"/api/chat/sessions/{sid}")["message_count"] == 3
    dead = deployed.upstream_port(0)

    def answered():  # nginx writes a request's line just after its response: wait for the last one
        lines = [line for line in logged(deployed)[mark:] if line["uri"] == f"/api/chat/sessions/{sid}"]
        return lines if len(lines) == 2 * INSTANCES else None

    after = eventually(answered, 5, what="nginx's access lines of the requests after the kill")
    assert all(line["status"] == 200 for line in after), after
    assert all(line["upstream"].split(", ")[-1] != dead for line in after), after

    # The interrupted turn stored its question and no half reply; the new turn stored both.
    stored = deployed.data("GET", f"/aichat/sessions/{sid}/messages")["items"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", words(120)),
        ("user", question),
        ("assistant", question),
    ]


def test_the_instance_running_a_turn_is_stopped_gracefully_and_the_reply_is_kept(deployed):
    sid = deployed.new_session()
    placed = deployed.place(sid)
    survivors = {index: socket for index, socket in placed.items() if index != 0}
    text = words(30)  # 3 s of reply: it ends within the graceful timeout
    placed[0].send({"type": "message", "content": text})
    for socket in survivors.values():
        socket.until("delta")
        socket.until("delta")

    leaving = deployed.instances[0]
    leaving.process.send_signal(signal.SIGTERM)
    # The instance closes its sockets with 1001 (going away); nginx passes the close frame through.
    assert placed[0].closed_with(timeout=5) == 1001

    # The client reconnects through the gateway at once and lands on an instance that stays: the reply
    # so far (`turn_state`), then the rest of it live, nothing lost or repeated in between.
    again, _where = deployed.connect_and_locate(sid, among=list(survivors))
    reply_or_error(again)
    state, *rest = again.seen
    assert state["type"] == "turn_state", state
    following = [f["data"] for f in rest if f["type"] == "delta"]
    assert [d["seq"] for d in following] == list(
        range(state["data"]["seq"] + 1, state["data"]["seq"] + 1 + len(following))
    )
    assert state["data"]["content"] + "".join(d["content"] for d in following) == text
    assert rest[-1]["data"]["content"] == text

    # The others saw the whole reply, streamed from the instance that was leaving.
    for index, socket in survivors.items():
        deltas, _user, reply = turn_frames(socket)
        assert "".join(content for _seq, _turn, content in deltas) == text == reply["content"], index
        assert reply["stopped"] is False
    assert leaving.process.wait(timeout=GRACEFUL_SECONDS + 5) == 0

    stored = deployed.data("GET", f"/aichat/sessions/{sid}/messages")["items"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", text), ("assistant", text)]

    # The gateway keeps serving through the other two: a new turn, and REST on every try.
    question = "still here after the rolling update"
    again.seen.clear()
    again.send({"type": "message", "content": question})
    assert turn_frames(again)[2]["content"] == question
    for _ in range(2 * INSTANCES):
        assert deployed.data("GET", f"/api/chat/sessions/{sid}")["message_count"] == 4


def test_a_socket_opened_on_an_instance_already_stopping_is_told_to_go_at_once(deployed):
    """Past SIGTERM an instance still serves the connections it has: its listener closes within a
    second, and a kept-alive connection (nginx keeps 16 per upstream and reuses them for handshakes)
    carries a request until it is idle for KEEPALIVE_SECONDS. A socket opened so must be told to go
    (1001) like the others, not held open and cut without a close frame at the graceful timeout."""
    sid = deployed.new_session()
    placed = deployed.place(sid)
    leaving = deployed.instances[0]
    kept = KeptAlive(leaving.url)
    try:
        assert kept.get("/healthz") == 200
        leaving.process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert placed[0].closed_with(timeout=5) == 1001  # the instance closed the sockets it had

        assert kept.upgrade(f"/ws/{sid}", {"Authorization": f"Bearer {deployed.token()}"}) == 101
        late = kept.drain(timeout=GRACEFUL_SECONDS + 3)
        assert (late.ended, late.close_code) == ("close", 1001), late
        assert leaving.process.wait(timeout=GRACEFUL_SECONDS + 5) == 0
        assert time.monotonic() - stopped_at < GRACEFUL_SECONDS, "the instance waited for the late socket"
    finally:
        kept.close()

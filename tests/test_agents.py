"""The agents layer (spec/AGENTS.md) through the Python API, with real processes for every guarantee
that is about concurrency or crashes: concurrent senders, a consumer killed mid-way, presence of a
SIGKILLed process, broadcasts, calls answered by another process, turn limits raced by two."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from _agent_workers import callee, consumer, live_agent, responder, sender, speaker
from _workers import CTX, Spawn

from blackboard import Board, InvalidKey, NoSuchMessage, Refused, TimedOut, UnknownAgent
from blackboard.agents import presence

pytestmark = pytest.mark.timeout(120)


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def states(board: Board) -> dict[str, str]:
    return {a.name: a.state for a in presence.who(board)}


# -- names and addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "-x", ".x", "a/b", "a b", "x" * 65, "*", "@cap", "é"])
def test_bad_agent_names_are_invalid(board: Board, name: str) -> None:
    with pytest.raises(InvalidKey):
        board.agent(name)


def test_a_message_to_an_agent_that_never_joined_is_refused_with_a_did_you_mean(board: Board) -> None:
    with board.agent("atlas") as atlas, board.agent("bob"):
        with pytest.raises(UnknownAgent, match="did you mean bob"):
            atlas.send("bobb", "hi")
        before = board.last_seq
        with pytest.raises(UnknownAgent):
            atlas.send("nobody", "hi")
        assert board.last_seq == before, "a refused send writes nothing"
        queued = atlas.send("carol", "for later", queue=True)
    with board.agent("carol") as carol:
        assert [m.id for m in carol.inbox()] == [queued.id]


def test_envelope_fields_and_order(board: Board) -> None:
    with board.agent("atlas") as atlas, board.agent("bob") as bob:
        first = atlas.send("bob", {"n": 1}, thread="t1")
        second = atlas.send("bob", "two", kind="note", reply_to=first.id)
        got = bob.inbox()
        assert [m.id for m in got] == [first.id, second.id]
        doc = got[0].as_dict()
        for field in ("id", "from", "to", "kind", "body", "thread", "reply_to", "seq", "ts"):
            assert field in doc
        assert (doc["from"], doc["to"], doc["kind"], doc["body"], doc["thread"]) == (
            "atlas",
            "bob",
            "message",
            {"n": 1},
            "t1",
        )
        assert (got[1].kind, got[1].reply_to, got[1].seq) == ("note", first.id, second.seq)
        assert entry_author(board, got[0].key) == "atlas"  # an agent's writes carry its name
        got[0].ack()
        with pytest.raises(NoSuchMessage):
            got[0].ack()
        assert [m.id for m in bob.inbox()] == [second.id]
        assert atlas.inbox() == [], "never delivered to the wrong agent"


# -- concurrency: senders, a consumer killed mid-way --------------------------------------------------------


def test_eight_concurrent_senders_lose_nothing_and_keep_each_senders_order(tmp_path: Path, spawn: Spawn) -> None:
    board_dir = tmp_path / "board"
    with Board.init(board_dir) as board, board.agent("sink") as sink:
        start = CTX.Barrier(8)
        procs = [spawn(sender, str(board_dir), f"s{n}", "sink", 150, start) for n in range(8)]
        received: dict[str, list[int]] = defaultdict(list)
        ids: set[str] = set()
        for message in sink.messages(wait=60):
            received[message.body["from"]].append(message.body["i"])
            assert message.id not in ids, "a message delivered twice after its ack"
            ids.add(message.id)
            message.ack()
            if len(ids) == 8 * 150:
                break
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        assert {name: order for name, order in received.items()} == {f"s{n}": list(range(150)) for n in range(8)}
        assert sink.inbox() == []


def test_a_consumer_killed_mid_way_resumes_without_loss(tmp_path: Path, spawn: Spawn) -> None:
    board_dir = tmp_path / "board"
    out = tmp_path / "handled.txt"
    out.touch()
    with Board.init(board_dir) as board:
        with board.agent("worker"):
            pass
        with board.agent("boss") as boss:
            for i in range(300):
                boss.send("worker", {"from": "boss", "i": i})
        first = spawn(consumer, str(board_dir), "worker", 300, str(out))
        wait_until(lambda: len(out.read_text().splitlines()) >= 50, what="the consumer to handle 50")
        first.kill()  # SIGKILL, anywhere: between handling and ack, mid-ack, waiting
        first.join(10)
        second = spawn(consumer, str(board_dir), "worker", 300, str(out))
        second.join(60)
        assert second.exitcode == 0
        handled = [int(line.split()[1]) for line in out.read_text().splitlines()]
        assert sorted(set(handled)) == list(range(300)), "every message handled"
        assert len(handled) - len(set(handled)) <= 1, "only the one in hand at the kill comes again"
        assert messages_left(board, "worker") == 0


def entry_author(board: Board, key: str) -> str:
    entry = board.get(key)
    assert entry is not None, key
    return entry.author


def entry_seq(board: Board, key: str) -> int:
    entry = board.get(key)
    assert entry is not None, key
    return entry.seq


def messages_left(board: Board, name: str) -> int:
    return len(board.keys(f"inbox/{name}/"))


def test_an_offline_recipient_receives_on_join(board: Board) -> None:
    with board.agent("bob"):
        pass
    assert states(board)["bob"] == "offline"
    with board.agent("atlas") as atlas:
        sent = atlas.send("bob", "while you were away")
    with board.agent("bob") as bob:
        (message,) = bob.inbox()
        assert (message.id, message.body) == (sent.id, "while you were away")


# -- presence --------------------------------------------------------------------------------------------------


def test_presence_of_a_sigkilled_process_on_this_host_is_offline_at_once(tmp_path: Path, spawn: Spawn) -> None:
    board_dir = tmp_path / "board"
    board = Board.init(board_dir)
    ready = CTX.Event()
    proc = spawn(live_agent, str(board_dir), "doomed", ["x"], 600.0, ready)
    assert ready.wait(60)
    assert states(board)["doomed"] == "available"
    proc.kill()  # SIGKILL
    proc.join(10)
    assert states(board)["doomed"] == "offline", "a dead pid with its start time: no ttl to wait for"
    board.close()


def test_presence_of_another_hosts_agent_goes_stale_then_offline(board: Board) -> None:
    """No pid to check across hosts: the ttl decides (1 s here)."""
    presence.register(board, "far", ttl=1, pid=None)
    value = dict(board.read("agents/far"))
    value["host"] = "another-host"
    board.write("agents/far", value)
    board.mark_seen("far")
    seen: list[str] = []

    def state() -> str:
        seen.append(states(board)["far"])
        return seen[-1]

    wait_until(lambda: state() == "offline", what="far to go offline")
    assert "stale" in seen, seen
    assert seen.index("stale") < seen.index("offline")


def test_heartbeats_keep_an_agent_online_without_log_records(board: Board) -> None:
    with board.agent("beating", ttl=1.5) as me:
        before = board.last_seq
        start = time.monotonic()
        while time.monotonic() - start < 4:  # past 2 ttls: only the heartbeat keeps it online
            assert states(board)["beating"] == "available"
            time.sleep(0.1)
        assert board.last_seq == before, "a heartbeat is an mtime, not a record"
        assert me.heartbeat_error is None


def test_who_filters_by_capability_and_status_changes(board: Board) -> None:
    with board.agent("a", capabilities=["search", "write"]) as a, board.agent("b", capabilities=["write"]):
        assert [x.name for x in a.who("search")] == ["a"]
        assert [x.name for x in a.who("write")] == ["a", "b"]
        a.status = "busy"
        assert states(board) == {"a": "busy", "b": "available"}
    assert states(board) == {"a": "offline", "b": "offline"}


# -- broadcast -------------------------------------------------------------------------------------------------


def test_broadcast_reaches_exactly_the_agents_online_in_one_record(tmp_path: Path, spawn: Spawn) -> None:
    board_dir = tmp_path / "board"
    board = Board.init(board_dir)
    ready = [CTX.Event() for _ in range(3)]
    caps = [["search"], ["search", "write"], ["write"]]
    procs = [spawn(live_agent, str(board_dir), f"p{n}", caps[n], 600.0, ready[n]) for n in range(3)]
    for event in ready:
        assert event.wait(60)
    with board.agent("gone"):
        pass  # left: offline
    procs[2].kill()  # SIGKILL
    procs[2].join(10)
    with board.agent("hub", capabilities=["search"]) as hub:
        everyone = hub.send("*", "all")
        searchers = hub.send("@search", "find")
        assert sorted(everyone.recipients) == ["p0", "p1"]
        assert sorted(searchers.recipients) == ["p0", "p1"]
        seqs = {entry_seq(board, f"inbox/{name}/{everyone.id}") for name in ("p0", "p1")}
        assert seqs == {everyone.seq}, "one record: all the copies or none"
        assert board.keys("inbox/p2/") == [] and board.keys("inbox/gone/") == [] and board.keys("inbox/hub/") == []
        with pytest.raises(UnknownAgent, match="nobody"):
            hub.send("@nothing", "x")
    board.close()


# -- request / reply ----------------------------------------------------------------------------------------


def test_request_reply_between_processes(tmp_path: Path, spawn: Spawn) -> None:
    board_dir = tmp_path / "board"
    board = Board.init(board_dir)
    with board.agent("srv"):
        pass  # registered, so the first request is not refused before the responder joins
    proc = spawn(responder, str(board_dir), "srv", 5)
    with board.agent("cli") as me:
        for n in range(5):
            reply = me.request("srv", {"n": n}, timeout=30)
            assert reply.body == {"double": 2 * n} and reply.kind == "reply" and not reply.late
        assert me.inbox() == [], "the request acked the reply"
    proc.join(30)
    assert proc.exitcode == 0
    assert board.keys("inbox/srv/") == [], "each reply acked its request in the same record"
    board.close()


def test_a_request_times_out_and_a_late_reply_is_kept_flagged(board: Board) -> None:
    with board.agent("slow") as slow, board.agent("asker") as asker:
        with pytest.raises(TimedOut):
            asker.request("slow", {"n": 1}, timeout=0.2)
        (request,) = slow.inbox()
        assert request.kind == "request" and request.deadline is not None and request.expired
        slow.reply(request, "sorry")
        (late,) = asker.inbox()
        assert (late.late, late.reply_to, late.body) == (True, request.id, "sorry")
        with pytest.raises(NoSuchMessage):
            slow.reply(request, "twice")  # acked with the first reply


def test_async_request_and_messages(board: Board) -> None:
    async def main() -> None:
        with board.agent("asrv") as srv, board.agent("acli") as cli:

            async def serve() -> None:
                async for message in srv.amessages(wait=10):
                    srv.reply(message, message.body * 2)
                    return

            task = asyncio.create_task(serve())
            reply = await cli.arequest("asrv", 21, timeout=10)
            await task
            assert reply.body == 42

    asyncio.run(main())


# -- calls ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["accept", "reject"])
def test_a_call_answered_by_another_process(tmp_path: Path, spawn: Spawn, answer: str) -> None:
    board_dir = tmp_path / "board"
    board = Board.init(board_dir)
    ready = CTX.Event()
    proc = spawn(callee, str(board_dir), "bob", answer, ready)
    assert ready.wait(60)
    with board.agent("atlas") as atlas:
        result = atlas.call("bob", topic="plan", timeout=30)
        proc.join(30)
        if answer == "reject":
            assert (result.state, result.conversation, result.reason) == ("rejected", None, "busy")
        else:
            assert result.state == "accepted" and result.conversation is not None
            turns = atlas.turns(result.conversation)
            assert [(t.n, t.sender, t.kind) for t in turns] == [(1, "bob", "join"), (2, "bob", "message")]
        assert atlas.inbox() == [] and board.keys("inbox/bob/") == []
    board.close()


def test_an_unanswered_call_is_missed_and_stays_in_the_inbox(board: Board) -> None:
    with board.agent("atlas") as atlas, board.agent("bob") as bob:
        result = atlas.call("bob", topic="late night", timeout=0.2)
        assert result.state == "missed"
        (missed,) = bob.inbox()
        assert (missed.kind, missed.extra["state"], missed.extra["topic"]) == ("call", "missed", "late night")
        with pytest.raises(Refused, match="no longer ringing"):
            bob.accept(missed)  # the caller stopped waiting: an accept now would open a room nobody is in


def test_a_call_to_an_offline_agent_is_missed_at_once(board: Board) -> None:
    with board.agent("bob"):
        pass
    with board.agent("atlas") as atlas:
        start = time.monotonic()
        result = atlas.call("bob", topic="x", timeout=30)
        assert result.state == "missed" and time.monotonic() - start < 25
    assert board.read(f"inbox/bob/{result.id}")["state"] == "missed"


def test_accept_racing_the_deadline_has_one_winner(board: Board) -> None:
    """The callee accepts while the caller marks the call missed: exactly one of them wins."""
    for _ in range(10):
        with board.agent("atlas") as atlas, board.agent("bob") as bob:
            outcome: dict[str, Any] = {}

            def answer(outcome: dict[str, Any] = outcome) -> None:
                (ring,) = bob.inbox(wait=10)
                time.sleep(0.05)
                try:
                    outcome["cid"] = bob.accept(ring)
                except Refused:
                    outcome["cid"] = None

            thread = threading.Thread(target=answer)
            thread.start()
            result = atlas.call("bob", topic="race", timeout=0.05)
            thread.join(10)
            if result.state == "accepted":
                assert outcome["cid"] == result.conversation
            else:
                assert result.state == "missed" and outcome["cid"] is None
            for m in bob.inbox():
                m.ack()


# -- conversations ---------------------------------------------------------------------------------------


def test_turn_limit_raced_by_two_processes(tmp_path: Path, spawn: Spawn) -> None:
    board_dir = tmp_path / "board"
    with Board.init(board_dir) as board, board.agent("a") as a, board.agent("b"):
        cid = a.conversation(["b"], topic="race", turn_limit=40)
        start = CTX.Barrier(2)
        outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
        procs = [
            spawn(speaker, str(board_dir), name, cid, start, str(out)) for name, out in zip("ab", outs, strict=True)
        ]
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        said = sum(int(out.read_text()) for out in outs)
        turns = a.turns(cid)
        assert said == 40 == sum(t.kind == "message" for t in turns)
        assert [t.n for t in turns] == list(range(1, 42)), "consecutive, none twice"
        assert [t.seq for t in turns] == sorted(t.seq for t in turns), "in seq order"
        with pytest.raises(Refused, match="turn limit of 40"):
            a.say(cid, "one more")


def test_conversation_rules(board: Board) -> None:
    with board.agent("a") as a, board.agent("b") as b, board.agent("c") as c:
        with pytest.raises(UnknownAgent):
            a.conversation(["zed"], topic="x")
        cid = a.conversation(["b"], topic="plan")
        with pytest.raises(Refused, match="not a participant"):
            c.say(cid, "let me in")
        b.say(cid, "hi")
        a.close_conversation(cid)
        with pytest.raises(Refused, match="closed"):
            b.say(cid, "after")
        assert [t.kind for t in a.turns(cid)] == ["join", "message", "system"]


# -- digest ----------------------------------------------------------------------------------------------------


def test_digest_ranks_what_needs_attention_and_marks_it_seen(board: Board) -> None:
    with board.agent("me") as me, board.agent("x") as x, board.agent("y"):
        x.send("me", "fyi")
        x.send("me", {"q": 1}, kind="request")
        cid = x.conversation(["me"], topic="t")
        x.say(cid, "news")
        board.write(
            "inbox/me/" + "m-000000000001",
            {
                "id": "m-000000000001",
                "from": "y",
                "to": "me",
                "kind": "call",
                "body": None,
                "state": "ringing",
                "topic": "now",
                "deadline": "2999-01-01T00:00:00.000000Z",
            },
            author="y",
        )
        items = me.digest()
        assert [i.what for i in items] == ["call", "request", "conversation", "message"]
        assert [i.what for i in me.digest()] == ["call", "request", "message"], "the conversation was seen"
        x.say(cid, "more")
        assert "conversation" in [i.what for i in me.digest()]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "Not A Kind"),
        ("kind", ""),
        ("thread", ""),
        ("thread", 7),
        ("reply_to", "../x"),
        ("reply_to", "c-000000000000"),
    ],
)
def test_bad_envelope_fields_are_refused_and_write_nothing(board: Board, field: str, value: Any) -> None:
    from blackboard import InvalidValue

    with board.agent("a") as a, board.agent("b"):
        before = board.last_seq
        with pytest.raises((InvalidValue, InvalidKey)):
            a.send("b", "x", **{field: value})
        assert board.last_seq == before


def test_following_a_closed_conversation_from_after_its_close_ends_at_once(board: Board) -> None:
    from blackboard.agents import conversations

    with board.agent("a") as a, board.agent("b"):
        cid = a.conversation(["b"], topic="t")
        a.say(cid, "hi")
        a.close_conversation(cid)
        everything = [t.kind for t in conversations.follow(board, cid, since=0, timeout=30)]
        assert everything == ["join", "message", "system"]
        start = time.monotonic()
        assert list(conversations.follow(board, cid, since=board.last_seq, timeout=30)) == []
        assert time.monotonic() - start < 20, "it did not wait for a close it cannot see"


def test_a_batch_ack_is_one_record_all_or_none(board: Board) -> None:
    with board.agent("a") as a, board.agent("b") as b:
        sent = [a.send("b", i).id for i in range(3)]
        before = board.last_seq
        with pytest.raises(NoSuchMessage):
            b.ack(sent[0], "m-000000000000")
        assert board.last_seq == before and len(b.inbox()) == 3, "none acked"
        seq = b.ack(*b.inbox())
        assert seq == before + 1 and b.inbox() == []

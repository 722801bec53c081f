"""The work layer (spec/WORK.md) through the Python API and real processes: a lease holder paused
past its lease cannot write after its successor (SIGSTOP/SIGCONT), consumers SIGKILLed at random
lose no item and ack none twice, stale acks, dead letters, groups, tasks in topological order."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from _work_workers import lease_holder, queue_consumer, stuck_consumer, task_worker
from _workers import CTX, Spawn

from blackboard import Board, Fenced, Held, InvalidValue, Refused
from blackboard.work import lease as leases
from blackboard.work import queue, tasks

pytestmark = pytest.mark.timeout(180)


def wait_until(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# -- leases -------------------------------------------------------------------------------------------------


def test_a_holder_paused_past_its_lease_cannot_write_after_its_successor(tmp_path: Path, spawn: Spawn) -> None:
    board_dir = tmp_path / "board"
    board = Board.init(board_dir)
    ready, go, out = CTX.Event(), CTX.Event(), CTX.Queue()
    first = spawn(lease_holder, str(board_dir), ready, go, out)
    assert ready.wait(60)
    assert out.get(timeout=30)[0] == "token"
    first_pid = first.pid
    assert first_pid is not None
    import os

    os.kill(first_pid, signal.SIGSTOP)
    try:
        wait_until(lambda: (s := leases.state(board, "deploy")) is not None and s.expired, what="the lease to expire")
        with board.lease("deploy", ttl=30, holder="second", wait=30) as second:
            board.write("deploy/result", "from second", fence=second)
            os.kill(first_pid, signal.SIGCONT)
            go.set()
            assert out.get(timeout=60) == ("write", "fenced")
            assert out.get(timeout=60) == ("lost", True)
            assert board.read("deploy/result") == "from second"
    finally:
        os.kill(first_pid, signal.SIGCONT)
    first.join(30)
    assert first.exitcode == 0
    board.close()


def test_claim_held_wait_release_and_tokens_increase(board: Board) -> None:
    a = leases.claim(board, "job", "a", ttl=30)
    with pytest.raises(Held, match="held by a") as err:
        leases.claim(board, "job", "b", ttl=30)
    assert (err.value.holder, err.value.token, err.value.exit_code) == ("a", a.token, 10)
    renewed = leases.renew(board, "job", a.token)
    assert renewed.token == a.token and renewed.expires >= a.expires
    leases.release(board, "job", a.token)
    b = leases.claim(board, "job", "b", ttl=30)
    assert b.token > a.token, "monotonic across holders"
    with pytest.raises(Fenced, match="held by b"):
        leases.renew(board, "job", a.token)
    with pytest.raises(Fenced):
        leases.release(board, "job", a.token)
    with pytest.raises(Fenced):
        board.write("out", 1, fence=board.lease("job", ttl=1, holder="a").fence if False else leases_fence(a))
    assert board.keys("out") == []


def leases_fence(state: leases.State) -> Any:
    from blackboard import Fence

    return Fence(leases.GRANTS + state.name, state.token)


def test_claim_waits_for_a_release(board: Board) -> None:
    import threading

    a = leases.claim(board, "job", "a", ttl=60)
    threading.Timer(0.2, leases.release, (board, "job", a.token)).start()
    b = leases.claim(board, "job", "b", ttl=60, wait=30)
    assert b.holder == "b"


def test_bad_lease_arguments(board: Board) -> None:
    with pytest.raises(InvalidValue):
        leases.claim(board, "job", "a", ttl=0)
    with pytest.raises(Exception):  # noqa: B017  # InvalidKey
        leases.claim(board, "../x", "a", ttl=1)
    assert board.last_seq == 0


# -- queues ------------------------------------------------------------------------------------------------


def test_consumers_sigkilled_at_random_lose_nothing_and_ack_each_item_once(tmp_path: Path, spawn: Spawn) -> None:
    board_dir = tmp_path / "board"
    total = 2000
    board = Board.init(board_dir)
    with board.transaction() as tx:
        for i in range(total):
            tx.write(f"jobs/{i:05d}", {"n": i})
    rng = random.Random(7)
    out = CTX.Queue()
    stuck = spawn(stuck_consumer, str(board_dir), out)
    held = out.get(timeout=60)  # in its hands: killed there, it must come back to another consumer
    stuck.kill()
    consumers = {n: spawn(queue_consumer, str(board_dir), f"c{n}", total, n) for n in range(8)}
    kills = 0
    restarts = 100
    while len(board.keys("results/")) < total:
        time.sleep(0.2)
        if kills < 12:
            n = rng.randrange(8)
            consumers[n].kill()  # SIGKILL: mid-take, mid-ack, anywhere
            consumers[n].join(10)
            consumers[n] = spawn(queue_consumer, str(board_dir), f"c{n}", total, restarts)
            restarts += 1
            kills += 1
        assert all(c.is_alive() or c.exitcode == 0 for c in consumers.values())
    for proc in consumers.values():
        proc.join(60)
    results = list(board.entries("results/"))
    assert sorted(e.key for e in results) == [f"results/jobs/{i:05d}" for i in range(total)], "none lost"
    assert {e.version for e in results} == {1}, "each result written once: the ack is one transaction"
    redelivered = sum(e.value["attempt"] > 1 for e in results)
    assert board.read("results/" + held)["attempt"] >= 2, "the item the killed consumer held"
    assert kills == 12 and queue.pending(board, "g") == [] and queue.dead(board, "g") == []
    print(f"redelivered {redelivered} of {total} after {kills} kills")
    board.close()


def test_stale_ack_max_deliver_and_dead_letters(board: Board) -> None:
    queue.push(board, "jobs/", "x")
    with queue.Consumer(board, "jobs/", "g", "c", lease=0.05, max_deliver=2) as consumer:
        first = consumer.take()
        assert first is not None and first.attempt == 1
        wait_until(lambda: first.idle > 0.05)
        second = consumer.take()
        assert second is not None and second.attempt == 2 and second.delivery_id != first.delivery_id
        before = board.last_seq
        with pytest.raises(Fenced, match="no longer current"):
            queue.ack(board, first.delivery_id, result_key="r", result=1)
        assert board.last_seq == before
        wait_until(lambda: second.idle > 0.05)
        assert consumer.take() is None, "out of attempts: dead, not delivered a third time"
        (letter,) = queue.dead(board, "g")
        assert (letter["item"], letter["attempt"], letter["reason"], letter["value"]) == (
            second.item,
            2,
            "max_deliver",
            "x",
        )
        assert queue.pending(board, "g") == []


def test_two_groups_each_see_every_item_and_one_consumer_per_item(board: Board) -> None:
    items = [queue.push(board, "jobs/", i).key for i in range(10)]
    for group in ("g1", "g2"):
        a = queue.Consumer(board, "jobs/", group, "a")
        b = queue.Consumer(board, "jobs/", group, "b")
        got = []
        for n in range(10):
            d = (a if n % 2 else b).take()
            assert d is not None
            got.append(d.item)
        assert a.take() is None and b.take() is None, "in flight items go to no one else"
        assert got == items
        assert {p.consumer for p in queue.pending(board, group)} == {"a", "b"}
        a.close()
        b.close()
    with pytest.raises(InvalidValue, match="one prefix per group"):
        queue.Consumer(board, "other/", "g1", "c")


def test_nack_with_a_delay_and_extend(board: Board) -> None:
    queue.push(board, "jobs/", "x")
    with queue.Consumer(board, "jobs/", "g", "c", lease=60) as consumer:
        d = consumer.take()
        assert d is not None
        extended = queue.extend(board, d.delivery_id, lease=120)
        assert extended.lease == 120 and consumer.take() is None
        queue.nack(board, d.delivery_id, delay=0.1)
        again = consumer.take(wait=30)
        assert again is not None and again.attempt == 2 and again.item == d.item
        queue.ack(board, again.delivery_id)
        assert consumer.take() is None


def test_take_waits_for_a_push(board: Board) -> None:
    import threading

    with queue.Consumer(board, "jobs/", "g", "c") as consumer:
        threading.Timer(0.2, queue.push, (board, "jobs/", "late")).start()
        d = consumer.take(wait=30)
        assert d is not None and d.value == "late"


# -- tasks ----------------------------------------------------------------------------------------------------


def test_fifty_tasks_run_by_four_workers_complete_in_a_topological_order(tmp_path: Path, spawn: Spawn) -> None:
    board_dir = tmp_path / "board"
    board = Board.init(board_dir)
    rng = random.Random(3)
    ids: list[str] = []
    for n in range(50):
        blockers = rng.sample(ids, k=min(len(ids), rng.randrange(4)))
        ids.append(tasks.add(board, f"task {n}", blocked_by=blockers).id)
    workers = [spawn(task_worker, str(board_dir), f"w{n}", 50) for n in range(4)]
    for proc in workers:
        proc.join(120)
        assert proc.exitcode == 0
    every = {t.id: t for t in tasks.all_tasks(board)}
    assert all(t.state == "completed" for t in every.values())
    claimed, completed = {}, {}
    for task_id in ids:
        for event in board.history(tasks.PREFIX + task_id):
            if event.value["state"] == "working":
                claimed[task_id] = event.seq
            if event.value["state"] == "completed":
                completed[task_id] = event.seq
    for task_id in ids:
        for blocker in every[task_id].blocked_by:
            assert claimed[task_id] > completed[blocker], (task_id, blocker)
    assert {t.attempt for t in every.values()} == {1}, "no task claimed twice"
    board.close()


def test_a_crashed_workers_task_returns_to_the_pool(board: Board) -> None:
    task = tasks.add(board, "x")
    held = tasks.claim_next(board, "w1", lease=0.05)
    assert held is not None and held.id == task.id and tasks.claim_next(board, "w2") is None
    wait_until(lambda: tasks.all_tasks(board)[0].expired)
    again = tasks.claim_next(board, "w2")
    assert again is not None and again.attempt == 2 and again.owner == "w2"
    with pytest.raises(Refused, match="held by w2"):
        tasks.done(board, task.id, "w1")
    tasks.done(board, task.id, "w2", result=1)
    assert tasks.all_tasks(board, state="completed")[0].result == 1


def test_task_blockers_must_exist(board: Board) -> None:
    from blackboard import KeyNotFound

    with pytest.raises(KeyNotFound):
        tasks.add(board, "x", blocked_by=["t-00000000"])
    assert board.last_seq == 0


def test_async_faces(board: Board) -> None:
    import asyncio

    async def main() -> None:
        async with board.lease("job", ttl=30, holder="a") as held:
            assert board.write("out", 1, fence=held).version == 1
        with queue.Consumer(board, "jobs/", "g", "c") as consumer:
            waiting = asyncio.create_task(consumer.atake(wait=30))
            await asyncio.sleep(0)  # the take is waiting off the loop; the loop stays free to push
            queue.push(board, "jobs/", "x")
            delivery = await waiting
            assert delivery is not None and delivery.value == "x"

    asyncio.run(main())
    assert leases.state(board, "job") is None, "released at the end of the async with"

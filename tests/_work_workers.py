"""What the work tests' child processes run (spawned children import this module by name)."""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

from blackboard import Board, Fenced
from blackboard.work import queue, tasks


def lease_holder(board_dir: str, ready: Any, go: Any, out: Any) -> None:
    """Hold lease 'deploy' (ttl 1 s, renewed from a thread); once told to go, write fenced on it."""
    with Board.open(board_dir) as board, board.lease("deploy", ttl=1.0, holder="first") as lease:
        out.put(("token", lease.token))
        ready.set()
        go.wait(120)
        try:
            board.write("deploy/result", "from first", fence=lease)
            out.put(("write", "landed"))
        except Fenced:
            out.put(("write", "fenced"))
        deadline = time.monotonic() + 30
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        out.put(("lost", lease.lost))


def queue_consumer(board_dir: str, name: str, total: int, seed: int) -> None:
    """Take and ack items of group 'g' until `total` results exist; each ack writes results/<item>."""
    rng = random.Random(seed)
    with Board.open(board_dir) as board, queue.Consumer(board, "jobs/", "g", name, lease=1.0, max_deliver=1000) as c:
        while len(board.keys("results/")) < total:
            delivery = c.take(wait=0.5)
            if delivery is None:
                continue
            time.sleep(0.005 if rng.random() < 0.9 else 0.05)  # the work: a kill may land in it
            with contextlib.suppress(Fenced):  # redelivered meanwhile (we were slow): the new delivery acks it
                queue.ack(
                    board,
                    delivery.delivery_id,
                    result_key="results/" + delivery.item,
                    result={"by": name, "attempt": delivery.attempt},
                    author=name,
                )


def stuck_consumer(board_dir: str, out: Any) -> None:
    """Take one item of group 'g', say which, and hang (until SIGKILLed) without acking it."""
    with Board.open(board_dir) as board, queue.Consumer(board, "jobs/", "g", "stuck", lease=1.0, max_deliver=1000) as c:
        delivery = c.take(wait=60)
        assert delivery is not None
        out.put(delivery.item)
        time.sleep(3600)


def task_worker(board_dir: str, name: str, total: int) -> None:
    """Claim ready tasks and complete them until all `total` are completed."""
    with Board.open(board_dir) as board:
        while len(tasks.all_tasks(board, state="completed")) < total:
            task = tasks.claim_next(board, name, lease=60)
            if task is None:
                time.sleep(0.01)  # blocked on others' tasks: look again
                continue
            tasks.done(board, task.id, name, result={"by": name})

"""Work on a board: a queue with a consumer group, then a plan of tasks with dependencies.

Part 1, a work queue (blackboard.work.queue). The producer pushes 20 items under `jobs/`; three
worker processes of the consumer group `squares` each loop `take()` -> work -> `ack()`, and the ack
writes the item's result in the same record. One worker is SIGKILLed while it holds an item: no
one acks it, its lease runs out, and the group redelivers it to another worker (attempt 2).

Part 2, tasks with dependencies (blackboard.work.tasks). A small plan, where each task names the
tasks it is blocked by; three worker processes `claim_next()` the oldest ready task and finish it
with `done()`, so a task starts only after its blockers completed.

At the end, the log is checked: every item's result written once, nothing left pending, every task
completed once and after its blockers. Run:
    python examples/task_queue.py [--board DIR] [--keep]
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess

from blackboard import Board, Fenced
from blackboard.work import queue, tasks

WORKERS = ("worker-1", "worker-2", "worker-3")
VICTIM = "worker-3"  # hangs on its first item, and is killed there
ITEMS = 20
LEASE = 1.0  # seconds a worker has to ack an item before the group may give it to another
GROUP, JOBS = "squares", "jobs/"
#: The plan: task name -> the names of the tasks it is blocked by (each listed after its blockers).
PLAN = {
    "fetch-a": [],
    "fetch-b": [],
    "fetch-c": [],
    "merge": ["fetch-a", "fetch-b"],
    "analyse": ["merge", "fetch-c"],
    "report": ["analyse"],
}


def queue_worker(board_dir: str, name: str) -> None:
    with Board.open(board_dir, author=name) as board, queue.Consumer(board, JOBS, GROUP, name, lease=LEASE) as jobs:
        board.write(f"ready/{name}", True)
        while not board.get("jobs-done"):
            delivery = jobs.take(wait=0.5)  # waits on the log for a new item or an expired lease
            if delivery is None:
                continue
            if name == VICTIM:
                time.sleep(60)  # "working": the main process SIGKILLs us here, holding the item
            if delivery.attempt > 1:
                print(f"{name}: {delivery.item} redelivered to me (attempt {delivery.attempt})", flush=True)
            time.sleep(0.05)  # the work itself (an LLM call, a tool run, ...)
            n = delivery.value["n"]
            # The ack and the result are one record: written once, whatever kills and redeliveries
            # happen. An ack of a delivery that was given to someone else meanwhile is refused.
            try:
                queue.ack(board, delivery.delivery_id, result_key=f"results/{delivery.item}", result=n * n)
            except Fenced:  # we were too slow: the item went to another worker, whose result counts
                print(f"{name}: {delivery.item} was redelivered before my ack; my result is discarded", flush=True)


def task_worker(board_dir: str, name: str) -> None:
    with Board.open(board_dir, author=name) as board:
        while True:
            since = board.last_seq  # before looking: a change after it wakes the watch below
            task = tasks.claim_next(board, name)  # compare-and-set: one worker per task
            if task is None:
                if all(t.state in tasks.FINAL for t in tasks.all_tasks(board)):
                    return
                with board.watch("tasks/", since=since, timeout=1) as changes:
                    next(changes, None)  # sleep until a task changes (a blocker completes)
                continue
            time.sleep(0.1)
            tasks.done(board, task.id, name, result=f"{task.title} by {name}")


def wait_for(board: Board, prefix: str, count: int, timeout: float) -> None:
    """Wait until `count` keys under `prefix` were put (replaying the log from its start)."""
    seen: set[str] = set()
    with board.watch(prefix, since=0, timeout=timeout) as events:
        for event in events:
            seen.add(event.key)
            if len(seen) == count:
                return
    raise TimeoutError(f"{len(seen)} of {count} keys under {prefix} after {timeout:g} s idle")


def start(target: Callable[[str, str], None], board_dir: str) -> dict[str, SpawnProcess]:
    ctx = mp.get_context("spawn")
    procs = {name: ctx.Process(target=target, args=(board_dir, name)) for name in WORKERS}
    for proc in procs.values():
        proc.start()
    return procs


def reap(procs: dict[str, SpawnProcess], killed: str = "") -> list[str]:
    for proc in procs.values():
        proc.join(20)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return [f"{name} exited with {p.exitcode}" for name, p in procs.items() if p.exitcode and name != killed]


def part_queue(board: Board, board_dir: str) -> list[str]:
    procs = start(queue_worker, board_dir)
    try:
        wait_for(board, "ready/", len(WORKERS), timeout=15)  # all three compete from the start
        for n in range(ITEMS):
            queue.push(board, JOBS, {"n": n})
        print(f"pushed {ITEMS} items to {JOBS}; {len(WORKERS)} workers in group {GROUP!r}")
        # Kill the victim the moment the log shows it holding an item.
        with board.watch(f"groups/{GROUP}/pending/", since=0, timeout=15) as events:
            held = next((e for e in events if e.value and e.value["consumer"] == VICTIM), None)
        if held is None:
            raise TimeoutError(f"{VICTIM} never took an item")
        procs[VICTIM].kill()  # SIGKILL: no ack, no goodbye
        print(f"killed {VICTIM} (SIGKILL) while it held {held.value['item']}")
        wait_for(board, "results/", ITEMS, timeout=15)
    finally:
        board.write("jobs-done", True)  # the workers stop, whatever happened
        problems = reap(procs, killed=VICTIM)
    # The check, from the log: each result written once (version 1), none pending, none dead.
    results = {e.key: e for e in board.entries("results/")}
    problems += [f"{k} written {e.version} times" for k, e in results.items() if e.version != 1]
    if len(results) != ITEMS:
        problems.append(f"{len(results)} of {ITEMS} results")
    if queue.pending(board, GROUP) or queue.dead(board, GROUP):
        problems.append("deliveries left pending or dead")
    attempts = [e.value["attempt"] for e in board.history(held.key) if e.value]
    print(f"{held.value['item']}: delivered {len(attempts)} times (attempts {attempts}), its result written once")
    return problems


def part_tasks(board: Board, board_dir: str) -> list[str]:
    ids: dict[str, str] = {}
    for title, blockers in PLAN.items():
        ids[title] = tasks.add(board, title, blocked_by=[ids[b] for b in blockers]).id
    print(f"added a plan of {len(PLAN)} tasks: " + ", ".join(f"{t} <- {'+'.join(b) or '-'}" for t, b in PLAN.items()))
    problems = reap(start(task_worker, board_dir))
    # The check, from the log: each task claimed and completed once, and claimed only after every
    # one of its blockers completed (seqs order the log).
    claimed: dict[str, int] = {}
    completed: dict[str, tuple[int, str]] = {}
    for title, task_id in ids.items():
        steps = [(e.seq, e.value["state"], e.value["owner"]) for e in board.history(f"tasks/{task_id}")]
        claims = [seq for seq, state, _ in steps if state == "working"]
        dones = [(seq, owner) for seq, state, owner in steps if state == "completed"]
        if len(claims) != 1 or len(dones) != 1:
            problems.append(f"{title}: claimed {len(claims)} and completed {len(dones)} times")
            continue
        claimed[title], completed[title] = claims[0], dones[0]
    for title, blockers in PLAN.items():
        if title in claimed and any(b not in completed or completed[b][0] > claimed[title] for b in blockers):
            problems.append(f"{title} started before its blockers completed")
    order = sorted(completed, key=lambda t: completed[t][0])
    print("completed in order: " + ", ".join(f"{t} ({completed[t][1]})" for t in order))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default=None, help="board directory (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp board (default: removed at exit)")
    opts = parser.parse_args()
    board_dir = opts.board or tempfile.mkdtemp(prefix="task-queue-")
    if opts.board is None and not opts.keep:
        atexit.register(shutil.rmtree, board_dir, True)
    temp = "" if opts.board or opts.keep else " (a temp dir, removed at exit; --keep keeps it)"
    print(f"board: {board_dir}{temp}")
    started = time.monotonic()
    with Board.init(board_dir, author="producer") as board:
        if board.keys(JOBS) or board.keys("tasks/"):  # the checks below count on a fresh board
            print(f"{board_dir} already holds work: give a new or empty board")
            return 2
        problems = part_queue(board, board_dir)
        problems += part_tasks(board, board_dir)
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        return 1
    print(
        f"all {ITEMS} tasks done, each exactly once; the {len(PLAN)}-task plan ran in a valid order"
        f" ({time.monotonic() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A task queue on a board: workers claim tasks with compare-and-set; a killed worker's task is not lost.

    tasks/<id>       {"n": 7, "state": "pending" | "claimed" | "done", "worker": ..., "deadline": ...}
    workers/<name>   {"pid": ...}, written by each worker when it is ready
    queue/closed     true once the producer has posted every task

The main process is the producer. It starts three worker processes, posts tasks, SIGKILLs one worker
while that worker holds a claim, and at the end checks from the log that every task was done exactly
once. Run:
    python examples/task_queue.py [--board DIR]
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from blackboard import Board, VersionConflict

WORKERS = ("worker-1", "worker-2", "worker-3")
VICTIM = "worker-3"  # hangs on its first task, and is killed there
FIRST_BATCH, SECOND_BATCH = 12, 8
CLAIM_SECONDS = 1.0  # a claim not completed by then may be taken by another worker
WORK_SECONDS = 0.15
#: An idle worker re-checks at least this often even if nothing under tasks/ changes (queue/closed).
MAX_IDLE = 0.5


def claimable(task: dict[str, Any], now: float) -> bool:
    # Deadlines are wall-clock times because every process (and host) sharing the board must agree on
    # them; give CLAIM_SECONDS a margin larger than the clock skew between hosts.
    return bool(task["state"] == "pending" or (task["state"] == "claimed" and task["deadline"] < now))


def take_one(board: Board, name: str, work_seconds: float) -> bool:
    """Claim a task, do it and complete it. False if no task could be claimed."""
    for entry in board.entries("tasks/"):
        task = entry.value
        if not claimable(task, time.time()):
            continue
        claim = {**task, "state": "claimed", "worker": name, "deadline": time.time() + CLAIM_SECONDS}
        try:
            # Compare-and-set: written only if the task is still at the version we read, i.e. nobody
            # claimed (or completed) it since. Two workers racing for one task: exactly one wins.
            claimed = board.write(entry.key, claim, expect_version=entry.version)
        except VersionConflict:
            continue  # another worker got it first: try the next task
        time.sleep(work_seconds)  # the work itself (an LLM call, a tool run, ...)
        done = {**claim, "state": "done", "result": task["n"] ** 2}
        try:
            # Fencing: complete only if the task is still at the version our claim created. If we
            # stalled past the deadline and another worker re-claimed the task, the version has moved
            # on and this write fails, instead of the task being completed twice.
            board.write(entry.key, done, expect_version=claimed.version)
        except VersionConflict:
            print(f"{name}: lost {entry.key} (claim expired and re-claimed); result discarded", flush=True)
        return True
    return False


def worker(board_dir: str, name: str, work_seconds: float) -> None:
    with Board.open(board_dir, author=name) as board:
        board.write(f"workers/{name}", {"pid": os.getpid()})
        while True:
            # Take the log position *before* looking at the tasks: the watch below replays everything
            # after it, so a task posted between our look and the watch starting still wakes us.
            since = board.last_seq
            if take_one(board, name, work_seconds):
                continue
            tasks = board.read_prefix("tasks/")
            if board.read("queue/closed", False) and all(t["state"] == "done" for t in tasks.values()):
                return
            # Nothing to take: sleep until something under tasks/ changes, or until the earliest claim
            # expires. A holder that died writes nothing, so only the timeout can wake us for its task.
            deadlines = [t["deadline"] - time.time() for t in tasks.values() if t["state"] == "claimed"]
            wait = max(min([*deadlines, MAX_IDLE]), 0.01)
            with board.watch("tasks/", since=since, timeout=wait) as changes:
                next(changes, None)  # the first change, or None after `wait` idle seconds


def post(board: Board, first: int, count: int) -> None:
    for n in range(first, first + count):
        board.write(f"tasks/t{n:02d}", {"n": n, "state": "pending"})


def verify(board: Board, orphan: str) -> list[str]:
    """Check from the log that each task went to "done" exactly once; print a summary. Returns problems."""
    per_worker: Counter[str] = Counter()
    problems = []
    for key in board.keys("tasks/"):
        steps = [(event.value["state"], event.value.get("worker")) for event in board.history(key)]
        done_by = [who for state, who in steps if state == "done"]
        claimed_by = [who for state, who in steps if state == "claimed"]
        if len(done_by) != 1:
            problems.append(f"{key} was done {len(done_by)} times")
            continue
        per_worker[done_by[0]] += 1
        if key == orphan:
            print(f"{key} was re-claimed: claimed by {', '.join(claimed_by)}; done by {done_by[0]}")
            if done_by[0] == VICTIM:
                problems.append(f"{key} was done by {VICTIM}, which was killed holding it")
    print(", ".join(f"{name}: {per_worker[name]} tasks" for name in WORKERS))
    total = FIRST_BATCH + SECOND_BATCH
    if sum(per_worker.values()) != total:
        problems.append(f"{sum(per_worker.values())} of {total} tasks done")
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
    ctx = mp.get_context("spawn")
    # The victim's first task takes a minute: it is sure to be killed while it holds the claim.
    procs = {
        name: ctx.Process(target=worker, args=(board_dir, name, 60.0 if name == VICTIM else WORK_SECONDS))
        for name in WORKERS
    }
    with Board.init(board_dir, author="producer") as board:
        if board.keys("tasks/") or board.keys("queue/"):  # the checks below count on a fresh queue
            print(f"{board_dir} already holds a task queue: give a new or empty board")
            return 2
        start = board.last_seq
        try:
            for proc in procs.values():
                proc.start()
            # Wait until every worker is up, so that all three compete for the first batch.
            with board.watch("workers/", since=start, timeout=10) as ready:
                up = set()
                for event in ready:
                    up.add(event.key)
                    if len(up) == len(WORKERS):
                        break
            post(board, 0, FIRST_BATCH)
            print(f"{len(WORKERS)} workers ready; posted {FIRST_BATCH} tasks")

            # Kill the victim the moment the log shows it holding a claim: it dies mid-task, as a
            # crashed agent would, and leaves a claim that nobody will complete or release.
            with board.watch("tasks/", since=start, timeout=10) as events:
                held = next((e for e in events if e.value.get("worker") == VICTIM), None)
            if held is None:
                print(f"FAILED: {VICTIM} never claimed a task")
                return 1
            procs[VICTIM].kill()  # SIGKILL: no cleanup, no goodbye, its claim stays on the board
            procs[VICTIM].join()
            print(f"killed {VICTIM} (SIGKILL) while it held {held.key}")

            post(board, FIRST_BATCH, SECOND_BATCH)
            board.write("queue/closed", True)
            print(f"posted {SECOND_BATCH} more tasks; queue closed")
            for proc in procs.values():
                proc.join(20)
        finally:
            for proc in procs.values():  # reap every child, whatever happened
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        problems = verify(board, held.key)
    problems += [f"{name} exited with {p.exitcode}" for name, p in procs.items() if name != VICTIM and p.exitcode]
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        return 1
    total = FIRST_BATCH + SECOND_BATCH
    print(f"all {total} tasks done, each exactly once, in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

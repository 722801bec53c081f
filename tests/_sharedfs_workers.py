"""The code the child processes of tests/test_sharedfs.py run: writers, watchers and a compactor that
each open a board through one of two FUSE views of a shared directory (a "client" each).

Spawned children import this module by name, so every function a child runs lives here, at top level;
each is a `_workers.run_jobs` target (its last argument is the barrier at which all start together)
and returns what it saw for the parent to judge against the log as the backing directory has it.
Nothing here catches an error it does not expect: any other exception (a lock protocol error, a
CorruptLog) fails the child, and the parent reports its traceback.
"""

from __future__ import annotations

import random
from multiprocessing.synchronize import Barrier
from typing import Any

from blackboard import Board, VersionConflict

Doc = dict[str, Any]

#: Where the transfer test keeps its balances and the count of committed transfers.
ACCOUNT_A = "acct/a"
ACCOUNT_B = "acct/b"
TRANSFERS = "acct/transfers"


def stop_key(prefix: str, label: str) -> str:
    """The key a writer puts last under `prefix`: a watcher that has seen every writer's is done."""
    return f"{prefix}stop/{label}"


def cas_counter(path: str, key: str, n: int, label: str, barrier: Barrier) -> Doc:
    """`n` compare-and-set increments of `key` (read, then write with expect_version), retrying on
    conflicts. Returns every acknowledged write as [seq, version, value], and the conflicts met."""
    board = Board.open(path, author=label)
    barrier.wait(60)
    acked: list[list[int]] = []
    conflicts = 0
    while len(acked) < n:
        entry = board.get(key)
        assert entry is not None, f"{key!r} vanished"
        try:
            written = board.write(key, entry.value + 1, expect_version=entry.version)
        except VersionConflict as exc:
            assert exc.actual > entry.version, f"a conflict must mean somebody got there first: {exc}"
            conflicts += 1
            continue
        assert (written.version, written.value) == (entry.version + 1, entry.value + 1), written
        acked.append([written.seq, written.version, written.value])
    board.close()
    return {"label": label, "acked": acked, "conflicts": conflicts}


def transferer(path: str, n: int, label: str, seed: int, barrier: Barrier) -> Doc:
    """`n` transactions, each moving a few units between ACCOUNT_A and ACCOUNT_B and counting itself
    in TRANSFERS; the reads make the versions read conditions of the commit, and a conflict retries
    with fresh reads. Returns the net amount this writer moved from A to B and its commits' seqs."""
    rng = random.Random(seed)
    board = Board.open(path, author=label)
    barrier.wait(60)
    seqs: list[int] = []
    moved = 0
    conflicts = 0
    while len(seqs) < n:
        amount = rng.choice((-1, 1)) * rng.randint(1, 9)
        try:
            with board.transaction() as tx:
                a = tx.read(ACCOUNT_A)
                b = tx.read(ACCOUNT_B)
                count = tx.read(TRANSFERS)
                tx.write(ACCOUNT_A, a - amount)
                tx.write(ACCOUNT_B, b + amount)
                tx.write(TRANSFERS, count + 1)
        except VersionConflict as exc:
            assert exc.key in (ACCOUNT_A, ACCOUNT_B, TRANSFERS), exc
            conflicts += 1
            continue
        entries = tx.entries
        assert [e.key for e in entries] == [ACCOUNT_A, ACCOUNT_B, TRANSFERS], entries
        assert all(e.seq == tx.seq for e in entries), entries
        assert entries[0].value + entries[1].value == a + b, "a transfer changed the sum"
        seqs.append(tx.seq)
        moved += amount
    board.close()
    return {"label": label, "seqs": seqs, "moved": moved, "conflicts": conflicts}


def prefix_writer(path: str, prefix: str, n: int, label: str, barrier: Barrier) -> Doc:
    """Write `n` keys under `prefix`, each followed by one key outside it (which a watcher of
    `prefix` must not deliver), then this writer's stop key. Returns the seqs of the prefix writes."""
    board = Board.open(path, author=label)
    barrier.wait(60)
    seqs: list[int] = []
    for i in range(n):
        seqs.append(board.write(f"{prefix}{label}/{i}", {"i": i, "by": label}).seq)
        board.write(f"other/{label}/{i}", i)
    seqs.append(board.write(stop_key(prefix, label), True).seq)
    board.close()
    return {"label": label, "seqs": seqs}


def prefix_watcher(path: str, prefix: str, labels: list[str], idle: float, barrier: Barrier) -> Doc:
    """Watch `prefix` from seq 0 (the board's default mode: polling, on a soft board) until every
    writer's stop key arrived, or nothing arrived for `idle` seconds. Returns every event received,
    as [seq, op, key, value, version], and whether it stopped on the stop keys."""
    board = Board.open(path, read_only=True)
    waiting = {stop_key(prefix, label) for label in labels}
    events: list[list[Any]] = []
    with board.watch(prefix, since=0, timeout=idle) as watcher:
        polling = watcher.polling
        barrier.wait(60)
        for event in watcher:
            events.append([event.seq, event.op, event.key, event.value, event.version])
            waiting.discard(event.key)
            if not waiting:
                break
    board.close()
    return {"events": events, "stopped": not waiting, "polling": polling}


def churn_writer(path: str, prefix: str, n: int, label: str, barrier: Barrier) -> Doc:
    """`n` blind writes over 10 keys of our own under `prefix`, every 7th a delete of a live one, then
    `done/<label>`. Returns the state it left, as acknowledged: key -> [value, version], None if deleted."""
    board = Board.open(path, author=label)
    barrier.wait(60)
    state: dict[str, list[Any] | None] = {}
    for i in range(n):
        key = f"{prefix}{label}/k{i % 10}"
        if i % 7 == 6 and state.get(key) is not None:
            board.delete(key)
            state[key] = None
        else:
            entry = board.write(key, {"i": i})
            previous = state.get(key)
            assert entry.version == (1 if previous is None else previous[1] + 1), (key, entry, previous)
            state[key] = [{"i": i}, entry.version]
    board.write(f"done/{label}", True)
    board.close()
    return {"label": label, "state": state}


def compactor(path: str, labels: list[str], barrier: Barrier) -> Doc:
    """Compact in a loop until every writer's `done/<label>` is on the board, then once more. Returns
    how many compactions ran and how many records they removed."""
    board = Board.open(path, author="compactor")
    barrier.wait(60)
    runs = removed = 0
    skipped: list[str] = []
    while True:
        finished = all(board.get(f"done/{label}") is not None for label in labels)
        report = board.compact()
        runs += 1
        removed += report.events_before - report.events_after
        if report.skipped is not None:
            skipped.append(report.skipped)
        if finished:
            break
    board.close()
    return {"runs": runs, "removed": removed, "skipped": sorted(set(skipped))}


def state_watcher(path: str, labels: list[str], idle: float, barrier: Barrier) -> Doc:
    """Watch the whole board from seq 0, applying each event to a dict, until every writer's
    `done/<label>` arrived (each writer's last write) or nothing arrived for `idle` seconds. Returns
    the dict, how many events were flagged compacted, and whether it stopped on the done keys."""
    board = Board.open(path, read_only=True)
    waiting = {f"done/{label}" for label in labels}
    state: dict[str, Any] = {}
    events = compacted = last = 0
    with board.watch("", since=0, timeout=idle) as watcher:
        barrier.wait(60)
        for event in watcher:
            assert event.seq >= last, f"seq {event.seq} after seq {last}"
            last = event.seq
            events += 1
            compacted += event.compacted
            if event.op == "delete":
                state.pop(event.key, None)
            else:
                state[event.key] = event.value
            waiting.discard(event.key)
            if not waiting:
                break
    board.close()
    return {"state": state, "events": events, "compacted": compacted, "stopped": not waiting}

"""The code the engine tests' child processes run (transactions, idempotency keys, checkpoints), and
the judges those tests share.

Spawned children import this module by name, so every function a child runs lives here, at top level.
A child reports through a pipe or a result (`_workers.run_jobs`), or by appending one JSON line per
fact with a single `os.write`, so that a SIGKILL leaves whole lines behind. The judges read the
board's files with the standard library (`json`, `os`), never with the code under test: a replay of
the log written here is what the library's answers are checked against.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from collections.abc import Iterable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from _workers import append_doc

from blackboard import Board, Compacted, InvalidValue, KeyNotFound, VersionConflict

Doc = dict[str, Any]
#: What a judge knows of a key after a replay: the fields of the record that left it so.
STATE_FIELDS = ("value", "version", "seq", "author", "ts")

# -- judging a board from its files ----------------------------------------------------------------------


def read_log(board_dir: Path) -> tuple[Doc, list[Doc], bytes]:
    """(header, records, torn tail) of the board's log, parsed with `json`.

    Complete lines only: bytes after the last newline are a write in progress or a writer killed
    mid-append, never a record. Seqs must be strictly increasing.
    """
    data = (board_dir / "log.jsonl").read_bytes()
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    header = json.loads(lines[0])
    assert isinstance(header, dict) and "blackboard_log" in header, header
    records = [json.loads(line) for line in lines[1:]]
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs)), f"seqs not strictly increasing: {seqs}"
    if header.get("compacted_through", 0) == 0:
        assert seqs == list(range(1, len(seqs) + 1)), "seqs are not gapless from 1"
    return header, records, data[end:]


def changes_of(rec: Doc) -> list[tuple[str, str, Any, int]]:
    """(op, key, value, version) of every change a record makes: one, or a transaction's."""
    if rec["op"] == "txn":
        assert rec["ops"], rec
        return [(op["op"], op["key"], op.get("value"), op["version"]) for op in rec["ops"]]
    assert rec["op"] in ("put", "delete"), rec
    return [(rec["op"], rec["key"], rec.get("value"), rec["version"])]


def apply_record(state: dict[str, Doc], rec: Doc, *, check_versions: bool = True) -> None:
    """Apply one record to `state` (key -> the fields of STATE_FIELDS). With `check_versions`, every
    put's version must be the previous + 1 (1 after a delete) and every delete must hit a live key."""
    for op, key, value, version in changes_of(rec):
        previous = state.get(key)
        if op == "put":
            if check_versions:
                expected = 1 if previous is None else previous["version"] + 1
                assert version == expected, f"seq {rec['seq']} {key!r}: version {version}, expected {expected}"
            state[key] = {
                "value": value,
                "version": version,
                "seq": rec["seq"],
                "author": rec["author"],
                "ts": rec["ts"],
            }
        else:
            if check_versions:
                assert previous is not None, f"seq {rec['seq']} deletes {key!r}, which is not live"
            assert version == 0, rec
            state.pop(key, None)


def replay(records: Iterable[Doc], *, check_versions: bool = True, through: int | None = None) -> dict[str, Doc]:
    """The live keys after applying `records` (those with seq <= `through`, if given) in seq order."""
    state: dict[str, Doc] = {}
    for rec in sorted(records, key=lambda r: int(r["seq"])):
        if through is not None and rec["seq"] > through:
            break
        apply_record(state, rec, check_versions=check_versions)
    return dict(sorted(state.items()))


def latest_events(records: Iterable[Doc]) -> dict[str, Doc]:
    """Key -> the event (as `Event.as_dict()` gives it) of the latest change of that key, deletes included."""
    out: dict[str, Doc] = {}
    for rec in sorted(records, key=lambda r: int(r["seq"])):
        txn = rec["op"] == "txn" and len(rec["ops"]) > 1
        for op, key, value, version in changes_of(rec):
            out[key] = {
                "seq": rec["seq"],
                "op": op,
                "key": key,
                "value": value,
                "version": version,
                "author": rec["author"],
                "ts": rec["ts"],
                "compacted": False,
                "txn": txn,
            }
    return dict(sorted(out.items()))


def expected_blame(truth: dict[str, Doc], compacted_through: int) -> list[Doc]:
    """What blame lists (spec 11.2), from `truth` (`latest_events` of every record ever written): in key
    order, every key whose latest change is a put, and every key whose latest change is a delete after
    the current header's `compacted_through` (one at or before it may be gone with its tombstone, so no
    reader lists it: every reader of a log file answers alike)."""
    return [e for _k, e in sorted(truth.items()) if e["op"] == "put" or e["seq"] > compacted_through]


def board_view(board: Board, keys: Iterable[str]) -> Doc:
    """Everything a reader can ask a board, as plain data: to compare two opens of the same board."""
    stats = board.stats()
    stats.pop("checkpoint_bytes")  # the one figure that depends on whether a checkpoint exists
    return {
        "read_prefix": board.read_prefix(""),
        "keys": board.keys(),
        "get": {k: None if (e := board.get(k)) is None else e.as_dict() for k in sorted(set(keys))},
        "entries": [e.as_dict() for e in board.entries()],
        "blame": [e.as_dict() for e in board.blame()],
        "last_seq": board.last_seq,
        "stats": stats,
    }


def state_of(board: Board) -> dict[str, Doc]:
    """The board's live keys as the judges' `replay` writes them."""
    return {
        e.key: {"value": e.value, "version": e.version, "seq": e.seq, "author": e.author, "ts": e.ts_text}
        for e in board.entries()
    }


def copy_board(src: Path, dst: Path, *, checkpoint: bool) -> Path:
    """A copy of a board's directory (its files' bytes), with or without its checkpoint. Entry files
    are left out: no read answers from them, and a writer in the copy recreates what it changes."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("entries"))
    if not checkpoint:
        (dst / "checkpoint").unlink(missing_ok=True)
    return dst


def checkpoint_temp_files(board_dir: Path) -> list[str]:
    """Names in tmp/ that a checkpoint being written leaves (`layout.tmp_file("checkpoint")`)."""
    try:
        return sorted(n for n in os.listdir(board_dir / "tmp") if n.startswith("checkpoint"))
    except FileNotFoundError:
        return []


# -- transfers between accounts (transactions) -----------------------------------------------------------


def account(i: int) -> str:
    return f"acct/{i:02d}"


def transfer(board: Board, rng: random.Random, accounts: int) -> tuple[int, int]:
    """Move a few units between two distinct accounts in one transaction, retrying on conflicts.
    Returns (seq of the commit, conflicts met)."""
    conflicts = 0
    while True:
        src, dst = rng.sample(range(accounts), 2)
        amount = rng.randint(1, 9)
        try:
            with board.transaction() as tx:
                a = tx.read(account(src))
                b = tx.read(account(dst))
                tx.write(account(src), a - amount)
                tx.write(account(dst), b + amount)
        except VersionConflict as exc:
            assert exc.key in (account(src), account(dst)), exc
            assert exc.actual != exc.expected
            conflicts += 1
            continue
        assert len(tx.entries) == 2 and tx.entries[0].seq == tx.entries[1].seq == tx.seq
        return tx.seq, conflicts


def mover(path: str, seed: int, n: int, accounts: int, barrier: Barrier) -> Doc:
    """Commit `n` transfers; returns their seqs and the conflicts met."""
    rng = random.Random(seed)
    board = Board.open(path, author=f"mover-{os.getpid()}")
    barrier.wait(60)
    seqs = []
    conflicts = 0
    for _ in range(n):
        seq, met = transfer(board, rng, accounts)
        seqs.append(seq)
        conflicts += met
    board.close()
    return {"seqs": seqs, "conflicts": conflicts}


def mover_forever(path: str, seed: int, accounts: int, conn: Connection, go: MpEvent) -> None:
    """Commit transfers until SIGKILL, sending the seq of each once its commit returned."""
    rng = random.Random(seed)
    board = Board.open(path, author=f"mover-{os.getpid()}", flush_interval=0.001)
    conn.send(("ready", os.getpid()))
    go.wait(60)
    while True:
        seq, _ = transfer(board, rng, accounts)
        conn.send(("committed", seq))


def sum_watcher(path: str, prefix: str, total: int, last_seq: int, barrier: Barrier) -> Doc:
    """Watch `prefix` from seq 0, applying events in order; after each seq whose events are all in,
    the values must sum to `total`. Returns how many seqs were checked and what was seen."""
    board = Board.open(path, read_only=True)
    barrier.wait(60)
    state: dict[str, int] = {}
    sizes: dict[int, int] = {}
    current = 0
    bad: list[Doc] = []

    def check() -> None:
        if sum(state.values()) != total:
            bad.append({"seq": current, "sum": sum(state.values())})

    with board.watch(prefix, since=0, timeout=60) as watcher:
        for event in watcher:
            if event.seq != current:
                if current:
                    check()  # every event of `current` is in: the next seq has begun
                assert event.seq > current, (current, event.seq)
                current = event.seq
            assert event.txn, event
            sizes[event.seq] = sizes.get(event.seq, 0) + 1
            if event.op == "put":
                state[event.key] = event.value
            else:
                state.pop(event.key, None)
            if current == last_seq and sizes[current] == 2:
                break
    check()
    board.close()
    return {"checked": len(sizes), "last": current, "bad": bad[:5], "sizes": sorted(set(sizes.values()))}


# -- cursors across a transaction --------------------------------------------------------------------------


def cursor_consumer(
    path: str, prefix: str, cursor: str, out: str, stop_key: str, die_on: str | None, die_after: str | None
) -> None:
    """Consume `prefix` with a cursor, recording each event it handled in `out` (one JSON line), until
    `stop_key`. It SIGKILLs itself on receiving the event of `die_on` (before handling it), or right
    after handling the event of `die_after` (before asking for the next)."""
    board = Board.open(path, author="consumer")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    with board.watch(prefix, since=0, cursor=cursor, timeout=30) as watcher:
        for event in watcher:
            if event.key == die_on:
                os.kill(os.getpid(), signal.SIGKILL)
            append_doc(fd, {**event.as_dict(), "pid": os.getpid()})
            if event.key == die_after:
                os.kill(os.getpid(), signal.SIGKILL)
            if event.key == stop_key:
                watcher.commit()
                break
    os.close(fd)
    board.close()


# -- idempotency keys -----------------------------------------------------------------------------------


def idem_racer(path: str, n: int, barrier: Barrier) -> list[list[Any]]:
    """For i < n: the same idempotent write, delete and transaction that every racer makes. Returns
    [kind, i, seq, version, duplicate-looking fields] for each, as the calls returned them."""
    board = Board.open(path, author=f"racer-{os.getpid()}")
    barrier.wait(60)
    out: list[list[Any]] = []
    for i in range(n):
        e = board.write(f"w/{i}", {"i": i}, idempotency_key=f"w-{i}")
        out.append(["write", i, e.seq, e.version, e.author, e.ts_text])
        with board.transaction(idempotency_key=f"t-{i}") as tx:
            tx.write(f"t/{i}/a", i)
            tx.write(f"t/{i}/b", -i)
        out.append(["txn", i, tx.seq, [x.version for x in tx.entries], tx.entries[0].author, tx.entries[0].ts_text])
        d = board.delete(f"w/{i}", idempotency_key=f"d-{i}")
        out.append(["delete", i, d.seq, d.version, d.author, d.ts_text])
    board.close()
    return out


def idem_retry(path: str, ops: Sequence[Doc], barrier: Barrier) -> list[Doc]:
    """Retry each of `ops` (a fresh process, a fresh open of the board); returns what each call gave:
    its entries, or the name of the error it raised."""
    board = Board.open(path, author="retrier")
    barrier.wait(60)
    results: list[Doc] = []
    for op in ops:
        try:
            if op["kind"] == "write":
                results.append({"entries": [board.write(op["key"], op["value"], idempotency_key=op["idem"]).as_dict()]})
            elif op["kind"] == "delete":
                results.append({"entries": [board.delete(op["key"], idempotency_key=op["idem"]).as_dict()]})
            else:
                with board.transaction(idempotency_key=op["idem"]) as tx:
                    for key, value in op["writes"]:
                        tx.write(key, value)
                results.append({"entries": [e.as_dict() for e in tx.entries]})
        except (InvalidValue, KeyNotFound, VersionConflict, Compacted) as exc:
            results.append({"error": type(exc).__name__})
    board.close()
    return results


# -- checkpoints under SIGKILL, and across compactions ------------------------------------------------


def steady_writer(path: str, n: int, seed: int, bursts: int, compacted: MpEvent, done: MpEvent) -> None:
    """Make `n` changes (puts, deletes, two-key transactions, idempotent writes) in `bursts` bursts,
    waiting after each until a compaction has completed since the burst began; then set `done`."""
    rng = random.Random(seed)
    board = Board.open(path, author=f"steady-{os.getpid()}")
    for i in range(n):
        if i and i % (n // bursts) == 0:
            assert compacted.wait(60), "no compaction came"
            compacted.clear()
        key = f"s/{rng.randrange(40)}"
        roll = rng.random()
        if roll < 0.15:
            try:
                board.delete(key)
            except KeyNotFound:
                board.write(key, i)
        elif roll < 0.3:
            with board.transaction() as tx:
                tx.write(key, {"i": i})
                tx.write(f"t/{rng.randrange(40)}", [i])
        elif i % 97 == 0:
            board.write(key, i, idempotency_key=f"idem-{i}")
        else:
            board.write(key, {"i": i, "pad": "p" * rng.randrange(40)})
    board.close()
    done.set()


def checkpoint_churner(path: str, conn: Connection, go: MpEvent, seed: int, per_round: int) -> None:
    """Open the board, write `per_round` records (puts of hot keys, some deletes and transactions),
    close it (which writes a checkpoint: enough records came since the last), forever, until SIGKILL.
    Says ("closing", i) before each close and ("closed", i) after it."""
    rng = random.Random(seed)
    conn.send(("ready", os.getpid()))
    go.wait(60)
    i = 0
    while True:
        board = Board.open(path, author=f"churn-{os.getpid()}", flush_interval=0.005)
        for n in range(per_round):
            key = f"hot/{rng.randrange(40)}"
            roll = rng.random()
            if roll < 0.05:
                try:
                    board.delete(key)
                except KeyNotFound:
                    board.write(key, {"n": n})
            elif roll < 0.1:
                with board.transaction() as tx:
                    tx.write(key, {"n": n, "txn": True})
                    tx.write(f"hot/{rng.randrange(40, 60)}", [n, "ünï"])
            else:
                board.write(key, {"n": n, "pid": os.getpid(), "pad": "x" * rng.randrange(50)})
        conn.send(("closing", i))
        board.close()
        conn.send(("closed", i))
        i += 1

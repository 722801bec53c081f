"""txn: what a transaction of 10 puts costs against a single write, in one process.

Ours, on a fresh board per filesystem and repetition: one write is `board.write(key, value)`; one
transaction is `with board.transaction() as tx:` then `tx.write(f"t/{j}", value)` for j in
range(10). Peer, sqlite3 (WAL, synchronous=NORMAL, the writes section's schema): one write is
`BEGIN IMMEDIATE`, INSERT a log row, UPSERT the key's row, `COMMIT`; one transaction is the same
with 10 INSERT + UPSERT pairs between one BEGIN IMMEDIATE and one COMMIT. Values are the writes
section's ~120-byte dicts; single writes go round the same 10 keys. Each (system, kind) is run for
`--duration` seconds, in turns in a rotating order, `--reps` times; every call is timed alone
(time.perf_counter). The figure is the mean time of one call (the run's seconds / its calls; p50
in the run log); the ratio row is one transaction / one write, for each system on its own (target:
ours at most 3x). If this build's `Board` has no `transaction`, those rows say so and have no figure.
"""

from __future__ import annotations

import shutil
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from _bench import Bench, Filesystem
from _peers import _INSERT_LOG, _UPSERT_KV, OURS, SqliteStore, make_value
from _procs import percentile
from _report import Row, Target
from _sections import median, rotated, section

SQLITE = "sqlite3"
PUTS = 10
KEYS = [f"t/{j}" for j in range(PUTS)]
SINGLE, TXN = "one write", f"one transaction of {PUTS} puts"
NO_TXN = "skipped: no transactions in this build"


def has_transactions() -> bool:
    from blackboard import Board

    return hasattr(Board, "transaction")


def _calls(fn: Callable[[int], None], duration: float) -> tuple[float, float]:
    """Call fn(0), fn(1), ... for `duration` seconds: (mean seconds per call, p50 seconds)."""
    fn(-1)  # warm up: first-use costs are not a call's
    lat: array[float] = array("d")
    clock = time.perf_counter
    i = 0
    start = now = clock()
    deadline = start + duration
    while now < deadline:
        fn(i)
        end = clock()
        lat.append(end - now)
        now = end
        i += 1
    return (now - start) / i, percentile(sorted(lat), 0.5)


def _ours(path: Path, kind: str, duration: float) -> tuple[float, float]:
    from blackboard import Board

    board: Any = Board.init(path)  # Any: transaction() may be missing from this build's type hints
    try:
        if kind == SINGLE:

            def call(i: int) -> None:
                board.write(KEYS[i % PUTS], make_value(i))

        else:

            def call(i: int) -> None:
                value = make_value(i)
                with board.transaction() as tx:
                    for key in KEYS:
                        tx.write(key, value)

        result = _calls(call, duration)
        _check(board.read(KEYS[0]), kind)
        report = board.check()
        if not report.ok:
            raise RuntimeError(f"check(): {report.problems()[:3]}")
    finally:
        board.close()
    return result


def _check(value: Any, kind: str) -> None:
    if not (isinstance(value, dict) and value.get("payload") == make_value(0)["payload"]):
        raise RuntimeError(f"{kind}: {KEYS[0]} reads back {value!r:.80}")


def _sqlite(path: Path, kind: str, duration: float) -> tuple[float, float]:
    store = SqliteStore(path, durable=False, create=True)
    con = store.con
    try:
        if kind == SINGLE:

            def call(i: int) -> None:
                store.write(KEYS[i % PUTS], make_value(i))

        else:

            def call(i: int) -> None:
                data = orjson.dumps(make_value(i))
                con.execute("BEGIN IMMEDIATE")
                try:
                    for key in KEYS:
                        seq = con.execute(_INSERT_LOG, (key, data, time.time())).lastrowid
                        con.execute(_UPSERT_KV, (key, data, seq))
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")

        result = _calls(call, duration)
        _check(store.read(KEYS[0]), kind)
    finally:
        store.close()
    return result


def _one(bench: Bench, fs: Filesystem, system: str, kind: str) -> tuple[float, float]:
    root = bench.fresh_dir(fs, f"txn-{system}")
    try:
        if system == OURS:
            return _ours(root / "board", kind, bench.sizes.duration)
        return _sqlite(root, kind, bench.sizes.duration)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@section("txn", "a transaction of 10 puts vs one write, 1 process; sqlite3: one txn of 10 UPSERTs (+ log rows) vs one")
def txn(bench: Bench) -> list[Row]:
    ours_txn = has_transactions()
    if not ours_txn:
        print(NO_TXN, flush=True)
        bench.log(f"txn     {NO_TXN}")
    cases = [(OURS, SINGLE), (SQLITE, SINGLE), (SQLITE, TXN)] + ([(OURS, TXN)] if ours_txn else [])
    rows = []
    for fs in bench.filesystems:
        means: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
        for rep in range(bench.sizes.reps):
            for i in rotated(tuple(range(len(cases))), rep):
                system, kind = cases[i]
                try:
                    mean, p50 = _one(bench, fs, system, kind)
                except Exception as exc:
                    bench.problems.append(f"txn, {fs.label}, {system}, {kind}: {exc}")
                    bench.log(f"txn     {fs.label:5} {system:10} {kind:28} FAILED: {exc}")
                    continue
                means[system, kind].append(mean * 1e6)
                bench.log(
                    f"txn     {fs.label:5} {system:10} {kind:28} mean {mean * 1e6:8.1f} us  p50 {p50 * 1e6:8.1f} us"
                )

        def us(system: str, kind: str, means: dict[tuple[str, str], list[float]] = means) -> float:
            return median(means.get((system, kind), []))

        single = Row("txn", SINGLE, fs.label, "us", False, us(OURS, SINGLE), {SQLITE: us(SQLITE, SINGLE)})
        single.note = "ours: board.write; sqlite3: BEGIN IMMEDIATE, INSERT log row, UPSERT kv row, COMMIT"
        whole = Row("txn", TXN, fs.label, "us", False, us(OURS, TXN), {SQLITE: us(SQLITE, TXN)})
        whole.note = f"ours: with board.transaction() as tx: {PUTS} tx.write; sqlite3: {PUTS} INSERT + UPSERT in one"
        ratio = Row("txn", f"{TXN} / {SINGLE}", fs.label, "x", False, us(OURS, TXN) / us(OURS, SINGLE))
        ratio.peers, ratio.show_ratios = {SQLITE: us(SQLITE, TXN) / us(SQLITE, SINGLE)}, False
        ratio.target = Target(3.0, inclusive=True)
        per_put = Row("txn", f"per put, in transactions of {PUTS}", fs.label, "us", False, us(OURS, TXN) / PUTS)
        per_put.peers = {SQLITE: us(SQLITE, TXN) / PUTS}
        if not ours_txn:
            whole.note = ratio.note = per_put.note = NO_TXN
        rows += [single, whole, ratio, per_put]
    return rows

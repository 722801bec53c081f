"""checksum: what format 3's checksums (spec/FORMAT.md 5.6) cost writers and readers.

The issue's bound: the checksum must not cost more than 10% of write throughput or of replay speed.
Each figure is measured on a log of format 3 (every line sealed with its XXH3-64) against the same
work on a log of format 2 (no checksums), which this release still reads and appends to in its own
format, in one run and in turns:

- writes/s, 1 process: one helper process makes, round after round, a fresh board of each kind in a
  rotating order and times `checksum_writes` `board.write` calls on it (after one warm-up write),
  the writes section's keys and values; then `close()` (timed apart: the entry files' flush). The
  format-2 board is `Board.init` turned into a board of the previous release before any write
  (board.json version 2, a version-2 log header), so every record appended to it is unsealed.
- index replay: a fresh process opens the big log read-only with no checkpoint (deleted before each
  run) and reads `last_seq`: every line read, parsed and, in format 3, verified. records/s.
- watcher catch-up: a fresh process counts `board.watch(prefix, since=0)` events up to the last seq,
  with the empty prefix (every event delivered) and with a 1% prefix (99% of the lines are passed
  over: verified, not parsed). log events/s.

The big logs are catchup's log (format 3) and the same records in a format-2 board, both on the disk
and in the page cache. Figures are medians over `checksum_rounds` rounds; the ratio is format 3 /
format 2, and the target is >= 0.9 (at most 10% slower).

Run as a script, this module is the writer process:

    python bench/_checksum.py writes ROOT WRITES ROUNDS   # prints one JSON object
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _bench import Bench, Filesystem
from _biglog import NARROW, BigLog, index_replay, make_format_2, replay
from _peers import make_value
from _report import Row, Target
from _sections import big_log, median, rotated, section

SEALED, UNSEALED = "sealed", "unsealed"
#: the peer column: the same work without checksums
PLAIN = "format 2 (no checksums)"
TARGET = Target(0.9, PLAIN)  # at most 10% below the figure without checksums
KEYS = 1000  # keys written round-robin, as the writes section's one writer does
_SCRIPT = str(Path(__file__).resolve())


def _writes(bench: Bench, fs: Filesystem) -> dict[str, list[dict[str, Any]]]:
    sizes = bench.sizes
    root = bench.fresh_dir(fs, "checksum-writes")
    cmd = [sys.executable, _SCRIPT, "writes", str(root), str(sizes.checksum_writes), str(sizes.checksum_rounds)]
    try:
        timeout = 120 + sizes.checksum_rounds * sizes.checksum_writes / 500
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"_checksum.py writes failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    runs: dict[str, list[dict[str, Any]]] = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind in (SEALED, UNSEALED):
        for run in runs[kind]:
            if run["problem"]:
                bench.problems.append(f"checksum, writes, {fs.label}, {kind}: {run['problem']}")
            bench.log(
                f"cksum   {fs.label:5} writes   {kind:8} {run['writes']:,} writes in {run['seconds']:.3f} s:"
                f" {run['per_s']:9,.0f} writes/s, close {run['close_ms']:.0f} ms"
            )
    return runs


def _paired(sealed: list[float], plain: list[float]) -> str:
    """The median of each round's own ratio: the round-to-round noise falls out of it."""
    return f"{median([a / b for a, b in zip(sealed, plain, strict=True)]):.3f}"


def _write_row(bench: Bench, fs: Filesystem, runs: dict[str, list[dict[str, Any]]]) -> Row:
    rates = {kind: [float(r["per_s"]) for r in runs[kind]] for kind in (SEALED, UNSEALED)}
    close = {kind: median([float(r["close_ms"]) for r in runs[kind]]) for kind in (SEALED, UNSEALED)}
    metric = f"writes/s, 1 proc, {bench.sizes.checksum_writes:,} writes, format 3"
    row = Row("checksum", metric, fs.label, "writes/s", True, median(rates[SEALED]), {PLAIN: median(rates[UNSEALED])})
    row.target = TARGET
    row.note = (
        f"fresh boards in turns in one process, {len(rates[SEALED])} rounds; per-round ratio (median)"
        f" {_paired(rates[SEALED], rates[UNSEALED])}; close (entry-file flush) {close[SEALED]:.0f} ms vs"
        f" {close[UNSEALED]:.0f} ms"
    )
    return row


def _replay_once(what: str, log: BigLog) -> tuple[dict[str, Any], tuple[int, int]]:
    """One fresh process's replay of `log`: its result, and the (last seq, events) it must have reached.
    Each starts with no checkpoint (the last one's close may have saved one), as index replay must."""
    (log.path / "checkpoint").unlink(missing_ok=True)
    if what == "index":
        return index_replay(log), (log.events, log.events)
    if what == "catch-up":
        return replay(log, "", log.events), (log.events, log.events)
    return replay(log, NARROW, log.narrow_last), (log.narrow_last, log.narrow_events)


def _replays(bench: Bench) -> list[Row]:
    logs = {SEALED: big_log(bench), UNSEALED: big_log(bench, sealed=False)}
    fs = bench.big_fs()
    events = logs[SEALED].events
    kinds = ("index", "catch-up", "narrow")
    seconds: dict[tuple[str, str], list[float]] = {(w, k): [] for w in kinds for k in logs}
    for rep in range(bench.sizes.checksum_rounds):
        for what in kinds:
            for kind in rotated((SEALED, UNSEALED), rep):
                result, (last, count) = _replay_once(what, logs[kind])
                got = (result["last"], result.get("count", result["last"]))
                if got != (last, count):
                    problem = f"{got[1]} events up to seq {got[0]}, expected {count} up to seq {last}"
                    bench.problems.append(f"checksum, {what}, {kind}: {problem}")
                seconds[what, kind].append(float(result["seconds"]))
                bench.log(
                    f"cksum   {fs.label:5} {what:8} {kind:8} {events:,} records in {result['seconds']:6.2f} s:"
                    f" {events / result['seconds']:9,.0f} records/s, peak RSS {result['peak_rss_mb']:.0f} MB"
                )

    def rates(what: str, kind: str) -> list[float]:
        return [events / s for s in seconds[what, kind]]

    n = f"{events:,}"
    metrics = {
        "index": (f"index replay of {n} records, fresh process, no checkpoint, format 3", "records/s"),
        "catch-up": (f"watcher catch-up from seq 0, {n} events, format 3", "events/s"),
        "narrow": (f"watcher catch-up from seq 0, prefix {NARROW} (1% of keys), format 3", "log events/s"),
    }
    notes = {
        "index": "Board.open(read_only=True).last_seq, timed from open; every line parsed (and verified)",
        "catch-up": "board.watch('', since=0) up to the last seq; every event delivered",
        "narrow": "99% of the lines passed over (verified in format 3, not parsed)",
    }
    rows = []
    for what, (metric, unit) in metrics.items():
        sealed, plain = rates(what, SEALED), rates(what, UNSEALED)
        row = Row("checksum", metric, fs.label, unit, True, median(sealed), {PLAIN: median(plain)}, TARGET)
        row.note = (
            f"{notes[what]}; median of {len(sealed)} runs in turns, per-round ratio (median) {_paired(sealed, plain)};"
            f" {logs[SEALED].bytes / 1e6:,.0f} MB vs {logs[UNSEALED].bytes / 1e6:,.0f} MB, in the page cache"
        )
        rows.append(row)
    return rows


@section("checksum", "the cost of format 3's checksums: writes/s and replay speed, vs a format-2 log (target <= 10%)")
def checksum(bench: Bench) -> list[Row]:
    rows = [_write_row(bench, fs, _writes(bench, fs)) for fs in bench.filesystems]
    return rows + _replays(bench)


# -- the writer process ----------------------------------------------------------------------------------


def _time_writes(path: Path, writes: int, sealed: bool) -> dict[str, Any]:
    from blackboard import Board
    from blackboard.core.record import is_sealed

    Board.init(path).close()
    if not sealed:
        make_format_2(path)
    board = Board.open(path)
    keys = [f"bench/0/{i}" for i in range(KEYS)]
    write = board.write
    write(keys[0], make_value(-1))  # warm up: first-use costs (the flusher's thread) are not a write's
    clock = time.perf_counter
    start = clock()
    for i in range(writes):
        write(keys[i % KEYS], make_value(i))
    seconds = clock() - start
    appended_sealed = board.engine.log.sealed
    t0 = clock()
    board.close()
    close_ms = (clock() - t0) * 1e3
    last = (path / "log.jsonl").read_bytes().rsplit(b"\n", 2)[-2]
    problem = ""
    if appended_sealed != sealed or is_sealed(last) != sealed:
        problem = f"expected a log of format {3 if sealed else 2}; its last line: {last[-60:]!r}"
    return {"writes": writes, "seconds": seconds, "per_s": writes / seconds, "close_ms": close_ms, "problem": problem}


def _main_writes(root: Path, writes: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {SEALED: [], UNSEALED: []}
    for rep in range(rounds):
        for kind in rotated((SEALED, UNSEALED), rep):
            path = root / f"{rep}-{kind}"
            try:
                out[kind].append(_time_writes(path, writes, kind == SEALED))
            finally:
                shutil.rmtree(path, ignore_errors=True)
    return out


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "writes":
        print(json.dumps(_main_writes(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
    else:
        sys.exit(f"unknown command {command!r}")

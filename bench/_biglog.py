"""The large log that catchup replays and compaction compacts, and the fresh processes that do it.

The log is written straight in the spec's format (spec/FORMAT.md, section 5: a header line, then
one record per line, seq 1..N gapless), which takes ~1.5 s for a million events against minutes of
`board.write`. N events over 10,000 keys `bench/gGG/kKK` (100 groups of 100 keys), each key once
per block of 10,000 seqs in a shuffled order, so each key has N / 10,000 versions; the values are
the writes section's `{"i": seq, "payload": "x" * 100}`. The prefix `bench/g07/` matches 1% of the
keys and of the events. The watermark is set to N, as a writer's background flush leaves it once it
has caught up (compaction's flush then has nothing to write); entry files are not created (neither
replay nor compaction reads them).

By default the log is of format 3, what this release writes: every line, the header's included,
ends with its checksum (section 5.6), ~281 bytes a line. `sealed=False` builds the same records as
a format-2 board (board.json version 2, a version-2 header, no checksums: ~255 bytes a line), as an
older release left it: the checksum section replays both.

Run as a script, this module is the fresh process that measures one replay or one compaction:

    python bench/_biglog.py catchup BOARD PREFIX LAST_SEQ   # a watcher from seq 0
    python bench/_biglog.py index BOARD                     # open read-only, read last_seq
    python bench/_biglog.py compact BOARD

and prints one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS = 10_000
GROUPS = 100
NARROW = "bench/g07/"  # 1 group of 100: 1% of the keys
_STRIDE = 7919  # a prime: seq -> key is a permutation of the keys within each block of KEYS seqs
_PAYLOAD = "x" * 100
_AUTHOR = "bench@builder"
_BASE_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z; events 10 us apart
# A record without its closing brace, in our writer's field order (spec 5.2): `seal` closes it with its
# checksum (format 3), or it is closed as it is (format 2).
_BODY = b'{"seq":%d,"op":"put","key":"%s","value":{"i":%d,"payload":"%s"},"version":%d,"author":"%s","ts":"%s.%06dZ"'


@dataclass(frozen=True)
class BigLog:
    path: Path  # the board directory
    events: int
    bytes: int
    narrow_events: int  # events under NARROW
    narrow_last: int  # the last seq under NARROW
    build_s: float
    sealed: bool  # format 3, a checksum on every line; else format 2, none


def key_name(k: int) -> str:
    return f"bench/g{k // (KEYS // GROUPS):02d}/k{k % (KEYS // GROUPS):02d}"


def format_2_header() -> bytes:
    """The first line of a new log of format 2 (spec 5.1), as the previous release wrote it: no checksum."""
    from blackboard.core.record import new_generation

    fields = b'"blackboard_log":2,"compacted_through":0,"purged_deletes_through":0,"archived_through":0'
    return b'{%s,"generation":"%s"}\n' % (fields, new_generation().encode())


def make_format_2(path: Path) -> None:
    """Turn the new, empty board at `path` (`Board.init`, nothing written yet, so no checkpoint) into one
    that the previous release created: board.json version 2 and a log of format 2. Writers append to a
    log in its own format (spec 3), so every record written to it has no checksum."""
    config = path / "board.json"
    settings = json.loads(config.read_bytes())
    settings["version"] = 2
    config.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    (path / "log.jsonl").write_bytes(format_2_header())


def _unsealed(body: bytes) -> bytes:
    return body + b"}"


def build(path: Path, events: int, *, sealed: bool = True) -> BigLog:
    """A board at `path` whose log holds `events` puts, of format 3 or (`sealed=False`) 2 (see the module doc)."""
    from blackboard import Board
    from blackboard.core.record import log_header, seal

    t0 = time.perf_counter()
    Board.init(path).close()
    if not sealed:
        make_format_2(path)
    close = seal if sealed else _unsealed
    names = [key_name(k).encode() for k in range(KEYS)]
    narrow = {k for k in range(KEYS) if names[k].startswith(NARROW.encode())}
    payload, author = _PAYLOAD.encode(), _AUTHOR.encode()
    narrow_events = narrow_last = 0
    tmp = path / "tmp" / "biglog.tmp"
    second, stamp = -1, b""
    with open(tmp, "wb", buffering=1 << 22) as out:
        out.write(log_header() if sealed else format_2_header())
        batch: list[bytes] = []
        for seq in range(1, events + 1):
            k = ((seq - 1) * _STRIDE) % KEYS
            micros = seq * 10
            if micros // 1_000_000 != second:
                second = micros // 1_000_000
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(_BASE_EPOCH + second)).encode()
            version = (seq - 1) // KEYS + 1
            batch.append(close(_BODY % (seq, names[k], seq, payload, version, author, stamp, micros % 1_000_000)))
            if k in narrow:
                narrow_events += 1
                narrow_last = seq
            if len(batch) == 10_000:
                batch.append(b"")  # the last line's newline
                out.write(b"\n".join(batch))
                batch.clear()
        if batch:
            batch.append(b"")
            out.write(b"\n".join(batch))
    os.replace(tmp, path / "log.jsonl")
    # The watermark (spec section 7): one decimal seq padded to 20 characters, and a newline.
    (path / "materialized").write_bytes(str(events).ljust(20).encode() + b"\n")
    size = (path / "log.jsonl").stat().st_size
    return BigLog(path, events, size, narrow_events, narrow_last, time.perf_counter() - t0, sealed)


def _run_script(*args: str, timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"_biglog.py {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def replay(log: BigLog, prefix: str, last: int) -> dict[str, Any]:
    """Replay the log from seq 0 in a fresh process: seconds, events delivered, the last seq seen."""
    return _run_script("catchup", str(log.path), prefix, str(last), timeout=60 + log.events / 20_000)


def index_replay(log: BigLog) -> dict[str, Any]:
    """Open the board read-only in a fresh process and read `last_seq`, after deleting its checkpoint
    (a handle's close may write one): the index is replayed from the log's first line."""
    (log.path / "checkpoint").unlink(missing_ok=True)
    return _run_script("index", str(log.path), timeout=60 + log.events / 20_000)


def compact_copy(path: Path) -> dict[str, Any]:
    """Compact the board at `path` in a fresh process: its report, times and peak RSS."""
    size = (path / "log.jsonl").stat().st_size
    return _run_script("compact", str(path), timeout=120 + size / 2e6)


# -- the fresh processes ---------------------------------------------------------------------------------


def _maxrss_mb() -> float:
    """ru_maxrss, in MiB. Linux carries it over from the parent through fork and exec: a child of a
    large process starts out with its parent's figure, so it is noted, and `_peak_mb` is used."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _peak_mb() -> float:
    """The peak RSS of this process's own address space (VmHWM), in MiB: ru_maxrss without the inheritance."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return _maxrss_mb()


def _main_catchup(path: str, prefix: str, last: int) -> dict[str, Any]:
    from blackboard import Board

    board = Board.open(path, read_only=True)
    count = seen = 0
    t0 = time.perf_counter()
    with board.watch(prefix, since=0, timeout=10) as watcher:
        for event in watcher:
            count += 1
            seen = event.seq
            if seen >= last:
                break
    seconds = time.perf_counter() - t0
    board.close()
    return {"seconds": seconds, "count": count, "last": seen, "peak_rss_mb": _peak_mb(), "ru_maxrss_mb": _maxrss_mb()}


def _main_index(path: str) -> dict[str, Any]:
    from blackboard import Board

    t0 = time.perf_counter()
    board = Board.open(path, read_only=True)
    last = board.last_seq  # the index is built on first use: every line read, parsed, verified
    seconds = time.perf_counter() - t0
    board.close()
    return {"seconds": seconds, "last": last, "peak_rss_mb": _peak_mb()}


def _main_compact(path: str) -> dict[str, Any]:
    from blackboard import Board

    board = Board.open(path)
    baseline, ru_baseline = _peak_mb(), _maxrss_mb()
    marks: list[float] = []
    t0 = time.monotonic()
    report = board.compact(progress=lambda _n: marks.append(time.monotonic()))
    wall = time.monotonic() - t0
    peak, ru_peak = _peak_mb(), _maxrss_mb()
    board.close()
    # Progress is called after each 4 MiB chunk of the planning pass: before its first call the
    # process brought its index up to the log (compact() flushes entry files first), after its
    # last one it writes the new log and switches it in.
    chunk = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else 0.0
    phases = {
        "before_plan_s": (marks[0] - t0 - chunk) if marks else float("nan"),
        "plan_s": (marks[-1] - marks[0] + chunk) if marks else float("nan"),
        "write_switch_s": (t0 + wall - marks[-1]) if marks else float("nan"),
    }
    rss = {"baseline_mb": baseline, "peak_mb": peak, "ru_maxrss_before_mb": ru_baseline, "ru_maxrss_after_mb": ru_peak}
    return {"report": report.as_dict(), "wall_s": wall, **rss, **phases}


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "catchup":
        out = _main_catchup(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif command == "index":
        out = _main_index(sys.argv[2])
    elif command == "compact":
        out = _main_compact(sys.argv[2])
    else:
        sys.exit(f"unknown command {command!r}")
    print(json.dumps(out))

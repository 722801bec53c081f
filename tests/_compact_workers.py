"""The code the compaction tests' child processes run, and the judges those tests share.

Spawned children import this module by name, so every function a child runs lives here, at top level
(the watchers' own, `watch_and_record`, in `_workers`, shared with the watch tests).
A child records what it did (a write that returned, an event it received) as one JSON line per fact,
written with a single `os.write`, so the parent reads whole lines whatever happens to the child. The
judges read the board's files with the standard library (`json`, `os`) and `xxhash` (the checksums of
a log of version 3), never with the code under test.
"""

from __future__ import annotations

import json
import os
import random
import resource
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import xxhash
from _workers import append_doc

import blackboard.core.compact  # noqa: F401  (imported before the memory baseline is taken)
from blackboard import Board

#: The fields of an entry file: a put record less `op` (spec/FORMAT.md, section 7).
ENTRY_FIELDS = ("key", "value", "version", "seq", "author", "ts")
#: Old enough for any retention a test uses (RFC 3339 with microseconds, as the spec writes it).
OLD_TS = "2020-01-02T03:04:05.000006Z"

Doc = dict[str, Any]


# -- writing logs by hand (spec/FORMAT.md, section 5) ----------------------------------------------------


def now_ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def header_line(compacted_through: int = 0, purged_deletes_through: int = 0) -> bytes:
    doc = {
        "blackboard_log": 1,
        "compacted_through": compacted_through,
        "purged_deletes_through": purged_deletes_through,
    }
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def record_line(seq: int, op: str, key: str, value: Any, version: int, ts: str, author: str = "hand") -> bytes:
    doc = {"seq": seq, "op": op, "key": key, "value": value, "version": version, "author": author, "ts": ts}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def write_big_log(board_dir: Path, records: int, keys: int, pad: int) -> int:
    """Replace the (fresh) board's log by `records` puts spread over `keys` keys. Returns its size."""
    ts = now_ts()
    filler = "x" * pad
    versions = [0] * keys
    with open(board_dir / "log.jsonl", "wb") as f:
        f.write(header_line())
        chunk: list[str] = []
        for seq in range(1, records + 1):
            k = seq % keys
            versions[k] += 1
            chunk.append(
                f'{{"seq":{seq},"op":"put","key":"big/{k}","value":{{"n":{seq},"pad":"{filler}"}},'
                f'"version":{versions[k]},"author":"gen","ts":"{ts}"}}\n'
            )
            if len(chunk) == 10_000:
                f.write("".join(chunk).encode())
                chunk.clear()
        f.write("".join(chunk).encode())
        return f.tell()


# -- judging a board from its files ----------------------------------------------------------------------


def checked_doc(line: bytes, sealed: bool) -> Doc:
    """A log line's JSON object. In a log of version 3 or more (`sealed`) the line ends with its
    checksum, `,"xxh3":"<16 hex>"}`, the XXH3-64 of the bytes before it (spec 5.6): checked here, and
    dropped from the document (it is not part of the record). In an older log no line has one."""
    doc: Doc = json.loads(line)
    if sealed:
        assert line[-27:-18] == b',"xxh3":"' and line.endswith(b'"}'), f"no checksum member last: {line!r}"
        assert line[-18:-2] == xxhash.xxh3_64_hexdigest(line[:-27]).encode(), f"checksum mismatch: {line!r}"
        del doc["xxh3"]
    else:
        assert "xxh3" not in doc, f"a checksum in a log of version 1 or 2: {line!r}"
    return doc


class Log:
    """A log file read back with `json`: its header, records and raw record lines (no newline); in a
    log of version 3 every line's checksum is checked (the documents do not carry it)."""

    def __init__(self, board_dir: Path) -> None:
        data = (board_dir / "log.jsonl").read_bytes()
        assert data.endswith(b"\n"), f"the log ends in an incomplete line: {data[-80:]!r}"
        lines = data.split(b"\n")[:-1]
        self.size = len(data)
        version = json.loads(lines[0]).get("blackboard_log")
        # 3 in logs our writer creates (and compaction writes); 1 or 2 in older ones, hand-made here.
        assert version in (1, 2, 3), lines[0]
        self.sealed = version >= 3
        self.header: Doc = checked_doc(lines[0], self.sealed)
        self.lines = lines[1:]
        self.records: list[Doc] = [checked_doc(line, self.sealed) for line in self.lines]
        self.compacted_through: int = self.header["compacted_through"]
        self.purged_deletes_through: int = self.header["purged_deletes_through"]
        self.seqs = [r["seq"] for r in self.records]

    def check_seqs(self) -> None:
        """Spec 5.2: strictly increasing; gapless after compacted_through (from 1 if never compacted)."""
        assert all(a < b for a, b in zip(self.seqs, self.seqs[1:], strict=False)), "seqs not strictly increasing"
        after = [s for s in self.seqs if s > self.compacted_through]
        first = self.compacted_through + 1
        assert after == list(range(first, first + len(after))), f"a gap after compacted_through {first - 1}"
        assert 0 <= self.purged_deletes_through <= self.compacted_through, self.header

    def by_seq(self) -> dict[int, bytes]:
        return dict(zip(self.seqs, self.lines, strict=True))


def replay(records: Iterable[Doc]) -> dict[str, Doc]:
    """The live keys after applying `records` in seq order: key -> entry document."""
    state: dict[str, Doc] = {}
    for rec in records:
        if rec["op"] == "put":
            state[rec["key"]] = {f: rec[f] for f in ENTRY_FIELDS}
        else:
            assert rec["op"] == "delete", rec
            state.pop(rec["key"], None)
    return state


def latest_by_key(records: Iterable[Doc]) -> dict[str, Doc]:
    """Each key's latest record (a put or a delete)."""
    out: dict[str, Doc] = {}
    for rec in records:
        out[rec["key"]] = rec
    return out


def entry_files(board_dir: Path) -> dict[str, Doc]:
    """Every entry file's document, by the key it holds."""
    out: dict[str, Doc] = {}
    for dirpath, _dirs, names in os.walk(board_dir / "entries"):
        for name in names:
            doc = json.loads((Path(dirpath) / name).read_bytes())
            assert doc["key"] not in out, f"two entry files hold {doc['key']!r}"
            out[doc["key"]] = doc
    return out


def compaction_leftovers(board_dir: Path) -> list[str]:
    """Temporary files of a compaction in tmp/ (spec 11: a later compaction removes them)."""
    try:
        return sorted(n for n in os.listdir(board_dir / "tmp") if n.startswith("log.compact."))
    except FileNotFoundError:
        return []


# -- children's bodies --------------------------------------------------------------------------------------


def writer(
    path: str,
    wid: int,
    prefixes: Sequence[str],
    keys_per_prefix: int,
    acks: str,
    go: MpEvent,
    stop: MpEvent,
    pause: float,
) -> None:
    """Put (and sometimes delete) keys `<prefix>w<wid>-<n>` until `stop`; record every write that returned.

    Each writer deletes only keys it wrote, so it knows which are live. An ack is recorded after the
    call returned: it is exactly what the library acknowledged.
    """
    board = Board.open(path, author=f"writer-{wid}")
    rng = random.Random(wid)
    fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    live: set[str] = set()
    try:
        assert go.wait(60), "never told to go"
        i = 0
        while not stop.is_set():
            key = f"{rng.choice(prefixes)}w{wid}-{rng.randrange(keys_per_prefix)}"
            if key in live and rng.random() < 0.15:
                entry = board.delete(key)
                live.discard(key)
                doc: Doc = {"seq": entry.seq, "op": "delete", "key": key, "value": None, "version": 0}
            else:
                value = {"w": wid, "i": i}
                entry = board.write(key, value)
                live.add(key)
                doc = {"seq": entry.seq, "op": "put", "key": key, "value": value, "version": entry.version}
            append_doc(fd, doc)
            i += 1
            if pause:
                time.sleep(pause)
    finally:
        os.close(fd)
        board.close()


def compact_when_told(conn: Connection) -> None:
    """Say "ready"; receive (board, archive); open it, say "started" and compact. The parent SIGKILLs
    us at a random moment after "started"; if the compaction finishes first we send its duration."""
    conn.send("ready")
    try:
        path, archive = conn.recv()
    except EOFError:  # the parent is done with us (the spare child of the last round)
        return
    board = Board.open(path)
    conn.send("started")
    report = board.compact(archive=archive)
    conn.send(report.seconds)
    board.close()


def compact_peak_rss(path: str, conn: Connection) -> None:
    """Compact the board; send (peak RSS before, peak RSS after) in KiB, and the report."""
    board = Board.open(path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = board.compact()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send((before, after, report.as_dict()))
    board.close()

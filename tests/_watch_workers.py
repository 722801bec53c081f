"""The code the watch tests' child processes run, and the judges those tests share.

Spawned children import this module by name, so every function a child runs lives here, at top level
(the watchers' own, `watch_and_record`, in `_workers`, shared with the compaction tests). What a
watcher child received is written to a file, one JSON line per event with a single `os.write`, so a
SIGKILL leaves whole lines behind and the parent can read what a killed consumer got. The judges read
the board's log with the standard library (`json`), not with the code under test.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from datetime import datetime
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from blackboard import Board

#: Fields an event shares with its log record.
RECORD_FIELDS = ("seq", "op", "key", "value", "version", "author")


def stop_key(prefix: str) -> str:
    """The key that ends a watcher child of `prefix` (no writer child writes it)."""
    return f"{prefix}stop"


# -- judging --------------------------------------------------------------------------------------------


def log_records(board_dir: Path) -> list[dict[str, Any]]:
    """Every record of the board's log, parsed with `json`; the seqs must run 1, 2, 3, ... ."""
    data = (board_dir / "log.jsonl").read_bytes()
    assert data.endswith(b"\n"), f"the log ends in an incomplete line: {data[-80:]!r}"
    lines = data.split(b"\n")[:-1]
    header = json.loads(lines[0])
    assert isinstance(header, dict) and "blackboard_log" in header, header
    records: list[dict[str, Any]] = [json.loads(line) for line in lines[1:]]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1)), "the log's seqs have a gap"
    return records


def matching(records: Sequence[dict[str, Any]], prefix: str, after: int = 0) -> list[dict[str, Any]]:
    """The records a watcher of `prefix` started after seq `after` must deliver, in order."""
    return [r for r in records if r["seq"] > after and r["key"].startswith(prefix)]


def assert_events_are_records(events: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]) -> None:
    """Events (as JSON documents) carry exactly their log records' fields, in the same order."""
    assert [e["seq"] for e in events] == [r["seq"] for r in records]
    for event, record in zip(events, records, strict=True):
        assert {f: event[f] for f in RECORD_FIELDS} == {f: record[f] for f in RECORD_FIELDS}
        assert datetime.fromisoformat(event["ts"]) == datetime.fromisoformat(record["ts"])
        assert event["compacted"] is False


# -- children's bodies ------------------------------------------------------------------------------------


def writer_main(
    path: str,
    wid: int,
    count: int,
    prefixes: Sequence[str],
    go: MpEvent | None = None,
    stop: MpEvent | None = None,
    pause: float = 0.0,
) -> None:
    """Write (and sometimes delete) `count` changes spread over `prefixes`, or fewer if `stop` is set.

    Keys are `<prefix>w<wid>-<n>`: never a stop key, and each writer only deletes keys it wrote.
    """
    board = Board.open(path, author=f"writer-{wid}")
    rng = random.Random(wid)
    if go is not None:
        assert go.wait(60), "never told to go"
    live: set[str] = set()
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        key = f"{prefixes[i % len(prefixes)]}w{wid}-{rng.randrange(3)}"
        if key in live and rng.random() < 0.2:
            board.delete(key)
            live.discard(key)
        else:
            board.write(key, {"w": wid, "i": i, "text": "é\n\"'"})
            live.add(key)
        if pause:
            time.sleep(pause)
    board.close()


def timed_writer(path: str, keys: Sequence[str], gap: float, go: MpEvent) -> None:
    """Write each of `keys` after `gap` seconds of quiet (each write is then a fresh wake-up)."""
    board = Board.open(path, author="timed")
    assert go.wait(60), "never told to go"
    for key in keys:
        time.sleep(gap)
        board.write(key, time.time())
    board.close()

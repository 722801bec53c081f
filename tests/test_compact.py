"""Compaction (spec/FORMAT.md, sections 5.1, 10.2 and 11): it changes no read, keeps seqs and the bytes of
every record it keeps, keeps deletes as long as the retention promises, survives SIGKILL at any moment,
and runs while writers write, watchers watch and `tail -F` follows the log.

What the library answers is judged against the board's files read back with `json` (`_compact_workers`),
and against what writers were told (their acknowledgements), never against the library itself.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest
from _compact_workers import (
    OLD_TS,
    Doc,
    Log,
    checked_doc,
    compact_peak_rss,
    compact_when_told,
    compaction_leftovers,
    entry_files,
    header_line,
    latest_by_key,
    now_ts,
    record_line,
    replay,
    write_big_log,
    writer,
)
from _workers import CTX, Spawn, join_ok, read_docs, wait_until, watch_and_record

from blackboard import Board, Compacted, Event
from blackboard.core.compact import CompactReport
from blackboard.core.lock import host_tag
from blackboard.core.watch import Watcher

#: Keys of every shape the key encoding cares about (spec 4.1), so that entry files of all kinds exist.
KEYS = ("a/1", "a/2", "a/b/c", "ab", "b", "nul", "ünï/ça va?", ".env", "a.json/b", "x %\\y")
STATS_KEYS = {
    "keys",
    "events",
    "log_bytes",
    "dead_ratio",
    "last_seq",
    "oldest_seq",
    "compacted_through",
    "entries_at_seq",
    "archive_bytes",
    "checkpoint_bytes",
    "cursors",
}


# -- helpers -------------------------------------------------------------------------------------------------


def value_for(r: int, i: int) -> Any:
    values: list[Any] = [
        {"r": r, "i": i, "list": [1, 2.5, None, True, "é\n\"'"]},
        [r, {"x": i}],
        f"text {r}/{i}",
        r * 100 + i,
        r + i / 8,
        True,
        {},
    ]
    return values[(r + i) % len(values)]


def fill(board: Board, rounds: int = 6) -> None:
    """A history with every case compaction must get right: overwrites, deletes, tombstones as a key's
    latest record, a key deleted then recreated, a live key whose value is null."""
    for r in range(rounds):
        for i, key in enumerate(KEYS):
            if (r + i) % 4 == 3 and board.get(key) is not None:
                board.delete(key)
            else:
                board.write(key, value_for(r, i))
    board.write("b", "last")
    board.delete("b")  # a tombstone: the latest record of its key
    board.write("gone", 1)
    board.delete("gone")
    if board.get("a/2") is None:
        board.write("a/2", "back")
    board.delete("a/2")
    board.write("a/2", "recreated")  # version 1 again
    board.write("nul", None)  # live, with the value null


def view(board: Board) -> dict[str, Any]:
    """Everything a reader can ask, for every key the history ever had."""
    every = (*KEYS, "gone", "never")
    return {
        "get": {k: (None if (e := board.get(k)) is None else e.as_dict()) for k in every},
        "read": {k: board.read(k, default="<absent>") for k in every},
        "entries": [e.as_dict() for e in board.entries()],
        "entries_a": [e.as_dict() for e in board.entries("a")],
        "read_prefix": board.read_prefix(""),
        "read_prefix_a/": board.read_prefix("a/"),
        "keys": board.keys(),
    }


def drain(watcher_: Watcher) -> list[Event]:
    """Every event the log holds for the watcher now (no waiting)."""
    events = []
    while (event := watcher_.next_nowait()) is not None:
        events.append(event)
    return events


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m blackboard ARGS` as a real process (stdout is not a terminal: no progress bar)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "blackboard", *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    assert proc.stderr == "", proc.stderr
    return proc


def report_fields() -> set[str]:
    return {f.name for f in fields(CompactReport)}


# -- equivalence: compaction changes no read ------------------------------------------------------------------


@pytest.mark.parametrize("retention", [0.0, 3600.0], ids=["retention-0", "retention-1h"])
def test_compaction_changes_no_read(board: Board, board_path: Path, retention: float) -> None:
    """Section 11: the log keeps, byte for byte and with their seqs, each key's latest record (its deletes
    only within the retention); every read, through every handle, is the same before and after."""
    fill(board)
    board.flush()
    stale = Board.open(board_path, read_only=True)  # its index was built from the log compaction replaces
    before = view(board)
    assert view(stale) == before
    entries_before = entry_files(board_path)
    watermark_before = (board_path / "materialized").read_bytes()
    original = Log(board_path)
    original.check_seqs()
    latest = latest_by_key(original.records)
    tombstones = sorted(r["seq"] for r in latest.values() if r["op"] == "delete")
    assert len(tombstones) >= 2

    kept = sorted(r["seq"] for r in latest.values() if r["op"] == "put" or retention > 0)
    kept_seqs = set(kept)

    report = board.compact(retention=retention)

    compacted = Log(board_path)
    compacted.check_seqs()
    # The header: compacted through the last seq at compaction.
    assert compacted.compacted_through == original.seqs[-1] == report.compacted_through
    # The newest purged tombstone (or 0); the spec's wording ("the largest seq of a delete record that
    # compaction removed") would also count deletes superseded by a later put, which compaction removes too.
    removed_deletes = [r["seq"] for r in original.records if r["op"] == "delete" and r["seq"] not in kept_seqs]
    literal = max(removed_deletes, default=0)
    assert compacted.purged_deletes_through in {tombstones[-1] if retention == 0 else 0, literal}
    # Kept: the latest record of each key, deletes only within the retention, with unchanged bytes.
    assert compacted.seqs == kept
    original_lines = original.by_seq()
    for seq, line in compacted.by_seq().items():
        assert line == original_lines[seq], f"seq {seq} was rewritten"
    # Replaying the compacted log rebuilds the state.
    assert replay(compacted.records) == replay(original.records)
    # What it says it did.
    assert report.skipped is None
    assert (report.events_before, report.events_after) == (len(original.records), len(compacted.records))
    assert (report.bytes_before, report.bytes_after) == (original.size, compacted.size)
    assert (report.deletes_kept, report.deletes_purged) == ((len(tombstones), 0) if retention else (0, len(tombstones)))
    assert report.archived == 0
    assert report.seconds >= 0

    # Every read is the same: the compacting handle, a handle opened before, a new one.
    assert view(board) == before
    assert view(stale) == before
    with Board.open(board_path, read_only=True) as fresh:
        assert view(fresh) == before
        assert fresh.last_seq == original.seqs[-1]
    # Entry files and the watermark are unaffected: nothing left to materialize.
    assert board.flush() == 0
    assert (board_path / "materialized").read_bytes() == watermark_before
    assert entry_files(board_path) == entries_before
    stale.close()
    board.close()
    assert entry_files(board_path) == replay(compacted.records)
    with Board.open(board_path) as reopened:
        assert reopened.check().ok


def test_compacting_twice_keeps_the_header_marks(board: Board, board_path: Path) -> None:
    """A second compaction compacts a compacted log: C moves to the new last seq, T never goes back."""
    fill(board)
    first = board.compact(retention=0)
    t1 = Log(board_path).purged_deletes_through
    assert t1 > 0
    assert board.compact(retention=0).skipped is not None  # nothing new: every record is its key's latest
    for i in range(5):
        board.write("a/1", i)
    board.write("fresh", 1)
    board.delete("fresh")  # young, and kept: the retention is long
    second = board.compact(retention=3600)
    log = Log(board_path)
    log.check_seqs()
    assert second.compacted_through == log.compacted_through == board.last_seq > first.compacted_through
    assert log.purged_deletes_through == t1
    assert [r["key"] for r in log.records if r["op"] == "delete"] == ["fresh"]
    assert {k: d["value"] for k, d in replay(log.records).items()} == board.read_prefix("")


def test_deleted_then_recreated_key(board: Board, board_path: Path) -> None:
    """After compaction a recreated key is its new life only: version 1 again, and it goes on from there."""
    board.write("k", "one")
    board.write("k", "two")
    board.delete("k")
    again = board.write("k", "again")
    board.write("other", 1)
    board.compact(retention=0)
    assert [(r["seq"], r["op"], r["version"]) for r in Log(board_path).records if r["key"] == "k"] == [
        (again.seq, "put", 1)
    ]
    entry = board.get("k")
    assert entry is not None
    assert (entry.value, entry.version, entry.seq) == ("again", 1, again.seq)
    assert [e.seq for e in board.history("k")] == [again.seq]
    assert board.write("k", "next").version == 2
    assert board.delete("k").version == 0
    assert board.write("k", "third life").version == 1


@pytest.mark.parametrize(
    ("retention", "kept", "purged_through"),
    [
        (None, [8, 9, 10], (5, 6)),  # the board's retention_seconds (a day): the old delete goes
        (0.0, [9, 10], (8,)),  # every tombstone goes
        (1e10, [5, 8, 9, 10], (0, 6)),  # centuries: every tombstone stays
    ],
    ids=["board-retention", "retention-0", "retention-huge"],
)
def test_deletes_are_kept_for_the_retention(
    tmp_path: Path, retention: float | None, kept: list[int], purged_through: tuple[int, ...]
) -> None:
    """Section 11: deletes younger than the retention that are their key's latest record survive; older
    ones go, and the header's purged_deletes_through says up to where. The log is written by hand, with
    the timestamps of long ago that a real board would have."""
    path = tmp_path / "board"
    Board.init(path).close()
    new = now_ts()
    records = [
        (1, "put", "gone", 1, OLD_TS),
        (2, "put", "tomb", 1, OLD_TS),
        (3, "put", "again", 1, OLD_TS),
        (4, "put", "live", 1, OLD_TS),
        (5, "delete", "gone", 0, OLD_TS),  # old, its key's latest: purged with a day's retention
        (6, "delete", "again", 0, OLD_TS),  # superseded by 9
        (7, "put", "live", 2, OLD_TS),
        (8, "delete", "tomb", 0, new),  # young, its key's latest: kept with a day's retention
        (9, "put", "again", 1, new),
        (10, "put", "live", 3, OLD_TS),
    ]
    with open(path / "log.jsonl", "wb") as f:
        f.write(header_line())
        for seq, op, key, version, ts in records:
            f.write(record_line(seq, op, key, None if op == "delete" else {"v": seq}, version, ts))
    original = Log(path)
    with Board.open(path, author="tester") as board:
        before = view(board)
        report = board.compact(retention=retention)
        log = Log(path)
        log.check_seqs()
        assert log.seqs == kept
        assert log.compacted_through == 10
        # The hand-made log was of version 1: compaction rewrote it at version 3, with checksums.
        assert (original.sealed, log.sealed) == (False, True)
        # 5 is the newest delete that was its key's latest record; the spec's wording ("the largest seq
        # of a delete record that compaction removed") would also count the superseded delete 6.
        assert log.purged_deletes_through in purged_through
        assert report.deletes_kept == sum(1 for s in kept if original.records[s - 1]["op"] == "delete")
        assert report.deletes_purged == sum(1 for s in (5, 8) if s not in kept)
        assert view(board) == before
        assert board.read_prefix("") == {"again": {"v": 9}, "live": {"v": 10}}
        assert [(e.seq, e.op) for e in board.history("tomb")] == ([(8, "delete")] if 8 in kept else [])
        assert replay(log.records) == replay(original.records)
        assert board.write("live", 4).seq == 11  # seqs go on from the last, never reused
    assert entry_files(path) == replay(Log(path).records)


def test_seqs_are_never_reused_after_trailing_deletes_are_purged(board: Board, board_path: Path) -> None:
    """Spec 5.2: a seq is never reused, even when compaction removed the records that held the last ones
    (a compacted log may end before its last seq)."""
    board.write("a", 1)
    board.write("b", 2)
    board.delete("b")  # seq 3, the log's last record, purged below
    board.compact(retention=0)
    log = Log(board_path)
    assert (log.seqs, log.compacted_through, log.purged_deletes_through) == ([1], 3, 3)
    assert board.last_seq == 3
    assert board.stats()["last_seq"] == 3
    with Board.open(board_path) as other:
        assert other.last_seq == 3
        with board.watch("", since=None, timeout=5) as live:
            assert other.write("c", 3).seq == 4
            event = next(live)
            assert (event.seq, event.key, event.compacted) == (4, "c", False)
    assert board.write("d", 4).seq == 5
    log = Log(board_path)
    log.check_seqs()
    assert log.seqs == [1, 4, 5]


def test_a_purged_delete_not_yet_in_entry_files_leaves_no_entry_file(board_path: Path) -> None:
    """Spec 7.1/11: entry files follow the log. A delete that compaction purges before any batch
    materialized it must still remove its key's entry file (a writer killed right after a delete
    leaves exactly this state), or `ls`/`cat` show a deleted key forever and check() fails."""
    board = Board.init(board_path, author="tester", flush_interval=60)  # no background batch meanwhile
    board.write("keep", 0)
    board.write("doomed", 1)
    board.flush()
    assert "doomed" in entry_files(board_path)
    board.delete("doomed")  # not materialized yet
    board.compact(retention=0)
    board.close()
    assert "doomed" not in entry_files(board_path)
    with Board.open(board_path) as reopened:
        report = reopened.check()
        assert report.ok, report.problems()


def test_compaction_removes_leftover_temporary_files(board: Board, board_path: Path) -> None:
    """Section 11: temporary files of a killed compaction are removed by the next one."""
    fill(board)
    ours = host_tag()
    (board_path / "tmp" / f"log.compact.{ours}.99999.tmp").write_bytes(b'{"blackboard_log":1')
    (board_path / "tmp" / f"log.compact.{ours}.99999.archive.tmp").write_bytes(b"\x1f\x8b")
    assert board.compact().skipped is None
    assert compaction_leftovers(board_path) == []


def test_one_compaction_at_a_time(board: Board, board_path: Path) -> None:
    """`wait=False` returns at once, having done nothing, while another compaction holds compact.lock."""
    fill(board)
    size = (board_path / "log.jsonl").stat().st_size
    fd = os.open(board_path / "compact.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        report = board.compact(wait=False)
        assert report.skipped is not None
        assert (board_path / "log.jsonl").stat().st_size == size
    finally:
        os.close(fd)
    assert board.compact(wait=False).skipped is None


def test_stats_follow_compaction(board: Board, board_path: Path) -> None:
    fill(board)
    log = Log(board_path)
    live = len(replay(log.records))
    stats = board.stats()
    assert set(stats) == STATS_KEYS
    assert (stats["keys"], stats["events"], stats["last_seq"]) == (live, len(log.records), log.seqs[-1])
    assert (stats["log_bytes"], stats["compacted_through"], stats["archive_bytes"]) == (log.size, 0, 0)
    assert stats["dead_ratio"] == round(1 - live / len(log.records), 4)
    board.compact(archive=True)
    log = Log(board_path)
    stats = board.stats()
    assert (stats["keys"], stats["events"], stats["last_seq"]) == (live, len(log.records), log.compacted_through)
    assert (stats["log_bytes"], stats["compacted_through"]) == (log.size, log.compacted_through)
    assert stats["archive_bytes"] == sum(p.stat().st_size for p in (board_path / "archive").iterdir())
    assert stats["archive_bytes"] > 0
    assert stats["oldest_seq"] == log.seqs[0]


# -- archive: history --all ----------------------------------------------------------------------------------


def test_history_all_after_archived_compactions(board: Board, board_path: Path) -> None:
    """`compact(archive=True)` moves what it removes to archive/: `history(key, all=True)` (and
    `blackboard history KEY --all`) still returns every event, after one compaction and after two."""
    for i in range(5):
        board.write("k", {"i": i})
    board.delete("k")
    for i in range(3):
        board.write("k", {"again": i})
    board.write("j", 1)
    board.write("j", 2)
    board.delete("j")  # purged below: the archive has it
    full = {key: [e.as_dict() for e in board.history(key)] for key in ("k", "j")}
    assert [e["op"] for e in full["k"]].count("delete") == 1

    first = board.compact(archive=True, retention=0)
    assert first.archived == first.events_before - first.events_after == 11
    assert [e.seq for e in board.history("k")] == [full["k"][-1]["seq"]]
    assert board.history("j") == []
    for key in ("k", "j"):
        assert [e.as_dict() for e in board.history(key, all=True)] == full[key]

    for i in range(2):
        board.write("k", {"late": i})
    full["k"] += [e.as_dict() for e in board.history("k")[1:]]  # the log held the rest already
    assert [e["value"] for e in full["k"][-3:]] == [{"again": 2}, {"late": 0}, {"late": 1}]
    second = board.compact(archive=True)
    assert second.archived == 2
    assert len(list((board_path / "archive").glob("*.jsonl.gz"))) == 2
    history = [e.as_dict() for e in board.history("k", all=True)]
    assert history == full["k"]
    assert [e.as_dict() for e in board.history("j", all=True)] == full["j"]

    # The CLI prints all of them (and without --all, only what the log still holds).
    board.close()
    lines = cli("history", "--board", str(board_path), "k", "--all").stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == [e["seq"] for e in full["k"]]
    docs = [
        json.loads(line)
        for line in cli("history", "--board", str(board_path), "k", "--all", "--json").stdout.splitlines()
    ]
    assert [(d["seq"], d["op"], d["value"]) for d in docs] == [(e["seq"], e["op"], e["value"]) for e in history]
    retained = cli("history", "--board", str(board_path), "k").stdout.splitlines()
    assert [int(line.split()[0]) for line in retained] == [e["seq"] for e in full["k"][-1:]]


# -- watchers and cursors across compaction (section 10.2) ----------------------------------------------------

HOW = ["watcher-made-before", "watcher-made-after", "cursor"]


def make_watcher(board: Board, how: str, since: int) -> Watcher:
    if how == "cursor":
        return board.watch("k/", cursor="consumer")
    return board.watch("k/", since=since)


@pytest.mark.parametrize("how", HOW)
def test_watcher_behind_the_compaction_point_gets_compacted_events(board: Board, board_path: Path, how: str) -> None:
    """T <= P < C: the watcher goes on. Records it missed come as each key's state, flagged compacted;
    keys unchanged since P are not repeated; what follows C comes unflagged; applying it all in order
    gives the exact state."""
    for i in range(3):
        board.write(f"k/{i}", 0)  # 1-3
    board.write("k/0", 1)  # 4
    board.write("k/1", 1)  # 5
    position = board.last_seq
    board.write("k/0", 2)  # 6
    board.delete("k/1")  # 7, young: kept
    board.write("k/3", 0)  # 8
    board.write("k/0", 3)  # 9
    board.write("k/4", 0)  # 10
    board.delete("k/4")  # 11
    board.write("k/4", 1)  # 12: deleted then recreated
    board.write("other", 0)  # 13: not under the prefix
    state = {k: d["value"] for k, d in replay(Log(board_path).records[:position]).items() if k.startswith("k/")}
    early = board.watch("k/", since=position) if how == "watcher-made-before" else None
    if how == "cursor":
        board.reset_cursor("consumer", position)

    report = board.compact()
    assert report.compacted_through == 13
    assert Log(board_path).purged_deletes_through == 0
    board.write("k/2", 1)  # 14
    board.delete("k/3")  # 15

    watcher_ = early or make_watcher(board, how, position)
    with watcher_:
        events = drain(watcher_)
    assert [(e.seq, e.compacted) for e in events] == [
        (7, True),
        (8, True),
        (9, True),
        (12, True),
        (14, False),
        (15, False),
    ]
    for event in events:
        if event.op == "put":
            state[event.key] = event.value
        else:
            state.pop(event.key, None)
    assert state == board.read_prefix("k/")
    if how == "cursor":
        assert board.cursors() == {"consumer": 15}


@pytest.mark.parametrize("how", HOW)
def test_watcher_behind_a_purged_delete_gets_compacted_error(board: Board, how: str) -> None:
    """P < T: a delete after P is gone, so the watcher fails with Compacted(P, T) rather than jump ahead
    silently; from T on it goes on."""
    board.write("k/a", 1)  # 1
    board.write("k/b", 1)  # 2
    position = board.last_seq
    board.delete("k/b")  # 3: purged below
    board.write("k/a", 2)  # 4
    early = board.watch("k/", since=position) if how == "watcher-made-before" else None
    if how == "cursor":
        board.reset_cursor("consumer", position)

    report = board.compact(retention=0)
    assert report.deletes_purged == 1
    try:
        with pytest.raises(Compacted) as info:
            watcher_ = early or make_watcher(board, how, position)
            watcher_.next_nowait()
    finally:
        if early is not None:
            early.close()
    assert (info.value.requested, info.value.purged_through) == (position, 3)

    # From the purged delete on, nothing is missing: it goes on with the compacted state.
    if how == "cursor":
        board.reset_cursor("consumer", 3)
    with make_watcher(board, how, 3) as after:
        assert [(e.seq, e.key, e.compacted) for e in drain(after)] == [(4, "k/a", True)]


def test_a_refused_watch_leaks_no_file_descriptor(board: Board, board_path: Path) -> None:
    """A consumer told Compacted retries (spec 10.2: reread, watch again); each refusal must not leak the
    log's and the cursor's file descriptors."""
    board.write("a", 1)
    board.write("b", 1)
    board.delete("b")
    board.write("a", 2)
    board.compact(retention=0)

    def open_files() -> list[str]:
        """What this process holds open of the log and the cursors (other files come and go with flushes)."""
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        return sorted(t for t in targets if t.startswith(str(board_path)) and ("log.jsonl" in t or "cursors" in t))

    before = open_files()
    for _ in range(10):
        with pytest.raises(Compacted):
            board.watch("", since=0)
        with pytest.raises(Compacted):
            board.watch("", since=1, cursor="late")
    assert open_files() == before


# -- CLI ------------------------------------------------------------------------------------------------------


def test_cli_compact_prints_a_report(board: Board, board_path: Path) -> None:
    fill(board)
    board.close()
    before = Log(board_path)
    out = cli("compact", "--board", str(board_path), "--retention", "3600").stdout
    after = Log(board_path)
    match = re.fullmatch(
        r"(\d+) -> (\d+) events, \S+ \S+ -> \S+ \S+ in [\d.]+ s; deletes kept (\d+), purged (\d+)\n", out
    )
    assert match, out
    tombstones = sum(1 for r in latest_by_key(before.records).values() if r["op"] == "delete")
    assert [int(g) for g in match.groups()] == [len(before.records), len(after.records), tombstones, 0]
    assert after.compacted_through == before.seqs[-1]

    with Board.open(board_path, author="tester") as again:
        for i in range(4):
            again.write("a/1", i)
    before = Log(board_path)
    doc = json.loads(cli("compact", "--board", str(board_path), "--json", "--archive").stdout)
    after = Log(board_path)
    assert set(doc) == report_fields()
    assert doc["skipped"] is None
    assert (doc["events_before"], doc["events_after"]) == (len(before.records), len(after.records))
    assert (doc["bytes_before"], doc["bytes_after"]) == (before.size, after.size)
    assert doc["compacted_through"] == after.compacted_through == before.seqs[-1]
    assert doc["archived"] == len(before.records) - len(after.records) == 4

    with Board.open(board_path, author="tester") as again:
        again.write("a/1", "once more")
    out = cli("compact", "--board", str(board_path), "--archive").stdout
    assert out.endswith("; 1 events archived\n"), out


def test_cli_compact_if_needed(board: Board, board_path: Path) -> None:
    """--if-needed compacts only past --min-bytes and --min-dead-ratio (the board's settings by default)."""
    fill(board)
    board.close()
    log = board_path / "log.jsonl"
    original = log.read_bytes()
    base = ("compact", "--board", str(board_path), "--if-needed")
    assert cli(*base).stdout == "skipped: not needed\n"  # far below the default 16 MiB
    assert json.loads(cli(*base, "--json").stdout)["skipped"] == "not needed"
    assert cli(*base, "--min-bytes", str(len(original) + 1), "--min-dead-ratio", "0").stdout.startswith("skipped")
    assert cli(*base, "--min-bytes", "0", "--min-dead-ratio", "1").stdout.startswith("skipped")
    assert log.read_bytes() == original
    out = cli(*base, "--min-bytes", str(len(original)), "--min-dead-ratio", "0.1").stdout
    assert not out.startswith("skipped"), out
    assert Log(board_path).compacted_through > 0


def test_cli_stats(board: Board, board_path: Path) -> None:
    fill(board)
    board.compact(archive=True)
    board.write("after", 1)
    board.close()
    doc = json.loads(cli("stats", "--board", str(board_path), "--json").stdout)
    log = Log(board_path)
    live = len(replay(log.records))
    assert set(doc) == STATS_KEYS
    assert doc["keys"] == live
    assert doc["events"] == len(log.records)
    assert doc["log_bytes"] == log.size
    assert doc["last_seq"] == log.seqs[-1]
    assert doc["compacted_through"] == log.compacted_through == log.seqs[-1] - 1
    assert doc["entries_at_seq"] == log.seqs[-1]
    assert doc["dead_ratio"] == round(1 - live / len(log.records), 4)
    assert doc["archive_bytes"] == sum(p.stat().st_size for p in (board_path / "archive").iterdir()) > 0
    assert doc["cursors"] == 0
    lines = cli("stats", "--board", str(board_path)).stdout.splitlines()
    assert [line.split("  ")[0].strip() for line in lines] == [name.replace("_", " ") for name in doc]
    figures = {line[:18].strip(): line[18:].strip() for line in lines}
    assert figures["events"] == str(len(log.records))
    assert figures["last seq"] == str(log.seqs[-1])
    assert figures["compacted through"] == str(log.compacted_through)


# -- memory: compaction streams ---------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_compaction_streams_a_large_log(tmp_path: Path, spawn: Spawn) -> None:
    """Compacting a 200k-record log over 100 keys, larger than the bound, holds per-key state only: the
    compacting process's peak RSS grows by far less than the log's size. A sanity check, not a benchmark."""
    path = tmp_path / "board"
    Board.init(path).close()
    size = write_big_log(path, records=200_000, keys=100, pad=400)
    bound_mib = 64
    assert size > 1.3 * bound_mib * 2**20  # a process that loaded the log whole would exceed the bound
    parent, child = CTX.Pipe()
    proc = spawn(compact_peak_rss, str(path), child)
    assert parent.poll(100), "the compacting child sent nothing"
    before, after, report = parent.recv()
    join_ok(proc, 30)
    growth_mib = (after - before) / 1024  # ru_maxrss is in KiB on Linux
    assert growth_mib < bound_mib, f"peak RSS grew by {growth_mib:.0f} MiB compacting a {size >> 20} MiB log"
    assert (report["events_before"], report["events_after"]) == (200_000, 100)
    log = Log(path)
    log.check_seqs()
    assert log.seqs == list(range(199_901, 200_001))


# -- concurrency: writers, watchers, tail -F and compaction together ------------------------------------------


def judge_watcher(events: list[Doc], acked: dict[int, Doc], prefix: str, stop_seq: int, last_c: int) -> int:
    """A watcher from seq 0 of `prefix` got every acknowledged record of the prefix up to its stop key:
    each as it was written, in seq order, once; it skipped records only where compaction removed them,
    and then the event that followed the gap carries `compacted`. Returns how many were flagged."""
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "events out of order or repeated"
    assert seqs[-1] == stop_seq, "the stream does not end with the stop key"
    for event in events:
        rec = acked[event["seq"]]  # an event is a record someone wrote
        assert {f: event[f] for f in ("key", "op", "value", "version")} == {
            f: rec[f] for f in ("key", "op", "value", "version")
        }, event
    matching = sorted(s for s, r in acked.items() if r["key"].startswith(prefix) and s <= stop_seq)
    previous = 0
    for event in events:
        if event["compacted"]:
            assert event["seq"] <= last_c, f"seq {event['seq']} flagged, but no compaction reached it"
        else:
            # No gap before an unflagged event: it is the next matching record after the previous event.
            nxt = matching[bisect.bisect_right(matching, previous)]
            assert nxt == event["seq"], f"records {nxt}..{event['seq']} of {prefix!r} skipped without a flag"
        previous = event["seq"]
    # Every acknowledged record is delivered, or superseded by a later delivered event of its key.
    last_of_key: dict[str, int] = {}
    for event in events:
        last_of_key[event["key"]] = event["seq"]
    delivered = set(seqs)
    for seq in matching:
        assert seq in delivered or last_of_key.get(acked[seq]["key"], 0) > seq, f"seq {seq} lost for {prefix!r}"
    return sum(1 for e in events if e["compacted"])


#: (prefix, its stop key, seconds of "work" per event, poll): the slow one lags, so compactions overtake it.
WATCHED = (("a/", "a/stop", 0.002, False), ("", "stop", 0.0, True))
#: Fields an acknowledgement, an event and a record share.
SHARED = ("key", "op", "value", "version")


@dataclass
class Run:
    """What a concurrent run left behind: its board, every acknowledged write and each watcher's events."""

    path: Path
    acked: dict[int, Doc] = field(default_factory=dict)
    compacted_through: list[int] = field(default_factory=list)
    stop_seqs: dict[str, int] = field(default_factory=dict)
    events: list[list[Doc]] = field(default_factory=list)


def run_concurrently(tmp_path: Path, spawn: Spawn, compactions: int, writers: int, seed: int) -> Run:
    """Writers, watchers and `tail -F` run while this process compacts `compactions` times (archiving)."""
    run = Run(tmp_path / "board")
    path = run.path
    Board.init(path, author="tester").close()
    rng = random.Random(seed)
    go, stop = CTX.Event(), CTX.Event()
    ack_files = [tmp_path / f"acks-{w}" for w in range(writers)]
    writer_procs = [
        spawn(writer, str(path), w, ("a/", "b/"), 6, str(ack_files[w]), go, stop, 0.002) for w in range(writers)
    ]
    outs = [tmp_path / f"events-{i}" for i in range(len(WATCHED))]
    readies = [CTX.Event() for _ in WATCHED]
    watcher_procs = [
        spawn(
            watch_and_record,
            str(path),
            prefix,
            str(out),
            stop_key=stop_key,
            since=0,
            poll=poll,
            ready=ready,
            slow=slow,
            idle_timeout=60,
        )
        for (prefix, stop_key, slow, poll), out, ready in zip(WATCHED, outs, readies, strict=True)
    ]
    tail_out = tmp_path / "tail.out"
    with open(tail_out, "wb") as out_f, open(tmp_path / "tail.err", "wb") as err_f:
        tail = subprocess.Popen(["tail", "-n", "+1", "-F", str(path / "log.jsonl")], stdout=out_f, stderr=err_f)
    board = Board.open(path, author="tester")
    try:
        for ready in readies:
            assert ready.wait(60), "a watcher never started"
        go.set()
        for _ in range(compactions):
            time.sleep(rng.uniform(0.05, 0.3))
            # 49 new records over at most 48 keys supersede one at least: the compaction has work to do.
            wait_until(lambda: board.last_seq >= max(run.compacted_through, default=0) + 49, 30, "writes")
            report = board.compact(archive=True)
            assert report.skipped is None, report.skipped
            run.compacted_through.append(report.compacted_through)
        stop.set()
        for proc in writer_procs:
            join_ok(proc, 60)
        # Written after the last compaction: the watchers' stop keys, longest prefix first.
        for key in ("a/stop", "stop"):
            entry = board.write(key, True)
            run.stop_seqs[key] = entry.seq
            run.acked[entry.seq] = {"seq": entry.seq, "op": "put", "key": key, "value": True, "version": 1}
        for proc in watcher_procs:
            join_ok(proc, 60)
        stop_line = Log(path).by_seq()[run.stop_seqs["stop"]]
        wait_until(lambda: stop_line in tail_out.read_bytes().split(b"\n"), 15, "tail -F to show the last line")
    finally:
        tail.send_signal(signal.SIGTERM)
        tail.wait(10)
        board.close()
    for ack_file in ack_files:
        for doc in read_docs(ack_file):
            assert doc["seq"] not in run.acked, f"seq {doc['seq']} acknowledged twice"
            run.acked[doc["seq"]] = doc
    run.events = [read_docs(out) for out in outs]
    return run


def judge_board(run: Run) -> dict[str, Any]:
    """No acknowledged write is lost: each is in the log or the archive as acknowledged, and the state is
    each key's last acknowledged write, everywhere one can read it. Returns that state."""
    cs = run.compacted_through
    assert cs == sorted(cs) and len(set(cs)) == len(cs), cs
    log = Log(run.path)
    log.check_seqs()
    assert log.compacted_through == cs[-1]
    history: dict[int, Doc] = {}
    for segment in sorted((run.path / "archive").glob("*.jsonl.gz")):
        with gzip.open(segment, "rb") as f:
            for line in f:
                rec = checked_doc(line.rstrip(b"\n"), True)  # as they were in the log: with checksums
                history[rec["seq"]] = rec
    history.update((r["seq"], r) for r in log.records)
    assert sorted(history) == sorted(run.acked) == list(range(1, max(run.acked) + 1))
    for seq, rec in history.items():
        assert {f: rec[f] for f in SHARED} == {f: run.acked[seq][f] for f in SHARED}, seq
    latest = latest_by_key(run.acked[s] for s in sorted(run.acked))
    expected = {k: r["value"] for k, r in latest.items() if r["op"] == "put"}
    assert {k: d["value"] for k, d in replay(log.records).items()} == expected
    assert {k: d["value"] for k, d in entry_files(run.path).items()} == expected
    with Board.open(run.path, author="tester") as final:
        assert final.read_prefix("") == expected
        assert final.check().ok
        for key in sorted(latest)[:4]:
            want = sorted(s for s, r in run.acked.items() if r["key"] == key)
            assert [e.seq for e in final.history(key, all=True)] == want
    return expected


def check_concurrent_run(run: Run, compactions: int) -> None:
    assert len(run.compacted_through) == compactions
    assert len(run.acked) > 20 * compactions, "the writers hardly wrote"
    expected = judge_board(run)
    # Each watcher's stream: gapless but where flagged, no repeats, ending in the exact state.
    flagged = []
    for (prefix, stop_key, _slow, _poll), events in zip(WATCHED, run.events, strict=True):
        flagged.append(judge_watcher(events, run.acked, prefix, run.stop_seqs[stop_key], run.compacted_through[-1]))
        state: dict[str, Any] = {}
        for event in events:
            if event["op"] == "put":
                state[event["key"]] = event["value"]
            else:
                state.pop(event["key"], None)
        assert state == {k: v for k, v in expected.items() if k.startswith(prefix)}
    print(f"{len(run.acked)} writes; events delivered {[len(e) for e in run.events]}, flagged compacted {flagged}")
    assert flagged[0] > 0, "the slow watcher was never overtaken by a compaction: the test proves little"


@pytest.mark.timeout(90)
def test_compaction_while_writers_watchers_and_tail_run(tmp_path: Path, spawn: Spawn) -> None:
    """4 writer processes, 2 watcher processes and `tail -F`, while the test process compacts 20 times."""
    check_concurrent_run(run_concurrently(tmp_path, spawn, compactions=20, writers=4, seed=1), 20)


@pytest.mark.stress
@pytest.mark.timeout(600)
def test_compaction_while_writers_watchers_and_tail_run_stress(tmp_path: Path, spawn: Spawn) -> None:
    check_concurrent_run(run_concurrently(tmp_path, spawn, compactions=150, writers=6, seed=2), 150)


# -- crash: a compaction SIGKILLed at random moments -------------------------------------------------------------


class Compactor:
    """A spawned child that compacts a board when told (see `compact_when_told`), started ahead of time."""

    def __init__(self, spawn: Spawn) -> None:
        self.conn, child = CTX.Pipe()
        self.proc = spawn(compact_when_told, child)

    def run(self, path: Path, archive: bool, kill_after: float | None) -> float | None:
        """Compact `path`, SIGKILLed `kill_after` seconds after it starts (None: let it finish).
        Returns how long the compaction took if it finished, else None."""
        assert self.conn.poll(60) and self.conn.recv() == "ready"
        self.conn.send((str(path), archive))
        assert self.conn.poll(60) and self.conn.recv() == "started"
        if kill_after is None:
            assert self.conn.poll(60), "the compaction did not finish"
        else:
            time.sleep(kill_after)
            self.proc.kill()
        self.proc.join(10)
        assert self.proc.exitcode is not None
        seconds = None
        with contextlib.suppress(EOFError):  # EOF: killed before it said how long it took
            while self.conn.poll():
                seconds = self.conn.recv()
        self.conn.close()
        return seconds

    def discard(self) -> None:
        """Kill and reap a child that is not needed (the spare of the last round)."""
        self.proc.kill()
        self.proc.join(10)
        self.conn.close()


def copy_board(template: Path, path: Path) -> None:
    """A copy of the template board. Entry files are hard links (cheap): writers replace them by rename,
    never in place. The log and the watermark, written in place, are real copies."""
    shutil.copytree(template, path, copy_function=os.link)
    for name in ("log.jsonl", "materialized"):
        (path / name).unlink()
        shutil.copyfile(template / name, path / name)


def build_crash_template(path: Path, records: int) -> None:
    rng = random.Random(5)
    with Board.init(path, author="tester") as board:
        live: set[str] = set()
        for i in range(records):
            key = f"k/{rng.randrange(400)}"
            if key in live and rng.random() < 0.1:
                board.delete(key)
                live.discard(key)
            else:
                board.write(key, {"i": i, "pad": "p" * 60})
                live.add(key)


@dataclass
class Template:
    """A board with a 20k-record history that each kill starts from, and what reading it must give."""

    path: Path
    log: Log
    log_bytes: bytes
    docs: dict[str, Doc]
    entries: list[dict[str, Any]]
    values: dict[str, Any]


def make_template(path: Path, records: int) -> Template:
    build_crash_template(path, records)
    log = Log(path)
    with Board.open(path, read_only=True) as board:
        entries = [e.as_dict() for e in board.entries()]
        values = board.read_prefix("")
    docs = replay(log.records)
    assert docs.keys() == values.keys()
    return Template(path, log, (path / "log.jsonl").read_bytes(), docs, entries, values)


def judge_after_kill(path: Path, template: Template, archive: bool, i: int) -> bool:
    """The killed compaction left the old log or the new one, never a mix, and the board reads as before;
    it checks clean after a write, and the next compaction succeeds. Returns whether the log is the new one."""
    switched = (path / "log.jsonl").read_bytes() != template.log_bytes
    if switched:
        log = Log(path)
        log.check_seqs()
        assert log.compacted_through == template.log.seqs[-1]
        assert replay(log.records) == template.docs
    with Board.open(path, author="after") as board:
        assert board.read_prefix("") == template.values
        assert [e.as_dict() for e in board.entries()] == template.entries
        key = sorted(template.values)[i % len(template.values)]
        written = board.write(key, "after the kill")
    after = {**template.values, key: "after the kill"}
    with Board.open(path, author="after") as board:
        check = board.check()
        assert check.ok, (i, check.problems())
        report = board.compact(archive=archive)
        assert report.skipped is None, (i, report.skipped)
        assert report.compacted_through == written.seq
        assert compaction_leftovers(path) == [], i
        assert board.read_prefix("") == after
        if archive:  # archive segments of the killed compaction may overlap: history dedupes by seq
            seqs = [e.seq for e in board.history(key, all=True)]
            assert seqs == [r["seq"] for r in template.log.records if r["key"] == key] + [written.seq], i
    log = Log(path)
    log.check_seqs()
    assert {k: d["value"] for k, d in replay(log.records).items()} == after
    return switched


def crash_many(tmp_path: Path, spawn: Spawn, kills: int, seed: int) -> None:
    template = make_template(tmp_path / "template", 20_000)
    nxt = Compactor(spawn)
    # How long a compaction takes in a child, with or without archive, so that some kills land late.
    durations: dict[bool, float] = {}
    for archive in (False, True):
        probe = tmp_path / f"probe-{archive}"
        copy_board(template.path, probe)
        current, nxt = nxt, Compactor(spawn)
        seconds = current.run(probe, archive, kill_after=None)
        assert seconds is not None
        durations[archive] = seconds
        shutil.rmtree(probe)
    rng = random.Random(seed)
    outcomes = {"new log": 0, "finished": 0, "leftovers": 0}
    for i in range(kills):
        path = tmp_path / f"board-{i}"
        copy_board(template.path, path)
        archive = i % 2 == 1
        # Mostly 0-50 ms into it; every third kill late: while the new log is written, switched, or after.
        late = durations[archive] * rng.uniform(0.6, 1.1)
        delay = late if i % 3 == 2 else rng.uniform(0, 0.05)
        current, nxt = nxt, Compactor(spawn)  # the next child starts while this one is judged
        outcomes["finished"] += current.run(path, archive, kill_after=delay) is not None
        outcomes["leftovers"] += bool(compaction_leftovers(path))
        outcomes["new log"] += judge_after_kill(path, template, archive, i)
        shutil.rmtree(path)
    nxt.discard()
    print(f"compaction durations {durations}; outcomes of {kills} kills: {outcomes}")


@pytest.mark.timeout(120)
def test_compaction_killed_at_random_moments(tmp_path: Path, spawn: Spawn) -> None:
    """SIGKILL a compaction of a 20k-record log at random moments, 30 times: each time the board reads as
    before, checks clean after a write, and the next compaction succeeds and removes the leftovers."""
    crash_many(tmp_path, spawn, kills=30, seed=11)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_compaction_killed_at_random_moments_stress(tmp_path: Path, spawn: Spawn) -> None:
    crash_many(tmp_path, spawn, kills=200, seed=12)


def test_writers_compact_opportunistically_when_the_board_says_so(tmp_path: Path) -> None:
    """Board.init(compact_at_bytes=...): a writer's background batch compacts once the log is past
    that size and mostly superseded, and nothing is lost."""
    path = tmp_path / "auto"
    with Board.init(path, compact_at_bytes=20_000, compact_at_dead_ratio=0.5, flush_interval=0.01) as board:
        for i in range(2000):
            board.write(f"k/{i % 10}", {"i": i})
        expected = board.read_prefix("")
        deadline = time.monotonic() + 10
        while board.stats()["compacted_through"] == 0 and time.monotonic() < deadline:
            board.write("k/0", {"i": 1999 + 10})  # keep the flusher busy until it compacts
            expected["k/0"] = {"i": 1999 + 10}
            time.sleep(0.02)
        stats = board.stats()
        assert stats["compacted_through"] > 0, stats
        assert stats["events"] < 2000
        assert board.read_prefix("") == expected
    with Board.open(path) as board:
        assert board.read_prefix("") == expected
        assert board.check().ok


def test_a_handle_kept_across_a_compaction_misses_no_record_and_reuses_no_seq(board_path: Path) -> None:
    """Found by the linearizability checker: a handle that keeps its index across a compaction must
    find, in the new log, the records it has not read, by their seqs. Here the compacted log keeps
    only seq 1 (seq 3's tombstone is purged, so seqs 2-3 are gone), seq 4 lands during the build and
    is copied at the switch, and seqs 5 and 6 are written to the new log by another handle."""
    a = Board.init(board_path)
    a.write("k1", 1)
    a.write("k2", 2)
    a.delete("k2")
    a.flush()
    written: list[int] = []

    def progress(_bytes: int) -> None:
        if not written:
            written.append(a.write("k3", 3).seq)  # appended to the old log during the build

    with Board.open(board_path) as compactor:
        report = compactor.compact(retention=0, progress=progress)
    assert written == [4] and report.compacted_through == 3 and report.deletes_purged == 1
    with Board.open(board_path) as other:
        assert [other.write("k4", 4).seq, other.write("k6", 6).seq] == [5, 6]
    entry = a.write("k5", 5)
    assert entry.seq == 7, "a seq reused: the kept handle missed records of the new log"
    assert (a.read("k3"), a.read("k4"), a.read("k2")) == (3, 4, None)
    assert a.stats()["events"] == Board.open(board_path, read_only=True).stats()["events"]
    a.close()


def test_history_reads_past_a_line_longer_than_half_a_chunk(board_path: Path) -> None:
    """Found in review: the log reader stopped after a chunk it used less than half of (a line of
    over 2 MiB across the 4 MiB chunk's end), so history, tail and as-of reads missed what followed."""
    with Board.init(board_path, max_value_bytes=1 << 20, flush_interval=60) as board:
        for i in range(1600):  # ~1.5 MiB of small records
            board.write(f"small/{i}", "y" * 900)
        with board.transaction() as tx:  # one ~2.7 MiB line across the chunk's end
            for k in range(3):
                tx.write(f"big/{k}", "x" * 900_000)
        for i in range(5):
            board.write("after", i)
        last = board.last_seq
        assert [e.seq for e in board.tail(2)] == [last - 1, last]
        assert [e.value for e in board.history("after")] == [0, 1, 2, 3, 4]
        assert board.read("after", at=last) == 4


def test_a_watch_that_lost_a_delete_to_compaction_stays_failed(board_path: Path) -> None:
    """Found in review: a watcher raised Compacted once, and its next step went on in the new log,
    never delivering the delete it had lost. Every later step must fail the same way."""
    with Board.init(board_path, flush_interval=60) as board:
        board.write("a", 1)
        watcher = board.watch(since=0, poll=True, timeout=0.5)
        assert next(watcher).seq == 1
        board.write("gone", 1)
        board.delete("gone")
        board.write("a", 2)
        board.flush()
        board.compact(retention=0)  # purges the tombstone at seq 3, after the watcher's position
        for _ in range(2):
            with pytest.raises(Compacted):
                next(watcher)
        watcher.close()


def test_compaction_by_a_writer_waits_for_the_log_to_double(board_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: records kept for their idempotency keys count as dead, so a writer whose
    every write carries one ran a compaction (a full pass over the log) at every batch. It now
    waits for the log to double since its last one."""
    import blackboard.core.compact as compact_module

    runs: list[int] = []
    real = compact_module.compact

    def counted(*args: Any, **kwargs: Any) -> Any:
        report = real(*args, **kwargs)
        runs.append(report.bytes_before)
        return report

    monkeypatch.setattr(compact_module, "compact", counted)
    with Board.init(board_path, compact_at_bytes=20_000, flush_interval=3600) as board:
        for i in range(400):
            board.write(f"k/{i % 5}", {"i": i, "pad": "x" * 40}, idempotency_key=f"req-{i}")
            if i % 20 == 0:
                board._flush_once()  # a background batch, run here: deterministic
        size = board.stats()["log_bytes"]
    # Every record is young and carries a key: no compaction can remove any. One run per doubling
    # of the log past 20 kB, not one per batch (there were 20 batches).
    assert size > 40_000 and 1 <= len(runs) <= 3, (runs, size)

"""The checkpoint (core/checkpoint.py, spec/FORMAT.md 7.2): a snapshot of the index at a log offset,
so that an open replays only the log after it.

The promise under test: a board opened with its checkpoint answers exactly as a board opened after
deleting it (a full replay of the log), whatever the history (puts, deletes, transactions, idempotency
keys, compactions, reopenings), and whatever happened to the checkpoint: a torn, corrupt, stale or
foreign one is detected and ignored, and a process killed while writing one leaves a board that opens
correctly. Both opens are also judged against a replay of the log with `json` (`_engine_workers`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import pytest
from _engine_workers import (
    board_view,
    checkpoint_churner,
    checkpoint_temp_files,
    copy_board,
    read_log,
    replay,
    state_of,
    steady_writer,
)
from _workers import CTX, Spawn
from conftest import sealed
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import blackboard.board
from blackboard import Board, InvalidValue, KeyNotFound
from blackboard.core import checkpoint as _checkpoint
from blackboard.core.layout import Layout, format_watermark
from blackboard.core.log import LogFile

#: Keys of the shapes the codec and the key encoding care about (unicode, quotes, backslashes, dots).
KEYS = ("a", "a/b", "ünï/ça va?", 'q"uote\\x', ".env", "z/9")
AUTHORS = ("alice", "bob@host", "çarol ☃")
DELETE = object()  # a transaction's delete, in the strategies below


def checkpoint_loads(board_dir: Path) -> bool:
    """Whether the board's checkpoint is valid for its current log file (what an open would use)."""
    layout = Layout(board_dir)
    log = LogFile(layout.log)
    try:
        log.sync()
        return _checkpoint.load(layout, log) is not None
    finally:
        log.close()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the boards made per hypothesis example."""
    return tmp_path_factory.mktemp("checkpoint")


@contextlib.contextmanager
def checkpoint_every_close() -> Iterator[None]:
    """Every close (and writer batch) writes a checkpoint once keys/4 records came since the last:
    small histories then get checkpoints in the middle, not only at 2,000 records."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blackboard.board, "CHECKPOINT_EVERY", 0)
        yield


def assert_same_board(with_cp: Path, without: Path, keys: set[str], retries: list[tuple[str, Any, str]]) -> None:
    """Two copies of one board, one with its checkpoint and one without, answer alike: every read,
    the judges' replay of the log, the retry of every idempotent write, and the next writes."""
    _header, records, _torn = read_log(without)
    compacted = _header.get("compacted_through", 0) > 0
    with Board.open(with_cp, author="probe") as a, Board.open(without, author="probe") as b:
        view = board_view(a, keys)
        assert view == board_view(b, keys)
        assert state_of(a) == replay(records, check_versions=not compacted)
        for key, value, idem in retries:
            outcome: list[dict[str, Any] | str] = []
            for board in (a, b):
                try:
                    entry = board.write(key, value, idempotency_key=idem).as_dict()
                    del entry["ts"]  # a retry that landed anew (its record compacted away) is stamped now
                    outcome.append(entry)
                except InvalidValue as exc:
                    outcome.append(type(exc).__name__)
            assert outcome[0] == outcome[1], (key, value, idem)
        for key in ["probe/next", *sorted(keys)]:
            wa, wb = a.write(key, "next"), b.write(key, "next")
            assert (wa.seq, wa.version) == (wb.seq, wb.version), key
        assert a.last_seq == b.last_seq


# -- histories -----------------------------------------------------------------------------------------

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
key_ix = st.integers(0, len(KEYS) - 1)
author_ix = st.integers(0, len(AUTHORS) - 1)
step = st.one_of(
    st.tuples(st.just("put"), key_ix, values, author_ix),
    st.tuples(st.just("put"), key_ix, values, author_ix),
    st.tuples(st.just("delete"), key_ix),
    st.tuples(
        st.just("txn"),
        st.lists(
            st.tuples(key_ix, st.one_of(values, st.just(DELETE))), min_size=2, max_size=3, unique_by=lambda t: t[0]
        ),
        author_ix,
    ),
    st.tuples(st.just("idem"), key_ix, st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("compact"), st.booleans(), st.booleans()),
    st.tuples(st.just("reopen")),
)
Step = tuple[Any, ...]


def run_history(
    path: Path, steps: list[Step], at_end: Callable[[Board, set[str]], None] | None = None
) -> tuple[set[str], list[tuple[str, Any, str]]]:
    """Apply `steps` to a new board at `path`; returns the keys used and the idempotent writes made.
    `at_end(handle, keys)` runs before the last handle closes."""
    keys: set[str] = set()
    retries: list[tuple[str, Any, str]] = []
    # A long flush interval: entry files and checkpoints are written at close(), not by a thread
    # whose timing would vary between runs of one example.
    handle = Board.init(path, author="h", flush_interval=3600)
    try:
        for s in steps:
            kind = s[0]
            if kind == "put":
                keys.add(KEYS[s[1]])
                handle.write(KEYS[s[1]], s[2], author=AUTHORS[s[3]])
            elif kind == "delete":
                with contextlib.suppress(KeyNotFound):
                    handle.delete(KEYS[s[1]])
            elif kind == "txn":
                with contextlib.suppress(KeyNotFound), handle.transaction(author=AUTHORS[s[2]]) as tx:
                    for k, v in s[1]:
                        keys.add(KEYS[k])
                        if v is DELETE:
                            tx.delete(KEYS[k])
                        else:
                            tx.write(KEYS[k], v)
            elif kind == "idem":
                key, value, idem = KEYS[s[1]], {"v": s[2]}, f"idem-{s[3]}"
                keys.add(key)
                retries.append((key, value, idem))
                with contextlib.suppress(InvalidValue):  # the same idempotency key for another change
                    handle.write(key, value, idempotency_key=idem)
            elif kind == "compact":
                handle.compact(retention=0 if s[1] else None, archive=s[2])
            else:
                handle.close()
                handle = Board.open(path, author="h", flush_interval=3600)
        if at_end is not None:
            at_end(handle, keys)
    finally:
        handle.close()
    return keys, retries


@settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=18))
@example(
    steps=[
        ("put", 0, 1, 0),
        ("put", 1, "x", 1),
        ("reopen",),
        ("txn", [(0, 2), (2, [1])], 2),
        ("idem", 3, 0, 0),
        ("compact", False, True),
        ("put", 0, 3, 0),
        ("reopen",),
        ("delete", 1),
        ("txn", [(2, DELETE), (4, None)], 1),
        ("idem", 3, 0, 0),
        ("compact", True, False),
        ("put", 5, {"k": "v"}, 2),
    ]
)
def test_open_with_checkpoint_equals_replay(scratch: Path, steps: list[Step]) -> None:
    with tempfile.TemporaryDirectory(dir=scratch) as name:
        root = Path(name)

        def live_handle_answers_as_a_replay(handle: Board, keys: set[str]) -> None:
            # The handle that made the history (and compacted: it kept its index across each switch)
            # answers as a process that replays the log from its header.
            replayed = copy_board(root / "board", root / "replayed", checkpoint=False)
            with Board.open(replayed, read_only=True) as fresh:
                assert board_view(handle, keys) == board_view(fresh, keys)

        with checkpoint_every_close():
            keys, retries = run_history(root / "board", steps, live_handle_answers_as_a_replay)
        with_cp = copy_board(root / "board", root / "with", checkpoint=True)
        without = copy_board(root / "board", root / "without", checkpoint=False)
        assert not checkpoint_temp_files(root / "board"), "a clean close left a checkpoint temp file"
        assert_same_board(with_cp, without, keys, retries)


def test_open_replays_only_the_log_after_the_checkpoint(board_path: Path, tmp_path: Path) -> None:
    """The 2,000-record rule, unpatched: 2,500 writes save a checkpoint; a later open loads it and
    parses only the records written after it."""
    with Board.init(board_path, author="w") as board:
        for i in range(2500):
            board.write(f"k/{i % 50}", {"i": i})
    assert checkpoint_loads(board_path)
    saved = (board_path / "checkpoint").read_bytes()
    # The writer's batches may have saved it on the way (at 2,000 records), its close did not then.
    at = head_and_body(saved)[0]["last_record_seq"]
    assert 2000 <= at <= 2500
    with Board.open(board_path, author="w2") as board:
        for i in range(5):
            board.write(f"late/{i}", i)
    assert (board_path / "checkpoint").read_bytes() == saved, "5 records must not make a new checkpoint"
    with Board.open(board_path, read_only=True) as board:
        assert board.last_seq == 2505
        assert (board.engine.since_checkpoint, board.engine.index.records) == (2505 - at, 2505)
    without = copy_board(board_path, tmp_path / "without", checkpoint=False)
    with Board.open(without, read_only=True) as board:
        assert board.last_seq == 2505
        assert board.engine.since_checkpoint == 2505  # the control: a full replay
    assert_same_board(board_path, without, {f"k/{i}" for i in range(50)} | {f"late/{i}" for i in range(5)}, [])


def test_a_read_only_close_saves_a_checkpoint(board_path: Path) -> None:
    """Any handle's close saves one once enough records were replayed: the next open is cheap."""
    with Board.init(board_path, author="w") as board:
        for i in range(2100):
            board.write(f"k/{i % 7}", i)
    (board_path / "checkpoint").unlink()
    with Board.open(board_path, read_only=True) as reader:
        assert reader.last_seq == 2100
    assert checkpoint_loads(board_path)
    assert not checkpoint_temp_files(board_path)


def test_handles_open_across_compactions_answer_as_a_replay(board_path: Path, tmp_path: Path, spawn: Spawn) -> None:
    """A writer process appends (puts, deletes, transactions, idempotent writes) while this process
    compacts again and again and reads between compactions: records land before, during and after
    each switch, so the handle keeps its index across switches that copied records it had or lacked.
    Once the writer is done, this handle, a new open and a full replay answer alike."""
    Board.init(board_path, author="setup").close()
    compacted, done = CTX.Event(), CTX.Event()
    bursts = 4
    proc = spawn(steady_writer, str(board_path), 3000, 5, bursts, compacted, done)
    keys = {f"s/{i}" for i in range(40)} | {f"t/{i}" for i in range(40)}
    compactions = 0
    with Board.open(board_path, author="compactor") as handle:
        while not done.is_set():
            assert proc.is_alive() or done.is_set(), f"the writer died ({proc.exitcode})"
            handle.read_prefix("s/")  # refresh: across the last switch, keeping the index
            report = handle.compact(retention=0 if compactions % 2 else None, archive=compactions % 3 == 0)
            if report.skipped is None:
                compactions += 1
                compacted.set()  # the writer waits for one between its bursts
        proc.join(60)
        assert proc.exitcode == 0
        replayed = copy_board(board_path, tmp_path / "replayed", checkpoint=False)
        _header, records, _torn = read_log(replayed)
        with Board.open(board_path, read_only=True) as fresh, Board.open(replayed, read_only=True) as full:
            view = board_view(full, keys)
            assert board_view(handle, keys) == view
            assert board_view(fresh, keys) == view
            assert state_of(full) == replay(records, check_versions=False)
            for i in range(0, 3000, 97):  # the writer's idempotency keys, as each handle knows them
                for board in (handle, fresh, full):
                    assert (f"idem-{i}" in board.engine.index.idem) == (f"idem-{i}" in full.engine.index.idem)
    assert compactions >= bursts - 1


# -- a checkpoint that must not be trusted ----------------------------------------------------------


@dataclass
class Damaged:
    """A closed board with a valid checkpoint in the middle of its log (3 records follow it)."""

    path: Path
    keys: set[str]
    checkpoint: bytes
    offset: int
    ends: list[int]  # the offset after each record of the log


def head_and_body(data: bytes) -> tuple[dict[str, Any], bytes]:
    first = data.index(b"\n")
    return json.loads(data[:first]), data[first + 1 :]


def with_head(data: bytes, **changes: Any) -> bytes:
    """The checkpoint with line 1's members changed, its `crc32` (line 1's last member, covering the
    rest of the file) recomputed unless that is the change: so that each damage meets its own check."""
    head, body = head_and_body(data)
    head.update(changes)
    line = json.dumps({k: v for k, v in head.items() if k != "crc32"}, separators=(",", ":"), ensure_ascii=False)
    crc = head["crc32"] if "crc32" in changes else zlib.crc32(line.encode() + b"\n" + body)
    return line.encode()[:-1] + b',"crc32":%d}\n' % crc + body


def record_ends(board_dir: Path) -> list[int]:
    data = (board_dir / "log.jsonl").read_bytes()
    ends = [i + 1 for i, b in enumerate(data) if b == 0x0A]
    return ends[1:]  # the header's end is no record's


@pytest.fixture
def damaged(board_path: Path) -> Damaged:
    keys = {"a", "b", "ünï/ça", "t/1", "t/2", "gone"}
    with checkpoint_every_close(), Board.init(board_path, author="alice") as board:
        board.write("a", {"n": 1}, author="bob")
        board.write("b", [1, 2], idempotency_key="once")
        board.write("gone", 0)
        board.delete("gone")
        with board.transaction(author="çarol") as tx:
            tx.write("t/1", "x")
            tx.write("t/2", None)
            tx.write("a", {"n": 2})
        board.write("ünï/ça", "é")
    assert checkpoint_loads(board_path)
    data = (board_path / "checkpoint").read_bytes()
    offset = head_and_body(data)[0]["offset"]
    with Board.open(board_path, author="later") as board:  # 3 records after it: no new checkpoint
        board.write("a", {"n": 3})
        board.write("late", 1)
        board.delete("b")
    assert (board_path / "checkpoint").read_bytes() == data
    assert checkpoint_loads(board_path)
    return Damaged(board_path, keys | {"late"}, data, offset, record_ends(board_path))


def flip(position: float) -> Callable[[Damaged], bytes]:
    def damage(d: Damaged) -> bytes:
        first = d.checkpoint.index(b"\n") + 1
        body = len(d.checkpoint) - first
        at = first + (int(position * body) if position >= 0 else body + int(position))
        out = bytearray(d.checkpoint)
        out[at] ^= 0x01
        return bytes(out)

    return damage


def truncated(keep: Callable[[bytes], int]) -> Callable[[Damaged], bytes]:
    return lambda d: d.checkpoint[: keep(d.checkpoint)]


def head_changed(**changes: Callable[[Damaged], Any]) -> Callable[[Damaged], bytes]:
    return lambda d: with_head(d.checkpoint, **{k: f(d) for k, f in changes.items()})


def stale_log_header(d: Damaged) -> bytes:
    """The checkpoint of a log file that compaction has since replaced (its header differs)."""
    with Board.open(d.path, author="compactor") as board:
        board.write("a", {"n": 4})
        board.compact()
    return d.checkpoint


def restored_from_backup(d: Damaged) -> bytes:
    """The log cut back to its first 4 records (the same header, same file), then other records
    appended: the checkpoint's offset no longer ends its record. (The watermark is cut back too, and
    the checkpoint set aside meanwhile: either would make our writer refuse to reuse seqs 5-9, spec
    5.3; a writer that does not honour them could still do this.)"""
    (d.path / "checkpoint").unlink()
    with open(d.path / "log.jsonl", "r+b") as f:
        f.truncate(d.ends[3])
    (d.path / "materialized").write_bytes(format_watermark(4))
    with Board.open(d.path, author="after-restore", flush_interval=3600) as board:
        for i in range(6):
            board.write(f"restored/{i}", {"pad": "r" * (20 + i)})
    (d.path / "checkpoint").unlink(missing_ok=True)
    assert os.path.getsize(d.path / "log.jsonl") > d.offset
    return d.checkpoint


def other_generation(d: Damaged) -> bytes:
    """The same records in a log file of another header line (another generation, same length):
    another log file, whose records merely look alike (spec 7.2, check 3)."""
    data = (d.path / "log.jsonl").read_bytes()
    first = data.index(b"\n")
    header = json.loads(data[:first])
    del header["xxh3"]  # recomputed for the new line: a valid header, of another file
    header["generation"] = "".join("0" if c != "0" else "1" for c in header["generation"])
    new = sealed(json.dumps(header, separators=(",", ":")).encode())
    assert len(new) == first
    (d.path / "log.jsonl").write_bytes(new + data[first:])
    return d.checkpoint


def grew_back(d: Damaged) -> bytes:
    """A log that lost its last records (a power loss without fsync) and grew back to the same size:
    records 5 and 6 written again, the same keys and lengths, other values. The record ending at the
    checkpoint's offset has the seq it names; only its bytes differ. (The watermark lost its last
    update too; the checkpoint is set aside meanwhile, as in `restored_from_backup`.)"""
    (d.path / "checkpoint").unlink()
    with open(d.path / "log.jsonl", "r+b") as f:
        f.truncate(d.ends[3])
    (d.path / "materialized").write_bytes(format_watermark(4))
    with Board.open(d.path, author="alice", flush_interval=3600) as board:
        with board.transaction(author="çarol") as tx:
            tx.write("t/1", "y")
            tx.write("t/2", None)
            tx.write("a", {"n": 9})
        board.write("ünï/ça", "è")  # é and è: two bytes each in UTF-8
    (d.path / "checkpoint").unlink(missing_ok=True)
    assert record_ends(d.path)[5] == d.offset, "the test's records do not end where the old ones did"
    return d.checkpoint


def another_boards(d: Damaged) -> bytes:
    """A twin board's checkpoint: the same calls, another log file (its header's generation)."""
    twin = d.path.parent / "twin"
    with checkpoint_every_close(), Board.init(twin, author="alice") as board:
        for i in range(9):
            board.write(f"k/{i}", i)
    return (twin / "checkpoint").read_bytes()


def previous_record_end(d: Damaged) -> int:
    return d.ends[d.ends.index(d.offset) - 1]


def next_record_end(d: Damaged) -> int:
    return d.ends[d.ends.index(d.offset) + 1]


DAMAGES: dict[str, Callable[[Damaged], bytes]] = {
    "body-first-byte": flip(0),
    "body-middle-byte": flip(0.5),
    "body-last-value-byte": flip(-3),
    "body-newline": flip(-1),
    "truncated-to-nothing": truncated(lambda b: 0),
    "truncated-mid-head": truncated(lambda b: b.index(b"\n") // 2),
    "truncated-to-head": truncated(lambda b: b.index(b"\n") + 1),
    "truncated-mid-body": truncated(lambda b: (b.index(b"\n") + len(b)) // 2),
    "truncated-last-byte": truncated(lambda b: len(b) - 1),
    "not-json": lambda d: b"\x00\xff garbage\n[]\n[]\n",
    "format-2": head_changed(blackboard_checkpoint=lambda d: 2),
    "format-0": head_changed(blackboard_checkpoint=lambda d: 0),
    "format-string": head_changed(blackboard_checkpoint=lambda d: "1"),
    "crc-changed": head_changed(crc32=lambda d: head_and_body(d.checkpoint)[0]["crc32"] ^ 1),
    "stale-log-header": stale_log_header,
    "another-boards": another_boards,
    "restored-from-backup": restored_from_backup,
    "other-generation-same-records": other_generation,
    "grew-back-to-the-same-size": grew_back,
    "offset-mid-record-before": head_changed(offset=lambda d: d.offset - 7),
    "offset-mid-record-after": head_changed(offset=lambda d: d.offset + 5),
    "offset-at-previous-record": head_changed(offset=previous_record_end),
    "offset-at-next-record": head_changed(offset=next_record_end),
    "offset-past-the-end": head_changed(offset=lambda d: d.ends[-1] + 100),
    "offset-in-header": head_changed(offset=lambda d: 10),
    "seq-off-by-one": head_changed(last_record_seq=lambda d: head_and_body(d.checkpoint)[0]["last_record_seq"] + 1),
    "offset-a-string": head_changed(offset=lambda d: str(d.offset)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_ignored(damaged: Damaged, tmp_path: Path, damage: str) -> None:
    data = DAMAGES[damage](damaged)
    (damaged.path / "checkpoint").write_bytes(data)
    assert not checkpoint_loads(damaged.path), f"{damage}: the checkpoint was not detected as invalid"
    without = copy_board(damaged.path, tmp_path / "without", checkpoint=False)
    assert_same_board(damaged.path, without, damaged.keys, [("b", [1, 2], "once")])


def test_the_undamaged_control_loads(damaged: Damaged, tmp_path: Path) -> None:
    """The control of the test above: the same board with its checkpoint intact uses it."""
    with Board.open(damaged.path, read_only=True) as board:
        assert board.last_seq == 9
        assert board.engine.since_checkpoint == 3  # only the records after it were parsed
    without = copy_board(damaged.path, tmp_path / "without", checkpoint=False)
    assert_same_board(damaged.path, without, damaged.keys, [("b", [1, 2], "once"), ("b", [1], "once")])


def test_any_flipped_byte_is_detected_or_harmless(damaged: Damaged, tmp_path: Path) -> None:
    without = copy_board(damaged.path, tmp_path / "without", checkpoint=False)
    with Board.open(without, read_only=True) as board:
        expected = board_view(board, damaged.keys)
    wrong = []
    for at in range(len(damaged.checkpoint)):
        data = bytearray(damaged.checkpoint)
        data[at] ^= 0x01
        (damaged.path / "checkpoint").write_bytes(bytes(data))
        with Board.open(damaged.path, read_only=True) as board:
            if board_view(board, damaged.keys) != expected:
                wrong.append((at, chr(damaged.checkpoint[at])))
    assert not wrong, f"undetected flips change answers at (offset, byte): {wrong}"


def test_a_checkpoint_path_that_cannot_be_written(damaged: Damaged, tmp_path: Path) -> None:
    """A directory where the checkpoint goes: ignored on open, and a close that cannot replace it
    raises nothing and leaves no temp file."""
    (damaged.path / "checkpoint").unlink()
    (damaged.path / "checkpoint").mkdir()
    with checkpoint_every_close(), Board.open(damaged.path, author="w") as board:
        assert board.read("late") == 1
        board.write("x", 1)
    assert (damaged.path / "checkpoint").is_dir()
    assert not checkpoint_temp_files(damaged.path)
    with Board.open(damaged.path, read_only=True) as board:
        assert board.read("x") == 1
        assert board.last_seq == 10


# -- leftovers and a checkpoint of the replaced log -----------------------------------------------------


def test_no_checkpoint_temp_files_after_clean_closes_and_compactions(board_path: Path) -> None:
    with Board.init(board_path, author="w") as board:
        for i in range(2200):
            board.write(f"k/{i % 30}", i)
        board.compact()  # writes the checkpoint of the log it switches in
        assert checkpoint_loads(board_path)
        for i in range(2100):
            board.write(f"k/{i % 30}", -i)
    assert checkpoint_loads(board_path)
    assert os.listdir(board_path / "tmp") == [], "a clean close left temporary files"


def test_a_killed_writers_checkpoint_temp_file_is_removed(board_path: Path) -> None:
    """A process killed between creating its checkpoint's temp file and the rename leaves it in tmp/;
    the next compaction removes it (the SIGKILL test below leaves such files for real)."""
    with Board.init(board_path, author="w") as board:
        for i in range(20):
            board.write(f"k/{i % 3}", i)
    # What layout.tmp_file("checkpoint") names, left by a process killed before its rename.
    leftover = board_path / "tmp" / "checkpoint.999999999.0123456789ab.tmp"
    leftover.write_bytes(b'{"blackboard_checkpoint":1,"log_hea')
    os.utime(leftover, (0, 0))  # and long ago
    with Board.open(board_path, author="w") as board:
        board.write("k/0", "again")
        board.compact()
    assert not checkpoint_temp_files(board_path)


def test_close_after_compact_keeps_a_checkpoint_of_the_new_log(board_path: Path) -> None:
    with Board.init(board_path, author="w") as board:
        for i in range(2500):
            board.write(f"k/{i % 10}", i)
    (board_path / "checkpoint").unlink()
    with Board.open(board_path) as board:  # `blackboard compact` does this: open, compact, close
        assert board.last_seq == 2500  # a full replay: 2,500 records since any checkpoint
        board.compact()
        assert checkpoint_loads(board_path), "compaction saved a checkpoint of the log it switched in"
    assert checkpoint_loads(board_path), "close() replaced it with a checkpoint of the old log"


# -- SIGKILL while a checkpoint is being written -----------------------------------------------------


@dataclass
class Churner:
    proc: SpawnProcess
    conn: Connection
    go: MpEvent

    def wait_for(self, kind: str, count: int = 1) -> None:
        """Read messages until the `count`-th of `kind`."""
        seen = 0
        while seen < count:
            assert self.conn.poll(60), f"no {kind!r} message from the churner within 60 s"
            seen += self.conn.recv()[0] == kind

    def kill(self) -> None:
        os.kill(self.proc.pid or 0, signal.SIGKILL)
        self.proc.join(30)
        assert self.proc.exitcode == -signal.SIGKILL, self.proc.exitcode
        self.conn.close()

    def kill_mid_checkpoint(self, tmp: Path, closes: int) -> bool:
        """SIGKILL the child while it writes a checkpoint: watch tmp/ for its temp file, stop the child
        (SIGSTOP) the moment one shows, and kill it if the file is still there: it was between create and
        rename. Tries over up to `closes` of its closes; returns whether it hit one (then kills anyway)."""
        pid = self.proc.pid or 0
        mine = f"checkpoint.{pid}."
        closed = 0
        while closed < closes:
            if any(name.startswith(mine) for name in os.listdir(tmp)):
                os.kill(pid, signal.SIGSTOP)
                hit = any(name.startswith(mine) for name in os.listdir(tmp))
                self.kill()
                return hit
            while self.conn.poll(0):
                closed += self.conn.recv()[0] == "closed"
        self.kill()
        return False


def start_churner(spawn: Spawn, path: Path, seed: int, per_round: int) -> Churner:
    receive, send = CTX.Pipe(duplex=False)
    go = CTX.Event()
    proc = spawn(checkpoint_churner, str(path), send, go, seed, per_round)
    send.close()
    return Churner(proc, receive, go)


def test_sigkill_while_writing_checkpoints(board_path: Path, tmp_path: Path, spawn: Spawn) -> None:
    """Children that write 2,000 records and close (saving a ~2 MB checkpoint) in a loop are killed while
    their checkpoint is being written, during their closes, and at random moments; after each kill the
    board opens as a replay of its log does."""
    rng = random.Random(7)
    cold = {f"cold/{i:04d}": {"i": i, "pad": "c" * 800} for i in range(2000)}
    with Board.init(board_path, author="setup") as board, board.transaction() as tx:
        for key, value in cold.items():
            tx.write(key, value)
    keys = set(cold) | {f"hot/{i}" for i in range(60)}
    ahead: deque[Churner] = deque()
    seeds = iter(range(1000))
    hits = 0
    for round_ in range(6):
        while len(ahead) < 2:
            ahead.append(start_churner(spawn, board_path, next(seeds), 2000))
        child = ahead.popleft()
        child.wait_for("ready")
        child.go.set()
        if round_ % 3 == 0:  # while its next checkpoint is being written, after one close that saved one
            child.wait_for("closed")
            hits += child.kill_mid_checkpoint(board_path / "tmp", closes=10)
        elif round_ % 3 == 1:  # during its close (materializing, encoding, saving: a few ms)
            child.wait_for("closing")
            time.sleep(rng.uniform(0.0, 0.015))
            child.kill()
        else:  # at any moment
            time.sleep(rng.uniform(0.0, 0.3))
            child.kill()

        # Round 0 let a close complete: from then on a checkpoint exists, and a kill (mid-write of the
        # next one included) leaves one that the next open uses: appends never invalidate it.
        assert checkpoint_loads(board_path), f"round {round_}: no usable checkpoint after the kill"
        snap = tmp_path / f"round{round_}"
        with_cp = copy_board(board_path, snap / "with", checkpoint=True)
        without = copy_board(board_path, snap / "without", checkpoint=False)
        _header, records, _torn = read_log(without)
        with Board.open(with_cp, read_only=True) as a, Board.open(without, read_only=True) as b:
            assert a.last_seq == b.last_seq == records[-1]["seq"]
            assert a.engine.since_checkpoint < len(records) == b.engine.since_checkpoint  # it used the checkpoint
            assert board_view(a, keys) == board_view(b, keys), f"round {round_}"
            assert state_of(a) == replay(records), f"round {round_}"
    for child in ahead:
        child.proc.kill()
    assert hits, "no kill landed while a checkpoint was being written: the test did not test that"
    # A clean writer afterwards repairs any torn tail and leaves its own checkpoint, and no temp file.
    before = set(checkpoint_temp_files(board_path))
    with checkpoint_every_close(), Board.open(board_path, author="after") as board:
        board.write("hot/0", "after")
    assert set(checkpoint_temp_files(board_path)) <= before
    assert checkpoint_loads(board_path)
    assert_same_board(board_path, copy_board(board_path, tmp_path / "final", checkpoint=False), keys, [])

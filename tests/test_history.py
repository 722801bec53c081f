"""Reading the past (blackboard/core/history.py): `read(k, at=SEQ)` / `get(k, at=SEQ)`, `Compacted`
where compaction removed that history without an archive, and `blame()`.

The promise under test: for every seq S and every key, the as-of read equals a replay of every record
ever written with seq <= S (collected from the log with `json` before each compaction), whatever the
history of puts, deletes, transactions and compactions, archived or not; below an unarchived
compaction the answer is `Compacted`, never a wrong value; a seq after the last is refused.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _engine_workers import expected_blame, latest_events, read_log, replay
from conftest import sealed
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blackboard import Board, Compacted, InvalidValue, KeyNotFound

#: An hour (and more) before any test runs: a writer whose clock is behind.
OLD_TS = "2020-01-02T03:04:05.000006Z"

KEYS = ("a", "a/b", "b", "ünï/ça va?", 'q"\\x')
AUTHORS = ("alice", "bob")
DELETE = object()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("history")


@contextlib.contextmanager
def fresh_board(scratch: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir=scratch) as name:
        yield Path(name) / "board"


class Model:
    """Every record ever written (by seq, read back from the log before each compaction), and what
    the compactions promise: below `compacted_through` the history is answerable only if every
    compaction so far archived what it removed."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, Any]] = {}
        self.compacted_through = 0
        self.all_archived = True

    def collect(self, path: Path) -> None:
        header, records, _torn = read_log(path)
        for rec in records:
            assert self.records.setdefault(rec["seq"], rec) == rec, "a kept record changed"
        assert header["compacted_through"] == self.compacted_through

    def compacted(self, path: Path, board: Board, *, archive: bool, retention: float | None) -> None:
        self.collect(path)
        report = board.compact(archive=archive, retention=retention)
        if report.skipped is None:
            self.compacted_through = report.compacted_through
            self.all_archived = self.all_archived and archive
        self.collect(path)

    def answerable(self, at: int) -> bool:
        return at >= self.compacted_through or self.all_archived


def run(path: Path, steps: list[tuple[Any, ...]], *, retention: float | None) -> Model:
    model = Model()
    with Board.init(path, author="h", flush_interval=3600) as board:
        for s in steps:
            if s[0] == "put":
                board.write(KEYS[s[1]], s[2], author=AUTHORS[s[3]])
            elif s[0] == "delete":
                with contextlib.suppress(KeyNotFound):
                    board.delete(KEYS[s[1]])
            elif s[0] == "txn":
                with contextlib.suppress(KeyNotFound), board.transaction(author=AUTHORS[s[2]]) as tx:
                    for k, v in s[1]:
                        if v is DELETE:
                            tx.delete(KEYS[k])
                        else:
                            tx.write(KEYS[k], v)
            else:
                model.compacted(path, board, archive=s[1], retention=retention)
        model.collect(path)
    return model


def assert_as_of_reads_match_replay(path: Path, model: Model) -> None:
    records = list(model.records.values())
    last = max(model.records, default=0)
    with Board.open(path, read_only=True) as board:
        assert board.last_seq >= last
        last = board.last_seq  # a compaction may have purged the last records: their seqs still count
        for at in range(last + 1):
            expected = replay(records, through=at)
            for key in KEYS:
                if not model.answerable(at):
                    with pytest.raises(Compacted) as caught:
                        board.get(key, at=at)
                    assert caught.value.requested == at
                    with pytest.raises(Compacted):
                        board.read(key, "default", at=at)
                    continue
                entry = board.get(key, at=at)
                want = expected.get(key)
                if want is None:
                    assert entry is None, (at, key, entry)
                    assert board.read(key, "default", at=at) == "default"
                else:
                    assert entry is not None, (at, key, want)
                    assert entry.as_dict() == {"key": key, **want}, (at, key)
                    assert board.read(key, at=at) == want["value"]
        for key in KEYS:  # as of the last seq: the present
            assert board.get(key, at=last) == board.get(key)
        with pytest.raises(InvalidValue, match="future"):
            board.read(KEYS[0], at=last + 1)


values = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.none(), st.lists(st.booleans(), max_size=2))
key_ix = st.integers(0, len(KEYS) - 1)
put = st.tuples(st.just("put"), key_ix, values, st.integers(0, 1))
delete = st.tuples(st.just("delete"), key_ix)
txn = st.tuples(
    st.just("txn"),
    st.lists(st.tuples(key_ix, st.one_of(values, st.just(DELETE))), min_size=2, max_size=3, unique_by=lambda t: t[0]),
    st.integers(0, 1),
)
compact = st.tuples(st.just("compact"), st.booleans())


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.one_of(put, put, delete, txn, compact), max_size=14))
@example(
    steps=[
        ("put", 0, 1, 0),
        ("txn", [(0, 2), (1, 1)], 1),
        ("compact", True),
        ("delete", 1),
        ("put", 2, "x", 0),
        ("compact", True),
        ("txn", [(2, DELETE), (3, [True])], 0),
        ("put", 0, 3, 1),
    ]
)
@example(
    steps=[
        ("put", 0, 1, 0),
        ("put", 0, 2, 0),
        ("compact", True),
        ("put", 1, 1, 0),
        ("compact", False),
        ("put", 0, 3, 0),
    ]
)
def test_as_of_reads_match_a_replay(scratch: Path, steps: list[tuple[Any, ...]]) -> None:
    """Puts, deletes, transactions and compactions (deletes kept: the board's retention)."""
    with fresh_board(scratch) as path:
        model = run(path, steps, retention=None)
        assert_as_of_reads_match_replay(path, model)
        with Board.open(path, read_only=True) as board:
            blame = [e.as_dict() for e in board.blame()]
        assert blame == expected_blame(latest_events(model.records.values()), model.compacted_through)


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.one_of(put, put, delete, delete, txn, compact), max_size=14))
@example(steps=[("put", 0, 1, 0), ("delete", 0), ("put", 2, 1, 0), ("compact", True), ("put", 1, 2, 1)])
@example(steps=[("txn", [(0, 1), (1, 1)], 0), ("delete", 1), ("compact", False)])
@example(steps=[("txn", [(0, 1), (1, 1)], 0), ("txn", [(1, DELETE), (2, 5)], 1), ("delete", 0), ("compact", True)])
def test_as_of_reads_match_a_replay_when_deletes_are_purged(scratch: Path, steps: list[tuple[Any, ...]]) -> None:
    """Puts, deletes, transactions and compactions with retention 0: compaction also removes the
    tombstones it may (archive=True keeps them in archive/), and never brings a deleted key back."""
    with fresh_board(scratch) as path:
        model = run(path, steps, retention=0)
        assert_as_of_reads_match_replay(path, model)
        truth = latest_events(model.records.values())
        in_log = latest_events(read_log(path)[1])
        for key, event in in_log.items():  # the log keeps each key's latest change, or none of it
            assert event == truth[key], key
        for key in truth.keys() - in_log.keys():
            assert truth[key]["op"] == "delete" and truth[key]["seq"] <= model.compacted_through, key
        with Board.open(path, read_only=True) as board:
            assert [e.as_dict() for e in board.blame()] == expected_blame(truth, model.compacted_through)


# -- Compacted, the archive, bad seqs --------------------------------------------------------------------


def test_below_an_unarchived_compaction_is_compacted(board: Board) -> None:
    for i in range(5):
        board.write("k", i)  # seqs 1..5
    board.write("other", "x")  # 6
    assert board.compact().compacted_through == 6
    for at in range(6):
        with pytest.raises(Compacted) as caught:
            board.read("k", at=at)
        assert (caught.value.requested, caught.value.purged_through) == (at, 6)
        assert "archive" in str(caught.value)
    assert board.read("k", at=6) == 4
    board.write("k", "after")  # 7
    assert [board.read("k", at=s) for s in (6, 7)] == [4, "after"]
    assert board.get("other", at=7) == board.get("other")
    with Board.open(board.path, read_only=True) as fresh:  # a new handle, from the checkpoint
        with pytest.raises(Compacted):
            fresh.get("k", at=5)
        assert fresh.read("k", at=6) == 4


def test_archived_compactions_answer_from_the_archive(board: Board) -> None:
    board.write("k", 1)  # 1
    board.write("k", 2)  # 2
    board.write("gone", 0)  # 3
    board.delete("gone")  # 4
    board.compact(archive=True, retention=0)
    board.write("k", 3)  # 5
    board.compact(archive=True)
    assert list((board.path / "archive").iterdir()), "the archive is empty"
    assert [board.read("k", at=s) for s in range(6)] == [None, 1, 2, 2, 2, 3]
    assert [board.read("gone", "-", at=s) for s in range(6)] == ["-", "-", "-", 0, "-", "-"]
    entry = board.get("k", at=1)
    assert entry is not None and (entry.version, entry.seq, entry.author) == (1, 1, "tester")
    # One compaction without an archive: from then on the history below it is gone, whatever follows.
    board.write("k", 4)  # 6
    assert board.compact().compacted_through == 6
    board.write("k", 5)  # 7
    board.compact(archive=True)
    for at in (0, 1, 5, 6):
        with pytest.raises(Compacted):
            board.read("k", at=at)
    assert board.read("k", at=7) == 5


def test_a_purged_last_delete_still_counts_as_a_seq(board: Board) -> None:
    board.write("a", 1)
    board.delete("a")
    report = board.compact(retention=0)
    assert (report.compacted_through, report.deletes_purged) == (2, 1)
    assert board.last_seq == 2
    assert board.read("a", "none", at=2) == "none"
    with pytest.raises(Compacted):
        board.read("a", at=1)
    with pytest.raises(InvalidValue, match="future"):
        board.read("a", at=3)
    assert board.write("a", "new").seq == 3
    assert board.read("a", at=3) == "new"


@pytest.mark.parametrize("at", [-1, 2, "1", 1.0, True, None])
def test_bad_seqs_are_refused(board: Board, at: Any) -> None:
    board.write("k", 1)
    if at is None:
        assert board.read("k", at=at) == 1  # at=None: the present
        return
    with pytest.raises(InvalidValue):
        board.get("k", at=at)
    with pytest.raises(InvalidValue):
        board.read("k", at=at)


def test_as_of_on_an_empty_board(board: Board) -> None:
    assert board.read("k", "d", at=0) == "d"
    assert board.get("k", at=0) is None
    with pytest.raises(InvalidValue):
        board.read("k", at=1)


# -- blame ----------------------------------------------------------------------------------------------


def test_blame_lists_the_latest_event_of_every_key(board: Board, board_path: Path) -> None:
    board.write("b/1", 1, author="ann")
    board.write("a/1", 1, author="ann")
    board.write("b/1", 2, author="bo")
    board.write("b/2", "x")
    board.delete("b/2", author="cy")
    with board.transaction(author="tx") as tx:
        tx.write("a/2", [1])
        tx.write("ünï", None)
    board.write("ab", "not under a/")
    got = board.blame()
    assert [(e.key, e.op, e.seq, e.author, e.txn, e.value, e.version) for e in got] == [
        ("a/1", "put", 2, "ann", False, 1, 1),
        ("a/2", "put", 6, "tx", True, [1], 1),
        ("ab", "put", 7, "tester", False, "not under a/", 1),
        ("b/1", "put", 3, "bo", False, 2, 2),
        ("b/2", "delete", 5, "cy", False, None, 0),
        ("ünï", "put", 6, "tx", True, None, 1),
    ]
    assert [e.as_dict() for e in got] == list(latest_events(read_log(board_path)[1]).values())
    assert [e.key for e in board.blame("a/")] == ["a/1", "a/2"]
    assert [e.key for e in board.blame("b/2")] == ["b/2"]
    assert board.blame("zzz") == []
    # After a compaction (C = 7), deletes at or before C are listed by no reader (spec 11.2): b/2's
    # delete, retained or purged; puts as before. Every reader of the log file answers alike.
    board.compact()
    assert board.blame() == [e for e in got if e.key != "b/2"]
    board.write("b/3", 1)
    board.delete("b/3")  # seq 9, after C: listed
    assert [(e.key, e.op) for e in board.blame("b/")] == [("b/1", "put"), ("b/3", "delete")]
    board.compact(retention=0)  # C = 9 now: no longer
    assert [e.key for e in board.blame()] == ["a/1", "a/2", "ab", "b/1", "ünï"]
    with Board.open(board_path, read_only=True) as fresh:
        assert fresh.blame() == board.blame()
    (board_path / "checkpoint").unlink()
    with Board.open(board_path, read_only=True) as replayed:
        assert replayed.blame() == board.blame()


def skewed_delete(path: Path, key: str, seq: int) -> None:
    """Append by hand the delete of a writer whose clock is an hour behind (spec 5.2: order is by seq),
    with its checksum (the board's log is of version 3: spec 5.6)."""
    line = {"seq": seq, "op": "delete", "key": key, "value": None, "version": 0, "author": "skewed", "ts": OLD_TS}
    with open(path / "log.jsonl", "ab") as log:
        log.write(sealed(json.dumps(line, separators=(",", ":")).encode() + b"\n"))


@pytest.mark.parametrize("kept_for", ["transaction", "idempotency-key"])
def test_compaction_never_brings_back_a_deleted_key(board_path: Path, kept_for: str) -> None:
    """A record kept although superseded (a transaction kept for another of its keys, a young record
    kept for its idempotency key) must not make a deleted key live again once its tombstone is due."""
    with Board.init(board_path, author="w") as board:
        if kept_for == "transaction":
            with board.transaction() as tx:
                tx.write("a", 1)
                tx.write("b", 1)
            board.delete("b")
            retention = 0.0
        else:
            board.write("b", 1, idempotency_key="once")
            board.write("a", 1)
            skewed_delete(board_path, "b", 3)
            retention = 600.0  # the idempotent write is young, the (skewed) delete is not
        board.compact(retention=retention)
        assert board.read_prefix("") == {"a": 1}
    for checkpoint in (True, False):
        if not checkpoint:
            (board_path / "checkpoint").unlink(missing_ok=True)
        with Board.open(board_path, read_only=True) as fresh:
            assert fresh.read_prefix("") == {"a": 1}, f"b came back (checkpoint: {checkpoint})"
            assert fresh.read("b", at=fresh.last_seq) is None
    assert "b" not in replay(read_log(board_path)[1], check_versions=False)

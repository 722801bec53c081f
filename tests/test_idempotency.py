"""Idempotency keys (`write`/`delete`/`transaction(idempotency_key=...)`): a retry of a change that
already landed appends nothing and returns the original entry; the same key for another change is
refused; the key is remembered while its record is in the log (compaction keeps such records while
they are younger than the board's retention), across handles, processes, checkpoints and compactions.

Judged by the log's bytes and a `json` reading of it (`_engine_workers`), not by the library.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _engine_workers import idem_racer, idem_retry, read_log
from _workers import run_jobs

import blackboard.board
from blackboard import Board, InvalidValue, KeyNotFound, ReadOnlyBoard, VersionConflict


def log_bytes(path: Path) -> bytes:
    return (path / "log.jsonl").read_bytes()


def idem_records(path: Path) -> dict[str, list[int]]:
    """Idempotency key -> the seqs of the log's records that carry it."""
    out: dict[str, list[int]] = {}
    for rec in read_log(path)[1]:
        if "idem" in rec:
            out.setdefault(rec["idem"], []).append(rec["seq"])
    return out


# -- in one process ---------------------------------------------------------------------------------


def test_a_retry_returns_the_original_and_appends_nothing(board: Board, board_path: Path) -> None:
    first = board.write("k", {"n": 1}, idempotency_key="op-1")
    board.write("other", 1)
    before = log_bytes(board_path)
    assert board.write("k", {"n": 1}, idempotency_key="op-1") == first
    assert board.write("k", {"n": 1}, idempotency_key="op-1", author="someone-else") == first  # its author
    # A retry of a compare-and-set that landed: its condition no longer holds, but it did happen.
    assert board.write("k", {"n": 1}, idempotency_key="op-1", expect_version=0) == first
    with Board.open(board_path, author="another-handle") as other:
        assert other.write("k", {"n": 1}, idempotency_key="op-1") == first
    assert log_bytes(board_path) == before
    assert idem_records(board_path) == {"op-1": [1]}
    rec = read_log(board_path)[1][0]
    assert (rec["idem"], rec["value"], rec["seq"]) == ("op-1", {"n": 1}, 1)
    # A new change with a new key is a new record, as is a write without one.
    assert board.write("k", {"n": 1}, idempotency_key="op-2").seq == 3
    assert board.write("k", {"n": 1}).seq == 4


def test_a_retried_delete_returns_the_delete(board: Board, board_path: Path) -> None:
    board.write("k", 1)
    gone = board.delete("k", idempotency_key="rm-1")
    before = log_bytes(board_path)
    assert board.delete("k", idempotency_key="rm-1") == gone  # the key is absent now: no KeyNotFound
    assert (gone.value, gone.version, gone.seq) == (None, 0, 2)
    assert log_bytes(board_path) == before
    with pytest.raises(KeyNotFound):
        board.delete("k", idempotency_key="rm-2")
    assert log_bytes(board_path) == before, "a refused delete keeps no idempotency key either"
    board.write("k", 2)
    assert board.delete("k", idempotency_key="rm-2").seq == 4


def refuse_other_value(board: Board) -> Any:
    return board.write("k", {"n": 2}, idempotency_key="x")


def refuse_other_key(board: Board) -> Any:
    return board.write("k2", {"n": 1}, idempotency_key="x")


def refuse_delete(board: Board) -> Any:
    return board.delete("k", idempotency_key="x")


def refuse_txn(board: Board) -> Any:
    with board.transaction(idempotency_key="x") as tx:
        tx.write("k", {"n": 1})
        tx.write("k2", 2)


def refuse_put_for_delete(board: Board) -> Any:
    return board.write("gone", None, idempotency_key="del")


def refuse_other_txn(board: Board) -> Any:
    with board.transaction(idempotency_key="tx") as tx:
        tx.write("t/a", 1)
        tx.write("t/b", 3)


def refuse_smaller_txn(board: Board) -> Any:
    with board.transaction(idempotency_key="tx") as tx:
        tx.write("t/a", 1)


REFUSALS: dict[str, Callable[[Board], Any]] = {
    "other-value": refuse_other_value,
    "other-key": refuse_other_key,
    "delete-for-put": refuse_delete,
    "txn-for-put": refuse_txn,
    "put-for-delete": refuse_put_for_delete,
    "other-txn": refuse_other_txn,
    "smaller-txn": refuse_smaller_txn,
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_the_same_key_for_another_change_is_refused(board: Board, board_path: Path, name: str) -> None:
    board.write("k", {"n": 1}, idempotency_key="x")
    board.write("gone", 0)
    board.delete("gone", idempotency_key="del")
    with board.transaction(idempotency_key="tx") as tx:
        tx.write("t/a", 1)
        tx.write("t/b", 2)
    before = log_bytes(board_path)
    with pytest.raises(InvalidValue, match="idempotency key"):
        REFUSALS[name](board)
    assert log_bytes(board_path) == before
    assert board.read_prefix("") == {"k": {"n": 1}, "t/a": 1, "t/b": 2}


def test_equal_json_spelled_otherwise_is_the_same_change(board: Board, board_path: Path) -> None:
    first = board.write("k", {"a": 1, "b": [1, 2.5]}, idempotency_key="x")
    before = log_bytes(board_path)
    assert board.write("k", {"b": [1, 2.5], "a": 1}, idempotency_key="x") == first  # object member order
    assert board.write("k", {"a": 1.0, "b": [1.0, 2.5]}, idempotency_key="x") == first  # numbers by value
    assert log_bytes(board_path) == before


@pytest.mark.parametrize(
    ("first", "retry"),
    [(True, 1), (False, 0), (1, True), (1.0, True), ([1], [True]), ({"a": False}, {"a": 0})],
    ids=["true-1", "false-0", "1-true", "1.0-true", "nested-true", "nested-false"],
)
def test_a_retry_of_another_json_value_is_refused(board: Board, board_path: Path, first: Any, retry: Any) -> None:
    """A boolean is no number (spec 5.5), however Python compares them: another value, another change."""
    board.write("k", first, idempotency_key="x")
    before = log_bytes(board_path)
    with pytest.raises(InvalidValue, match="idempotency key"):
        board.write("k", retry, idempotency_key="x")
    assert log_bytes(board_path) == before
    assert board.read("k") == first and type(board.read("k")) is type(first)


def test_a_transaction_with_an_idempotency_key(board: Board, board_path: Path) -> None:
    board.write("acct/a", 10)
    board.write("acct/b", 0)

    def move() -> list[Any]:
        with board.transaction(idempotency_key="move-1") as tx:
            tx.expect("acct/a", 1)  # as the first attempt read it
            tx.expect("acct/b", 1)
            tx.write("acct/a", 5)
            tx.write("acct/b", 5)
        return [tx.seq, [e.as_dict() for e in tx.entries]]

    first = move()
    assert first[0] == 3
    before = log_bytes(board_path)
    # The retry: its conditions fail now (its own first attempt changed both keys), yet it happened.
    assert move() == first
    assert log_bytes(board_path) == before
    assert board.read_prefix("acct/") == {"acct/a": 5, "acct/b": 5}
    # Without the key, the same block is refused: the conditions are checked.
    with pytest.raises(VersionConflict), board.transaction() as tx:
        tx.expect("acct/a", 1)
        tx.write("acct/a", 0)
        tx.write("acct/b", 0)
    # A one-change transaction and a plain write share the namespace of keys.
    with board.transaction(idempotency_key="w") as tx:
        tx.write("solo", 1)
    assert board.write("solo", 1, idempotency_key="w").seq == tx.seq
    assert idem_records(board_path) == {"move-1": [3], "w": [4]}


@pytest.mark.parametrize("idem", ["", "x" * 257, "line\nbreak", "\x00", 7, b"bytes"])
def test_bad_idempotency_keys_are_refused(board: Board, board_path: Path, idem: Any) -> None:
    board.write("k", 1)
    before = log_bytes(board_path)
    with pytest.raises(InvalidValue):
        board.write("k", 2, idempotency_key=idem)
    with pytest.raises(InvalidValue):
        board.delete("k", idempotency_key=idem)
    with pytest.raises(InvalidValue), board.transaction(idempotency_key=idem) as tx:
        tx.write("k", 3)
        tx.write("j", 3)
    assert log_bytes(board_path) == before
    assert board.write("k", 2, idempotency_key="x" * 256).seq == 2  # the longest that is allowed


def test_a_read_only_handle_cannot_retry(board: Board, board_path: Path) -> None:
    board.write("k", 1, idempotency_key="x")
    with Board.open(board_path, read_only=True) as reader, pytest.raises(ReadOnlyBoard):
        reader.write("k", 1, idempotency_key="x")


# -- across processes, reopenings, checkpoints and compactions -----------------------------------------


def test_two_processes_racing_the_same_changes_append_one_record_each(board_path: Path) -> None:
    Board.init(board_path).close()
    n = 30
    results = run_jobs([(idem_racer, (str(board_path), n)) for _ in range(4)], timeout=120)
    assert all(r == results[0] for r in results), "the racers were told different stories"
    records = read_log(board_path)[1]
    assert len(records) == 3 * n, "a race appended a duplicate"
    assert sorted(idem_records(board_path)) == sorted(f"{kind}-{i}" for kind in "wtd" for i in range(n))
    assert all(len(seqs) == 1 for seqs in idem_records(board_path).values())
    by_seq = {r["seq"]: r for r in records}
    for kind, i, seq, *_ in results[0]:
        assert by_seq[seq]["idem"] == f"{kind[0]}-{i}"
    with Board.open(board_path, read_only=True) as board:
        assert board.keys() == sorted(f"t/{i}/{s}" for i in range(n) for s in "ab")


def originals(board: Board) -> list[dict[str, Any]]:
    """Three idempotent changes (a write, a delete, a transaction), then other changes over their keys.
    Returns each as `idem_retry` takes it, with the entries the first call returned."""
    w = board.write("w", {"v": 1}, idempotency_key="id-w")
    board.write("d", "doomed")
    d = board.delete("d", idempotency_key="id-d")
    with board.transaction(idempotency_key="id-t") as tx:
        tx.write("t/a", [1])
        tx.write("t/b", None)
    for i in range(3):  # supersede every one of them
        board.write("w", {"v": 10 + i})
        board.write("d", i)
        board.write("t/a", i)
    return [
        {"kind": "write", "key": "w", "value": {"v": 1}, "idem": "id-w", "entries": [w.as_dict()]},
        {"kind": "delete", "key": "d", "idem": "id-d", "entries": [d.as_dict()]},
        {
            "kind": "txn",
            "writes": [["t/a", [1]], ["t/b", None]],
            "idem": "id-t",
            "entries": [e.as_dict() for e in tx.entries],
        },
    ]


MISUSES: list[dict[str, Any]] = [
    {"kind": "write", "key": "w", "value": {"v": 2}, "idem": "id-w"},
    {"kind": "write", "key": "d", "value": None, "idem": "id-d"},
    {"kind": "txn", "writes": [["t/a", [1]]], "idem": "id-t"},
]


def retry_in_a_new_process(path: Path, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    [results] = run_jobs([(idem_retry, (str(path), ops))], timeout=60)
    assert isinstance(results, list)
    return results


@pytest.mark.parametrize("checkpoint", [True, False], ids=["from-checkpoint", "full-replay"])
def test_a_retry_from_a_new_process_finds_the_original(board_path: Path, checkpoint: bool) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blackboard.board, "CHECKPOINT_EVERY", 0)
        with Board.init(board_path, author="first") as board:
            ops = originals(board)
    if not checkpoint:
        (board_path / "checkpoint").unlink()
    else:
        assert json.loads((board_path / "checkpoint").read_bytes().split(b"\n")[2]), "no idempotency keys in it"
    before = log_bytes(board_path)
    results = retry_in_a_new_process(board_path, ops + MISUSES)
    assert [r.get("entries") for r in results[:3]] == [op["entries"] for op in ops]
    assert [r.get("error") for r in results[3:]] == ["InvalidValue"] * 3
    assert log_bytes(board_path) == before


@pytest.mark.parametrize("archive", [False, True], ids=["plain", "archived"])
def test_compaction_within_retention_keeps_idempotency(board_path: Path, archive: bool) -> None:
    with Board.init(board_path, author="first") as board:
        ops = originals(board)
        report = board.compact(archive=archive)
        assert report.events_after < report.events_before, "compaction removed nothing: the test tests nothing"
        assert sorted(idem_records(board_path)) == ["id-d", "id-t", "id-w"], "superseded but young: kept"
        before = log_bytes(board_path)
        for op in ops:  # the handle that compacted
            if op["kind"] == "write":
                assert board.write("w", {"v": 1}, idempotency_key="id-w").as_dict() == op["entries"][0]
            elif op["kind"] == "delete":
                assert board.delete("d", idempotency_key="id-d").as_dict() == op["entries"][0]
        assert log_bytes(board_path) == before
    results = retry_in_a_new_process(board_path, ops + MISUSES)  # a new process, after the compaction
    assert [r.get("entries") for r in results[:3]] == [op["entries"] for op in ops]
    assert [r.get("error") for r in results[3:]] == ["InvalidValue"] * 3
    assert log_bytes(board_path) == before
    with Board.open(board_path, read_only=True) as reader:  # and the state is the latest, not the retried
        assert reader.read_prefix("") == {"d": 2, "t/a": 2, "t/b": None, "w": {"v": 12}}


def test_beyond_retention_a_superseded_key_is_forgotten(board: Board, board_path: Path) -> None:
    """Remembered while its record is in the log: compaction with retention 0 drops a superseded
    record with its idempotency key (the retry is then a new change), and keeps one that is still
    its key's latest (the retry still finds it)."""
    old = board.write("a", 1, idempotency_key="old")
    board.write("a", 2)
    latest = board.write("b", 1, idempotency_key="latest")
    board.compact(retention=0)
    assert idem_records(board_path) == {"latest": [3]}
    before = log_bytes(board_path)
    assert board.write("b", 1, idempotency_key="latest") == latest
    assert log_bytes(board_path) == before
    again = board.write("a", 1, idempotency_key="old")
    assert again.seq == 4 != old.seq
    assert (again.version, board.read("a")) == (3, 1)

"""Transactions (`board.transaction()`, blackboard/transaction.py): several puts and deletes committed as
ONE log record with one seq, all or nothing, conditioned on the versions the block read or expected.

The promises under test: processes moving units between accounts keep the total constant at every seq
any watcher sees; a SIGKILL leaves each transaction wholly in the log or not at all; a refused
transaction changes no byte on disk; watchers get each matching change of a transaction flagged
`txn=True` with the shared seq; a cursor never moves past a transaction before all its events of the
cursor's prefix were handled. The log is judged with `json` (`_engine_workers`), not with the library.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from _engine_workers import account, apply_record, cursor_consumer, mover, mover_forever, read_log, sum_watcher
from _workers import CTX, Spawn, read_docs, run_jobs, snapshot

from blackboard import (
    Board,
    Event,
    InvalidKey,
    InvalidValue,
    KeyNotFound,
    ReadOnlyBoard,
    VersionConflict,
)

ACCOUNTS = 20
START = 100  # units per account at seq 1
TOTAL = ACCOUNTS * START


def open_accounts(path: Path) -> None:
    """A new board whose seq 1 is one transaction creating every account."""
    with Board.init(path, author="bank") as board, board.transaction() as tx:
        for i in range(ACCOUNTS):
            tx.write(account(i), START)


def assert_total_at_every_record(path: Path) -> list[dict[str, Any]]:
    """Replaying the log's complete records in order (versions checked), the accounts sum to TOTAL
    after every record, and every record after the first is a whole two-account transaction."""
    _header, records, _torn = read_log(path)
    state: dict[str, dict[str, Any]] = {}
    for rec in records:
        assert rec["op"] == "txn", rec
        if rec["seq"] > 1:
            assert [op["op"] for op in rec["ops"]] == ["put", "put"], rec
            assert len({op["key"] for op in rec["ops"]}) == 2, rec
        apply_record(state, rec)
        assert sum(s["value"] for s in state.values()) == TOTAL, f"seq {rec['seq']}: the total moved"
    return records


# -- one record, one seq ------------------------------------------------------------------------------


def test_a_transaction_is_one_record(board: Board, board_path: Path) -> None:
    board.write("acct/a", 10)
    board.write("gone", "x")
    with board.transaction(author="teller") as tx:
        a = tx.read("acct/a")
        assert tx.read("acct/b", 0) == 0
        tx.write("acct/a", a - 3)
        tx.write("acct/b", 3)
        tx.delete("gone")
        assert board.read("acct/a") == 10, "nothing is applied before the block ends"
    assert tx.seq == 3 == board.last_seq
    assert [(e.key, e.value, e.version, e.seq, e.author) for e in tx.entries] == [
        ("acct/a", 7, 2, 3, "teller"),
        ("acct/b", 3, 1, 3, "teller"),
        ("gone", None, 0, 3, "teller"),
    ]
    assert len({e.ts_text for e in tx.entries}) == 1
    _header, records, _torn = read_log(board_path)
    assert len(records) == 3
    rec = records[-1]
    assert set(rec) == {"seq", "op", "ops", "author", "ts", "xxh3"}  # xxh3: the line's checksum (spec 5.6)
    assert (rec["seq"], rec["op"], rec["author"], rec["ts"]) == (3, "txn", "teller", tx.entries[0].ts_text)
    assert rec["ops"] == [
        {"op": "put", "key": "acct/a", "value": 7, "version": 2},
        {"op": "put", "key": "acct/b", "value": 3, "version": 1},
        {"op": "delete", "key": "gone", "value": None, "version": 0},
    ]
    assert board.read_prefix("") == {"acct/a": 7, "acct/b": 3}
    assert [(e.key, e.op, e.seq, e.txn) for e in board.blame()] == [
        ("acct/a", "put", 3, True),
        ("acct/b", "put", 3, True),
        ("gone", "delete", 3, True),
    ]
    assert [(e.seq, e.op, e.txn) for e in board.history("gone")] == [(2, "put", False), (3, "delete", True)]
    board.close()
    assert json.loads((board_path / "entries" / "acct" / "a.json").read_bytes())["seq"] == 3
    assert not (board_path / "entries" / "gone.json").exists()


def test_reads_see_the_committed_board_and_versions_count_on(board: Board) -> None:
    with board.transaction() as tx:
        tx.write("k", 1)
        assert tx.read("k", "absent") == "absent", "a read sees the board, not this block's writes"
    with board.transaction() as tx:
        assert tx.get("k") == board.get("k")
        tx.delete("k")
        tx.write("other", [1])
    with board.transaction() as tx:
        tx.write("k", "again")  # a put after a delete starts the key's life again at version 1
        tx.write("other", [2])
    assert [(e.key, e.version) for e in tx.entries] == [("k", 1), ("other", 2)]
    empty = board.transaction()
    with empty:
        assert empty.read("k") == "again"
    assert (empty.seq, empty.entries, board.last_seq) == (0, [], 3), "a block that changes nothing writes nothing"


def test_a_single_change_is_a_plain_record(board: Board, board_path: Path) -> None:
    """One change makes an ordinary put or delete record (spec 5.2), conditions still checked."""
    board.write("k", 1)
    with board.transaction() as tx:
        tx.expect("k", 1)
        tx.expect("free", 0)
        tx.write("k", 2)
    rec = read_log(board_path)[1][-1]
    assert (rec["op"], rec["key"], rec["value"], rec["version"]) == ("put", "k", 2, 2)
    assert [e.version for e in tx.entries] == [2]


# -- refused transactions change nothing ----------------------------------------------------------------

Refusal = Callable[[Board, Board, Callable[[], None]], None]


def stale_read(board: Board, other: Board, ready: Callable[[], None]) -> None:
    with board.transaction() as tx:
        a = tx.read("a")
        other.write("a", a + 100)  # somebody else got there between the read and the commit
        tx.write("a", a + 1)
        tx.write("b", 0)
        ready()


def stale_absence(board: Board, other: Board, ready: Callable[[], None]) -> None:
    with board.transaction() as tx:
        assert tx.get("new") is None
        other.write("new", "theirs")
        tx.write("new", "mine")
        tx.write("a", 0)
        ready()


def stale_delete(board: Board, other: Board, ready: Callable[[], None]) -> None:
    with board.transaction() as tx:
        assert tx.read("b") == 2
        other.delete("b")
        tx.write("b", 3)
        tx.write("a", 3)
        ready()


def wrong_expectation(board: Board, other: Board, ready: Callable[[], None]) -> None:
    with board.transaction() as tx:
        tx.expect("a", 2)
        tx.write("c", 1)
        tx.write("d", 1)
        ready()


def expected_absent(board: Board, other: Board, ready: Callable[[], None]) -> None:
    with board.transaction() as tx:
        tx.expect("b", 0)
        tx.write("c", 1)
        tx.write("d", 1)
        ready()


def delete_of_absent_key(board: Board, other: Board, ready: Callable[[], None]) -> None:
    with board.transaction() as tx:
        tx.write("a", 5)
        tx.delete("never")
        ready()


def changed_twice(board: Board, other: Board, ready: Callable[[], None]) -> None:
    ready()
    with board.transaction() as tx:
        tx.write("c", 1)
        tx.write("a", 1)
        tx.delete("a")


def written_twice(board: Board, other: Board, ready: Callable[[], None]) -> None:
    ready()
    with board.transaction() as tx:
        tx.write("a", 1)
        tx.write("a", 2)


def raised_in_block(board: Board, other: Board, ready: Callable[[], None]) -> None:
    ready()
    with board.transaction() as tx:
        tx.write("a", 1)
        tx.write("c", 1)
        raise KeyError("the caller's own error")


def not_json(board: Board, other: Board, ready: Callable[[], None]) -> None:
    ready()
    with board.transaction() as tx:
        tx.write("c", 1)
        tx.write("d", math.nan)


def bad_key(board: Board, other: Board, ready: Callable[[], None]) -> None:
    ready()
    with board.transaction() as tx:
        tx.write("c", 1)
        tx.write("a//b", 1)


def bad_expected_version(board: Board, other: Board, ready: Callable[[], None]) -> None:
    ready()
    with board.transaction() as tx:
        tx.write("c", 1)
        tx.expect("a", -1)


def committed_twice(board: Board, other: Board, ready: Callable[[], None]) -> None:
    tx = board.transaction()
    tx.write("c", 1)
    tx.write("d", 1)
    tx.commit()
    ready()
    tx.commit()


def written_after_commit(board: Board, other: Board, ready: Callable[[], None]) -> None:
    with board.transaction() as tx:
        tx.write("c", 1)
        tx.write("d", 1)
    ready()
    tx.write("e", 1)


def read_only(board: Board, other: Board, ready: Callable[[], None]) -> None:
    ready()
    with Board.open(board.path, read_only=True) as reader, reader.transaction() as tx:
        tx.write("a", tx.read("a") + 1)
        tx.write("c", 1)


REFUSALS: dict[str, tuple[Refusal, type[BaseException], str | None]] = {
    "stale-read": (stale_read, VersionConflict, "a"),
    "stale-absence": (stale_absence, VersionConflict, "new"),
    "stale-delete": (stale_delete, VersionConflict, "b"),
    "wrong-expectation": (wrong_expectation, VersionConflict, "a"),
    "expected-absent": (expected_absent, VersionConflict, "b"),
    "delete-of-absent-key": (delete_of_absent_key, KeyNotFound, "never"),
    "changed-twice": (changed_twice, InvalidValue, None),
    "written-twice": (written_twice, InvalidValue, None),
    "raised-in-block": (raised_in_block, KeyError, None),
    "not-json": (not_json, InvalidValue, None),
    "bad-key": (bad_key, InvalidKey, None),
    "bad-expected-version": (bad_expected_version, InvalidValue, None),
    "committed-twice": (committed_twice, InvalidValue, None),
    "written-after-commit": (written_after_commit, InvalidValue, None),
    "read-only": (read_only, ReadOnlyBoard, None),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_refused_transaction_changes_nothing_on_disk(board_path: Path, name: str) -> None:
    refusal, error, key = REFUSALS[name]
    with Board.init(board_path, author="setup") as setup:
        setup.write("a", 1)
        setup.write("b", 2)
    # Handles whose batches wait for close(): no background thread changes a file meanwhile.
    board = Board.open(board_path, author="me", flush_interval=3600)
    other = Board.open(board_path, author="other", flush_interval=3600)
    before: dict[str, bytes | None] = {}

    def ready() -> None:
        before.update(snapshot(board_path))

    try:
        with pytest.raises(error) as caught:
            refusal(board, other, ready)
        assert before, "the refusal did not take its snapshot"
        assert snapshot(board_path) == before, f"{name}: a refused transaction changed the board"
        if isinstance(caught.value, VersionConflict):
            assert caught.value.key == key
            assert caught.value.actual != caught.value.expected
        if isinstance(caught.value, KeyNotFound):
            assert caught.value.key == key
        log_before = before["log.jsonl"]
        assert log_before is not None
        assert (board_path / "log.jsonl").read_bytes() == log_before
    finally:
        other.close()
        board.close()
    with Board.open(board_path, read_only=True) as reader:  # and the board goes on as it was
        assert reader.last_seq == len(read_log(board_path)[1])


def test_a_conflict_names_its_key_and_versions(board: Board) -> None:
    board.write("x", 1)
    board.write("x", 2)
    with pytest.raises(VersionConflict) as caught, board.transaction() as tx:
        tx.expect("x", 1)
        tx.write("y", 1)
        tx.write("z", 1)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("x", 1, 2)
    assert board.keys() == ["x"]


# -- watchers and cursors ------------------------------------------------------------------------------


def drain(board: Board, prefix: str, since: int) -> list[Event]:
    with board.watch(prefix, since=since, timeout=0.05) as watcher:
        return list(watcher)


def test_watchers_see_the_matching_changes_of_a_transaction(board: Board) -> None:
    board.write("a/3", "old")
    board.write("b/2", "old")
    with board.transaction(author="t") as tx:
        tx.write("a/1", 1)
        tx.write("b/1", 2)
        tx.write("a/2", 3)
        tx.delete("a/3")
        tx.delete("b/2")
    board.write("a/after", 4)
    seq = tx.seq
    a_events = drain(board, "a/", 2)
    assert [(e.seq, e.op, e.key, e.value, e.version, e.txn) for e in a_events] == [
        (seq, "put", "a/1", 1, 1, True),
        (seq, "put", "a/2", 3, 1, True),
        (seq, "delete", "a/3", None, 0, True),
        (seq + 1, "put", "a/after", 4, 1, False),
    ]
    assert all(e.author == "t" and e.ts_text == tx.entries[0].ts_text for e in a_events[:3])
    assert [(e.key, e.op, e.txn) for e in drain(board, "b/", 2)] == [("b/1", "put", True), ("b/2", "delete", True)]
    assert [e.key for e in drain(board, "", 0)] == ["a/3", "b/2", "a/1", "b/1", "a/2", "a/3", "b/2", "a/after"]
    assert drain(board, "c/", 0) == []
    assert [e.key for e in drain(board, "a/2", 0)] == ["a/2"]
    # A live watcher too (created before the commit: since=None).
    with board.watch("b/", timeout=5) as live:
        with board.transaction() as tx2:
            tx2.write("a/9", 9)
            tx2.write("b/9", 9)
        event = next(live)
    assert (event.seq, event.key, event.txn) == (tx2.seq, "b/9", True)


def test_a_cursor_stays_before_a_transaction_until_its_events_are_handled(board: Board) -> None:
    board.write("q/0", 0)
    with board.transaction() as tx:
        tx.write("q/a", 1)
        tx.write("x/other", 1)
        tx.write("q/b", 2)
        tx.write("q/c", 3)
    board.write("q/stop", 4)
    with board.watch("q/", since=0, cursor="c", timeout=1) as watcher:
        assert next(watcher).key == "q/0"
        assert next(watcher).key == "q/a"  # q/0 is finished
        assert board.cursors()["c"] == 1
        watcher.commit()  # q/a is finished, q/b and q/c are not: the cursor stays at seq 2 - 1
        assert board.cursors()["c"] == 1
        assert next(watcher).key == "q/b"
        assert board.cursors()["c"] == 1
        assert next(watcher).key == "q/c"
        assert board.cursors()["c"] == 1
        watcher.commit()  # the last of the transaction
        assert board.cursors()["c"] == 2
        assert next(watcher).key == "q/stop"
    with board.watch("q/", since=0, cursor="c", timeout=0.05) as watcher:
        assert [e.key for e in watcher] == ["q/stop"]  # never committed: delivered again


@pytest.mark.parametrize(
    ("die_on", "die_after"),
    [("q/b", None), ("q/c", None), (None, "q/a"), (None, "q/b")],
    ids=["killed-receiving-2nd", "killed-receiving-3rd", "killed-after-1st", "killed-after-2nd"],
)
def test_a_consumer_killed_inside_a_transaction_gets_the_rest(
    board: Board, board_path: Path, tmp_path: Path, spawn: Spawn, die_on: str | None, die_after: str | None
) -> None:
    board.write("q/0", 0)
    with board.transaction() as tx:
        tx.write("q/a", 1)
        tx.write("x/other", 1)
        tx.write("q/b", 2)
        tx.write("q/c", 3)
    board.write("q/stop", 4)
    first, second = tmp_path / "run1.jsonl", tmp_path / "run2.jsonl"
    proc = spawn(cursor_consumer, str(board_path), "q/", "c", str(first), "q/stop", die_on, die_after)
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, proc.exitcode
    handled = [d["key"] for d in read_docs(first)]
    assert handled[:2] == ["q/0", "q/a"]
    # Spec 10.3: finishing an earlier event of the transaction moves the position to its seq - 1 only.
    assert board.cursors()["c"] == tx.seq - 1, "the cursor moved past a transaction not wholly handled"
    proc = spawn(cursor_consumer, str(board_path), "q/", "c", str(second), "q/stop", None, None)
    proc.join(60)
    assert proc.exitcode == 0
    again = read_docs(second)
    rest = [k for k in ("q/a", "q/b", "q/c") if k not in handled]
    assert set(rest) <= {d["key"] for d in again}, f"run 2 got {[d['key'] for d in again]}, missing {rest}"
    assert again[0]["seq"] == tx.seq, "the restart resumes at the transaction, not after it"
    assert [d["key"] for d in again][-1] == "q/stop"
    assert all(d["txn"] for d in again[:-1])
    assert board.cursors()["c"] == tx.seq + 1


# -- many processes ----------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_transfers_keep_the_total_at_every_seq(board_path: Path) -> None:
    """8 processes move units between 20 accounts (read two, write both, retry on conflict) while a
    ninth watches from seq 0 and checks the total after every seq whose events it has applied."""
    open_accounts(board_path)
    movers, n = 8, 100
    last_seq = 1 + movers * n
    jobs: list[Any] = [(mover, (str(board_path), seed, n, ACCOUNTS)) for seed in range(movers)]
    jobs.append((sum_watcher, (str(board_path), "acct/", TOTAL, last_seq)))
    results = run_jobs(jobs, timeout=150)
    seen = results[-1]
    assert seen["bad"] == [], f"the total moved at {seen['bad']}"
    assert (seen["last"], seen["checked"], seen["sizes"]) == (last_seq, last_seq, [2, ACCOUNTS])
    seqs = sorted(s for r in results[:-1] for s in r["seqs"])
    assert seqs == list(range(2, last_seq + 1)), "each commit has its own seq, and none is lost"
    records = assert_total_at_every_record(board_path)
    assert len(records) == last_seq
    with Board.open(board_path, read_only=True) as board:
        assert sum(board.read_prefix("acct/").values()) == TOTAL
        assert board.last_seq == last_seq


def test_sigkill_during_transactions_leaves_all_or_nothing(board_path: Path, spawn: Spawn) -> None:
    rng = random.Random(3)
    open_accounts(board_path)
    acked: list[int] = []
    for round_ in range(3):
        pipes: list[Connection] = []
        go = CTX.Event()
        procs = []
        for i in range(3):
            receive, send = CTX.Pipe(duplex=False)
            procs.append(spawn(mover_forever, str(board_path), round_ * 10 + i, ACCOUNTS, send, go))
            send.close()
            pipes.append(receive)
        for receive in pipes:
            assert receive.poll(60) and receive.recv()[0] == "ready"
        go.set()
        time.sleep(rng.uniform(0.05, 0.25))
        os.kill(procs[0].pid or 0, signal.SIGKILL)  # one dies mid-flight; the others go on after it
        time.sleep(rng.uniform(0.0, 0.1))
        for proc in procs[1:]:
            os.kill(proc.pid or 0, signal.SIGKILL)
        for proc, receive in zip(procs, pipes, strict=True):
            proc.join(30)
            assert proc.exitcode == -signal.SIGKILL
            while True:
                try:
                    message = receive.recv()
                except (EOFError, OSError):  # the end, or a message cut by the kill
                    break
                acked.append(message[1])
            receive.close()

        records = assert_total_at_every_record(board_path)
        in_log = {r["seq"] for r in records}
        assert set(acked) <= in_log, "an acknowledged transaction is not in the log"
        with Board.open(board_path, read_only=True) as reader:
            assert sum(reader.read_prefix("acct/").values()) == TOTAL
        with Board.open(board_path, author="survivor") as board:  # the next writer repairs a torn tail
            with board.transaction() as tx:
                tx.write(account(0), tx.read(account(0)) - 1)
                tx.write(account(1), tx.read(account(1)) + 1)
            assert sum(board.read_prefix("acct/").values()) == TOTAL
        assert read_log(board_path)[2] == b"", "the torn tail is still there"
        assert_total_at_every_record(board_path)
    assert len(acked) > 30, "the movers hardly committed anything before being killed"


def test_a_torn_transaction_record_is_no_transaction(board_path: Path) -> None:
    """Half a transaction line (a writer killed mid-append, by hand): readers and watchers see none of
    it, and the next writer cuts it and reuses its seq."""
    open_accounts(board_path)
    with Board.open(board_path, author="t") as board:
        whole = board.transaction()  # committed by hand, not by a block
        whole.write(account(0), START - 5)
        whole.write(account(1), START + 5)
        whole.commit()
    line = read_log(board_path)[1][-1]
    half = json.dumps({**line, "seq": 3}, separators=(",", ":")).encode()[:70]
    with open(board_path / "log.jsonl", "ab") as log:
        log.write(half)
    with Board.open(board_path, read_only=True) as reader:
        assert reader.last_seq == 2
        assert sum(reader.read_prefix("acct/").values()) == TOTAL
        assert [e.seq for e in drain(reader, "acct/", 1)] == [2, 2]
    with Board.open(board_path, author="next") as board, board.transaction() as tx:
        tx.write(account(2), tx.read(account(2)) - 1)
        tx.write(account(3), tx.read(account(3)) + 1)
    assert tx.seq == 3
    assert read_log(board_path)[2] == b""
    assert len(assert_total_at_every_record(board_path)) == 3

"""Crashes: a writer killed with SIGKILL at any moment, and a record torn by hand.

The promise under test: a write whose call returned is in the log, whatever happens next; the next
lock holder (a write, or repair()) leaves a board that check() finds consistent; readers never trip
over a half-written last line.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
from _workers import assert_entries_match_log, crash_writer, lock_holder, log_lines, log_records, snapshot

from blackboard import Board, LockTimeout

CTX = multiprocessing.get_context("spawn")


@dataclass
class Child:
    """A crash_writer child, started and waiting for `go`."""

    proc: SpawnProcess
    conn: Connection
    go: Event
    acks: list[tuple[str, int, str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, path: Path, seed: int) -> Child:
        receive, send = CTX.Pipe(duplex=False)
        go = CTX.Event()
        proc = CTX.Process(target=crash_writer, args=(str(path), send, go, seed), daemon=True)
        proc.start()
        send.close()  # ours: the child's end closing is how we see EOF
        return cls(proc, receive, go)

    def receive(self, timeout: float) -> bool:
        """Take one message (an acknowledged change) if one comes within `timeout`; False at EOF."""
        if not self.conn.poll(timeout):
            return True
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            return False
        if message[0] != "ready":
            self.acks.append(message)
        return True

    def wait_ready(self) -> None:
        assert self.conn.poll(60), "the child did not open the board"
        assert self.conn.recv()[0] == "ready"

    def kill_after(self, delay: float) -> None:
        """Let it write for `delay` seconds (reading its acks meanwhile), then SIGKILL it."""
        self.go.set()
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if not self.receive(left):
                break
        os.kill(self.proc.pid or 0, signal.SIGKILL)
        self.proc.join(30)
        assert self.proc.exitcode == -signal.SIGKILL, self.proc.exitcode
        while True:  # drain what it acknowledged before dying, up to EOF
            assert self.conn.poll(30), "no end of file from a dead child's pipe"
            if not self.receive(0):
                break
        self.conn.close()

    def reap(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


def assert_acknowledged_writes_kept(path: Path, acks: list[tuple[str, int, str, Any]]) -> None:
    by_seq = {r["seq"]: r for r in log_records(path)}
    for op, seq, key, value in acks:
        assert seq in by_seq, f"acknowledged seq {seq} is not in the log"
        rec = by_seq[seq]
        assert (rec["op"], rec["key"], rec["value"]) == (op, key, value), rec


def crash_many(path: Path, kills: int, seed: int) -> int:
    """Kill `kills` writers one after the other; check the board after each. Returns writes acknowledged."""
    rng = random.Random(seed)
    Board.init(path).close()
    # Children take ~0.2 s to start, so a few are kept starting ahead (they only open the board,
    # then wait for `go`): the kills then come as fast as the checks allow.
    ahead: deque[Child] = deque()
    seeds = itertools.count(seed * 1_000_000)
    acknowledged = 0
    try:
        for round_ in range(kills):
            while len(ahead) < 3:
                ahead.append(Child.start(path, next(seeds)))
            child = ahead[0]
            child.wait_ready()
            child.kill_after(rng.choice([0.0, rng.uniform(0, 0.005), rng.uniform(0, 0.03)]))
            ahead.popleft()
            acknowledged += len(child.acks)

            # The next lock holder repairs whatever the kill left: a write, or repair().
            with Board.open(path, author="survivor") as board:
                if round_ % 2:
                    assert board.repair().repaired
                else:
                    board.write("survivor", round_)
            assert_acknowledged_writes_kept(path, child.acks)
            with Board.open(path, read_only=True) as board:
                report = board.check()
                assert report.ok, (round_, report.problems())
            with Board.open(path) as board:
                assert board.check().ok
            assert_entries_match_log(path)
    finally:
        for child in ahead:
            child.reap()
    return acknowledged


@pytest.mark.timeout(120)
def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    """50 writers killed with SIGKILL mid-flight: no acknowledged write lost, the board consistent."""
    acknowledged = crash_many(tmp_path / "b", kills=50, seed=1)
    assert acknowledged > 50, "the children hardly wrote anything before being killed: the test is not testing"


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_sigkill_at_random_moments_stress(tmp_path: Path) -> None:
    crash_many(tmp_path / "b", kills=500, seed=2)


def test_killed_lock_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "b"
    Board.init(path).close()
    receive, send = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=lock_holder, args=(str(path), send), daemon=True)
    proc.start()
    send.close()
    try:
        assert receive.poll(60) and receive.recv() == "locked"
        with Board.open(path, lock_timeout=0.2) as board, pytest.raises(LockTimeout):
            board.write("k", 1)
        os.kill(proc.pid or 0, signal.SIGKILL)
        proc.join(30)
        with Board.open(path, lock_timeout=5) as board:
            started = time.monotonic()
            assert board.write("k", 1).seq == 1
            assert time.monotonic() - started < 1, "the dead holder's lock was not released"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receive.close()


# -- a torn record, by hand ----------------------------------------------------------------------------

HALF_RECORD = b'{"seq":4,"op":"put","key":"torn","value":{"half":'


@pytest.fixture
def torn(board_path: Path) -> Path:
    """A board of 3 records whose log ends in half a 4th (a writer killed mid-append)."""
    with Board.init(board_path, author="w") as board:
        board.write("a", 1)
        board.write("b", 2)
        board.write("a", 3)
    with open(board_path / "log.jsonl", "ab") as log:
        log.write(HALF_RECORD)
    return board_path


def test_readers_ignore_a_torn_tail(torn: Path) -> None:
    before = snapshot(torn)
    for read_only in (True, False):
        with Board.open(torn, read_only=read_only) as board:
            assert board.last_seq == 3
            assert board.read("a") == 3
            assert board.get("torn") is None
            assert board.keys() == ["a", "b"]
            assert board.read_prefix("") == {"a": 3, "b": 2}
            assert [e.seq for e in board.history("a")] == [1, 3]
    assert snapshot(torn) == before, "a reader changed the log"


def test_check_reports_a_torn_tail(torn: Path) -> None:
    before = snapshot(torn)
    with Board.open(torn) as board:
        report = board.check()
        assert report.torn_tail_bytes == len(HALF_RECORD)
        assert not report.ok
        assert any("incomplete record" in p for p in report.problems())
        assert (report.last_seq, report.keys) == (3, 2)
    with Board.open(torn, read_only=True) as reader:  # it cannot take the lock, but the tail stays torn
        assert reader.check().torn_tail_bytes == len(HALF_RECORD)
    assert snapshot(torn) == before, "check() changed something"


def test_next_write_repairs_a_torn_tail(torn: Path) -> None:
    with Board.open(torn, read_only=True) as reader:
        assert reader.last_seq == 3  # it stopped at the torn line's start
        with Board.open(torn) as writer:
            entry = writer.write("c", "after")
            assert entry.seq == 4  # the torn record was never committed: its seq is free
        assert reader.read("c") == "after"  # and it reads the repaired log from where it stopped
        assert reader.last_seq == 4
    data = (torn / "log.jsonl").read_bytes()
    assert data.endswith(b"\n")
    assert HALF_RECORD not in data
    records = log_records(torn)  # every line parses, seqs gapless
    assert [r["key"] for r in records] == ["a", "b", "a", "c"]
    with Board.open(torn) as board:
        assert board.check().ok
    assert_entries_match_log(torn)


def test_repair_cuts_a_torn_tail(torn: Path) -> None:
    with Board.open(torn) as board:
        report = board.repair()
        assert report.repaired
        assert report.torn_tail_bytes == len(HALF_RECORD)
        assert board.check().ok
        assert board.repair().torn_tail_bytes == 0
    assert [json.loads(line) for line in log_lines(torn)][-1]["seq"] == 3
    assert_entries_match_log(torn)


def test_a_torn_header_is_repaired_too(board_path: Path) -> None:
    Board.init(board_path).close()
    (board_path / "log.jsonl").write_bytes(b'{"blackboard_log":1,"compac')  # killed while creating it
    with Board.open(board_path) as board:
        assert board.last_seq == 0
        assert board.write("a", 1).seq == 1
    assert [r["key"] for r in log_records(board_path)] == ["a"]

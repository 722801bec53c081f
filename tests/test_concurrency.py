"""Several processes on one board: compare-and-set is exact, seqs are gapless, entry files end right.

Children are spawned (not forked), meet at a barrier to start together, and are always reaped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from _workers import (
    Job,
    assert_entries_match_log,
    cas_incrementer,
    counter_reader,
    distinct_writer,
    init_and_write,
    log_lines,
    run_jobs,
)

from blackboard import Board


def assert_log_is_sound(board: Path) -> list[dict[str, Any]]:
    """Every line parses; seqs are unique and gapless from 1; returns the records."""
    lines = log_lines(board)
    assert "blackboard_log" in json.loads(lines[0])
    records = [json.loads(line) for line in lines[1:]]
    seqs = [r["seq"] for r in records]
    assert len(set(seqs)) == len(seqs), "a seq was used twice"
    assert seqs == list(range(1, len(records) + 1)), "seqs are not gapless from 1, in file order"
    return records


def run_counter(path: Path, lock: Literal["flock", "soft"], processes: int, increments: int) -> None:
    with Board.init(path, lock=lock) as board:
        board.write("counter", 0)
    jobs: list[Job] = [(cas_incrementer, (str(path), increments)) for _ in range(processes)]
    jobs.append((counter_reader, (str(path), processes * increments)))
    *writers, reader = run_jobs(jobs, timeout=110)
    total = processes * increments

    with Board.open(path) as board:
        entry = board.get("counter")
        assert entry is not None
        assert (entry.value, entry.version) == (total, total + 1)
        assert board.check().ok
    records = assert_log_is_sound(path)
    assert len(records) == total + 1  # a conflict writes nothing
    assert [r["value"] for r in records] == list(range(total + 1))
    # Each writer's successful seqs are its own, increasing, and together they are every increment.
    mine = [s for w in writers for s in w["seqs"]]
    assert sorted(mine) == list(range(2, total + 2))
    for w in writers:
        assert w["seqs"] == sorted(w["seqs"])
        assert {records[s - 1]["author"] for s in w["seqs"]} == {records[w["seqs"][0] - 1]["author"]}
    assert reader["last"] == total + 1
    assert_entries_match_log(path)


@pytest.mark.timeout(120)
def test_compare_and_set_counter(tmp_path: Path) -> None:
    """4 processes x 500 compare-and-set increments of one counter (and a reader watching it)."""
    run_counter(tmp_path / "b", "flock", 4, 500)


@pytest.mark.timeout(120)
def test_compare_and_set_counter_soft_lock(tmp_path: Path) -> None:
    """The same with the soft lock that network filesystems use."""
    run_counter(tmp_path / "b", "soft", 3, 60)


@pytest.mark.stress
@pytest.mark.timeout(600)
@pytest.mark.parametrize("lock", ["flock", "soft"])
def test_compare_and_set_counter_stress(tmp_path: Path, lock: Literal["flock", "soft"]) -> None:
    run_counter(tmp_path / "b", lock, 8, 2000 if lock == "flock" else 300)


def run_distinct(path: Path, processes: int, per_process: int) -> None:
    Board.init(path).close()
    prefixes = [f"p{i}" for i in range(processes)]
    results = run_jobs([(distinct_writer, (str(path), p, per_process)) for p in prefixes], timeout=110)

    records = assert_log_is_sound(path)
    assert len(records) == processes * per_process
    seqs = sorted(s for r in results for s in r["seqs"])
    assert seqs == list(range(1, processes * per_process + 1))
    state = assert_entries_match_log(path)
    assert len(state) == processes * per_process
    for prefix in prefixes:
        for i in range(per_process):
            doc = state[f"{prefix}/{i}"]
            assert (doc["value"], doc["version"], doc["author"]) == ({"by": prefix, "i": i}, 1, prefix)
    with Board.open(path) as board:
        assert board.check().ok
        assert len(board.keys()) == processes * per_process
        for prefix in prefixes:
            assert len(board.keys(prefix + "/")) == per_process


@pytest.mark.timeout(120)
def test_distinct_keys(tmp_path: Path) -> None:
    """4 processes each write 300 keys of their own at the same time."""
    run_distinct(tmp_path / "b", 4, 300)


@pytest.mark.stress
@pytest.mark.timeout(600)
def test_distinct_keys_stress(tmp_path: Path) -> None:
    run_distinct(tmp_path / "b", 8, 5000)


@pytest.mark.timeout(120)
def test_concurrent_init(tmp_path: Path) -> None:
    """4 processes create the same board at the same moment, then each writes: one board, 4 writes."""
    path = tmp_path / "b"
    seqs = run_jobs([(init_and_write, (str(path), f"p{i}")) for i in range(4)], timeout=110)
    assert sorted(seqs) == [1, 2, 3, 4]
    records = assert_log_is_sound(path)
    assert sorted(r["key"] for r in records) == ["by/p0", "by/p1", "by/p2", "by/p3"]
    assert len(assert_entries_match_log(path)) == 4

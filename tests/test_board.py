"""The Board API, call by call, on a real board directory."""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _workers import assert_entries_match_log, log_records, snapshot

from blackboard import (
    Board,
    Entry,
    Event,
    KeyNotFound,
    LockTimeout,
    LogGone,
    NotABoard,
    ReadOnlyBoard,
    Report,
    VersionConflict,
)
from blackboard.core.keys import key_to_relpath

# -- init and open -----------------------------------------------------------------------------------


def test_init_creates_the_layout(board_path: Path) -> None:
    with Board.init(board_path) as board:
        assert board.path == board_path
        assert board.last_seq == 0
        assert board.keys() == []
    assert {p.name for p in board_path.iterdir()} == {
        "board.json",
        "log.jsonl",
        "lock",
        "materialized",
        "materialize.lock",
        "entries",
        "cursors",
        "tmp",
        "archive",
    }
    config = json.loads((board_path / "board.json").read_bytes())
    assert (config["format"], config["version"], config["lock"]) == ("blackboard", 3, "flock")
    assert log_records(board_path) == []


def test_init_is_idempotent(board_path: Path) -> None:
    with Board.init(board_path, max_value_bytes=1000) as board:
        board.write("k", 1)
    config = (board_path / "board.json").read_bytes()
    # A second init keeps the board, its data and its settings (the new arguments lose).
    with Board.init(board_path, max_value_bytes=5) as again:
        assert again.config.max_value_bytes == 1000
        assert again.read("k") == 1
        again.write("k", "longer than five bytes")
    assert (board_path / "board.json").read_bytes() == config
    assert [r["seq"] for r in log_records(board_path)] == [1, 2]


def test_init_settings_are_kept(board_path: Path) -> None:
    with Board.init(board_path, lock="soft", max_value_bytes=123, fsync=True) as board:
        board.write("k", [1])
        assert board.read("k") == [1]
    with Board.open(board_path) as board:
        assert (board.config.lock, board.config.max_value_bytes, board.config.fsync) == ("soft", 123, True)


def test_init_on_a_file_is_not_a_board(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("hello")
    with pytest.raises(NotABoard, match="not a directory"):
        Board.init(path)
    assert path.read_text() == "hello"


def test_open_a_plain_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    before = snapshot(tmp_path)
    with pytest.raises(NotABoard, match=r"no board\.json") as info:
        Board.open(tmp_path)
    assert info.value.path == str(tmp_path)
    assert snapshot(tmp_path) == before


def test_open_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(NotABoard, match="no such directory"):
        Board.open(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("version", [5, 99])
def test_open_a_newer_format(board_path: Path, version: int) -> None:
    Board.init(board_path).close()
    config = json.loads((board_path / "board.json").read_bytes())
    config["version"] = version
    (board_path / "board.json").write_text(json.dumps(config))
    with pytest.raises(NotABoard, match=rf"format {version} is newer.*upgrade"):
        Board.open(board_path)
    with pytest.raises(NotABoard):
        Board.init(board_path)  # init does not "fix" a board it cannot read either


def test_open_sees_what_init_wrote(board_path: Path) -> None:
    with Board.init(board_path) as board:
        board.write("a", 1)
        with Board.open(board_path) as other:
            assert other.read("a") == 1
            other.write("a", 2)
        assert board.read("a") == 2  # reads are never stale: refreshed from the log on every call
    with Board.open(board_path) as board:
        assert repr(board) == f"Board({str(board_path)!r})"


# -- write, read, get --------------------------------------------------------------------------------


def test_write_returns_the_entry(board: Board) -> None:
    before = datetime.now(UTC)
    first = board.write("tasks/1", {"state": "open"})
    second = board.write("tasks/1", {"state": "done"})
    assert isinstance(first, Entry)
    assert (first.key, first.value, first.version, first.seq, first.author) == (
        "tasks/1",
        {"state": "open"},
        1,
        1,
        "tester",
    )
    assert (second.version, second.seq) == (2, 2)
    assert first.ts.tzinfo is not None and first.ts.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= first.ts <= second.ts <= datetime.now(UTC) + timedelta(seconds=1)
    assert board.get("tasks/1") == second
    assert board.last_seq == 2


def test_read_and_get_of_a_missing_key(board: Board) -> None:
    assert board.read("nope") is None
    assert board.read("nope", default=7) == 7
    assert board.get("nope") is None
    board.write("yes", None)
    assert board.read("yes", default=7) is None  # a stored null is a value, not a miss
    entry = board.get("yes")
    assert entry is not None and entry.value is None


def test_versions_count_per_key_seqs_count_per_board(board: Board) -> None:
    seqs = [board.write(k, i).seq for i, k in enumerate(["a", "b", "a", "c", "a"])]
    assert seqs == [1, 2, 3, 4, 5]
    versions = {k: e.version for k in "abc" if (e := board.get(k)) is not None}
    assert versions == {"a": 3, "b": 1, "c": 1}


def test_keys_read_prefix_and_entries(board: Board) -> None:
    for key in ["b", "a/2", "a/1", "ab", "a/1/x", "c"]:
        board.write(key, key.upper())
    board.delete("c")
    assert board.keys() == ["a/1", "a/1/x", "a/2", "ab", "b"]
    assert board.keys("a/") == ["a/1", "a/1/x", "a/2"]
    assert board.keys("a") == ["a/1", "a/1/x", "a/2", "ab"]  # a plain string prefix
    assert board.keys("zz") == []
    assert board.keys("c") == []
    assert board.read_prefix("a/") == {"a/1": "A/1", "a/1/x": "A/1/X", "a/2": "A/2"}
    assert list(board.read_prefix("")) == board.keys()
    entries = list(board.entries("a/1"))
    assert [(e.key, e.value, e.version) for e in entries] == [("a/1", "A/1", 1), ("a/1/x", "A/1/X", 1)]
    assert all(isinstance(e, Entry) for e in entries)
    assert [e.key for e in board.entries()] == board.keys()


def test_entries_is_a_snapshot(board: Board) -> None:
    board.write("a", 1)
    board.write("b", 2)
    entries = board.entries()
    board.write("a", 10)
    board.delete("b")
    assert [(e.key, e.value) for e in entries] == [("a", 1), ("b", 2)]


# -- delete and history ------------------------------------------------------------------------------


def test_delete(board: Board) -> None:
    board.write("k", "v1")
    board.write("k", "v2")
    deleted = board.delete("k", author="cleaner")
    assert (deleted.key, deleted.value, deleted.version, deleted.seq, deleted.author) == ("k", None, 0, 3, "cleaner")
    assert board.read("k", "gone") == "gone"
    assert board.get("k") is None
    assert board.keys() == []
    # The next put starts the key's life again at version 1.
    again = board.write("k", "v3")
    assert (again.version, again.seq) == (1, 4)
    assert board.write("k", "v4", expect_version=1).version == 2


def test_delete_of_a_missing_key(board: Board) -> None:
    board.write("other", 1)
    size = os.path.getsize(board.path / "log.jsonl")
    with pytest.raises(KeyNotFound) as info:
        board.delete("missing")
    assert info.value.key == "missing"
    board.write("k", 1)
    board.delete("k")
    size = os.path.getsize(board.path / "log.jsonl")
    with pytest.raises(KeyNotFound):
        board.delete("k")  # deleted already
    assert os.path.getsize(board.path / "log.jsonl") == size
    assert board.last_seq == 3


def test_delete_with_expect_version(board: Board) -> None:
    board.write("k", 1)
    board.write("k", 2)
    with pytest.raises(VersionConflict) as info:
        board.delete("k", expect_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert board.read("k") == 2
    assert board.delete("k", expect_version=2).version == 0


def test_history(board: Board) -> None:
    board.write("k", "a", author="alice")
    board.write("other", 0)
    board.write("k", "b", author="bob")
    board.delete("k")
    board.write("k", "c")
    events = board.history("k")
    assert all(isinstance(e, Event) for e in events)
    assert [(e.seq, e.op, e.value, e.version, e.author) for e in events] == [
        (1, "put", "a", 1, "alice"),
        (3, "put", "b", 2, "bob"),
        (4, "delete", None, 0, "tester"),
        (5, "put", "c", 1, "tester"),
    ]
    assert all(e.key == "k" and not e.compacted for e in events)
    assert board.history("never") == []
    entry = events[-1].to_entry()
    assert entry == board.get("k")


# -- compare-and-set ---------------------------------------------------------------------------------


def test_expect_version_zero_means_absent(board: Board) -> None:
    assert board.write("lock/job", "me", expect_version=0).version == 1
    size = os.path.getsize(board.path / "log.jsonl")
    with pytest.raises(VersionConflict) as info:
        board.write("lock/job", "you", expect_version=0)
    assert (info.value.key, info.value.expected, info.value.actual) == ("lock/job", 0, 1)
    assert os.path.getsize(board.path / "log.jsonl") == size
    assert board.read("lock/job") == "me"
    board.delete("lock/job")
    assert board.write("lock/job", "you", expect_version=0).version == 1  # absent again


def test_expect_version_mismatch_writes_nothing(board: Board) -> None:
    board.write("k", 1)
    board.write("k", 2)
    board.flush()
    before = snapshot(board.path)
    for expected in (1, 3, 0, 100):
        with pytest.raises(VersionConflict) as info:
            board.write("k", "new", expect_version=expected)
        assert (info.value.key, info.value.expected, info.value.actual) == ("k", expected, 2)
        assert "version conflict on 'k'" in str(info.value)
    with pytest.raises(VersionConflict) as absent:
        board.write("missing", 1, expect_version=1)
    assert absent.value.actual == 0
    assert snapshot(board.path) == before
    assert board.last_seq == 2
    assert board.write("k", 3, expect_version=2).version == 3


# -- author ------------------------------------------------------------------------------------------


def test_author_from_the_handle_and_per_write(board_path: Path) -> None:
    with Board.init(board_path, author="agent-7") as board:
        assert board.author == "agent-7"
        assert board.write("a", 1).author == "agent-7"
        assert board.write("a", 2, author="someone else").author == "someone else"
        assert board.delete("a", author="janitor").author == "janitor"
        assert [e.author for e in board.history("a")] == ["agent-7", "someone else", "janitor"]
    assert [r["author"] for r in log_records(board_path)] == ["agent-7", "someone else", "janitor"]


def test_author_from_the_environment(board_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKBOARD_AUTHOR", "from-env")
    with Board.init(board_path) as board:
        assert board.write("a", 1).author == "from-env"
    with Board.open(board_path, author="explicit") as board:  # the argument wins
        assert board.write("a", 2).author == "explicit"


def test_author_default_is_user_at_host(board_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLACKBOARD_AUTHOR", raising=False)
    with Board.init(board_path) as board:
        assert board.author == f"{getpass.getuser()}@{socket.gethostname()}"
        assert board.write("a", 1).author == board.author


# -- entry files, flush, check, repair ---------------------------------------------------------------


def test_entry_files_after_close(board_path: Path) -> None:
    keys = ["plain", "dir/sub/k", ".hidden", "x.json", "x.json/y", "sp ace/é/日本", "%2F", "a/b/c/d/e/f"]
    with Board.init(board_path, author="w") as board:
        for round_ in range(3):
            for key in keys:
                board.write(key, {"round": round_, "key": key})
        board.delete("dir/sub/k")
        board.delete("x.json")
        board.write("x.json", "back")  # deleted, then put again
    state = assert_entries_match_log(board_path)
    assert sorted(state) == sorted(set(keys) - {"dir/sub/k"})
    assert not (board_path / "entries" / "dir").exists(), "a delete left an empty directory behind"
    doc = json.loads((board_path / "entries" / key_to_relpath("x.json")).read_bytes())
    assert (doc["value"], doc["version"]) == ("back", 1)
    with Board.open(board_path) as board:
        report = board.check()
        assert isinstance(report, Report)
        assert report.ok, report.problems()
        assert (report.last_seq, report.keys, report.watermark) == (len(keys) * 3 + 3, len(keys) - 1, report.last_seq)


def test_flush(board_path: Path) -> None:
    # A background flush that never comes first: this test counts what flush() itself does.
    board = Board.init(board_path, flush_interval=3600)
    board.write("a", 1)
    board.write("b", 2)
    board.write("a", 3)
    board.flush()  # the background flush may or may not have run yet; after this it has
    assert board.flush() == 0  # nothing left to do
    assert json.loads((board.path / "entries" / "a.json").read_bytes())["value"] == 3
    board.delete("b")
    assert board.flush() == 1
    assert not (board.path / "entries" / "b.json").exists()
    assert (board.path / "materialized").read_text().strip() == "4"
    board.close()


def test_entry_files_follow_in_the_background(board_path: Path) -> None:
    with Board.init(board_path, flush_interval=0.01) as board:
        board.write("a", 1)
        deadline = time.monotonic() + 10
        while not (board_path / "entries" / "a.json").exists():
            assert time.monotonic() < deadline, "the background flush never wrote the entry file"
            time.sleep(0.01)
        assert board.flush_error is None


def test_check_counts_pending_keys_as_consistent(board: Board) -> None:
    for i in range(20):
        board.write(f"k/{i}", i)
    report = board.check()  # whether or not the background flush ran yet
    assert report.ok, report.problems()
    assert (report.last_seq, report.keys) == (20, 20)


def test_check_and_repair_find_and_fix_damage(board: Board) -> None:
    for key in ["a", "b", "c", "d/e"]:
        board.write(key, key)
    board.flush()
    entries = board.path / "entries"
    (entries / "a.json").write_text('{"key": "a", "value": "tampered"}')
    (entries / "b.json").unlink()
    (entries / "zombie.json").write_text("{}")
    (entries / "d" / "junk.txt").write_text("x")
    report = board.check()
    assert not report.ok
    assert (report.stale, report.missing, sorted(report.extra)) == (["a"], ["b"], ["d/junk.txt", "zombie.json"])
    problems = "\n".join(report.problems())
    assert "stale: a" in problems and "missing: b" in problems and "zombie.json" in problems
    assert board.check().stale == ["a"], "check changed something"
    fixed = board.repair()
    assert fixed.repaired
    assert board.check().ok
    board.close()
    assert_entries_match_log(board.path)


def test_check_wants_each_entry_file_under_its_own_name(board: Board) -> None:
    """A file whose name decodes to a live key but is not that key's path (here: written by hand)
    does not stand in for the real entry file: `cat entries/c.json` must work after repair()."""
    board.write("a/b", 1)
    board.write("c", 2)
    board.flush()
    entries = board.path / "entries"
    (entries / "a" / "b.json").rename(entries / "a%2Fb.json")  # decodes to "a/b"
    (entries / "c.json").rename(entries / "%63.json")  # decodes to "c"
    report = board.check()
    assert sorted(report.missing) == ["a/b", "c"], report
    assert sorted(report.extra) == ["%63.json", "a%2Fb.json"], report
    board.repair()
    assert board.check().ok
    assert json.loads((entries / "a" / "b.json").read_bytes())["value"] == 1
    assert json.loads((entries / "c.json").read_bytes())["value"] == 2
    assert not (entries / "%63.json").exists()


def test_exit_without_close_still_writes_entry_files(board_path: Path) -> None:
    """A process that forgets close() (or is ended by sys.exit) leaves entry files up to date."""
    Board.init(board_path).close()
    code = (
        "import sys; from blackboard import Board; "
        f"b = Board.open({str(board_path)!r}, flush_interval=3600); "
        "[b.write(f'k/{i}', i) for i in range(50)]; b.delete('k/7'); sys.exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    state = assert_entries_match_log(board_path)
    assert len(state) == 49


def test_close_is_idempotent_and_final(board: Board) -> None:
    board.write("a", 1)
    board.close()
    board.close()
    with pytest.raises(ReadOnlyBoard, match="closed"):
        board.write("a", 2)
    with Board.open(board.path) as fresh:
        assert fresh.read("a") == 1


def test_context_manager_closes(board_path: Path) -> None:
    with Board.init(board_path) as board:
        board.write("a", 1)
    assert (board_path / "entries" / "a.json").exists()
    with pytest.raises(ReadOnlyBoard):
        board.write("b", 1)


def test_last_seq_follows_other_handles(board: Board) -> None:
    with Board.open(board.path, read_only=True) as reader:
        assert reader.last_seq == 0
        board.write("a", 1)
        board.write("a", 2)
        assert reader.last_seq == 2
        assert reader.read("a") == 2


def test_lock_timeout(board: Board) -> None:
    """A writer that cannot take the lock in time says which lock, and writes nothing."""
    board.write("a", 1)
    holder = os.open(board.path / "lock", os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another open file description: excludes this process too
        with Board.open(board.path, lock_timeout=0.2) as blocked:
            started = time.monotonic()
            with pytest.raises(LockTimeout) as info:
                blocked.write("a", 2)
            assert 0.15 <= time.monotonic() - started < 5
            assert info.value.lock_path == str(board.path / "lock")
            assert info.value.timeout == 0.2
            assert blocked.read("a") == 1  # reads never take the writer lock
    finally:
        os.close(holder)
    assert [r["seq"] for r in log_records(board.path)] == [1]
    assert board.write("a", 3).seq == 2


# -- threads -----------------------------------------------------------------------------------------


def test_threads_share_one_handle(board: Board) -> None:
    n_threads, per_thread = 8, 150
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        try:
            barrier.wait(10)
            seqs = []
            for i in range(per_thread):
                entry = board.write(f"t{t}/{i % 10}", i)
                seqs.append(entry.seq)
            results[t] = seqs
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    all_seqs = sorted(s for seqs in results.values() for s in seqs)
    assert all_seqs == list(range(1, n_threads * per_thread + 1)), "seqs are not unique and gapless"
    for seqs in results.values():
        assert seqs == sorted(seqs)
    assert board.last_seq == n_threads * per_thread
    for t in range(n_threads):
        entry = board.get(f"t{t}/9")
        assert entry is not None and (entry.value, entry.version) == (per_thread - 1, per_thread // 10)
    board.close()
    assert len(assert_entries_match_log(board.path)) == n_threads * 10


def test_threads_compare_and_set_on_one_handle(board: Board) -> None:
    board.write("counter", 0)
    n_threads, per_thread = 4, 100
    errors: list[BaseException] = []

    def work() -> None:
        try:
            done = 0
            while done < per_thread:
                entry = board.get("counter")
                assert entry is not None
                try:
                    board.write("counter", entry.value + 1, expect_version=entry.version)
                    done += 1
                except VersionConflict:
                    pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert board.read("counter") == n_threads * per_thread


def test_check_while_another_thread_writes(board_path: Path) -> None:
    """check() and write() on one handle from two threads: neither waits out the lock timeout."""
    errors: list[BaseException] = []
    stop = threading.Event()
    with Board.init(board_path, lock_timeout=3) as board:

        def write() -> None:
            try:
                for i in range(1500):
                    board.write(f"k/{i % 10}", i)
            except BaseException as exc:
                errors.append(exc)
            finally:
                stop.set()

        def check() -> None:
            try:
                while not stop.is_set():
                    board.check()
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        threads = [threading.Thread(target=write), threading.Thread(target=check)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors  # a LockTimeout here: the two calls took their locks in opposite orders
        assert board.check().ok


def test_an_interrupt_between_append_and_index_never_reuses_a_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C right after the record reached the log (injected here): the next write takes the next seq."""
    from blackboard.core.index import Index

    board = Board.init(tmp_path / "b")
    board.write("k", 1)
    real_add = Index.add

    def interrupted(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(Index, "add", real_add)
        raise KeyboardInterrupt

    monkeypatch.setattr(Index, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        board.write("k", 2)
    assert board.write("k", 3).seq == 3
    assert [e.seq for e in board.history("k")] == [1, 2, 3]
    assert board.read("k") == 3
    board.close()


def test_a_deleted_log_is_noticed_by_the_next_write(board_path: Path) -> None:
    """Issue 8's reproduction: `rm BOARD/log.jsonl` under a running writer. The writer used to go on
    appending to the unlinked file and acknowledge writes that are gone; its next write now fails."""
    board = Board.init(board_path)
    board.write("k", 1)
    (board_path / "log.jsonl").unlink()
    with pytest.raises(LogGone):
        board.write("k", 2)
    with pytest.raises(LogGone):
        board.read("k")
    with pytest.raises(LogGone):
        board.close()  # it cannot bring entry files up to a log that is gone: it says so
    assert not (board_path / "log.jsonl").exists()


def test_check_counts_a_delete_after_the_watermark_as_pending(board_path: Path) -> None:
    """Issue 8: `check` reported a delete not yet applied to entry files (seq above the watermark)
    as "entry file for no live key", exit 6, though spec 7.1 calls it pending."""
    Board.init(board_path).close()
    code = (
        "import os, sys, blackboard as x; b = x.Board.open(sys.argv[1]); b.write('k', 1); b.flush();"
        " b.delete('k'); os._exit(0)"  # killed before the batch that removes the entry file
    )
    subprocess.run([sys.executable, "-c", code, str(board_path)], check=True, timeout=60)
    assert (board_path / "entries" / "k.json").exists()
    with Board.open(board_path, read_only=True) as board:
        report = board.check()
    assert report.ok, report.problems()
    with Board.open(board_path) as board:
        board.flush()
    assert not (board_path / "entries" / "k.json").exists()

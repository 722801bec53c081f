"""`check` is exact (issue 8, spec 7.3): pending changes above the watermark are no problem, every true
inconsistency comes with its key, seq and (when known) line, and it is a read that works on a board
this process cannot write (another user's files, a read-only mount, an immutable log).

Every board here is made by real processes: a writer killed with os._exit before its entry files
caught up leaves real pending changes behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from _users import (
    other_user,
    read_only_everywhere,
)

from blackboard import Board
from blackboard.core.entries import Report
from blackboard.core.keys import key_to_relpath

TIMEOUT = 60
TORN = b'{"seq":7,"op":"put","key":"z","val'

#: Run `blackboard check ARGS` as another user: switch to uid argv[1] after importing everything the
#: command needs (the interpreter's own files may be out of that user's reach), then run the CLI.
AS_USER = """
import os, sys
import encodings.ascii, encodings.latin_1, encodings.utf_8, logging, pwd, socket, textwrap
import blackboard.cli.admin, blackboard.cli.base, blackboard.core.maintain
uid = int(sys.argv[1])
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
from blackboard.cli.base import cli
cli.main(["--board", sys.argv[2], "check", *sys.argv[3:]], prog_name="blackboard")
"""


def run_check(board: Path, *args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
    if uid is None:
        cmd = [sys.executable, "-m", "blackboard", "--board", str(board), "check", *args]
    else:
        cmd = [sys.executable, "-c", AS_USER, str(uid), str(board), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def check_json(board: Path, *, uid: int | None = None, code: int = 6) -> dict[str, Any]:
    proc = run_check(board, "--json", uid=uid)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr == ""
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def killed_writer(board: Path, code: str) -> None:
    """Run `code` (with `b`, an open handle) in a process that then dies before its next batch."""
    script = f"import os, sys, blackboard as x\nb = x.Board.open(sys.argv[1])\n{code}\nos._exit(0)\n"
    subprocess.run([sys.executable, "-c", script, str(board)], check=True, timeout=TIMEOUT)


def snapshot(root: Path) -> dict[str, object]:
    """Every file (its bytes) and directory (None) under `root`: check must change none of them. A
    file the test may not read (a lock of mode 000, not as root) counts by its size and mtime."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        try:
            out[rel] = None if path.is_dir() else path.read_bytes()
        except PermissionError:
            out[rel] = (path.stat().st_size, path.stat().st_mtime_ns)
    return out


def problems(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(p["kind"], p["key"], p["seq"], p["line"], p["entry_seq"]) for p in report["problems"]]


# -- pending changes above the watermark are no problem ----------------------------------------------

PENDING = {
    "a delete": "b.write('k', 1); b.flush(); b.delete('k')",
    "a put": "b.write('k', 1); b.flush(); b.write('k', 2)",
    "a put of a new key": "b.write('k', 1); b.flush(); b.write('new', 2)",
    "a transaction": (
        "b.write('k', 1); b.flush()\nwith b.transaction() as t:\n    t.write('k', 2)\n    t.write('new', 3)"
    ),
    "a delete, then a put again": "b.write('k', 1); b.flush(); b.delete('k'); b.write('k', 3)",
}


@pytest.mark.parametrize("code", list(PENDING.values()), ids=list(PENDING))
def test_7_3_changes_after_the_watermark_are_pending(tmp_path: Path, code: str) -> None:
    board = tmp_path / "board"
    Board.init(board).close()
    killed_writer(board, code)
    assert (board / "materialized").read_text().strip() == "1"  # the change after it is really pending
    before = snapshot(board)
    proc = run_check(board)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.splitlines()[-1] == "consistent"
    report = check_json(board, code=0)
    assert (report["ok"], report["problems"], report["watermark"]) == (True, [], 1)
    assert report["last_seq"] >= 2
    assert snapshot(board) == before, "check changed something"


# -- every true inconsistency, with its key, seq and line -----------------------------------------------


@pytest.fixture
def flushed(tmp_path: Path) -> Path:
    """Seqs 1-4 (a, b, c with an idempotency key, a again), then a delete of b (5), all in entries/."""
    board = tmp_path / "board"
    with Board.init(board, author="t") as handle:
        handle.write("a", 1)
        handle.write("b", 2)
        handle.write("c", 3, idempotency_key="c-once")
        handle.write("a", 4)
        handle.delete("b")
    return board


def entry(board: Path, key: str) -> Path:
    return board / "entries" / key_to_relpath(key)


def test_7_3_stale_entry_file_names_both_seqs(flushed: Path) -> None:
    doc = json.loads(entry(flushed, "a").read_bytes())
    entry(flushed, "a").write_text(json.dumps({**doc, "seq": 1, "version": 1, "value": 1}))
    report = check_json(flushed)
    assert problems(report) == [("stale", "a", 4, None, 1)]
    assert report["problems"][0]["path"] == "entries/a.json"
    assert "seq 4" in report["problems"][0]["detail"] and "has seq 1" in report["problems"][0]["detail"]
    assert (report["ok"], report["last_seq"], report["keys"], report["watermark"]) == (False, 5, 2, 5)


def test_7_3_stale_entry_file_with_the_right_seq_says_which_fields_differ(flushed: Path) -> None:
    doc = json.loads(entry(flushed, "a").read_bytes())
    entry(flushed, "a").write_text(json.dumps({**doc, "value": "tampered"}))
    [problem] = check_json(flushed)["problems"]
    assert (problem["kind"], problem["seq"], problem["entry_seq"]) == ("stale", 4, 4)
    assert problem["detail"].endswith("entries/a.json has seq 4 too, but differs in value")


@pytest.mark.parametrize("content", [b"{not json", b"null", b"[1, 2]"])
def test_7_3_an_entry_file_that_holds_no_entry_is_stale(flushed: Path, content: bytes) -> None:
    entry(flushed, "a").write_bytes(content)
    assert problems(check_json(flushed)) == [("stale", "a", 4, None, None)]


def test_7_3_line_of_a_record_whose_offset_the_index_knows(flushed: Path) -> None:
    """c's record carries an idempotency key: the index knows its offset, so its line is given
    (line 1 is the header: seq N is on line N + 1 here)."""
    entry(flushed, "c").write_text("{}")
    assert problems(check_json(flushed)) == [("stale", "c", 3, 4, None)]


def test_7_3_missing_entry_file(flushed: Path) -> None:
    entry(flushed, "a").unlink()
    report = check_json(flushed)
    assert problems(report) == [("missing", "a", 4, None, None)]
    assert "seq 4" in report["problems"][0]["detail"] and "entries/a.json" in report["problems"][0]["detail"]


def test_7_3_entry_file_of_a_deleted_key_names_the_delete(flushed: Path) -> None:
    entry(flushed, "b").write_text('{"key": "b"}')
    report = check_json(flushed)
    assert problems(report) == [("extra", "b", 5, None, None)]
    assert "deleted at seq 5" in report["problems"][0]["detail"]


@pytest.mark.parametrize(("name", "key"), [("ghost.json", "ghost"), ("%61.json", None), ("notes.txt", None)])
def test_7_3_entry_file_for_no_key_of_the_log(flushed: Path, name: str, key: str | None) -> None:
    (flushed / "entries" / name).write_text("{}")
    report = check_json(flushed)
    assert problems(report) == [("extra", key, None, None, None)]
    assert report["problems"][0]["path"] == f"entries/{name}"


def test_7_3_torn_tail_with_its_byte_and_line(flushed: Path) -> None:
    size = (flushed / "log.jsonl").stat().st_size
    with (flushed / "log.jsonl").open("ab") as log:
        log.write(TORN)
    report = check_json(flushed)
    assert problems(report) == [("torn_tail", None, 5, 7, None)]  # header + 5 records, then the torn bytes
    assert f"from byte {size}" in report["problems"][0]["detail"]
    assert f"{len(TORN)} bytes" in report["problems"][0]["detail"]


def test_7_3_human_output_has_a_line_per_problem_and_its_detail(flushed: Path) -> None:
    entry(flushed, "a").unlink()
    (flushed / "entries" / "ghost.json").write_text("{}")
    proc = run_check(flushed)
    assert proc.returncode == 6, (proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    assert lines[0] == "last seq 5, 2 keys, entry files at seq 5"
    assert lines[1] == "entry file missing: a"
    assert lines[2].startswith("  ") and "seq 4" in lines[2]
    assert lines[3] == "entry file for no live key: entries/ghost.json"
    assert lines[4].startswith("  ") and "ghost" in lines[4]
    assert len(lines) == 5


def test_7_3_repair_json_lists_what_it_repaired(flushed: Path) -> None:
    entry(flushed, "a").unlink()
    proc = run_check(flushed, "--repair", "--json")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    report = json.loads(proc.stdout)
    assert (report["repaired"], report["ok"], [p["kind"] for p in report["problems"]]) == (True, False, ["missing"])
    assert check_json(flushed, code=0)["ok"]


def test_7_3_watermark_after_the_log_is_a_problem() -> None:
    report = Report(last_seq=3, keys=1, watermark=5)
    assert not report.ok
    [problem] = report.details()
    assert (problem.kind, problem.seq, problem.path) == ("watermark", 5, "materialized")
    assert report.problems() == [problem.summary]


def test_report_lists_edited_by_a_caller_still_have_details() -> None:
    report = Report(missing=["k"], stale=["s"], extra=["x.json"], torn_tail_bytes=3)
    assert [(p.kind, p.key, p.path) for p in report.details()] == [
        ("torn_tail", None, "log.jsonl"),
        ("missing", "k", "entries/k.json"),
        ("stale", "s", "entries/s.json"),
        ("extra", None, "entries/x.json"),
    ]
    assert report.problems()[1:] == [
        "entry file missing: k",
        "entry file stale: s",
        "entry file for no live key: entries/x.json",
    ]


# -- a read, on a board this process cannot write ------------------------------------------------------


def make_board(board: Path, *, damaged: bool, lock: Literal["flock", "soft"] = "flock") -> None:
    """A board whose writer died with changes after the watermark (pending: no problem); `damaged`:
    also a stale entry file below the watermark and a torn tail."""
    Board.init(board, lock=lock).close()
    killed_writer(
        board,
        "b.write('fixed', 1); b.write('done', 1); b.write('k', 1); b.flush()\n"
        "b.write('k', 2); b.write('new', 3); b.delete('done')",
    )
    if damaged:
        doc = json.loads(entry(board, "fixed").read_bytes())
        entry(board, "fixed").write_text(json.dumps({**doc, "value": "tampered"}))
        with (board / "log.jsonl").open("ab") as log:
            log.write(TORN)


EXPECTED_DAMAGE = [("torn_tail", None, 6, 8, None), ("stale", "fixed", 1, None, 1)]


def assert_checks(board: Path, damaged: bool, *, uid: int | None = None) -> None:
    before = snapshot(board)
    report = check_json(board, uid=uid, code=6 if damaged else 0)
    assert (report["last_seq"], report["keys"], report["watermark"]) == (6, 3, 3)
    assert problems(report) == (EXPECTED_DAMAGE if damaged else [])
    proc = run_check(board, uid=uid)
    assert proc.returncode == (6 if damaged else 0), (proc.stdout, proc.stderr)
    assert proc.stderr == ""
    if not damaged:
        assert proc.stdout.splitlines() == ["last seq 6, 3 keys, entry files at seq 3", "consistent"]
    assert snapshot(board) == before, "check changed something"


@pytest.mark.parametrize("damaged", [False, True], ids=["pending only", "damaged"])
@pytest.mark.parametrize("lock", ["flock", "soft"])
def test_7_3_check_a_board_of_another_user(shared_dir: Path, damaged: bool, lock: Literal["flock", "soft"]) -> None:
    """Every file and directory read-only, and check run as a user who owns none of them (as root:
    as `nobody`; otherwise the owner, whom the modes stop too)."""
    uid = other_user()
    board = shared_dir / "board"
    make_board(board, damaged=damaged, lock=lock)
    read_only_everywhere(board)
    assert_checks(board, damaged, uid=uid)


@pytest.mark.parametrize("damaged", [False, True], ids=["pending only", "damaged"])
def test_7_3_check_without_the_writer_lock_to_be_had(shared_dir: Path, damaged: bool) -> None:
    """A writer lock this user may not even open: check tells a torn tail by looking twice."""
    uid = other_user()
    board = shared_dir / "board"
    make_board(board, damaged=damaged)
    read_only_everywhere(board, lock_mode=0)
    assert_checks(board, damaged, uid=uid)


def test_7_3_check_a_read_only_copy_without_materialize_lock(shared_dir: Path) -> None:
    """A copy made by hand may lack the (empty) lock files; where they cannot be created, check goes on."""
    uid = other_user()
    board = shared_dir / "board"
    make_board(board, damaged=True)
    (board / "materialize.lock").unlink()
    read_only_everywhere(board)
    assert_checks(board, True, uid=uid)
    assert not (board / "materialize.lock").exists()


@pytest.mark.parametrize("damaged", [False, True], ids=["pending only", "damaged"])
@pytest.mark.parametrize("lock", ["flock", "soft"])
def test_7_3_check_a_read_only_mount(
    read_only_mount: tuple[Path, Path], damaged: bool, lock: Literal["flock", "soft"]
) -> None:
    source, view = read_only_mount
    make_board(source / "board", damaged=damaged, lock=lock)
    with pytest.raises(OSError):
        (view / "board" / "probe").write_text("x")  # the view is really read-only, even to root
    assert_checks(view / "board", damaged)


@pytest.mark.parametrize("damaged", [False, True], ids=["pending only", "damaged"])
def test_7_3_check_an_immutable_log(tmp_path: Path, damaged: bool) -> None:
    board = tmp_path / "board"
    make_board(board, damaged=damaged)
    log = board / "log.jsonl"
    proc = subprocess.run(["chattr", "+i", str(log)], capture_output=True, timeout=TIMEOUT, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot make a file immutable here: {proc.stderr.decode().strip() or 'chattr failed'}")
    try:
        with pytest.raises(OSError):
            log.open("ab").close()  # really immutable, even to root
        assert_checks(board, damaged)
    finally:
        subprocess.run(["chattr", "-i", str(log)], check=True, timeout=TIMEOUT)


# -- the writer lock is held by someone else ---------------------------------------------------------

HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@contextlib.contextmanager
def writer_lock_held(board: Path) -> Iterator[None]:
    """The board's flock writer lock, held by another process until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(board / "lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "locked\n"
            yield
        finally:
            holder.stdin.close()
            holder.wait(TIMEOUT)


@pytest.mark.parametrize("damaged", [False, True], ids=["pending only", "damaged"])
@pytest.mark.parametrize("read_only", [True, False], ids=["reader", "writer"])
def test_7_3_check_while_a_writer_holds_the_lock(tmp_path: Path, damaged: bool, read_only: bool) -> None:
    """check waits for the writer lock at most the lock timeout, then looks twice instead: a stuck
    writer does not make a read fail."""
    board = tmp_path / "board"
    make_board(board, damaged=damaged)
    with writer_lock_held(board), Board.open(board, read_only=read_only, lock_timeout=0.2) as handle:
        report = handle.check()
    expected = [d[:4] for d in EXPECTED_DAMAGE] if damaged else []
    assert [(p.kind, p.key, p.seq, p.line) for p in report.details()] == expected
    assert report.torn_tail_bytes == (len(TORN) if damaged else 0)


def test_check_of_a_writing_handle_is_a_read(flushed: Path) -> None:
    """check() on a writable handle takes the writer lock but writes nothing, also with problems."""
    entry(flushed, "a").unlink()
    with (flushed / "log.jsonl").open("ab") as log:
        log.write(TORN)
    before = snapshot(flushed)
    with Board.open(flushed) as board:
        report = board.check()
    assert [(p.kind, p.key) for p in report.details()] == [("torn_tail", None), ("missing", "a")]
    assert snapshot(flushed) == before


def test_a_batch_leaves_another_hosts_entry_temp_file_until_it_is_stale(tmp_path: Path) -> None:
    """Two hosts sharing a board have the same PIDs, and the materialize lock may not cross them
    (a network filesystem): a batch removes only this host's entry temp files (a killed batch's),
    and another host's once nobody has touched it for 10 minutes (spec 2, tmp/)."""
    from blackboard.core.lock import host_tag

    root = tmp_path / "board"
    with Board.init(root) as board:
        board.write("k", 1)
        tmp = root / "tmp"
        now = time.time()
        names = {
            f"entry.{host_tag()}.4242.1.tmp": (now, False),  # ours: a killed batch's
            "entry.0badf00d.4242.1.tmp": (now - 60, True),  # another host's: maybe being written
            "entry.0badf00d.4243.1.tmp": (now - 700, False),  # another host's, stale
        }
        for name, (mtime, _kept) in names.items():
            (tmp / name).write_bytes(b"{")
            os.utime(tmp / name, (mtime, mtime))
        board.write("k", 2)
        board.flush()
        left = sorted(n for n in os.listdir(tmp) if n.startswith("entry."))
        assert left == sorted(name for name, (_mtime, kept) in names.items() if kept)
        assert json.loads((root / "entries" / "k.json").read_bytes())["value"] == 2


def test_7_3_a_log_shorter_than_its_checkpoint_shows_is_a_problem(tmp_path: Path) -> None:
    """A power loss took the log's last records and the watermark's last update, not the checkpoint:
    only the checkpoint shows the lost tail, and check says so (spec 5.3) rather than 'consistent'."""
    from blackboard.core.layout import format_watermark

    root = tmp_path / "board"
    with Board.init(root, author="tester", flush_interval=3600) as board:
        for i in range(2100):
            board.write(f"k{i % 50}", i)
    lines = (root / "log.jsonl").read_bytes().split(b"\n")
    (root / "log.jsonl").write_bytes(b"\n".join(lines[:-11]) + b"\n")  # seqs 2091-2100 gone
    (root / "materialized").write_bytes(format_watermark(2090))
    proc = run_check(root, "--json")
    assert proc.returncode == 6, proc.stderr
    doc = json.loads(proc.stdout)
    assert not doc["ok"]
    (problem,) = [p for p in doc["problems"] if p["kind"] == "lost_tail"]
    assert problem["seq"] == 2100 and "the checkpoint" in problem["detail"] and "repair" in problem["detail"]


def test_7_3_check_a_soft_board_of_another_user_whose_side_lock_dir_is_not_made_yet(shared_dir: Path) -> None:
    """The side lock's token directory (materialize.lock.d/) is made on first use: a reader that
    may not make it checks without it, as on a flock board it may not lock."""
    uid = other_user()
    board = shared_dir / "board"
    make_board(board, damaged=False, lock="soft")
    shutil.rmtree(board / "materialize.lock.d", ignore_errors=True)
    read_only_everywhere(board)
    assert check_json(board, uid=uid, code=0)["ok"] is True
    assert not (board / "materialize.lock.d").exists()


def test_7_3_check_a_soft_board_on_a_read_only_mount(tmp_path: Path) -> None:
    """The same on a read-only mount (EROFS, not EACCES): a read-only bind mount of the board."""
    board, view = tmp_path / "board", tmp_path / "ro"
    make_board(board, damaged=False, lock="soft")
    shutil.rmtree(board / "materialize.lock.d", ignore_errors=True)
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(board), str(view)], capture_output=True, check=False).returncode:
        pytest.skip("cannot bind-mount here (not root, or no mount namespace rights)")
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True, check=False)
        if remount.returncode:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        assert check_json(view, code=0)["ok"] is True
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


@pytest.mark.parametrize("checkpoint", [False, True], ids=["no checkpoint", "a checkpoint past it"])
def test_7_3_check_reports_a_damaged_record_in_the_middle_and_repair_fixes_it(tmp_path: Path, checkpoint: bool) -> None:
    """Issue 10, item 8: a record damaged in the middle of the log makes check exit 6 (not 1), with
    its line and seq, even where a checkpoint lets readers skip that line; repair then fixes it."""
    board = tmp_path / "b"
    with Board.init(board) as b:
        for i in range(1, 6):
            b.write(f"j{i}", i)
        if checkpoint:  # a handle saves one once it has appended or replayed 2,000 records
            for i in range(2100):
                b.write(f"fill/{i % 50}", i)
    assert (board / "checkpoint").exists() == checkpoint
    log = board / "log.jsonl"
    lines = log.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"value":3', b'"value":9')  # seq 3's record: its checksum no longer holds
    log.write_bytes(b"\n".join(lines))
    report = check_json(board, code=6)
    damaged = [p for p in report["problems"] if p["kind"] == "corrupt"]
    assert [(p["line"], p["seq"]) for p in damaged] == [(4, 3)], report
    assert "checksum" in damaged[0]["detail"] and "repair" in damaged[0]["detail"]
    text = run_check(board)
    assert text.returncode == 6 and "damaged record at line 4 (seq 3)" in text.stdout, text.stdout
    fixed = subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(board), "repair"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert check_json(board, code=0)["ok"] is True

"""A full disk and a file-size limit (issue 8): every write is whole or not there, and the user is told.

The full disk is real: a 256 KiB tmpfs mounted in the test's directory (root only; skipped
otherwise), filled by a filler file that a test deletes to free the room again. The file-size limit
is real too: RLIMIT_FSIZE set in a child process (Python ignores SIGXFSZ, so write() comes back short
or fails with EFBIG). What must hold (spec/FORMAT.md section 8, "Full disk": the test_8_* tests): an
append that fails leaves the log byte for byte as it was and is not acknowledged; an entry file is
whole or absent and the watermark never passes one that was not written; a failed compaction leaves
no temp file; the error names the real errno, and the CLI says it in one line.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blackboard import BlackboardError, Board
from blackboard.core.entries import read_watermark, write_watermark
from blackboard.core.layout import Layout
from blackboard.errors import OutOfSpace

PROC_TIMEOUT = 60
#: How long a background flush may take to come around on the slowest machine (it is polled for).
DEADLINE = 60.0
#: Never reached unless a test asks: the background flusher stays out of the tests that flush by hand.
NO_BACKGROUND = 3600.0


def _run(args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    env["BLACKBOARD_AUTHOR"] = "proc"
    return subprocess.run(args, env=env, input=stdin, capture_output=True, text=True, timeout=PROC_TIMEOUT, check=False)


def _cli(board: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-B", "-m", "blackboard", "--board", str(board), *args], stdin)


def _assert_one_error_line(proc: subprocess.CompletedProcess[str], words: str) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("blackboard: error: "), lines[0]
    assert words in lines[0], lines[0]
    assert "Errno" not in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]


# -- a small real disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted at tmp_path/disk, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def fill(disk: Path, *, leave: int = 0) -> Path:
    """Fill the filesystem to the last byte, then give back `leave` bytes. Returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    return filler


def temp_files(root: Path) -> list[str]:
    return sorted(os.listdir(root / "tmp"))


def entry_doc(root: Path, key: str) -> Any:
    """The entry file parsed (a torn one fails here), or None if there is none."""
    path = root / "entries" / f"{key}.json"
    return json.loads(path.read_bytes()) if path.exists() else None


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {DEADLINE} s"
        time.sleep(0.01)


# -- the error -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on device (nothing was written)"),
        (errno.EDQUOT, "disk quota exceeded (nothing was written)"),
        (errno.EFBIG, "file too large (RLIMIT_FSIZE, or the filesystem's largest file; nothing was written)"),
    ],
)
def test_out_of_space_carries_the_real_errno_and_pickles(code: int, words: str) -> None:
    err = OutOfSpace("/srv/b/log.jsonl", code)
    assert isinstance(err, BlackboardError)
    assert isinstance(err, OSError)
    assert (err.errno, err.filename, err.path) == (code, "/srv/b/log.jsonl", "/srv/b/log.jsonl")
    assert str(err) == f"/srv/b/log.jsonl: {words}"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(err, protocol=protocol))
        assert type(back) is OutOfSpace
        assert (str(back), back.errno, back.filename, back.outcome) == (str(err), code, err.filename, err.outcome)
    clone = copy.deepcopy(err)
    assert (str(clone), clone.errno) == (str(err), code)


# -- entry files and the watermark ------------------------------------------------------------------------


def test_8_full_disk_big_write_never_leaves_a_torn_entry_file(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 8's reproduction: 130,000 bytes on 256 KiB fit in the log but not again in an entry file."""
    root = small_disk / "b"
    board = Board.init(root, author="tester", flush_interval=NO_BACKGROUND)
    log_before = (root / "log.jsonl").read_bytes()
    value = "x" * 130_000
    try:
        entry = board.write("k", value)
    except OutOfSpace as exc:  # also acceptable: then nothing of it is in the log
        board.close()
        assert exc.errno == errno.ENOSPC
        assert (root / "log.jsonl").read_bytes() == log_before
        return
    with caplog.at_level(logging.WARNING, logger="blackboard"):
        board.close()  # no traceback for a flush the disk had no room for
    doc = entry_doc(root, "k")
    mark = read_watermark(Layout(root))
    if doc is None:
        assert mark < entry.seq, "the watermark passed an entry file that was never written"
        assert "no space left on device" in caplog.text
    else:
        assert doc == {"key": "k", "value": value, "version": 1, "seq": entry.seq, "author": "tester", "ts": doc["ts"]}
    assert temp_files(root) == [], "a failed entry file's temp file holds the room the next batch needs"
    with Board.open(root, read_only=True) as again:
        assert again.read("k") == value  # the log has it
        assert again.check().ok, again.check().problems()


def test_8_full_disk_failed_flush_keeps_the_watermark_and_a_later_one_catches_up(small_disk: Path) -> None:
    root = small_disk / "b"
    with Board.init(root, author="tester", flush_interval=NO_BACKGROUND) as board:
        board.write("a", 1)
        board.flush()
        # Room for the 20 kB record in the log (<= 6 pages), not for its entry file as well.
        filler = fill(small_disk, leave=32 << 10)
        value = "y" * 20_000
        entry = board.write("big", value)
        with pytest.raises(OutOfSpace) as info:
            board.flush()
        assert info.value.errno == errno.ENOSPC
        assert str(info.value) == f"{root}/entries/big.json: no space left on device (nothing was written)"
        assert read_watermark(Layout(root)) == 1
        assert entry_doc(root, "big") is None
        assert temp_files(root) == []
        assert board.read("big") == value

        filler.unlink()
        assert board.flush() == 1
        assert read_watermark(Layout(root)) == entry.seq
        doc = entry_doc(root, "big")
        assert isinstance(doc, dict)
        assert doc["value"] == value
        assert doc["seq"] == entry.seq


def test_8_full_disk_background_flusher_survives_and_retries_unpoked(small_disk: Path) -> None:
    root = small_disk / "b"
    with Board.init(root, author="tester", flush_interval=0.01) as board:
        filler = fill(small_disk, leave=32 << 10)
        entry = board.write("big", "z" * 20_000)
        wait_for(lambda: board.flush_error is not None, "a failed batch")
        assert isinstance(board.flush_error, OutOfSpace)
        assert board.flush_error.errno == errno.ENOSPC
        assert read_watermark(Layout(root)) == 0
        assert entry_doc(root, "big") is None
        # Room again, and no more writes: the flusher's own retry brings the entry file.
        filler.unlink()
        wait_for(lambda: read_watermark(Layout(root)) == entry.seq, "caught up")
        doc = entry_doc(root, "big")
        assert isinstance(doc, dict)
        assert doc["seq"] == entry.seq
        assert board.flush_error is None


_WATERMARK_CHILD = """
import json, resource, sys
from blackboard import Board
from blackboard.core.entries import read_watermark
from blackboard.core.layout import Layout
board = Board.open(sys.argv[1], flush_interval=3600)
resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    board.flush()
    out = {"errno": None}
except OSError as exc:
    out = {"errno": exc.errno}
board.close()
print(json.dumps(out))
"""


def test_8_full_disk_short_watermark_write_never_overstates(tmp_path: Path) -> None:
    """RLIMIT_FSIZE of 1 byte cuts the watermark's in-place write after one byte: "19" overwritten by
    "20" would read "29", and records 21 to 29 would never reach entries/."""
    root = tmp_path / "b"
    with Board.init(root, author="tester") as board:
        for i in range(19):
            board.write("k", i)
    with Board.open(root, flush_interval=NO_BACKGROUND) as board:
        assert board.delete("k").seq == 20
    write_watermark(Layout(root), 19)  # as if the delete's batch had not run yet
    proc = _run([sys.executable, "-B", "-c", _WATERMARK_CHILD, str(root)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"errno": errno.EFBIG}
    assert read_watermark(Layout(root)) <= 20
    with Board.open(root) as board:
        board.flush()
        assert read_watermark(Layout(root)) == 20
        assert board.check().ok


# -- the log -------------------------------------------------------------------------------------------------


def test_8_full_disk_append_leaves_the_log_as_it_was(small_disk: Path) -> None:
    root = small_disk / "b"
    with Board.init(root, author="tester", flush_interval=NO_BACKGROUND) as board:
        board.write("a", 1)
        filler = fill(small_disk)
        log_before = (root / "log.jsonl").read_bytes()
        with pytest.raises(OutOfSpace) as info:
            board.write("k", "z" * 10_000)  # more than the log's last page has left: a short write
        assert info.value.errno == errno.ENOSPC
        assert str(info.value) == f"{root}/log.jsonl: no space left on device (nothing was written)"
        assert (root / "log.jsonl").read_bytes() == log_before, "a torn line was left in the log"
        assert board.last_seq == 1
        filler.unlink()
        assert board.write("k", "z" * 10_000).seq == 2  # the failed append took no seq
    with Board.open(root, read_only=True) as again:
        assert again.read("k") == "z" * 10_000
        assert again.check().ok


def test_8_full_disk_init_leaves_no_half_board(small_disk: Path) -> None:
    fill(small_disk)
    root = small_disk / "b"
    with pytest.raises(OSError) as info:
        Board.init(root)
    assert info.value.errno == errno.ENOSPC
    assert not (root / "board.json").exists()
    assert temp_files(root) == []


_EFBIG_CHILD = """
import json, resource, sys
from blackboard import Board
board = Board.open(sys.argv[1], flush_interval=3600)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    board.write("big", "x" * 20000)
    out = {"errno": None}
except OSError as exc:
    out = {"errno": exc.errno, "type": type(exc).__name__, "message": str(exc)}
board.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("room", [1000, 0], ids=["short-write", "at-the-limit"])
def test_8_full_disk_write_past_rlimit_fsize_fails_with_efbig(tmp_path: Path, room: int) -> None:
    root = tmp_path / "b"
    with Board.init(root, author="tester") as board:
        board.write("a", 1)
    log_before = (root / "log.jsonl").read_bytes()
    limit = len(log_before) + room
    proc = _run([sys.executable, "-B", "-c", _EFBIG_CHILD, str(root), str(limit)])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["errno"] == errno.EFBIG, out  # not ENOSPC: the disk is not full
    assert out["type"] == "OutOfSpace"
    assert out["message"].startswith(f"{root}/log.jsonl: file too large (RLIMIT_FSIZE"), out
    assert (root / "log.jsonl").read_bytes() == log_before
    with Board.open(root) as board:
        assert board.check().ok
        assert board.write("big", "x" * 20_000).seq == 2


# -- compaction ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("archive", [False, True], ids=["plain", "archive"])
def test_8_full_disk_compaction_fails_and_leaves_no_temp_file(small_disk: Path, archive: bool) -> None:
    root = small_disk / "b"
    with Board.init(root, author="tester", flush_interval=NO_BACKGROUND) as board:
        for i in range(200):
            board.write("k", {"i": i, "pad": "p" * 200})
        board.flush()
        filler = fill(small_disk)
        log_before = (root / "log.jsonl").read_bytes()
        with pytest.raises(OutOfSpace) as info:
            board.compact(archive=archive)
        assert info.value.errno == errno.ENOSPC
        assert "no space left on device" in str(info.value)
        assert temp_files(root) == [], "the half-built log (or archive segment) still holds the room"
        assert os.listdir(root / "archive") == []
        assert (root / "log.jsonl").read_bytes() == log_before

        filler.unlink()
        assert board.write("k", "after").seq == 201
        report = board.compact(archive=archive)
        assert report.skipped is None
        assert report.events_after == 1
        assert board.read("k") == "after"
        assert temp_files(root) == []
        assert len(os.listdir(root / "archive")) == (1 if archive else 0)


# -- the CLI ---------------------------------------------------------------------------------------------------


_CLI_CHILD = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.argv = ["blackboard", *sys.argv[2:]]
runpy.run_module("blackboard", run_name="__main__", alter_sys=True)
"""


def test_cli_says_file_too_large_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "b"
    assert _cli(root, "init").returncode == 0
    log_before = (root / "log.jsonl").read_bytes()
    limit = len(log_before) + 1000
    value = json.dumps("x" * 20_000)
    proc = _run([sys.executable, "-B", "-c", _CLI_CHILD, str(limit), "--board", str(root), "write", "big", "-"], value)
    line = _assert_one_error_line(proc, "file too large")
    assert line == f"blackboard: error: {root}/log.jsonl: " + (
        "file too large (RLIMIT_FSIZE, or the filesystem's largest file; nothing was written)"
    )
    assert (root / "log.jsonl").read_bytes() == log_before
    assert _cli(root, "check").returncode == 0


@pytest.mark.parametrize("command", [["write", "k", "-"], ["compact"], ["init"]], ids=lambda c: c[0])
def test_cli_says_no_space_left_in_one_line(small_disk: Path, command: list[str]) -> None:
    root = small_disk / ("new" if command == ["init"] else "b")
    if command != ["init"]:
        with Board.init(root, author="tester") as board:
            for i in range(50):
                board.write("k", "p" * 200 + str(i))
    filler = fill(small_disk)
    log_before = (root / "log.jsonl").read_bytes() if root.exists() else None
    _assert_one_error_line(_cli(root, *command, stdin=json.dumps("z" * 10_000)), "no space left on device")
    if log_before is not None:
        assert (root / "log.jsonl").read_bytes() == log_before
    assert temp_files(root) == []
    filler.unlink()
    proc = _cli(root, *command, stdin=json.dumps("z" * 10_000))
    assert proc.returncode == 0, proc.stderr


# -- cursors and dead letters --------------------------------------------------------------------------------

_CURSOR_CHILD = """
import json, resource, sys
from blackboard.core.cursors import CursorFile
from blackboard.core.layout import Layout
from pathlib import Path
cursor = CursorFile(Layout(Path(sys.argv[1])), "worker")
resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    cursor.save(20)
    out = {"errno": None}
except OSError as exc:
    out = {"errno": exc.errno, "type": type(exc).__name__}
print(json.dumps(out))
"""


def test_8_full_disk_short_cursor_write_never_overstates(tmp_path: Path) -> None:
    """A cursor is a number saved in place, as the watermark is: "19" overwritten by "20" and cut after
    one byte would read "29", and the consumer would skip events 20 to 29. Cut short, it is emptied:
    the consumer starts again from its `since` (at least once), never past an event."""
    from blackboard.core import cursors

    root = tmp_path / "b"
    Board.init(root, author="tester").close()
    cursors.reset(Layout(root), "worker", 19)
    proc = _run([sys.executable, "-B", "-c", _CURSOR_CHILD, str(root)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"errno": errno.EFBIG, "type": "OutOfSpace"}
    saved = cursors.load(Layout(root), "worker")
    assert saved is None or saved <= 20, saved


_DEADLETTER_CHILD = """
import json, resource, sys
from blackboard import Board
from blackboard.core.watch import read_dead_letters, record_dead_letter
board = Board.open(sys.argv[1])
event = board.history("k")[0]
record_dead_letter(board.engine.layout, "", event, ValueError("first"))
size = board.engine.layout.deadletter.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
record_dead_letter(board.engine.layout, "", event, ValueError("second, cut short"))
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
record_dead_letter(board.engine.layout, "", event, ValueError("third"))
print(json.dumps([sorted(letter) for letter in read_dead_letters(board.engine.layout)]))
board.close()
"""


def test_8_full_disk_a_dead_letter_cut_short_does_not_swallow_the_next(tmp_path: Path) -> None:
    root = tmp_path / "b"
    with Board.init(root, author="tester") as board:
        board.write("k", 1)
    proc = _run([sys.executable, "-B", "-c", _DEADLETTER_CHILD, str(root)])
    assert proc.returncode == 0, proc.stderr
    letters = json.loads(proc.stdout)
    full = sorted(["ts", "prefix", "pid", "error", "traceback", "event"])
    assert letters == [full, ["unreadable"], full], letters  # the third is whole, on a line of its own

"""The board-wide commands say exactly what they did (issue 10): `init` on an existing board with other
settings is an error that names them (item 4), `seq` prints the last seq (item 13), and `compact` on
a board this process cannot write is the read-only error, changing nothing (item 16).

Every command runs as a real `python -m blackboard` process (as another user: a process that imports
the CLI, drops to that uid, then runs it, as in tests/test_check.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _users import (
    other_user,
    read_only_everywhere,
)

from blackboard import Board

TIMEOUT = 60
ERROR_PREFIX = "blackboard: error: "
READ_ONLY = "board is read-only here"

#: Run `blackboard ARGS` as uid argv[1]: everything the commands import is imported first (the
#: interpreter's own files may be out of that user's reach), then the uid is dropped.
AS_USER = """
import os, sys
import encodings.ascii, encodings.latin_1, encodings.utf_8, logging, pwd, socket, textwrap, gzip
import blackboard.cli.admin, blackboard.cli.base, blackboard.cli.live, blackboard.cli.execute, blackboard.core.maintain
import blackboard.core.compact, blackboard.core.watch, blackboard.core.notify, blackboard.core.history
import blackboard.core.cursors, blackboard.core.checkpoint, blackboard.core.entries
uid = int(sys.argv[1])
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
from blackboard.cli.base import cli
cli.main(sys.argv[2:], prog_name="blackboard")
"""


def run(board: Path, *args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
    if uid is None:
        cmd = [sys.executable, "-m", "blackboard", "--board", str(board), *args]
    else:
        cmd = [sys.executable, "-c", AS_USER, str(uid), "--board", str(board), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    env["BLACKBOARD_AUTHOR"] = "proc"
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False, input="")


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    assert proc.stderr == ""
    return proc.stdout


def fails(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The documented status, nothing on stdout, one `blackboard: error:` line (no traceback): its text."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), proc.stderr
    return lines[0][len(ERROR_PREFIX) :]


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file's bytes (None for a directory) and mode under `root`, by relative path."""
    return {
        p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
    }


def board_json(board: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((board / "board.json").read_bytes())
    return result


def filled(board: Path, *, lock: str = "flock") -> Path:
    """A board with superseded records and a delete (something for compact to do), entry files current."""
    with Board.init(board, lock=lock) as b:  # type: ignore[arg-type]
        for i in range(5):
            b.write("k", i)
        b.write("other", "x")
        b.delete("other")
    return board


# -- other users, read-only mounts ----------------------------------------------------------------


# -- item 4: init on an existing board -------------------------------------------------------------


def test_init_fsync_on_an_existing_board_is_an_error_that_names_it(tmp_path: Path) -> None:
    board = tmp_path / "board"
    ok(run(board, "init"))
    before = snapshot(board)
    line = fails(run(board, "init", "--fsync"), 2)
    assert line == (
        f"{board} exists with fsync false, lock flock; init was given --fsync (true): "
        "settings are fixed at init (spec 3)"
    )
    assert board_json(board)["fsync"] is False
    assert snapshot(board) == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--lock", "soft"], "--lock soft"),
        (["--max-value-bytes", "64"], "--max-value-bytes 64"),
        (["--retention", "60"], "--retention 60.0"),
        (["--compact-at-bytes", "4096"], "--compact-at-bytes 4096"),
        (["--compact-at-dead-ratio", "0.9"], "--compact-at-dead-ratio 0.9"),
        (["--no-auto-compact"], "--no-auto-compact (compact_at_bytes null)"),
    ],
)
def test_init_with_each_differing_setting_is_an_error(tmp_path: Path, args: list[str], named: str) -> None:
    board = tmp_path / "board"
    ok(run(board, "init"))
    before = snapshot(board)
    line = fails(run(board, "init", *args), 2)
    assert f"; init was given {named}: settings are fixed at init (spec 3)" in line, line
    assert snapshot(board) == before


def test_init_names_every_differing_setting_and_only_those(tmp_path: Path) -> None:
    board = tmp_path / "board"
    ok(run(board, "init", "--max-value-bytes", "64", "--compact-at-bytes", "4096"))
    before = snapshot(board)
    # --max-value-bytes 64 and --lock flock are the board's: not named.
    args = ["--max-value-bytes", "64", "--lock", "flock", "--fsync", "--retention", "5", "--no-auto-compact"]
    line = fails(run(board, "init", *args), 2)
    assert line == (
        f"{board} exists with fsync false, retention_seconds 86400.0, compact_at_bytes 4096, lock flock; "
        "init was given --fsync (true), --retention 5.0, --no-auto-compact (compact_at_bytes null): "
        "settings are fixed at init (spec 3)"
    )
    assert snapshot(board) == before


def test_init_on_an_existing_board_with_its_own_settings_stays_idempotent(tmp_path: Path) -> None:
    board = tmp_path / "board"
    first = json.loads(ok(run(board, "init", "--fsync", "--lock", "soft")))
    with Board.open(board) as b:
        b.write("k", 1)
    before = snapshot(board)
    expected = {**first, "last_seq": 1}
    assert json.loads(ok(run(board, "init"))) == expected  # no setting given
    assert json.loads(ok(run(board, "init", "--fsync", "--lock", "soft", "--retention", "86400"))) == expected
    assert snapshot(board) == before


def test_init_help_says_settings_are_fixed(tmp_path: Path) -> None:
    text = " ".join(ok(run(tmp_path / "none", "init", "--help")).split())
    assert "Settings are fixed at init (spec 3)" in text
    assert "that differs from the board's is an error, exit 2, that names each of them" in text


# -- item 13: seq ---------------------------------------------------------------------------------


def test_seq_prints_the_last_seq(tmp_path: Path) -> None:
    board = tmp_path / "board"
    ok(run(board, "init"))
    assert ok(run(board, "seq")) == "0\n"
    assert json.loads(ok(run(board, "seq", "--json"))) == {
        "last_seq": 0,
        "compacted_through": 0,
        "oldest_seq": 0,
        "board": str(board),
    }
    with Board.open(board) as b:
        for i in range(3):
            b.write("k", i)
    assert ok(run(board, "seq")) == "3\n"
    out = ok(run(board, "seq", "--json"))
    assert out.count("\n") == 1
    assert json.loads(out) == {"last_seq": 3, "compacted_through": 0, "oldest_seq": 1, "board": str(board)}
    ok(run(board, "compact"))
    assert ok(run(board, "seq")) == "3\n"
    assert json.loads(ok(run(board, "seq", "--json"))) == {
        "last_seq": 3,
        "compacted_through": 3,
        "oldest_seq": 3,
        "board": str(board),
    }


def test_seq_of_no_board_is_exit_5(tmp_path: Path) -> None:
    assert "no such directory" in fails(run(tmp_path / "none", "seq"), 5)


def test_seq_on_a_board_of_another_user(shared_dir: Path) -> None:
    uid = other_user()
    board = filled(shared_dir / "board")
    read_only_everywhere(board)
    before = snapshot(board)
    assert ok(run(board, "seq", uid=uid)) == "7\n"
    assert json.loads(ok(run(board, "seq", "--json", uid=uid)))["last_seq"] == 7
    assert snapshot(board) == before


def test_seq_on_a_read_only_mount(read_only_mount: tuple[Path, Path]) -> None:
    source, view = read_only_mount
    filled(source / "board")
    before = snapshot(source)
    assert ok(run(view / "board", "seq")) == "7\n"
    assert json.loads(ok(run(view / "board", "seq", "--json")))["oldest_seq"] == 1
    assert snapshot(source) == before


# -- item 16: compact on a board this process cannot write -----------------------------------------


@pytest.mark.parametrize("lock", ["flock", "soft"])
@pytest.mark.parametrize("args", [[], ["--json"], ["--archive"], ["--if-needed"]], ids=repr)
def test_compact_on_a_read_only_mount_is_the_read_only_error(
    read_only_mount: tuple[Path, Path], lock: str, args: list[str]
) -> None:
    source, view = read_only_mount
    filled(source / "board", lock=lock)
    before = snapshot(source)
    line = fails(run(view / "board", "compact", *args), 1)
    assert line == f"{view / 'board'}: {READ_ONLY}: read-only filesystem"
    assert snapshot(source) == before


@pytest.mark.parametrize("lock", ["flock", "soft"])
@pytest.mark.parametrize("without_compact_lock", [False, True], ids=["compact.lock", "no compact.lock"])
def test_compact_on_a_board_of_another_user_is_the_read_only_error(
    shared_dir: Path, lock: str, without_compact_lock: bool
) -> None:
    uid = other_user()
    board = filled(shared_dir / "board", lock=lock)
    if without_compact_lock:
        with contextlib.suppress(FileNotFoundError):
            (board / "compact.lock").unlink()
    else:
        (board / "compact.lock").touch()
    read_only_everywhere(board)
    before = snapshot(board)
    for args in ([], ["--json"], ["--if-needed"]):
        line = fails(run(board, "compact", *args, uid=uid), 1)
        assert line.startswith(f"{board}: {READ_ONLY}: "), line
    assert snapshot(board) == before
    # The owner can: the board was fine, only this user may not write it.
    for p in [board, *board.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    assert json.loads(ok(run(board, "compact", "--json")))["events_after"] == 2


def test_compact_json_reports_the_logs_compacted_through_when_there_is_nothing_to_do(tmp_path: Path) -> None:
    """Issue 10, item 9: a second compaction had nothing to do and said compacted_through 0 while
    stats said 40: it reports what the log is compacted through."""
    board = tmp_path / "b"
    with Board.init(board) as b:
        for i in range(40):
            b.write(f"k{i % 5}", i)
    first = json.loads(ok(run(board, "compact", "--json")))
    assert first["compacted_through"] == 40 and first["skipped"] is None
    again = json.loads(ok(run(board, "compact", "--json")))
    assert again["skipped"] is not None and again["compacted_through"] == 40
    stats = json.loads(ok(run(board, "stats", "--json")))
    assert stats["compacted_through"] == again["compacted_through"]


# -- item 16: cursors --reset and watch --cursor on a board this process cannot write ---------------

#: Each needs to write the board (a cursor file): on a read-only board, the read-only error.
CURSOR_WRITES = [
    ["cursors", "--reset", "c1"],
    ["cursors", "--reset", "c1", "--to", "2"],
    ["watch", "--cursor", "c1", "--timeout", "0"],
    ["watch", "--cursor", "new", "--since", "start", "--count", "1"],
]


def with_cursor(board: Path) -> None:
    with Board.open(board) as b:
        for event in b.watch(since=0, cursor="c1"):
            if event.seq == 3:
                break
        b.write("after", 1)  # the cursor at 3 has events to resume with


@pytest.mark.parametrize("lock", ["flock", "soft"])
def test_cursor_writes_on_a_read_only_mount_are_the_read_only_error(
    read_only_mount: tuple[Path, Path], lock: str
) -> None:
    source, view = read_only_mount
    filled(source / "board", lock=lock)
    with_cursor(source / "board")
    before = snapshot(source)
    for args in CURSOR_WRITES:
        line = fails(run(view / "board", *args), 1)
        assert line == f"{view / 'board'}: {READ_ONLY}: read-only filesystem", (args, line)
    assert snapshot(source) == before
    # Reading the cursors is not writing: it works there.
    assert json.loads(ok(run(view / "board", "cursors", "--json")))["name"] == "c1"


def test_cursor_writes_on_a_board_of_another_user_are_the_read_only_error(shared_dir: Path) -> None:
    uid = other_user()
    board = filled(shared_dir / "board")
    with_cursor(board)
    read_only_everywhere(board)
    before = snapshot(board)
    for args in CURSOR_WRITES:
        line = fails(run(board, *args, uid=uid), 1)
        assert line.startswith(f"{board}: {READ_ONLY}: "), (args, line)
    assert snapshot(board) == before

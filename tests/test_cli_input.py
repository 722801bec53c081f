"""CLI and API input checks (issue 10, items 14 and 15): bad input is one error line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blackboard import Board
from blackboard.errors import InvalidKey, InvalidValue


def _run(board: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "BLACKBOARD_DIR": str(board)}
    cmd: list[str | bytes] = [sys.executable, "-m", "blackboard", *args]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=30, check=False)


@pytest.fixture
def board(tmp_path: Path) -> Path:
    path = tmp_path / "board"
    Board.init(path).close()
    return path


@pytest.mark.parametrize(
    "args",
    [
        (b"watch", b"\xff", b"--since", b"start", b"--timeout", b"0"),
        (b"write", b"\xff", b"1"),
        (b"read", b"\xff"),
        (b"ls", b"\xff"),
    ],
)
def test_non_utf8_key_is_one_error_line(board: Path, args: tuple[bytes, ...]) -> None:
    proc = _run(board, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.decode("utf-8", "replace").splitlines()
    assert len(lines) == 1 and lines[0].startswith("blackboard: error:"), lines
    assert b"Traceback" not in proc.stderr


def test_surrogate_prefix_is_invalid_key() -> None:
    from blackboard.core.keys import validate_key, validate_prefix

    with pytest.raises(InvalidKey):
        validate_prefix("\udcff")
    with pytest.raises(InvalidKey):
        validate_key("\udcff")


def test_over_long_integer_from_cli(board: Path) -> None:
    proc = _run(board, "write", "k", "1" * 5000)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "5000 digits" in lines[0] and "64 bits" in lines[0], lines


def test_over_long_integer_from_api(board: Path) -> None:
    with Board(board) as b, pytest.raises(InvalidValue, match="64 bits"):
        b.write("k", 10**5000)


def test_non_str_key_is_invalid_key(board: Path) -> None:
    with Board(board) as b:
        for call in (lambda: b.read(["a"]), lambda: b.get(["a"])):  # type: ignore[arg-type]
            with pytest.raises(InvalidKey, match="list"):
                call()


@pytest.mark.parametrize("args", [("write", "--foo", "1"), ("write", "k", "--expect-versoin", "3")])
def test_unknown_option_is_usage_error(board: Path, args: tuple[str, ...]) -> None:
    proc = _run(board, *args)
    assert proc.returncode == 2, proc.stderr
    assert b"No such option" in proc.stderr and args[-2].encode() in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr


def test_negative_numbers_and_dash_key(board: Path) -> None:
    assert _run(board, "write", "k", "-5").returncode == 0
    assert _run(board, "write", "f", "-1.5e3").returncode == 0
    assert _run(board, "write", "--", "--foo", "1").returncode == 0
    with Board(board) as b:
        assert b.get("k").value == -5  # type: ignore[union-attr]
        assert b.get("f").value == -1500.0  # type: ignore[union-attr]
        assert b.get("--foo").value == 1  # type: ignore[union-attr]

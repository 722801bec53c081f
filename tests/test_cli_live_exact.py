"""Exact behaviour of the live commands (issue 10): tail's colour switches, watch --count/--timeout's exit
code, cursors --reset of a missing cursor. Real `python -m blackboard` processes, no mocks."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _workers import cli_env, command, on_pty

from blackboard import Board

pytestmark = pytest.mark.timeout(60)

ESC = b"\x1b["


def run_cli(board: Board, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(board, *args), capture_output=True, text=True, timeout=30, env=env or cli_env(), check=False
    )


def run_on_pty(board: Board, *args: str, env: dict[str, str]) -> tuple[int, bytes]:
    """Run the CLI with a pseudo-terminal as its stdout: its exit status and all it printed there."""
    status, out, _ = on_pty(command(board, *args), env)
    return status, out


@pytest.fixture
def wboard(tmp_path: Path) -> Iterator[Board]:
    board = Board.init(tmp_path / "board", author="tester")
    board.write("t/a", {"x": 1})
    yield board
    board.close()


# -- item 6: tail honours NO_COLOR and --color/--no-color ---------------------------------------------------


def test_tail_colours_on_a_terminal_by_default(wboard: Board) -> None:
    status, out = run_on_pty(wboard, "tail", env=cli_env())
    assert status == 0
    assert b"t/a" in out and ESC in out


@pytest.mark.parametrize("value", ["1", "0", "yes"])
def test_tail_no_color_env_turns_colour_off_on_a_terminal(wboard: Board, value: str) -> None:
    status, out = run_on_pty(wboard, "tail", env=cli_env(NO_COLOR=value))
    assert status == 0
    assert b"t/a" in out and ESC not in out


def test_tail_empty_no_color_is_unset(wboard: Board) -> None:
    status, out = run_on_pty(wboard, "tail", env=cli_env(NO_COLOR=""))
    assert status == 0 and ESC in out


def test_tail_explicit_flags_win(wboard: Board) -> None:
    piped = run_cli(wboard, "tail", "--color")
    assert piped.returncode == 0 and "\x1b[" in piped.stdout and "t/a" in piped.stdout
    forced = run_cli(wboard, "tail", "--color", env=cli_env(NO_COLOR="1"))
    assert "\x1b[" in forced.stdout
    status, out = run_on_pty(wboard, "tail", "--no-color", env=cli_env())
    assert status == 0 and b"t/a" in out and ESC not in out
    plain = run_cli(wboard, "tail")
    assert plain.returncode == 0 and "\x1b[" not in plain.stdout
    as_json = run_cli(wboard, "tail", "--json", "--color")
    assert "\x1b[" not in as_json.stdout


# -- item 2: watch --count N --timeout S that times out first exits 7 --------------------------------------


def test_watch_timeout_before_count_exits_7(wboard: Board) -> None:
    result = run_cli(wboard, "watch", "nothing/", "--count", "1", "--timeout", "0.2")
    assert (result.returncode, result.stdout, result.stderr) == (7, "", "")


def test_watch_timeout_after_some_but_not_all_events_exits_7(wboard: Board) -> None:
    wboard.write("t/b", 2)
    result = run_cli(wboard, "watch", "t/", "--since", "start", "--count", "3", "--timeout", "0.2")
    assert result.returncode == 7, result.stderr
    assert [line.count('"t/') for line in result.stdout.splitlines()] == [1, 1]


def test_watch_count_reached_exits_0_and_a_plain_timeout_too(wboard: Board) -> None:
    reached = run_cli(wboard, "watch", "t/", "--since", "start", "--count", "1", "--timeout", "5")
    assert reached.returncode == 0 and len(reached.stdout.splitlines()) == 1
    plain = run_cli(wboard, "watch", "--timeout", "0.2")
    assert (plain.returncode, plain.stdout) == (0, "")


def test_watch_help_documents_exit_7(wboard: Board) -> None:
    assert "exit 7" in run_cli(wboard, "watch", "--help").stdout


# -- item 5: cursors --reset of a cursor that does not exist -----------------------------------------------


def test_reset_of_a_missing_cursor_is_an_error(wboard: Board) -> None:
    wboard.reset_cursor("somebody", 1)
    result = run_cli(wboard, "cursors", "--reset", "nobody")
    assert result.returncode == 3
    assert result.stdout == ""
    assert "no such cursor: nobody" in result.stderr
    assert wboard.cursors() == {"somebody": 1}
    deleted = run_cli(wboard, "cursors", "--reset", "somebody")
    assert (deleted.returncode, deleted.stdout) == (0, "cursor somebody deleted\n")
    again = run_cli(wboard, "cursors", "--reset", "somebody")
    assert again.returncode == 3 and wboard.cursors() == {}

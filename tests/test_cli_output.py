"""The CLI as a shell agent's whole interface (issue 10): `--json` on every data command, plain
output in columns that do not shift, values cut only on a terminal (`--full`: whole), and shell
completion of command and key names. Real `python -m blackboard` processes on real boards."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from _workers import cli_env, command, on_pty

from blackboard import Board
from blackboard.cli.base import COMMANDS
from blackboard.cli.complete import key_candidates
from blackboard.cli.render import INDENT, KEY_WIDTH, entry_line, event_line, short_json, wrap
from blackboard.models import Entry, Event

pytestmark = pytest.mark.timeout(60)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LONG = "x" * 500  # a 500-character value: cut on an 80-column terminal, unless --full


def run_cli(board: Board, *args: str, **env: str) -> str:
    """What the command printed through a pipe (no terminal); it must succeed."""
    proc = subprocess.run(
        command(board, *args), capture_output=True, text=True, timeout=30, env=cli_env(**env), check=False
    )
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


def run_on_pty(board: Board, *args: str, columns: int = 80) -> list[str]:
    """The lines the command printed to a pseudo-terminal COLUMNS wide (colour codes removed)."""
    status, out, err = on_pty(command(board, *args), cli_env(COLUMNS=str(columns), NO_COLOR="1"))
    assert status == 0, err
    return ANSI.sub("", out.decode().replace("\r\n", "\n")).splitlines()


def complete(*words: str, **env: str) -> list[tuple[str, str]]:
    """click's bash protocol: `blackboard` with COMP_WORDS/COMP_CWORD prints `type,value` lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "blackboard"],
        capture_output=True,
        text=True,
        timeout=30,
        env=cli_env(
            _BLACKBOARD_COMPLETE="bash_complete",
            COMP_WORDS=" ".join(["blackboard", *words]),
            COMP_CWORD=str(len(words)),
            **env,
        ),
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [(kind, value) for kind, _, value in (line.partition(",") for line in proc.stdout.splitlines() if line)]


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    """Keys and authors of several lengths, seqs of one and two digits."""
    path = tmp_path / "board"
    Board.init(path).close()
    for author, key, value in [
        ("a", "k", 1),
        ("agent-7", "research_results/q12", {"answer": 42}),
        ("requester", "jobs/1", "free"),
        ("a", "jobs/2", [1, 2]),
        ("agent-7", "jobs/3", None),
        ("requester", "notes/n", True),
        ("a", "k", 2),
        ("agent-7", "k", 3),
        ("requester", "jobs/1", "taken"),
        ("a", "research_results/q12", {"answer": 43}),
        ("agent-7", "k", 4),
        ("requester", "k", 5),
    ]:
        with Board.open(path, author=author) as writer:
            writer.write(key, value)
    with Board.open(path) as reader:
        yield reader


def starts(line: str, *cells: str) -> list[int]:
    """Where each cell starts in the line, searching left to right (each after a space)."""
    out, at = [], 0
    for cell in cells:
        at = line.index(" " + cell, at) + 1
        out.append(at)
        at += len(cell)
    return out


# -- --json everywhere ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"demo"}))
def test_every_data_command_takes_json(name: str) -> None:
    """So that a script can pass --json to any command that prints data, and a new one cannot forget it."""
    proc = subprocess.run(
        [sys.executable, "-m", "blackboard", name, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^\s+--json\b", proc.stdout, re.MULTILINE), proc.stdout


def test_read_json_is_the_whole_entry(board: Board) -> None:
    whole = json.loads(run_cli(board, "read", "--json", "jobs/1"))
    assert whole == json.loads(run_cli(board, "read", "--entry", "jobs/1"))
    assert (whole["key"], whole["value"], whole["version"], whole["author"]) == ("jobs/1", "taken", 2, "requester")


def test_json_is_a_no_op_where_output_is_json_already(board: Board) -> None:
    assert json.loads(run_cli(board, "write", "--json", "w", "1")) == {"key": "w", "version": 1, "seq": 13}
    assert json.loads(run_cli(board, "write", "w", "2", "--json")) == {"key": "w", "version": 2, "seq": 14}
    doc = '{"ops": [{"op": "put", "key": "t", "value": 1}]}'
    assert json.loads(run_cli(board, "txn", "--json", doc)) == {
        "seq": 15,
        "entries": [{"key": "t", "version": 1, "seq": 15}],
    }
    assert json.loads(run_cli(board, "rm", "--json", "w")) == {"key": "w", "version": 0, "seq": 16}
    assert json.loads(run_cli(board, "init", "--json"))["last_seq"] == 16


# -- columns that do not shift ----------------------------------------------------------------------


def test_tail_columns_align_across_keys_authors_and_seqs(board: Board) -> None:
    lines = run_cli(board, "tail", "-n", "12").splitlines()
    events = board.tail(12)
    assert [line.split()[0] for line in lines] == [str(e.seq) for e in events]
    columns = {
        tuple(starts(line, e.op, e.key, f"v{e.version}", e.author, json.dumps(e.value, separators=(",", ":"))))
        for line, e in zip(lines, events, strict=True)
    }
    assert len(columns) == 1, lines
    # The seq column ends at one place (right-aligned), whatever its number of digits.
    assert len({len(line.split()[0]) + line.index(line.split()[0]) for line in lines}) == 1


def test_a_key_longer_than_its_column_pushes_only_its_own_line(board: Board) -> None:
    long_key = "k" * (KEY_WIDTH + 10)
    with Board.open(board.path, author="a") as writer:
        writer.write(long_key, 1)
        writer.write("short", 2)
    *before, pushed, after = run_cli(board, "tail", "-n", "4").splitlines()
    assert pushed.index(" v1 ") > after.index(" v1 ")
    assert {line.index(" v") for line in [*before, after]} == {after.index(" v1 ")}


def test_tail_follow_stays_aligned_with_lines_not_known_yet(board: Board) -> None:
    """`tail -f` cannot measure the lines to come: fixed column widths keep the stream a table."""
    proc = subprocess.Popen(command(board, "tail", "-n", "1", "-f"), stdout=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        with Board.open(board.path, author="author-of-12") as writer:
            writer.write("x", 1)
            writer.write("research_results/q7", {"much": "longer"})
        lines += [proc.stdout.readline(), proc.stdout.readline()]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert [line.split()[4] for line in lines] == ["k", "x", "research_results/q7"]
    assert len({tuple(starts(line, line.split()[3], line.split()[4], line.split()[5])) for line in lines}) == 1
    assert len({line.rindex("  " + line.split()[-1]) for line in lines}) == 1  # the value column


def test_history_columns_align(board: Board) -> None:
    lines = run_cli(board, "history", "k").splitlines()
    events = board.history("k")
    assert [line.split()[0] for line in lines] == [str(e.seq) for e in events] == ["1", "7", "8", "11", "12"]
    cells = {
        tuple(starts(line, f"v{e.version}", e.author, str(e.value))) for line, e in zip(lines, events, strict=True)
    }
    assert len(cells) == 1, lines


def test_ls_columns_align(board: Board) -> None:
    lines = run_cli(board, "ls").splitlines()
    entries = list(board.entries())
    assert [line.split()[0] for line in lines] == [e.key for e in entries]
    cells = [
        starts(line, f"v{e.version}", f"seq {e.seq}", e.author, json.dumps(e.value, separators=(",", ":")))
        for line, e in zip(lines, entries, strict=True)
    ]
    assert len({tuple(c) for c in cells}) == 1, lines


# -- values cut only on a terminal, --full whole ----------------------------------------------------


@pytest.fixture
def long_value(board: Board) -> Board:
    with Board.open(board.path, author="a") as writer:
        writer.write("long", LONG)
    return board


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "long"],
        ["history", "long"],
        ["tail", "-n", "1"],
    ],
)
def test_full_prints_a_long_value_whole_on_a_terminal(long_value: Board, args: list[str]) -> None:
    (line,) = run_on_pty(long_value, *args, "--full", columns=80)
    assert line.endswith(f'"{LONG}"')


@pytest.mark.parametrize("args", [["ls", "long"], ["history", "long"], ["tail", "-n", "1"]])
@pytest.mark.parametrize("columns", [80, 132])
def test_a_value_is_cut_to_the_terminal_width(long_value: Board, args: list[str], columns: int) -> None:
    """To the last column; on a line of its own (tail's columns at 80) rather than to a few characters."""
    *head, line = run_on_pty(long_value, *args, columns=columns)
    assert len(line) == columns and line.endswith("…") and '"xxx' in line
    assert all(len(other) <= columns for other in head) and len(head) <= 1


@pytest.mark.parametrize("args", [["ls", "long"], ["history", "long"], ["tail", "-n", "1"]])
def test_through_a_pipe_a_value_is_whole(long_value: Board, args: list[str]) -> None:
    """`blackboard tail | grep`: whatever COLUMNS says, a pipe gets every value whole."""
    assert run_cli(long_value, *args, COLUMNS="80").rstrip("\n").endswith(f'"{LONG}"')


def _event(value: object, *, key: str = "k", author: str = "a", seq: int = 1) -> Event:
    return Event(seq=seq, op="put", key=key, value=value, version=1, author=author, ts=datetime.now())


def test_render_cuts_to_the_width_it_is_given() -> None:
    line = event_line(_event(LONG), width=120)
    assert len(line) == 120 and line.endswith("…")
    head, below = event_line(_event(LONG), width=80).split("\n")  # 78 columns before the value: below it
    assert len(head) < 80 and len(below) == 80 and below.startswith(" " * INDENT + '"xxx') and below.endswith("…")
    assert event_line(_event(LONG), width=80, full=True).endswith(f'"{LONG}"')
    assert event_line(_event(LONG)).endswith(f'"{LONG}"')  # pytest's stdout is no terminal: whole
    entry = Entry(key="k", value=LONG, version=1, seq=1, author="a", ts=datetime.now())
    assert len(entry_line(entry, key_width=1, width=80)) == 80
    assert short_json("abc", 4) == '"ab…' and short_json("abc", None) == '"abc"'


@pytest.mark.parametrize("width", [1, 7, 30, 80])
def test_wrap_loses_nothing(width: int) -> None:
    text = json.dumps({"verdict": "needs more data", "question": "Which eviction policy suits " * 5})
    parts = wrap(text, width)
    assert "".join(parts) == text and all(len(part) <= width for part in parts)


def test_wrap_value_puts_a_long_value_whole_below_its_event() -> None:
    value = {"verdict": "plausible", "q": "y" * 150}
    head, *rest = event_line(_event(value), width=80, wrap_value=True).split("\n")
    assert "{" not in head and all(len(line) <= 80 and line.startswith(" " * INDENT) for line in rest)
    assert json.loads("".join(line[INDENT:] for line in rest)) == value
    assert event_line(_event(1), width=80, wrap_value=True) == event_line(_event(1), width=80)


def test_demo_shows_the_analysts_verdict_whole_at_80_columns(tmp_path: Path) -> None:
    args = ["demo", "--board", str(tmp_path / "demo"), "--requests", "2", "--interval", "0.05"]
    status, out, err = on_pty([sys.executable, "-m", "blackboard", *args], cli_env(COLUMNS="80", NO_COLOR="1"))
    assert status == 0, err
    lines = ANSI.sub("", out.decode().replace("\r\n", "\n")).splitlines()
    values = []
    for number, line in enumerate(lines):
        if " put " in line and " analysis/q" in line:
            below = []
            for more in lines[number + 1 :]:
                if not more.startswith(" " * 8):
                    break
                below.append(more[8:])
            values.append(json.loads("".join(below)))
    assert len(values) == 2 and all(v["verdict"] and v["question"] for v in values), lines
    assert all(len(line) <= 80 for line in lines if " put " in line or line.startswith(" " * 8))


# -- shell completion -------------------------------------------------------------------------------


def test_completion_scripts_for_bash_zsh_fish() -> None:
    for shell in ("bash", "zsh", "fish"):
        proc = subprocess.run(
            [sys.executable, "-m", "blackboard"],
            capture_output=True,
            text=True,
            timeout=30,
            env=cli_env(_BLACKBOARD_COMPLETE=f"{shell}_source"),
            check=False,
        )
        assert proc.returncode == 0 and "_BLACKBOARD_COMPLETE" in proc.stdout, (shell, proc.stderr)


def test_command_names_complete() -> None:
    assert complete("rep") == [("plain", "repair"), ("plain", "reply")]
    assert complete("re") == [("plain", name) for name in sorted(COMMANDS) if name.startswith("re")]
    assert {value for _, value in complete("")} == set(COMMANDS)


@pytest.mark.parametrize("words", [["read", "jo"], ["rm", "jo"], ["history", "jo"], ["write", "jo"]])
def test_key_names_complete_from_blackboard_dir(board: Board, words: list[str]) -> None:
    assert complete(*words, BLACKBOARD_DIR=str(board.path)) == [("plain", f"jobs/{i}") for i in (1, 2, 3)]


def test_key_names_complete_from_board_options(board: Board, tmp_path: Path) -> None:
    """--board given before the command or on it wins over BLACKBOARD_DIR, as when the command runs."""
    elsewhere = str(tmp_path / "not-a-board")
    on_group = complete("--board", str(board.path), "ls", "", BLACKBOARD_DIR=elsewhere)
    assert [value for _, value in on_group] == [e.key for e in board.entries()]
    on_command = complete("blame", "--board", str(board.path), "n", BLACKBOARD_DIR=elsewhere)
    assert on_command == [("plain", "notes/n")]


def test_a_missing_board_or_a_bad_prefix_completes_to_nothing(board: Board, tmp_path: Path) -> None:
    assert complete("read", "jo", BLACKBOARD_DIR=str(tmp_path / "nothing")) == []
    assert complete("read", "/", BLACKBOARD_DIR=str(board.path)) == []
    assert complete("read", "zzz", BLACKBOARD_DIR=str(board.path)) == []


def test_a_large_board_completes_segment_by_segment(tmp_path: Path) -> None:
    with Board.init(tmp_path / "big") as big:
        for i in range(250):
            big.write(f"jobs/{i:03}", i)
            big.write(f"deep/a/b/{i:03}", i)
        big.write("note", 1)
    env = {"BLACKBOARD_DIR": str(tmp_path / "big")}
    assert [value for _, value in complete("read", "", **env)] == ["deep/", "jobs/", "note"]
    # One segment only: go down it (a lone `deep/` would get a space after it), to at most 200 keys.
    deep = [value for _, value in complete("read", "d", **env)]
    assert deep == [f"deep/a/b/{i:03}" for i in range(200)]


def test_key_candidates() -> None:
    keys = [f"a/{i}/x" for i in range(5)] + ["b"]
    assert key_candidates(keys, "") == keys
    assert key_candidates(keys, "", limit=3) == ["a/", "b"]
    assert key_candidates(keys[:5], "a", limit=3) == ["a/0/", "a/1/", "a/2/"]

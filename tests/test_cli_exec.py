"""`watch --exec`'s failure policy (issue 10, item 3) and exact-key watches (item 10).

A typo in the command must not consume a queue: a failing command is retried, then its event is a
dead letter with the command's exit status and stderr tail, before the cursor passes it; a command
the shell cannot run, `--on-failure stop`, or a dead letter that cannot be written stops the watch
(exit 8) with the cursor before the event. Real `python -m blackboard` processes, real files.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from _workers import cli_env, command

from blackboard import Board, InvalidKey, InvalidValue

pytestmark = pytest.mark.timeout(90)

EXIT_EXEC_FAILED = 8


def run_cli(board: Board, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(board, *args), capture_output=True, text=True, timeout=60, env=cli_env(**env), check=False
    )


@pytest.fixture
def jobs(tmp_path: Path) -> Board:
    board = Board.init(tmp_path / "board", author="tester")
    for i in range(3):
        board.write(f"jobs/{i}", i)
    return board


def done(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


# -- item 3: --exec failure policy -------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["./nonexistent.sh", "/dev/null"], ids=["not found (127)", "not executable (126)"])
def test_a_command_the_shell_cannot_run_stops_at_the_first_event(jobs: Board, cmd: str) -> None:
    """The issue's typo: it stopped nothing, moved the cursor to the end and dead-lettered nothing."""
    result = run_cli(jobs, "watch", "jobs/", "--cursor", "w", "--since", "start", "--exec", cmd, "--timeout", "1")
    assert result.returncode == EXIT_EXEC_FAILED, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("blackboard: error: ")]
    assert len(errors) == 1 and "seq 1 (jobs/0)" in errors[0] and "cursor stays before" in errors[0], result.stderr
    assert "attempt" not in result.stderr, "no retry can make it run"
    assert "Traceback" not in result.stderr
    assert jobs.cursors() == {"w": 0}, "the cursor did not pass the event"
    assert jobs.dead_letters() == []


def test_a_failing_command_is_retried_then_dead_lettered_and_delivery_goes_on(jobs: Board, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # jobs/1 fails on every attempt, writing more stderr than a letter keeps; the others succeed.
    cmd = (
        'if [ "$BLACKBOARD_KEY" = jobs/1 ]; then '
        'echo "attempt" >> "$OUT/tries"; head -c 6000 /dev/zero | tr "\\0" x >&2; echo " the reason" >&2; exit 3; '
        'fi; touch "$OUT/$BLACKBOARD_SEQ"'
    )
    result = run_cli(
        jobs,
        *("watch", "jobs/", "--cursor", "w", "--since", "start", "--count", "3"),
        *("--exec", cmd, "--retries", "2", "--retry-delay", "0"),
        OUT=str(out),
    )
    assert result.returncode == 0, result.stderr
    assert done(out) == ["1", "3", "tries"]
    assert (out / "tries").read_text().count("attempt") == 3  # once and 2 retries
    assert result.stderr.count("--exec failed on seq 2 (jobs/1): exit 3 (attempt") == 3
    assert "recorded in deadletter.jsonl" in result.stderr
    (letter,) = jobs.dead_letters()
    assert letter["event"]["seq"] == 2 and letter["event"]["key"] == "jobs/1"
    assert (letter["exit_status"], letter["attempts"], letter["command"]) == (3, 3, cmd)
    assert letter["stderr"].endswith("x the reason\n") and len(letter["stderr"]) == 4096
    assert letter["prefix"] == "jobs/" and "exit 3" in letter["error"]
    assert jobs.cursors() == {"w": 4 - 1}, "past the dead letter: it is recorded"


def test_a_command_that_fails_once_succeeds_on_its_retry(jobs: Board, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cmd = 'if [ ! -e "$OUT/failed-$BLACKBOARD_SEQ" ]; then touch "$OUT/failed-$BLACKBOARD_SEQ"; exit 1; fi'
    result = run_cli(
        jobs, "watch", "jobs/", "--since", "start", "--count", "3", "--exec", cmd, "--retry-delay", "0", OUT=str(out)
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("(attempt 1 of 3)") == 3 and "attempt 2" not in result.stderr
    assert jobs.dead_letters() == []


def test_on_failure_stop_leaves_the_cursor_before_the_event(jobs: Board, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    failing = 'test "$BLACKBOARD_KEY" != jobs/1 && touch "$OUT/$BLACKBOARD_SEQ"'
    args = ("watch", "jobs/", "--cursor", "w", "--since", "start", "--retries", "1", "--retry-delay", "0")
    result = run_cli(jobs, *args, "--on-failure", "stop", "--exec", failing, "--timeout", "1", OUT=str(out))
    assert result.returncode == EXIT_EXEC_FAILED, result.stderr
    assert "after 2 attempts (--on-failure stop)" in result.stderr.splitlines()[-1]
    assert done(out) == ["1"]
    assert jobs.cursors() == {"w": 1} and jobs.dead_letters() == []
    # Fixed, it resumes with the event that failed, and nothing was skipped.
    fixed = 'touch "$OUT/$BLACKBOARD_SEQ"'
    result = run_cli(jobs, *args, "--exec", fixed, "--count", "2", OUT=str(out))
    assert result.returncode == 0, result.stderr
    assert done(out) == ["1", "2", "3"]
    assert jobs.cursors() == {"w": 3}


def test_a_dead_letter_that_cannot_be_written_stops_the_watch(jobs: Board) -> None:
    (jobs.path / "deadletter.jsonl").mkdir()  # any write to it fails
    result = run_cli(jobs, "watch", "jobs/", "--cursor", "w", "--since", "start", "--exec", "exit 1", "--retries", "0")
    assert result.returncode == EXIT_EXEC_FAILED, result.stderr
    assert "dead letter could not be recorded" in result.stderr.splitlines()[-1]
    assert jobs.cursors() == {"w": 0}


def test_exec_help_documents_the_policy(jobs: Board) -> None:
    text = " ".join(run_cli(jobs, "watch", "--help").stdout.split())
    for words in ("--retries", "--retry-delay", "--on-failure [deadletter|stop]", "exit 126, 127", "exit 8"):
        assert words in text, words


# -- item 10: exact-key watches ----------------------------------------------------------------------------


def exact_board(tmp_path: Path) -> tuple[Board, list[int]]:
    """Events of responses/r1 among keys it prefixes: their seqs."""
    board = Board.init(tmp_path / "board")
    seqs = []
    for key in ("responses/r10", "responses/r1", "responses/r1/x", "responses/r", "responses/r1"):
        entry = board.write(key, key)
        if key == "responses/r1":
            seqs.append(entry.seq)
    with board.transaction() as tx:
        tx.write("responses/r11", 0)
        tx.write("responses/r1", "txn")
    seqs.append(board.last_seq)
    seqs.append(board.delete("responses/r1").seq)
    return board, seqs


def test_watch_key_matches_that_key_only(tmp_path: Path) -> None:
    board, seqs = exact_board(tmp_path)
    assert [e.seq for e in board.watch(key="responses/r1", since=0, timeout=0)] == seqs
    assert len(list(board.watch("responses/r1", since=0, timeout=0))) > len(seqs)  # a prefix: r10, r1/x, r11

    async def collect() -> list[int]:
        return [e.seq async for e in board.awatch(key="responses/r1", since=0, timeout=0)]

    assert asyncio.run(collect()) == seqs


def test_subscribe_key(tmp_path: Path) -> None:
    board, seqs = exact_board(tmp_path)
    got: list[int] = []
    finished = threading.Event()

    def on_event(event: Any) -> None:
        got.append(event.seq)
        if event.op == "delete":
            finished.set()

    with board.subscribe("", on_event, key="responses/r1", since=0):
        assert finished.wait(30)
    assert got == seqs


def test_watch_key_rejects_a_prefix_too_and_bad_keys(tmp_path: Path) -> None:
    board = Board.init(tmp_path / "board")
    with pytest.raises(InvalidValue, match="not both"):
        board.watch("responses/", key="responses/r1")
    with pytest.raises(InvalidKey):
        board.watch(key="../escape")
    with pytest.raises(InvalidKey):
        board.watch(key="a/")  # a key, not a prefix


def test_cli_watch_key(tmp_path: Path) -> None:
    board, seqs = exact_board(tmp_path)
    result = run_cli(board, "watch", "--key", "responses/r1", "--since", "start", "--timeout", "0")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in events] == seqs and {e["key"] for e in events} == {"responses/r1"}
    both = run_cli(board, "watch", "responses/", "--key", "responses/r1", "--timeout", "0")
    assert both.returncode == 2 and "not both" in both.stderr and both.stdout == ""
    bad = run_cli(board, "watch", "--key", "../x", "--timeout", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr

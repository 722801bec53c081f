"""`blackboard watch`, `tail -f` and `cursors`, run as real processes (`python -m blackboard`).

Live output is read from the child's stdout pipe with a deadline, line by line, so a test can insist
that a line arrives before it writes the next event: that is what "live" and "flushed" mean.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from _watch_workers import assert_events_are_records, log_records, matching
from _workers import cli_env, command

from blackboard import Board

pytestmark = pytest.mark.timeout(60)

#: Settings that would change what the children do if the test runner happened to have them set.


def run_cli(board: Board, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(board, *args), capture_output=True, text=True, timeout=timeout, env=cli_env(), check=False
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


class Live:
    """A running CLI process whose stdout is read line by line, each line with a deadline."""

    def __init__(self, args: list[str], env: dict[str, str], stderr_path: Path) -> None:
        self._stderr: IO[bytes] = stderr_path.open("w+b")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._buffer = b""
        self._eof = False

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self._fd], [], [], max(timeout, 0))
        if ready:
            data = os.read(self._fd, 1 << 16)
            self._eof = not data
            self._buffer += data

    def line(self, timeout: float = 10.0) -> str:
        """The next line of output; fails if none is complete within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert not self._eof, f"the process ended (stderr: {self.stderr()!r})"
            assert remaining > 0, f"no line within {timeout} s (partial output {self._buffer!r})"
            self._read(remaining)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def assert_quiet(self, seconds: float) -> None:
        """No line is printed within `seconds`."""
        deadline = time.monotonic() + seconds
        while not self._eof and (remaining := deadline - time.monotonic()) > 0:
            self._read(remaining)
        assert b"\n" not in self._buffer, f"unexpected output {self._buffer!r}"

    def finish(self, timeout: float = 10.0) -> tuple[int, list[str]]:
        """Wait for the process to end; its exit status and the lines it printed that were not read."""
        status = self.proc.wait(timeout)
        while not self._eof:
            self._read(timeout)
        return status, [line.decode() for line in self._buffer.splitlines()]

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()


StartCli = Callable[..., Live]


@pytest.fixture
def wboard(tmp_path: Path) -> Iterator[Board]:
    """A new board on the real filesystem, closed at teardown."""
    board = Board.init(tmp_path / "board", author="tester")
    yield board
    board.close()


@pytest.fixture
def start_cli(wboard: Board, tmp_path: Path) -> Iterator[StartCli]:
    """Start `blackboard ARGS --board <wboard>`; every process is killed if need be and reaped."""
    started: list[Live] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Live:
        live = Live(command(wboard, *args), env or cli_env(), tmp_path / f"stderr{len(started)}.txt")
        started.append(live)
        return live

    yield start
    for live in started:
        live.close()


def wait_until_watching(board: Board, live: Live, prefix: str) -> dict[str, Any]:
    """Write probe events until `live` (a `watch --since now`) prints one: from then on it is live."""
    for i in range(200):
        board.write(f"{prefix}probe-{i}", i)
        try:
            return dict(json.loads(live.line(timeout=0.1)))
        except AssertionError:
            if live.proc.poll() is not None:
                raise
    raise AssertionError("the watch never printed a probe")


# -- watch -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["--notify", "--poll"])
def test_watch_prints_each_event_live(wboard: Board, start_cli: StartCli, mode: str) -> None:
    wboard.write("x/0", 0)
    live = start_cli("watch", "x/", "--since", str(wboard.last_seq), mode)
    for i in range(1, 4):
        event = wboard.write(f"x/{i}", {"i": i, "text": "é\n"})
        wboard.write("y/other", i)
        doc = json.loads(live.line(timeout=5))  # before the next write: live, and flushed
        assert doc["seq"] == event.seq
        assert (doc["op"], doc["key"], doc["value"], doc["version"], doc["author"]) == (
            "put",
            f"x/{i}",
            {"i": i, "text": "é\n"},
            1,
            "tester",
        )
    gone = wboard.delete("x/1")
    doc = json.loads(live.line(timeout=5))
    assert (doc["seq"], doc["op"], doc["key"], doc["value"], doc["version"]) == (gone.seq, "delete", "x/1", None, 0)
    live.proc.terminate()
    status, rest = live.finish()
    assert (status, rest) == (143, [])
    assert "Traceback" not in live.stderr()


def test_watch_since_now_skips_history(wboard: Board, start_cli: StartCli) -> None:
    old = [wboard.write(f"x/old-{i}", i).seq for i in range(3)]
    live = start_cli("watch", "x/")
    first = wait_until_watching(wboard, live, "x/")
    assert first["key"].startswith("x/probe-")
    assert first["seq"] > old[-1]
    later = wboard.write("x/later", 1)
    assert json.loads(live.line())["seq"] == later.seq


def test_watch_since_start_and_seq_replay_then_stop_on_timeout(wboard: Board) -> None:
    for i in range(3):
        wboard.write(f"x/{i}", i)
        wboard.write(f"y/{i}", i)
    records = log_records(wboard.path)

    result = run_cli(wboard, "watch", "x/", "--since", "start", "--timeout", "0.3")
    assert result.returncode == 0, result.stderr
    assert_events_are_records(json_lines(result.stdout), matching(records, "x/"))

    result = run_cli(wboard, "watch", "--since", "3", "--timeout", "0.3")
    assert result.returncode == 0, result.stderr
    assert_events_are_records(json_lines(result.stdout), matching(records, "", 3))


def test_watch_timeout_on_a_quiet_board(wboard: Board) -> None:
    started = time.monotonic()
    result = run_cli(wboard, "watch", "--timeout", "0.5")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert 0.4 < time.monotonic() - started < 10


def test_watch_count_stops_after_n_events(wboard: Board, start_cli: StartCli) -> None:
    seqs = [wboard.write(f"x/{i}", i).seq for i in range(5)]
    result = run_cli(wboard, "watch", "x/", "--since", "start", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert [d["seq"] for d in json_lines(result.stdout)] == seqs[:2]
    # Counting live events: the process ends by itself after the second one.
    live = start_cli("watch", "x/", "--since", str(wboard.last_seq), "--count", "2")
    first = wboard.write("x/live-1", 1)
    assert json.loads(live.line())["seq"] == first.seq
    second = wboard.write("x/live-2", 2)
    status, rest = live.finish()
    assert status == 0
    assert [json.loads(line)["seq"] for line in rest] == [second.seq]


def test_watch_rejects_a_bad_since(wboard: Board) -> None:
    result = run_cli(wboard, "watch", "--since", "yesterday")
    assert result.returncode == 2
    assert "--since" in result.stderr and "Traceback" not in result.stderr


# -- watch --exec ------------------------------------------------------------------------------------------

#: Saves each event's stdin and BLACKBOARD_* variables (NUL-separated: exact), and fails on "x/bad".
EXEC = (
    'cat > "$OUT/$BLACKBOARD_SEQ.stdin" && '
    'printf "%s\\0" "$BLACKBOARD_SEQ" "$BLACKBOARD_OP" "$BLACKBOARD_KEY" "$BLACKBOARD_VALUE" '
    '"$BLACKBOARD_VERSION" "$BLACKBOARD_TS" "$BLACKBOARD_EVENT_AUTHOR" > "$OUT/$BLACKBOARD_SEQ.env" && '
    'test "$BLACKBOARD_KEY" != x/bad || exit 7'
)


def test_watch_exec_runs_the_command_per_event(wboard: Board, start_cli: StartCli, tmp_path: Path) -> None:
    out = tmp_path / "exec"
    out.mkdir()
    value = {"text": "multi\nline \"quoted\" 'single' $HOME `x` é", "n": [1, 2.5, None]}
    wboard.write("x/one", value, author="alice")
    wboard.write("y/skipped", 0)
    bad = wboard.write("x/bad", 1)
    live = start_cli(
        "watch", "x/", "--since", "start", "--count", "4", "--retries", "0", "--exec", EXEC, env=cli_env(OUT=str(out))
    )
    wait_for_file = out / f"{bad.seq}.env"
    deadline = time.monotonic() + 10
    while not wait_for_file.exists():  # the failing command ran; delivery must go on live after it
        assert time.monotonic() < deadline, "the --exec command never ran for x/bad"
        time.sleep(0.01)
    wboard.delete("x/one", author="bob")
    wboard.write("x/two", "plain")
    status, rest = live.finish()
    assert status == 0, live.stderr()
    assert rest == [], "with --exec the events go to the command, not to stdout"

    records = matching(log_records(wboard.path), "x/")
    assert len(records) == 4
    assert sorted(int(p.stem) for p in out.glob("*.env")) == [r["seq"] for r in records]
    for record in records:
        stdin_doc = json.loads((out / f"{record['seq']}.stdin").read_text())
        assert_events_are_records([stdin_doc], [record])
        fields = (out / f"{record['seq']}.env").read_bytes().decode().split("\0")
        seq, op, key, value_json, version, ts, author = fields[:-1]
        assert (int(seq), op, key, int(version), author) == (
            record["seq"],
            record["op"],
            record["key"],
            record["version"],
            record["author"],
        )
        assert json.loads(value_json) == record["value"]
        assert ts == stdin_doc["ts"]
    stderr = live.stderr()
    assert f"--exec failed on seq {bad.seq} (x/bad): exit 7 (attempt 1 of 1)" in stderr
    assert stderr.count("--exec failed") == 1
    (letter,) = wboard.dead_letters()
    assert (letter["event"]["seq"], letter["exit_status"], letter["attempts"]) == (bad.seq, 7, 1)
    assert "Traceback" not in stderr


# -- cursors -----------------------------------------------------------------------------------------------


def cursor_list(board: Board) -> list[dict[str, Any]]:
    result = run_cli(board, "cursors", "--json")
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)


def test_watch_cursor_resumes_and_cursors_lists_it(wboard: Board) -> None:
    seqs = [wboard.write(f"x/{i}", i).seq for i in range(5)]
    wboard.write("y/0", 0)
    result = run_cli(wboard, "watch", "x/", "--cursor", "c1", "--since", "start", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert [d["seq"] for d in json_lines(result.stdout)] == seqs[:3]
    assert cursor_list(wboard) == [{"name": "c1", "seq": seqs[2], "lag": 6 - seqs[2]}]
    plain = run_cli(wboard, "cursors")
    assert plain.returncode == 0 and "c1" in plain.stdout and f"seq {seqs[2]}" in plain.stdout

    result = run_cli(wboard, "watch", "x/", "--cursor", "c1", "--count", "2")  # resumes; no --since needed
    assert [d["seq"] for d in json_lines(result.stdout)] == seqs[3:]

    reset = run_cli(wboard, "cursors", "--reset", "c1", "--to", "1")
    assert reset.returncode == 0, reset.stderr
    assert cursor_list(wboard) == [{"name": "c1", "seq": 1, "lag": 5}]
    result = run_cli(wboard, "watch", "x/", "--cursor", "c1", "--count", "1")
    assert [d["seq"] for d in json_lines(result.stdout)] == [seqs[1]]

    deleted = run_cli(wboard, "cursors", "--reset", "c1")
    assert deleted.returncode == 0, deleted.stderr
    assert cursor_list(wboard) == []


def test_watch_new_cursor_starts_now(wboard: Board) -> None:
    """`watch --cursor NEW` (default --since now) does not replay the board's history."""
    for i in range(3):
        wboard.write(f"x/{i}", i)
    result = run_cli(wboard, "watch", "x/", "--cursor", "new", "--timeout", "0.3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert cursor_list(wboard) == [{"name": "new", "seq": 3, "lag": 0}]


def test_watch_rejects_a_bad_cursor_name(wboard: Board) -> None:
    result = run_cli(wboard, "watch", "--cursor", "../escape", "--timeout", "0.1")
    assert result.returncode == 2, result.stderr
    assert "cursor" in result.stderr and "Traceback" not in result.stderr
    assert not (wboard.path / "escape").exists()
    assert cursor_list(wboard) == []


# -- stopping: signals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_watch_stops_cleanly_on_signal(wboard: Board, start_cli: StartCli, signum: int, status: int) -> None:
    """SIGTERM: exit 143; Ctrl-C: exit 130; no traceback either way, and the cursor keeps every event
    that was handled."""
    first = wboard.write("x/1", 1)
    live = start_cli("watch", "x/", "--cursor", "sig", "--since", "start")
    assert json.loads(live.line())["seq"] == first.seq
    second = wboard.write("x/2", 2)
    assert json.loads(live.line())["seq"] == second.seq
    deadline = time.monotonic() + 10
    while wboard.cursors().get("sig") != second.seq:  # handled once the watch waits for the next one
        assert time.monotonic() < deadline, f"cursor stuck at {wboard.cursors()}"
        time.sleep(0.01)
    live.proc.send_signal(signum)
    result, rest = live.finish()
    stderr = live.stderr()
    assert result == status, stderr
    assert rest == []
    assert "Traceback" not in stderr
    assert wboard.cursors() == {"sig": second.seq}


def test_watch_exec_stops_on_sigterm(wboard: Board, start_cli: StartCli, tmp_path: Path) -> None:
    """SIGTERM while an --exec command runs ends the watch cleanly too."""
    for i in range(100):
        wboard.write(f"x/{i}", i)
    ran = tmp_path / "ran"
    ran.mkdir()
    live = start_cli(
        "watch", "--since", "start", "--exec", 'touch "$OUT/$BLACKBOARD_SEQ"; sleep 0.05', env=cli_env(OUT=str(ran))
    )
    deadline = time.monotonic() + 10
    while len(os.listdir(ran)) < 3:  # the watch is running commands
        assert time.monotonic() < deadline, "the --exec command never ran"
        time.sleep(0.01)
    live.proc.terminate()
    status, _ = live.finish()
    assert status == 143, live.stderr()
    assert "Traceback" not in live.stderr()
    assert len(os.listdir(ran)) < 100


# -- tail -f -----------------------------------------------------------------------------------------------


def wait_until_following(board: Board, live: Live) -> Any:
    """Write probe events until `live` (a `tail -f --json -n 0`) prints one: the entry of that one."""
    for i in range(200):
        probe = board.write(f"probe/{i}", i)
        try:
            line = live.line(timeout=0.1)
        except AssertionError:
            continue
        while json.loads(line)["seq"] != probe.seq:
            line = live.line()
        return probe
    raise AssertionError("tail -f never printed a probe")


def test_gnu_tail_F_across_compaction_sees_what_the_readme_says(
    wboard: Board, start_cli: StartCli, tmp_path: Path
) -> None:
    """Issue 10, item 11. GNU `tail -F BOARD/log.jsonl` follows the log by name; compaction switches a
    new file in (never rewriting the one writers append to), so tail prints that file from its top:
    the header, then the kept records, every one at or below the last seq it had printed, then the new
    records. `blackboard tail -f --json` prints none of them again. README "Following the log"."""
    if shutil.which("tail") is None:
        pytest.skip("no tail(1) here")
    for i in range(200):
        wboard.write(f"k{i % 5}", i)
    log = wboard.path / "log.jsonl"
    gnu = Live(["tail", "-F", "-n", "+1", str(log)], cli_env(), tmp_path / "gnu-tail.err")
    try:
        ours = start_cli("tail", "-f", "-n", "0", "--json")
        before = [gnu.line() for _ in range(201)]  # the header and 200 records
        assert json.loads(before[-1])["seq"] == 200
        probe = wait_until_following(wboard, ours)
        while json.loads(gnu.line())["seq"] != probe.seq:  # both follow, at the same place
            pass
        report = wboard.compact()
        assert report.events_after < 201
        after = wboard.write("after", 1)
        replayed: list[str] = []
        while not replayed or json.loads(replayed[-1]).get("seq") != after.seq:
            replayed.append(gnu.line())
        assert replayed == log.read_text().splitlines(), "tail -F printed the new log file whole"
        assert "blackboard_log" in json.loads(replayed[0])  # the header, again
        assert all(json.loads(line)["seq"] <= probe.seq for line in replayed[1:-1])
        assert len(replayed) == 1 + report.events_after + 1
        assert json.loads(ours.line())["seq"] == after.seq, "blackboard tail -f replays nothing"
    finally:
        gnu.close()


def test_tail_follow_shows_new_events_as_readable_lines(wboard: Board, start_cli: StartCli) -> None:
    wboard.write("t/old", "before")
    live = start_cli("tail", "-f", "-n", "1")
    assert "t/old" in live.line()
    event = wboard.write("t/new-key", {"hello": "world"}, author="agent-7")
    line = live.line(timeout=5)
    assert not line.startswith("{"), "tail prints readable lines, not JSON"
    assert "t/new-key" in line and "agent-7" in line and "put" in line and "hello" in line
    assert line.split()[0] == str(event.seq)
    gone = wboard.delete("t/old")
    line = live.line(timeout=5)
    assert "t/old" in line and "delete" in line and line.split()[0] == str(gone.seq)
    live.assert_quiet(0.2)
    live.proc.terminate()
    status, rest = live.finish()
    assert (status, rest) == (143, [])
    assert "Traceback" not in live.stderr()

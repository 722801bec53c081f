"""The `blackboard` command, every verb but `watch`/`tail -f`: through click's CliRunner, and as a real process.

CliRunner tests pass `--board` explicitly and never chdir. The subprocess tests run `python -m blackboard`
(and the `blackboard` console script when it is installed) with BLACKBOARD_DIR, and check what only a real
process shows: the exit status, and that stderr is one `blackboard: error:` line, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import blackboard
from blackboard import Board
from blackboard.cli import cli

ERROR_PREFIX = "blackboard: error:"
ENV_VARS = ("BLACKBOARD_DIR", "BLACKBOARD_AUTHOR", "BLACKBOARD_POLL", "BLACKBOARD_POLL_INTERVAL")
#: A few keys and values written through the library before a test starts (see `filled`).
CONTENT: dict[str, Any] = {
    "a/b": {"x": 1},
    "a/c": [1, 2.5, None, True],
    "ab": 7,
    "s": "hello",
}
CONTENT_SEQ = {key: seq for seq, key in enumerate(CONTENT, start=1)}
PROC_TIMEOUT = 30

Snapshot = dict[str, bytes | None]


# -- helpers and fixtures --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A BLACKBOARD_DIR in the developer's shell must not decide which board a test uses.
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    """An empty board (created and closed through the library)."""
    path = tmp_path / "board"
    Board.init(path, author="tester").close()
    return path


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A board holding CONTENT at seq 1..4, entry files up to date."""
    path = tmp_path / "board"
    with Board.init(path, author="tester") as board:
        for key, value in CONTENT.items():
            board.write(key, value)
    return path


def invoke(runner: CliRunner, board: Path, *args: str, stdin: str | None = None, **kw: Any) -> Result:
    """`blackboard --board BOARD ARGS...` in-process."""
    return runner.invoke(cli, ["--board", str(board), *args], input=stdin, prog_name="blackboard", **kw)


def ok(result: Result) -> str:
    """Assert the command succeeded and return its stdout."""
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.stderr == ""
    return result.stdout


def assert_error(stderr: str, stdout: str, exit_code: int, expected: int) -> str:
    """A failed command: the documented status, nothing on stdout, exactly one `blackboard: error:` line."""
    assert exit_code == expected, (exit_code, stdout, stderr)
    assert stdout == ""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(ERROR_PREFIX), stderr
    assert stderr.endswith("\n")
    return lines[0]


def fails(result: Result, expected: int) -> str:
    # CliRunner turns an uncaught exception into exit 1 with `exception` set: that would be a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return assert_error(result.stderr, result.stdout, result.exit_code, expected)


def usage_error(result: Result) -> None:
    """click's own usage error: exit 2, its usage lines on stderr, no traceback."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "Error:" in result.stderr


def snapshot(root: Path) -> Snapshot:
    """Every file's bytes (None for a directory) under `root`, by relative path."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def lines_json(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


def log_bytes(board: Path) -> bytes:
    return (board / "log.jsonl").read_bytes()


def entry_file(board: Path, key: str) -> Path:
    # Only for keys made of safe characters, whose encoding is the key itself.
    return board / "entries" / f"{key}.json"


# -- init ---------------------------------------------------------------------------------------


def test_init_creates_a_board_and_is_idempotent(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "new" / "nested" / "board"
    out = ok(invoke(runner, path, "init"))
    assert json.loads(out) == {"board": str(path), "lock": "flock", "compact_at_bytes": 64 << 20, "last_seq": 0}
    assert (path / "board.json").is_file()
    assert (path / "log.jsonl").is_file()
    before = snapshot(path)

    assert ok(invoke(runner, path, "init")) == out
    assert snapshot(path) == before

    ok(invoke(runner, path, "write", "k", "1"))
    written = snapshot(path)
    assert json.loads(ok(invoke(runner, path, "init"))) == {
        "board": str(path),
        "lock": "flock",
        "compact_at_bytes": 64 << 20,
        "last_seq": 1,
    }
    assert snapshot(path) == written
    assert ok(invoke(runner, path, "read", "k")) == "1\n"


def test_init_options_are_kept_by_a_second_init(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "board"
    out = ok(invoke(runner, path, "init", "--lock", "soft", "--max-value-bytes", "64", "--fsync"))
    assert json.loads(out)["lock"] == "soft"
    config = json.loads((path / "board.json").read_bytes())
    assert (config["lock"], config["max_value_bytes"], config["fsync"]) == ("soft", 64, True)
    before = snapshot(path)
    # An existing board keeps its settings: a second init given other ones is an error that names them.
    line = fails(invoke(runner, path, "init", "--lock", "flock", "--max-value-bytes", "9"), 2)
    assert "init was given --lock flock, --max-value-bytes 9:" in line
    assert json.loads(ok(invoke(runner, path, "init")))["lock"] == "soft"  # a plain one: idempotent
    assert snapshot(path) == before


def test_init_rejects_a_bad_option_and_creates_nothing(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "board"
    usage_error(invoke(runner, path, "init", "--lock", "nfs"))
    usage_error(invoke(runner, path, "init", "--max-value-bytes", "0"))
    assert not path.exists()


# -- write --------------------------------------------------------------------------------------


def test_write_prints_key_version_and_seq(runner: CliRunner, empty: Path) -> None:
    out = ok(invoke(runner, empty, "write", "tasks/t1", '{"todo": [1, 2]}'))
    assert out == '{"key":"tasks/t1","version":1,"seq":1}\n'
    assert json.loads(ok(invoke(runner, empty, "write", "tasks/t1", '"done"'))) == {
        "key": "tasks/t1",
        "version": 2,
        "seq": 2,
    }
    assert json.loads(ok(invoke(runner, empty, "write", "other", "0"))) == {"key": "other", "version": 1, "seq": 3}
    # The board was closed: entry files are up to date, and the log has the three records.
    entry = json.loads(entry_file(empty, "tasks/t1").read_bytes())
    assert (entry["value"], entry["version"], entry["seq"]) == ("done", 2, 2)
    assert len(log_bytes(empty).splitlines()) == 4  # header + 3 records


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("2.5", 2.5),
        ("null", None),
        ("true", True),
        ('"a string"', "a string"),
        ('"héllo ✓ \\n"', "héllo ✓ \n"),
        ("[]", []),
        (' { "nested" : {"a": [1, {"b": null}]} } ', {"nested": {"a": [1, {"b": None}]}}),
        (str(2**64 - 1), 2**64 - 1),
        ("1e300", 1e300),
    ],
)
def test_write_parses_value_as_json(runner: CliRunner, empty: Path, text: str, value: Any) -> None:
    ok(invoke(runner, empty, "write", "k", text))
    out = ok(invoke(runner, empty, "read", "k"))
    assert json.loads(out) == value
    assert type(json.loads(out)) is type(value)


def test_write_negative_number_after_double_dash(runner: CliRunner, empty: Path) -> None:
    ok(invoke(runner, empty, "write", "--", "k", "-5"))
    assert ok(invoke(runner, empty, "read", "k")) == "-5\n"


def test_write_dash_reads_json_from_stdin(runner: CliRunner, empty: Path) -> None:
    out = ok(invoke(runner, empty, "write", "k", "-", stdin='{"from": "stdin",\n "n": [1, 2]}\n'))
    assert json.loads(out) == {"key": "k", "version": 1, "seq": 1}
    assert json.loads(ok(invoke(runner, empty, "read", "k"))) == {"from": "stdin", "n": [1, 2]}


@pytest.mark.parametrize(
    ("stdin", "stored"),
    [
        ("plain\n", "plain"),  # one trailing newline (echo's) is dropped...
        ("a\nb\n\n", "a\nb\n"),  # ...only one
        ("no newline", "no newline"),
        ("", ""),
        ("{not json} NaN\n", "{not json} NaN"),
    ],
)
def test_write_text_from_stdin(runner: CliRunner, empty: Path, stdin: str, stored: str) -> None:
    ok(invoke(runner, empty, "write", "k", "-", "--text", stdin=stdin))
    assert json.loads(ok(invoke(runner, empty, "read", "k"))) == stored


@pytest.mark.parametrize("text", ['{"not": "parsed"}', "NaN", "42", "", " spaced \n"])
def test_write_text_stores_the_argument_verbatim(runner: CliRunner, empty: Path, text: str) -> None:
    ok(invoke(runner, empty, "write", "--text", "k", text))
    assert json.loads(ok(invoke(runner, empty, "read", "k"))) == text
    assert ok(invoke(runner, empty, "read", "--raw", "k")) == text + "\n"


def test_write_expect_version(runner: CliRunner, empty: Path) -> None:
    # 0: only if absent.
    assert json.loads(ok(invoke(runner, empty, "write", "k", "1", "--expect-version", "0")))["version"] == 1
    before = snapshot(empty)
    line = fails(invoke(runner, empty, "write", "k", "2", "--expect-version", "0"), 4)
    assert "'k'" in line
    assert "absent" in line
    assert snapshot(empty) == before

    assert json.loads(ok(invoke(runner, empty, "write", "k", "2", "--expect-version", "1")))["version"] == 2
    before = snapshot(empty)
    line = fails(invoke(runner, empty, "write", "k", "3", "--expect-version", "1"), 4)
    assert "version 1" in line
    assert "version 2" in line
    assert snapshot(empty) == before
    # A key that does not exist is at version 0.
    fails(invoke(runner, empty, "write", "new", "1", "--expect-version", "1"), 4)
    assert snapshot(empty) == before
    assert ok(invoke(runner, empty, "read", "k")) == "2\n"

    # With --text and stdin too.
    ok(invoke(runner, empty, "write", "k", "-", "--text", "--expect-version", "2", stdin="three\n"))
    assert ok(invoke(runner, empty, "read", "--raw", "k")) == "three\n"


def test_write_author(runner: CliRunner, empty: Path) -> None:
    ok(invoke(runner, empty, "write", "k", "1", "--author", "bob"))
    assert json.loads(ok(invoke(runner, empty, "read", "--entry", "k")))["author"] == "bob"
    ok(invoke(runner, empty, "write", "k", "2", env={"BLACKBOARD_AUTHOR": "eve"}))
    assert json.loads(ok(invoke(runner, empty, "read", "--entry", "k")))["author"] == "eve"


def test_write_over_the_value_limit_is_bad_input(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "board"
    ok(invoke(runner, path, "init", "--max-value-bytes", "16"))
    ok(invoke(runner, path, "write", "--text", "k", "x" * 14))  # 16 bytes with its quotes
    before = snapshot(path)
    line = fails(invoke(runner, path, "write", "--text", "k", "x" * 15), 2)
    assert "16" in line
    assert snapshot(path) == before


# -- read ---------------------------------------------------------------------------------------


def test_read_prints_the_value_as_json(runner: CliRunner, filled: Path) -> None:
    for key, value in CONTENT.items():
        out = ok(invoke(runner, filled, "read", key))
        assert out.endswith("\n")
        assert out.count("\n") == 1
        assert json.loads(out) == value
    assert ok(invoke(runner, filled, "read", "s")) == '"hello"\n'


def test_read_raw_prints_strings_unquoted(runner: CliRunner, filled: Path) -> None:
    assert ok(invoke(runner, filled, "read", "--raw", "s")) == "hello\n"
    # Anything else is still JSON.
    assert json.loads(ok(invoke(runner, filled, "read", "--raw", "a/b"))) == {"x": 1}
    assert ok(invoke(runner, filled, "read", "--raw", "ab")) == "7\n"


def test_read_entry_prints_the_whole_entry(runner: CliRunner, filled: Path) -> None:
    entry = json.loads(ok(invoke(runner, filled, "read", "--entry", "a/b")))
    assert set(entry) == {"key", "value", "version", "seq", "author", "ts"}
    assert (entry["key"], entry["value"], entry["version"], entry["seq"], entry["author"]) == (
        "a/b",
        {"x": 1},
        1,
        1,
        "tester",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["ts"])
    # It is the entry file's content.
    assert entry == json.loads(entry_file(filled, "a/b").read_bytes())
    # --entry wins over --raw.
    assert json.loads(ok(invoke(runner, filled, "read", "--entry", "--raw", "s")))["value"] == "hello"


def test_read_missing_key_exits_3(runner: CliRunner, filled: Path) -> None:
    line = fails(invoke(runner, filled, "read", "nope"), 3)
    assert "'nope'" in line
    fails(invoke(runner, filled, "read", "--entry", "a"), 3)  # a prefix of keys is no key


# -- ls -----------------------------------------------------------------------------------------


def test_ls_is_human_readable_in_key_order(runner: CliRunner, filled: Path) -> None:
    lines = ok(invoke(runner, filled, "ls")).splitlines()
    assert [line.split()[0] for line in lines] == sorted(CONTENT)
    for key, line in zip(sorted(CONTENT), lines, strict=True):
        assert re.search(rf"\bv1\b.*\bseq {CONTENT_SEQ[key]}\b.*\btester\b", line), line
        assert line.endswith(json.dumps(CONTENT[key], separators=(",", ":"))), line


def test_ls_prefix_is_a_plain_string_prefix(runner: CliRunner, filled: Path) -> None:
    assert [line.split()[0] for line in ok(invoke(runner, filled, "ls", "a/")).splitlines()] == ["a/b", "a/c"]
    assert [line.split()[0] for line in ok(invoke(runner, filled, "ls", "a")).splitlines()] == ["a/b", "a/c", "ab"]
    assert ok(invoke(runner, filled, "ls", "zzz")) == ""


def test_ls_json_prints_one_entry_per_line(runner: CliRunner, filled: Path) -> None:
    entries = lines_json(ok(invoke(runner, filled, "ls", "--json")))
    assert [e["key"] for e in entries] == sorted(CONTENT)
    for entry in entries:
        assert set(entry) == {"key", "value", "version", "seq", "author", "ts"}
        assert entry["value"] == CONTENT[entry["key"]]
        assert entry["seq"] == CONTENT_SEQ[entry["key"]]
        assert entry == json.loads(ok(invoke(runner, filled, "read", "--entry", entry["key"])))
    assert [e["key"] for e in lines_json(ok(invoke(runner, filled, "ls", "--json", "a/")))] == ["a/b", "a/c"]


def test_ls_keys(runner: CliRunner, filled: Path) -> None:
    assert ok(invoke(runner, filled, "ls", "--keys")) == "".join(f"{k}\n" for k in sorted(CONTENT))
    assert ok(invoke(runner, filled, "ls", "--keys", "a/")) == "a/b\na/c\n"


def test_ls_on_an_empty_board_prints_nothing(runner: CliRunner, empty: Path) -> None:
    for args in ([], ["--json"], ["--keys"]):
        assert ok(invoke(runner, empty, "ls", *args)) == ""


def test_ls_invalid_prefix_exits_2(runner: CliRunner, filled: Path) -> None:
    fails(invoke(runner, filled, "ls", "/a"), 2)
    fails(invoke(runner, filled, "ls", "--keys", "a\x01"), 2)


# -- rm -----------------------------------------------------------------------------------------


def test_rm_deletes_the_key(runner: CliRunner, filled: Path) -> None:
    out = ok(invoke(runner, filled, "rm", "s"))
    assert out == '{"key":"s","version":0,"seq":5}\n'
    fails(invoke(runner, filled, "read", "s"), 3)
    assert "s" not in ok(invoke(runner, filled, "ls", "--keys")).splitlines()
    assert not entry_file(filled, "s").exists()
    before = snapshot(filled)
    fails(invoke(runner, filled, "rm", "s"), 3)  # twice: no such key
    assert snapshot(filled) == before
    # Its next write starts again at version 1.
    assert json.loads(ok(invoke(runner, filled, "write", "s", "1"))) == {"key": "s", "version": 1, "seq": 6}


def test_rm_removes_emptied_entry_directories(runner: CliRunner, filled: Path) -> None:
    ok(invoke(runner, filled, "rm", "a/b"))
    ok(invoke(runner, filled, "rm", "a/c"))
    assert not (filled / "entries" / "a").exists()
    assert ok(invoke(runner, filled, "ls", "--keys")) == "ab\ns\n"


def test_rm_expect_version(runner: CliRunner, filled: Path) -> None:
    before = snapshot(filled)
    line = fails(invoke(runner, filled, "rm", "s", "--expect-version", "2"), 4)
    assert "'s'" in line
    assert snapshot(filled) == before
    ok(invoke(runner, filled, "rm", "s", "--expect-version", "1"))
    fails(invoke(runner, filled, "read", "s"), 3)


# -- history and tail -----------------------------------------------------------------------------


def test_history(runner: CliRunner, empty: Path) -> None:
    for args in (["write", "k", "1"], ["write", "other", "9"], ["write", "k", "2"], ["rm", "k"], ["write", "k", '"x"']):
        ok(invoke(runner, empty, *args))

    events = lines_json(ok(invoke(runner, empty, "history", "--json", "k")))
    assert [(e["seq"], e["op"], e["version"], e["value"]) for e in events] == [
        (1, "put", 1, 1),
        (3, "put", 2, 2),
        (4, "delete", 0, None),
        (5, "put", 1, "x"),
    ]
    for event in events:
        assert event["key"] == "k"
        assert {"seq", "op", "key", "value", "version", "author", "ts"} <= set(event)

    lines = ok(invoke(runner, empty, "history", "k")).splitlines()
    assert len(lines) == 4
    assert [line.split()[0] for line in lines] == ["1", "3", "4", "5"]
    assert [line.split()[3] for line in lines] == ["put", "put", "delete", "put"]
    assert " v2 " in lines[1]
    assert lines[3].endswith('"x"')

    assert ok(invoke(runner, empty, "history", "never-written")) == ""
    fails(invoke(runner, empty, "history", "a/../b"), 2)


def test_tail(runner: CliRunner, empty: Path) -> None:
    with Board.open(empty, author="tester") as board:
        for i in range(12):
            board.write(f"k{i % 3}", i)
    events = lines_json(ok(invoke(runner, empty, "tail", "--json")))
    assert [e["seq"] for e in events] == list(range(3, 13))  # 10 by default, oldest first
    assert events[-1]["key"] == "k2"
    assert events[-1]["value"] == 11
    assert events[-1]["op"] == "put"

    assert [e["seq"] for e in lines_json(ok(invoke(runner, empty, "tail", "-n", "3", "--json")))] == [10, 11, 12]
    assert len(lines_json(ok(invoke(runner, empty, "tail", "--json", "-n", "100")))) == 12
    assert ok(invoke(runner, empty, "tail", "-n", "0")) == ""

    lines = ok(invoke(runner, empty, "tail", "-n", "2")).splitlines()
    assert [line.split()[0] for line in lines] == ["11", "12"]
    assert "\x1b[" not in "".join(lines)  # no colour when stdout is not a terminal
    assert lines[1].endswith("  11")
    usage_error(invoke(runner, empty, "tail", "-n", "-1"))


def test_tail_of_an_empty_board_prints_nothing(runner: CliRunner, empty: Path) -> None:
    assert ok(invoke(runner, empty, "tail")) == ""
    assert ok(invoke(runner, empty, "tail", "--json")) == ""


# -- check --------------------------------------------------------------------------------------


def test_check_consistent_board(runner: CliRunner, filled: Path) -> None:
    out = ok(invoke(runner, filled, "check"))
    assert out.splitlines() == ["last seq 4, 4 keys, entry files at seq 4", "consistent"]
    before = snapshot(filled)
    assert ok(invoke(runner, filled, "check", "--repair")).splitlines()[-1] == "consistent"
    assert snapshot(filled) == before


def test_check_missing_entry_file_then_repair(runner: CliRunner, filled: Path) -> None:
    original = entry_file(filled, "s").read_bytes()
    entry_file(filled, "s").unlink()
    before = snapshot(filled)

    result = invoke(runner, filled, "check")
    assert result.exit_code == 6, result.stdout
    assert "entry file missing: s" in result.stdout.splitlines()
    assert snapshot(filled) == before  # check changes nothing

    out = ok(invoke(runner, filled, "check", "--repair"))
    assert "repaired: entry file missing: s" in out.splitlines()
    assert out.splitlines()[-1] == "repaired"
    assert entry_file(filled, "s").read_bytes() == original

    assert ok(invoke(runner, filled, "check")).splitlines()[-1] == "consistent"


def test_check_stale_and_extra_entry_files_then_repair(runner: CliRunner, filled: Path) -> None:
    entry_file(filled, "ab").write_text('{"key": "ab", "value": 8}\n')
    entry_file(filled, "ghost").write_text("{}\n")

    result = invoke(runner, filled, "check")
    assert result.exit_code == 6, result.stdout
    problems = result.stdout.splitlines()
    assert "entry file stale: ab" in problems
    assert "entry file for no live key: entries/ghost.json" in problems

    ok(invoke(runner, filled, "check", "--repair"))
    assert json.loads(entry_file(filled, "ab").read_bytes())["value"] == 7
    assert not entry_file(filled, "ghost").exists()
    assert ok(invoke(runner, filled, "check")).splitlines()[-1] == "consistent"


TORN = b'{"seq":5,"op":"put","key":"z","val'


def test_check_reports_a_torn_log_tail(runner: CliRunner, filled: Path) -> None:
    with (filled / "log.jsonl").open("ab") as log:
        log.write(TORN)
    before = snapshot(filled)
    result = invoke(runner, filled, "check")
    assert snapshot(filled) == before
    assert result.exit_code == 6, result.stdout
    assert any("incomplete record" in line for line in result.stdout.splitlines()), result.stdout


def test_check_repair_cuts_a_torn_log_tail(runner: CliRunner, filled: Path) -> None:
    original = log_bytes(filled)
    with (filled / "log.jsonl").open("ab") as log:
        log.write(TORN)
    out = ok(invoke(runner, filled, "check", "--repair"))
    assert f"repaired: log ends in an incomplete record ({len(TORN)} bytes; a killed writer)" in out.splitlines()
    assert out.splitlines()[-1] == "repaired"
    assert log_bytes(filled) == original
    assert ok(invoke(runner, filled, "check")).splitlines()[-1] == "consistent"
    assert json.loads(ok(invoke(runner, filled, "write", "z", "1")))["seq"] == 5


# -- bad input changes nothing ---------------------------------------------------------------------

BAD_INPUT: list[tuple[list[str], int]] = [
    (["write", "a/../b", "1"], 2),
    (["write", "/x", "1"], 2),
    (["write", "", "1"], 2),
    (["write", "x/", "1"], 2),
    (["write", "a//b", "1"], 2),
    (["write", "a\x01", "1"], 2),
    (["write", "k" * 1025, "1"], 2),
    (["write", "k", "{bad"], 2),
    (["write", "k", "NaN"], 2),
    (["write", "k", "Infinity"], 2),
    (["write", "k", "[1, NaN]"], 2),
    (["write", "k", "1e400"], 2),
    (["write", "k", str(2**70)], 2),
    (["write", "k", str(2**64)], 2),
    (["write", "k", '"\\ud800"'], 2),
    (["write", "k", "[" * 300 + "]" * 300], 2),
    (["write", "k", ""], 2),
    (["write", "k", "1 2"], 2),
    (["write", "k", "1", "--author", "two\nlines"], 2),
    (["write", "s", "1", "--expect-version", "0"], 4),
    (["write", "s", "1", "--expect-version", "2"], 4),
    (["write", "new", "1", "--expect-version", "1"], 4),
    (["read", "nope"], 3),
    (["read", "a/../b"], 2),
    (["read", ""], 2),
    (["rm", "nope"], 3),
    (["rm", "/x"], 2),
    (["rm", "s", "--expect-version", "9"], 4),
    (["history", "/x"], 2),
    (["ls", "/x"], 2),
]


@pytest.mark.parametrize(("args", "code"), BAD_INPUT, ids=lambda v: repr(v)[:40])
def test_bad_input_exits_with_its_code_and_changes_nothing(
    runner: CliRunner, filled: Path, args: list[str], code: int
) -> None:
    before = snapshot(filled)
    fails(invoke(runner, filled, *args), code)
    assert snapshot(filled) == before


def test_bad_stdin_value_changes_nothing(runner: CliRunner, filled: Path) -> None:
    before = snapshot(filled)
    for stdin in ("", "NaN\n", '{"a": 1', str(2**70)):
        fails(invoke(runner, filled, "write", "k", "-", stdin=stdin), 2)
    assert snapshot(filled) == before


@pytest.mark.parametrize(
    "args",
    [
        ["write", "k"],
        ["write"],
        ["write", "k", "1", "--expect-version", "-1"],
        ["write", "k", "1", "--expect-version", "x"],
        ["write", "k", "1", "--bogus"],
        ["read"],
        ["rm", "s", "--expect-version", "0"],
        ["tail", "-n", "x"],
        ["bogus-command"],
    ],
)
def test_usage_errors_exit_2_and_change_nothing(runner: CliRunner, filled: Path, args: list[str]) -> None:
    before = snapshot(filled)
    usage_error(invoke(runner, filled, *args))
    assert snapshot(filled) == before


# -- not a board, other errors ---------------------------------------------------------------------

COMMANDS_ON_A_BOARD: list[list[str]] = [
    ["write", "k", "1"],
    ["read", "k"],
    ["ls"],
    ["rm", "k"],
    ["history", "k"],
    ["tail"],
    ["check"],
    ["check", "--repair"],
]


@pytest.mark.parametrize("args", COMMANDS_ON_A_BOARD, ids=" ".join)
@pytest.mark.parametrize("where", ["plain-dir", "missing-dir"])
def test_not_a_board_exits_5(runner: CliRunner, tmp_path: Path, args: list[str], where: str) -> None:
    path = tmp_path / where
    if where == "plain-dir":
        path.mkdir()
        (path / "notes.txt").write_text("mine\n")
    before = snapshot(path)
    line = fails(invoke(runner, path, *args), 5)
    assert str(path) in line
    assert "init" in line  # says how to make one
    assert snapshot(path) == before
    assert path.exists() == (where == "plain-dir")


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (b"{not json\n", "not valid JSON"),
        (b'{"format": "something-else", "version": 1}\n', "does not describe a blackboard"),
        (b'{"format": "blackboard", "version": 99}\n', "newer"),
    ],
)
def test_bad_board_json_exits_5(runner: CliRunner, filled: Path, config: bytes, says: str) -> None:
    (filled / "board.json").write_bytes(config)
    before = snapshot(filled)
    assert says in fails(invoke(runner, filled, "read", "s"), 5)
    fails(invoke(runner, filled, "write", "s", "2"), 5)
    assert snapshot(filled) == before


def test_a_corrupt_log_record_is_an_other_error(runner: CliRunner, filled: Path) -> None:
    lines = log_bytes(filled).splitlines(keepends=True)
    lines.insert(2, b"garbage\n")
    (filled / "log.jsonl").write_bytes(b"".join(lines))
    before = snapshot(filled)
    for args in (["read", "s"], ["ls"], ["write", "k", "1"]):
        assert "corrupt record" in fails(invoke(runner, filled, *args), 1)
    assert snapshot(filled) == before


def test_an_error_naming_an_odd_path_is_still_one_line(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "two\nlines"
    path.mkdir()
    fails(invoke(runner, path, "ls"), 5)


# -- --board, BLACKBOARD_DIR, --version, --help ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["ls", "--keys"], ["read", "s"], ["history", "--json", "s"], ["tail", "-n", "2"], ["check"], ["init"]],
    ids=" ".join,
)
def test_board_before_or_after_the_command(runner: CliRunner, filled: Path, args: list[str]) -> None:
    before = runner.invoke(cli, ["--board", str(filled), *args])
    after = runner.invoke(cli, [*args, "--board", str(filled)])
    assert (before.exit_code, before.stdout, before.stderr) == (after.exit_code, after.stdout, after.stderr)
    assert ok(before) != ""


def test_board_after_the_command_for_write_and_rm(runner: CliRunner, filled: Path) -> None:
    ok(runner.invoke(cli, ["write", "k", "1", "--board", str(filled)]))
    ok(runner.invoke(cli, ["rm", "--board", str(filled), "s"]))
    assert ok(invoke(runner, filled, "ls", "--keys")) == "a/b\na/c\nab\nk\n"


def test_command_board_wins_over_group_board(runner: CliRunner, filled: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert ok(runner.invoke(cli, ["--board", str(plain), "read", "s", "--board", str(filled)])) == '"hello"\n'


def test_board_from_environment(runner: CliRunner, filled: Path) -> None:
    env = {"BLACKBOARD_DIR": str(filled)}
    assert ok(runner.invoke(cli, ["read", "s"], env=env)) == '"hello"\n'
    ok(runner.invoke(cli, ["write", "k", "1"], env=env))
    assert ok(invoke(runner, filled, "read", "k")) == "1\n"


@pytest.mark.parametrize("position", ["before", "after"])
def test_explicit_board_wins_over_environment(runner: CliRunner, filled: Path, tmp_path: Path, position: str) -> None:
    # STYLE.md: explicit argument, else environment variable, else default.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ["--board", str(filled), "read", "s"] if position == "before" else ["read", "s", "--board", str(filled)]
    result = runner.invoke(cli, args, env={"BLACKBOARD_DIR": str(elsewhere)})
    assert ok(result) == '"hello"\n'


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"], prog_name="blackboard")
    assert ok(result) == f"blackboard, version {blackboard.__version__}\n"


def test_help_documents_commands_and_exit_codes(runner: CliRunner) -> None:
    out = ok(runner.invoke(cli, ["--help"], prog_name="blackboard"))
    assert out == ok(runner.invoke(cli, ["-h"], prog_name="blackboard"))
    for command in ("init", "write", "read", "ls", "rm", "history", "tail", "check"):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command
    codes = dict(re.findall(r"^\s+(\d+)\s+(\S.*)$", out.split("Exit codes:")[1], re.MULTILINE))
    assert set(codes) >= {"0", "1", "2", "3", "4", "5", "6"}
    for code, word in [
        ("0", "success"),
        ("1", "error"),
        ("2", "bad input"),
        ("3", "no such key"),
        ("4", "version conflict"),
        ("5", "not a board"),
        ("6", "check"),
    ]:
        assert word in codes[code], (code, codes[code])


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("init", ["--board", "--lock", "--max-value-bytes", "--fsync"]),
        ("write", ["--board", "--author", "--text", "--expect-version"]),
        ("read", ["--board", "--entry", "--raw"]),
        ("ls", ["--board", "--json", "--keys"]),
        ("rm", ["--board", "--author", "--expect-version"]),
        ("history", ["--board", "--json"]),
        ("tail", ["--board", "-n", "--follow", "--json", "--poll"]),
        ("check", ["--board", "--repair"]),
    ],
)
def test_help_of_each_command_lists_its_options(runner: CliRunner, command: str, options: list[str]) -> None:
    out = ok(runner.invoke(cli, [command, "--help"], prog_name="blackboard"))
    assert out.startswith(f"Usage: blackboard {command} ")
    assert out == ok(runner.invoke(cli, [command, "-h"], prog_name="blackboard"))
    listed = set(re.findall(r"(?<![\w-])(-{1,2}[a-z][\w-]*)", out.split("Options:")[1]))
    assert set(options) <= listed, (options, listed)
    assert "BLACKBOARD_DIR" in out  # --board's environment variable is shown


# -- as a real process --------------------------------------------------------------------------------

MODULE = [sys.executable, "-m", "blackboard"]


def proc_env(board: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["BLACKBOARD_AUTHOR"] = "proc"
    if board is not None:
        env["BLACKBOARD_DIR"] = str(board)
    return env


def run(
    board: Path | None, *args: str, stdin: str | None = None, exe: Sequence[str] = MODULE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*exe, *args],
        env=proc_env(board),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=PROC_TIMEOUT,
        check=False,
    )


def proc_ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    assert proc.stderr == ""
    return proc.stdout


def proc_fails(proc: subprocess.CompletedProcess[str], expected: int) -> str:
    return assert_error(proc.stderr, proc.stdout, proc.returncode, expected)


def test_process_every_command(tmp_path: Path) -> None:
    board = tmp_path / "board"
    out = proc_ok(run(board, "init"))
    assert json.loads(out) == {"board": str(board), "lock": "flock", "compact_at_bytes": 64 << 20, "last_seq": 0}
    before = snapshot(board)
    assert proc_ok(run(board, "init")) == out
    assert snapshot(board) == before

    assert proc_ok(run(board, "write", "tasks/t1", '{"todo": "x"}')) == '{"key":"tasks/t1","version":1,"seq":1}\n'
    assert json.loads(proc_ok(run(board, "write", "tasks/t1", "-", stdin='[1, "é"]\n'))) == {
        "key": "tasks/t1",
        "version": 2,
        "seq": 2,
    }
    proc_ok(run(board, "write", "note", "-", "--text", "--expect-version", "0", stdin="free text ✓\n"))

    entry = json.loads(proc_ok(run(board, "read", "--entry", "tasks/t1")))
    assert (entry["value"], entry["version"], entry["seq"], entry["author"]) == ([1, "é"], 2, 2, "proc")
    assert proc_ok(run(board, "read", "--raw", "note")) == "free text ✓\n"
    assert [e["key"] for e in lines_json(proc_ok(run(board, "ls", "--json")))] == ["note", "tasks/t1"]

    assert proc_ok(run(board, "rm", "note")) == '{"key":"note","version":0,"seq":4}\n'
    assert [e["op"] for e in lines_json(proc_ok(run(board, "history", "--json", "note")))] == ["put", "delete"]
    lines = proc_ok(run(board, "tail", "-n", "2")).splitlines()
    assert [line.split()[0] for line in lines] == ["3", "4"]
    assert "\x1b[" not in proc_ok(run(board, "tail"))  # a pipe is no terminal: no colour

    assert proc_ok(run(board, "check")).splitlines() == ["last seq 4, 1 keys, entry files at seq 4", "consistent"]


ERROR_CASES: list[tuple[list[str], int]] = [
    (["read", "nope"], 3),
    (["rm", "nope"], 3),
    (["write", "s", "2", "--expect-version", "3"], 4),
    (["write", "s", "2", "--expect-version", "0"], 4),
    (["write", "a/../b", "1"], 2),
    (["write", "k", "{bad"], 2),
    (["write", "k", "NaN"], 2),
    (["write", "k", str(2**70)], 2),
]


@pytest.mark.parametrize(("args", "code"), ERROR_CASES, ids=lambda v: repr(v)[:40])
def test_process_errors_are_one_line_and_change_nothing(filled: Path, args: list[str], code: int) -> None:
    before = snapshot(filled)
    log = log_bytes(filled)
    proc_fails(run(filled, *args), code)
    assert log_bytes(filled) == log
    assert snapshot(filled) == before


@pytest.mark.parametrize("where", ["plain-dir", "missing-dir"])
def test_process_not_a_board(tmp_path: Path, where: str) -> None:
    path = tmp_path / where
    if where == "plain-dir":
        path.mkdir()
    line = proc_fails(run(path, "write", "k", "1"), 5)
    assert str(path) in line
    assert path.exists() == (where == "plain-dir")
    assert snapshot(path) == {}


def test_process_check_and_repair(filled: Path) -> None:
    entry_file(filled, "a/c").unlink()
    proc = run(filled, "check")
    assert proc.returncode == 6, (proc.stdout, proc.stderr)
    assert "entry file missing: a/c" in proc.stdout.splitlines()
    assert "Traceback" not in proc.stderr
    assert "repaired: entry file missing: a/c" in proc_ok(run(filled, "check", "--repair")).splitlines()
    assert proc_ok(run(filled, "check")).splitlines()[-1] == "consistent"


def test_process_check_reports_a_torn_log_tail(filled: Path) -> None:
    with (filled / "log.jsonl").open("ab") as log:
        log.write(TORN)
    proc = run(filled, "check")
    assert proc.returncode == 6, (proc.stdout, proc.stderr)
    assert "incomplete record" in proc.stdout


def test_process_explicit_board_wins_over_environment(filled: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run(elsewhere, "--board", str(filled), "read", "s")
    assert proc_ok(proc) == '"hello"\n'


def test_process_help_lists_exit_codes(tmp_path: Path) -> None:
    out = proc_ok(run(tmp_path / "unused", "--help"))
    assert out.startswith("Usage: ")
    assert "Exit codes:" in out
    assert "6  check found" in out


def test_console_script(filled: Path) -> None:
    script = shutil.which("blackboard", path=str(Path(sys.executable).parent)) or shutil.which("blackboard")
    if script is None:
        pytest.skip("the blackboard console script is not installed")
    assert proc_ok(run(None, "--version", exe=[script])) == f"blackboard, version {blackboard.__version__}\n"
    assert proc_ok(run(None, "write", "--board", str(filled), "k", "[1]", exe=[script]))
    assert proc_ok(run(filled, "read", "k", exe=[script])) == "[1]\n"

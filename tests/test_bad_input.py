"""Bad input gets a clear error of its own type, and changes nothing on disk.

"Nothing" is checked, not assumed: a snapshot of every file's bytes (and every directory) of the
board before and after the failed call must be equal.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _workers import TESTS_DIR, log_lines, snapshot

from blackboard import (
    BlackboardError,
    Board,
    CorruptLog,
    InvalidKey,
    InvalidValue,
    NotABoard,
    ReadOnlyBoard,
)


@pytest.fixture
def filled(board: Board) -> Board:
    """The `board` fixture with a little content, entry files up to date."""
    board.write("k", {"v": 1})
    board.write("dir/k", [1, 2])
    board.write("k", {"v": 2})
    board.flush()
    return board


# -- keys ----------------------------------------------------------------------------------------------

INVALID_KEYS = [
    ("", "empty"),
    ("/a", "start with '/'"),
    ("a/", "end with '/'"),
    ("a//b", "empty segment"),
    (".", "segment '.'"),
    ("..", "segment '..'"),
    ("a/../b", "segment '..'"),
    ("a/./b", "segment '.'"),
    ("../../etc/passwd", "segment '..'"),
    ("a\x00b", "control character U+0000"),
    ("a\nb", "control character U+000A"),
    ("a\rb", "control character U+000D"),
    ("a\x1b[31mb", "control character U+001B"),
    ("a\x7fb", "control character U+007F"),
    ("a\ud800b", "surrogate"),
    ("k" * 1025, "more than 1024"),
    ("x/" + "k" * 251, "too long"),
]


@pytest.mark.parametrize(("key", "problem"), INVALID_KEYS, ids=[repr(k[:12]) for k, _ in INVALID_KEYS])
def test_invalid_key(filled: Board, key: str, problem: str) -> None:
    before = snapshot(filled.path)
    calls: list[Callable[[], Any]] = [
        lambda: filled.write(key, 1),
        lambda: filled.write(key, 1, expect_version=0),
        lambda: filled.delete(key),
        lambda: filled.read(key),
        lambda: filled.get(key),
        lambda: filled.history(key),
    ]
    for call in calls:
        with pytest.raises(InvalidKey) as info:
            call()
        assert problem in str(info.value), str(info.value)
        assert info.value.key == key
    assert snapshot(filled.path) == before


@pytest.mark.parametrize("key", [1, None, b"k", ("a",), ["a"]], ids=repr)
def test_a_key_must_be_a_str(filled: Board, key: Any) -> None:
    before = snapshot(filled.path)
    with pytest.raises(InvalidKey, match="a key is a str"):
        filled.write(key, 1)
    with pytest.raises(InvalidKey, match="a key is a str"):
        filled.delete(key)
    assert snapshot(filled.path) == before


@pytest.mark.parametrize(("prefix", "problem"), [("/a", "start with '/'"), ("a\x00", "control character"), (3, "str")])
def test_invalid_prefix(filled: Board, prefix: Any, problem: str) -> None:
    for call in (filled.keys, filled.read_prefix, lambda p: list(filled.entries(p))):
        with pytest.raises(InvalidKey, match=problem):
            call(prefix)


# -- values --------------------------------------------------------------------------------------------


class Custom:
    pass


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


NON_JSON: list[tuple[Any, str]] = [
    (float("nan"), "nan is not a JSON number"),
    (float("inf"), "inf is not a JSON number"),
    (float("-inf"), "-inf is not a JSON number"),
    ((1, 2), "tuple"),
    ({1, 2}, "set"),
    (frozenset(), "frozenset"),
    (datetime.datetime(2024, 1, 1), "datetime"),
    (datetime.date(2024, 1, 1), "date"),
    (object(), "object"),
    (Custom(), "Custom"),
    ({1: "x"}, "object key 1 is not a string"),
    ({("a",): "x"}, "object key"),
    (2**70, "does not fit in 64 bits"),
    (2**64, "does not fit in 64 bits"),
    (-(2**63) - 1, "does not fit in 64 bits"),
    (b"bytes", "bytes"),
    (bytearray(b"x"), "bytearray"),
    (decimal.Decimal("1.5"), "Decimal"),
    (1j, "complex"),
    ("lone \ud800 surrogate", "surrogate"),
    ({"ok": [1, {"deep": float("nan")}]}, "nan"),
    ([1, (2,)], "tuple"),
    (_deep(250), "nested deeper"),
]


@pytest.mark.parametrize(("value", "problem"), NON_JSON, ids=[p for _, p in NON_JSON])
def test_non_json_value(filled: Board, value: Any, problem: str) -> None:
    before = snapshot(filled.path)
    with pytest.raises(InvalidValue) as info:
        filled.write("k", value)
    assert problem in str(info.value), str(info.value)
    with pytest.raises(InvalidValue):
        filled.write("new", value, expect_version=0)
    assert filled.read("k") == {"v": 2}
    assert snapshot(filled.path) == before


def test_value_size_limit(board_path: Path) -> None:
    with Board.init(board_path, max_value_bytes=64) as board:
        assert board.write("fits", "x" * 62).value == "x" * 62  # 64 bytes encoded, quotes included
        assert board.write("fits", "é" * 31).version == 2  # 62 bytes of UTF-8 + 2
        board.flush()
        before = snapshot(board_path)
        for value in ["x" * 63, "é" * 32, {"list": list(range(30))}, ["y" * 40] * 2]:
            with pytest.raises(InvalidValue) as info:
                board.write("big", value)
            assert "more than this board's limit of 64" in str(info.value), str(info.value)
            assert "bytes" in str(info.value)
        assert snapshot(board_path) == before
    # The limit is the board's, not the handle's: a second process obeys it too.
    with Board.open(board_path) as other, pytest.raises(InvalidValue, match="limit of 64"):
        other.write("big", "x" * 100)


@pytest.mark.parametrize("expect", [-1, 1.0, "1", True, None], ids=repr)
def test_invalid_expect_version(filled: Board, expect: Any) -> None:
    before = snapshot(filled.path)
    if expect is None:  # None means "no compare-and-set": this one writes
        filled.write("k", 3, expect_version=expect)
        assert filled.read("k") == 3
        return
    with pytest.raises(InvalidValue, match="expect_version"):
        filled.write("k", 3, expect_version=expect)
    with pytest.raises(InvalidValue, match="expect_version"):
        filled.delete("k", expect_version=expect)
    assert snapshot(filled.path) == before


@pytest.mark.parametrize("author", ["", "two\nlines", "tab\there", "x" * 257, "\x1b[2J"], ids=repr)
def test_invalid_author(filled: Board, author: str) -> None:
    before = snapshot(filled.path)
    with pytest.raises(InvalidValue, match="author"):
        filled.write("k", 3, author=author)
    with pytest.raises(InvalidValue, match="author"):
        filled.delete("k", author=author)
    assert snapshot(filled.path) == before


def test_invalid_author_from_the_environment(filled: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKBOARD_AUTHOR", "bad\nauthor")
    with pytest.raises(InvalidValue, match="author"):
        Board.open(filled.path)


# -- not a board ---------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda d: _write(d / "readme.txt", b"hi").parent, "no board.json"),
        (lambda d: d / "missing", "no such directory"),
        (lambda d: _write(d / "a-file", b"hi"), "no such directory"),
        (lambda d: _write(d / "b" / "board.json", b"{not json").parent, "board.json is not valid JSON"),
        (lambda d: _write(d / "b" / "board.json", b"[1, 2]").parent, "does not describe a blackboard"),
        (lambda d: _write(d / "b" / "board.json", b'{"format": "other"}').parent, "does not describe a blackboard"),
        (
            lambda d: _write(d / "b" / "board.json", b'{"format": "blackboard", "version": 99}').parent,
            "newer than this blackboard reads",
        ),
    ],
    ids=["plain dir", "missing", "a file", "bad json", "not an object", "other format", "newer version"],
)
def test_not_a_board(tmp_path: Path, setup: Callable[[Path], Path], problem: str) -> None:
    target = setup(tmp_path)
    before = snapshot(tmp_path)
    for read_only in (False, True):
        with pytest.raises(NotABoard) as info:
            Board.open(target, read_only=read_only)
        assert problem in str(info.value), str(info.value)
        assert info.value.path == str(target)
    assert snapshot(tmp_path) == before, "a failed open created or changed something"


# -- a corrupt log ----------------------------------------------------------------------------------------


def _spoil(lines: list[bytes], index: int, replacement: bytes) -> list[bytes]:
    return [replacement if i == index else line for i, line in enumerate(lines)]


CORRUPTIONS: dict[str, tuple[int, Callable[[list[bytes]], bytes]]] = {
    # name: (index of the spoiled line, 0 being the header; the spoiled line)
    "not json": (2, lambda lines: b"this is not json"),
    "half a line": (2, lambda lines: lines[2][: len(lines[2]) // 2]),
    "not an object": (2, lambda lines: b"[1, 2, 3]"),
    "no seq": (2, lambda lines: lines[2].replace(b'"seq":2,', b"")),
    "seq as text": (2, lambda lines: lines[2].replace(b'"seq":2', b'"seq":"2"')),
    "unknown op": (2, lambda lines: lines[2].replace(b'"op":"put"', b'"op":"frob"')),
    "seq gap": (2, lambda lines: lines[2].replace(b'"seq":2', b'"seq":7')),
    "seq repeated": (2, lambda lines: lines[2].replace(b'"seq":2', b'"seq":1')),
    "binary junk": (2, lambda lines: b"\xff\xfe\x00garbage"),
    "bad last line": (4, lambda lines: b"{}"),
}


@pytest.fixture
def corrupt_board(board_path: Path, request: pytest.FixtureRequest) -> tuple[Path, int]:
    """A board of 4 records with one complete line spoiled; returns (path, offset of that line)."""
    with Board.init(board_path, author="w") as board:
        for i in range(4):
            board.write(f"k{i % 2}", i)
    index, spoil = CORRUPTIONS[request.param]
    original = log_lines(board_path)
    lines = _spoil(original, index, spoil(original))
    assert lines[index] != original[index], "the corruption did not change the line"
    (board_path / "log.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    offset = sum(len(line) + 1 for line in lines[:index])
    return board_path, offset


CALLS: dict[str, Callable[[Board], Any]] = {
    "read": lambda b: b.read("k0"),
    "get": lambda b: b.get("k1"),
    "keys": lambda b: b.keys(),
    "read_prefix": lambda b: b.read_prefix(""),
    "entries": lambda b: list(b.entries()),
    "last_seq": lambda b: b.last_seq,
    "write": lambda b: b.write("k0", "new"),
    "write_if_absent": lambda b: b.write("fresh", "new", expect_version=0),
    "delete": lambda b: b.delete("k0"),
    "flush": lambda b: b.flush(),
}


@pytest.mark.parametrize("corrupt_board", sorted(CORRUPTIONS), indirect=True)
def test_corrupt_record_stops_reads_and_writes(corrupt_board: tuple[Path, int]) -> None:
    path, offset = corrupt_board
    before = snapshot(path)
    for name, call in CALLS.items():
        with Board.open(path) as board, pytest.raises(CorruptLog) as info:
            call(board)
        err = info.value
        assert err.offset == offset, name
        line = path.joinpath("log.jsonl").read_bytes()[:offset].count(b"\n") + 1
        assert f"corrupt record at line {line}, byte {offset}" in str(err), name
        assert f"blackboard --board {path} repair" in str(err), name  # the advice is the command to run
        assert err.path == str(path / "log.jsonl"), name
    with Board.open(path, read_only=True) as reader, pytest.raises(CorruptLog):
        reader.read("k0")
    # check reports it (spec 7.3, kind corrupt) rather than stopping at it, and changes nothing either.
    with Board.open(path) as board:
        report = board.check()
    damaged = [p for p in report.details() if p.kind == "corrupt"]
    assert not report.ok and damaged and f"byte {offset}" in damaged[0].detail, report.details()
    assert snapshot(path) == before, "something was written to a board whose log is corrupt"


@pytest.mark.parametrize("corrupt_board", ["not json", "seq gap", "bad last line"], indirect=True)
def test_corrupt_record_is_reported_again_on_retry(corrupt_board: tuple[Path, int]) -> None:
    """A handle that met a corrupt record keeps stopping there: retrying must not skip past it."""
    path, offset = corrupt_board
    before = snapshot(path)
    with Board.open(path) as board:
        for name, call in CALLS.items():
            with pytest.raises(CorruptLog) as info:
                call(board)
            assert info.value.offset == offset, f"{name}: {info.value}"
    assert snapshot(path) == before, "something was written to a board whose log is corrupt"


@pytest.mark.parametrize("corrupt_board", ["not json", "not an object", "unknown op"], indirect=True)
def test_corrupt_record_stops_history(corrupt_board: tuple[Path, int]) -> None:
    path, offset = corrupt_board
    with Board.open(path) as board, pytest.raises(CorruptLog) as info:
        board.history("k0")
    assert info.value.offset == offset


def test_corrupt_header(board_path: Path) -> None:
    with Board.init(board_path) as board:
        board.write("k", 1)
    lines = log_lines(board_path)
    (board_path / "log.jsonl").write_bytes(b"".join(line + b"\n" for line in [b'{"something": "else"}', *lines[1:]]))
    before = snapshot(board_path)
    with Board.open(board_path) as board:
        for call in (lambda: board.read("k"), lambda: board.write("k", 2)):
            with pytest.raises(CorruptLog) as info:
                call()
            assert info.value.offset == 0
            assert "header" in str(info.value)
    assert snapshot(board_path) == before


# -- a read-only board ------------------------------------------------------------------------------------


def test_read_only_handle(filled: Board) -> None:
    filled.close()
    before = snapshot(filled.path)
    with Board.open(filled.path, read_only=True) as board:
        assert board.read("k") == {"v": 2}
        assert board.keys() == ["dir/k", "k"]
        assert len(board.history("k")) == 2
        assert board.check().ok
        for call in (
            lambda: board.write("k", 3),
            lambda: board.write("new", 3, expect_version=0),
            lambda: board.delete("k"),
            board.repair,
        ):
            with pytest.raises(ReadOnlyBoard) as info:
                call()
            assert "read_only=True" in str(info.value)
            assert info.value.path == str(filled.path)
    assert snapshot(filled.path) == before


@pytest.fixture
def world_readable_board() -> Iterator[Path]:
    """A board in a fresh directory that other users may read (tmp_path's parents are private)."""
    outer = Path(tempfile.mkdtemp())
    try:
        outer.chmod(0o755)
        for parent in outer.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                pytest.skip(f"{parent} is not searchable by other users (set TMPDIR elsewhere)")
        with Board.init(outer / "b", author="owner") as board:
            board.write("k", "v")
            board.write("k", "v2")
        yield outer / "b"
    finally:
        for dirpath, _dirs, _files in os.walk(outer):  # undo a non-root run's chmod before removing
            os.chmod(dirpath, 0o755)
        shutil.rmtree(outer)


def _probe(path: Path, uid: int | None) -> dict[str, list[Any]]:
    code = f"import sys; sys.path.insert(0, {TESTS_DIR!r}); import _workers; _workers.probe_main()"
    result = subprocess.run(
        [sys.executable, "-c", code, str(path), "" if uid is None else str(uid)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    probe: dict[str, list[Any]] = json.loads(result.stdout.splitlines()[-1])
    return probe


def test_board_without_write_permission(world_readable_board: Path) -> None:
    """A process that may read but not write the board (another user, a read-only mount): reads work,
    every write says ReadOnlyBoard, nothing else fails with a bare OSError, and nothing changes."""
    path = world_readable_board
    if os.geteuid() == 0:
        uid: int | None = 65534  # nobody: root ignores permission bits, so drop root in the child
    else:
        uid = None
        for dirpath, _dirs, files in os.walk(path):
            for name in files:
                os.chmod(Path(dirpath) / name, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.chmod(dirpath, 0o555)
        if os.access(path / "log.jsonl", os.W_OK):
            pytest.skip("chmod does not stop this user from writing")
    before = snapshot(path)
    probe = _probe(path, uid)

    assert probe["read"] == ["ok", "v2"]
    assert probe["keys"] == ["ok", ["k"]]
    assert probe["history"] == ["ok", 2]
    assert probe["last_seq"] == ["ok", 2]
    assert probe["ro_read"] == ["ok", "v2"]
    assert probe["init_existing"] == ["ok", "v2"]  # init of an existing board only opens it
    for op in ("write", "delete", "repair", "ro_write", "init_new"):
        status, kind, message, _ours = probe[op]
        assert (status, kind) == ("error", "ReadOnlyBoard"), (op, probe[op])
        assert "read-only" in message, (op, message)
    # check() changes nothing, so a reader can run it; flush() has nothing to do (entries are current).
    assert probe["ro_check"] == ["ok", True], probe["ro_check"]
    for op in ("check", "flush"):
        assert probe[op][0] == "ok" or probe[op][1] == "ReadOnlyBoard", (op, probe[op])
    for op, outcome in probe.items():
        assert outcome[0] == "ok" or outcome[3], f"{op} raised a bare {outcome[1]}: {outcome[2]}"
    assert snapshot(path) == before


def test_errors_are_blackboard_errors() -> None:
    """Every failure above is catchable as BlackboardError (the CLI relies on it)."""
    for cls in (InvalidKey, InvalidValue, NotABoard, ReadOnlyBoard, CorruptLog):
        assert issubclass(cls, BlackboardError)

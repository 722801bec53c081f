"""Values: any plain JSON value comes back exactly as written, by every read path and from disk.

"Exactly" is stricter than ==: 1 and 1.0 and True are equal in Python but not the same JSON, and
-0.0 == 0.0. `same()` compares types, float bits and object key order too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from _workers import entry_files, log_lines
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blackboard import Board
from blackboard.core import codec as _codec
from blackboard.core import record as _record
from blackboard.core.keys import key_to_relpath

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=UINT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=25,
)

EDGE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    INT64_MIN,
    2**63 - 1,
    2**63,
    UINT64_MAX,
    0.0,
    -0.0,
    1.0,
    0.1,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    1e16,
    1e-7,
    123456789.12345679,
    "",
    "\x00",
    "line\nbreak\r\n\t",
    '"quoted" \\ back',
    "\u2028\u2029",
    "\x7f\x85",
    "é日本\U0001f600\U0010ffff",
    [],
    {},
    [[[]]],
    {"": ""},
    {"b": 1, "a": 2, "c": {"z": None, "y": [1.5, "x", False]}},
    [None, True, 1, 1.0, "1", [1], {"1": 1}],
    {"deep": [[[[[[[[[[[[{"x": [1]}]]]]]]]]]]]]},
]


def same(a: Any, b: Any) -> bool:
    """JSON identity: same types, same float bits, same order of object keys."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def test_same_is_strict() -> None:
    assert same({"a": [1, 1.5]}, {"a": [1, 1.5]})
    assert not same(1, 1.0)
    assert not same(1, True)
    assert not same(0.0, -0.0)
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})


def assert_round_trips(board: Board, key: str, value: Any) -> None:
    """Every read path of this handle, a fresh handle and the entry file give back `value` exactly."""
    written = board.write(key, value)
    assert same(written.value, value)
    assert same(board.read(key), value)
    entry = board.get(key)
    assert entry is not None
    assert same(entry.value, value)
    assert same(board.read_prefix(key)[key], value)
    assert same(next(e for e in board.entries(key) if e.key == key).value, value)
    assert same(board.history(key)[-1].value, value)
    with Board.open(board.path, read_only=True) as fresh:
        assert same(fresh.read(key), value)
    # The record is one line, readable by any JSON parser (here the standard library's).
    record = json.loads(log_lines(board.path)[-1])
    assert record["seq"] == written.seq
    assert same(record["value"], value)


@pytest.mark.parametrize("value", EDGE_VALUES, ids=repr)
def test_edge_values_round_trip(board: Board, value: Any) -> None:
    assert_round_trips(board, "v", value)
    board.close()
    assert same(entry_files(board.path)[key_to_relpath("v")]["value"], value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
@example(value={"a": 1, "b": [2.5, None, "x"]})
def test_json_values_round_trip(board: Board, value: Any) -> None:
    assert_round_trips(board, "v", value)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(json_values, min_size=1, max_size=6))
def test_json_values_round_trip_through_entry_files(
    tmp_path_factory: pytest.TempPathFactory, values: list[Any]
) -> None:
    root = tmp_path_factory.mktemp("codec") / "b"
    with Board.init(root) as board:
        for i, value in enumerate(values):
            board.write(f"v/{i}", value)
    files = entry_files(root)
    assert len(files) == len(values)
    for i, value in enumerate(values):
        assert same(files[key_to_relpath(f"v/{i}")]["value"], value)
    with Board.open(root) as fresh:
        for i, value in enumerate(values):
            assert same(fresh.read(f"v/{i}"), value)


def test_values_larger_than_a_read_chunk(board_path: Path) -> None:
    """The log reader reads 4 MiB at a time: a record longer than that is still read whole."""
    big = "x" * (5 << 20)
    with Board.init(board_path, max_value_bytes=16 << 20) as board:
        board.write("before", 1)
        board.write("big", big)
        board.write("also", {"a": "y" * (3 << 20)})
        board.write("after", 2)
    with Board.open(board_path) as board:
        assert board.read("big") == big
        assert len(board.read("also")["a"]) == 3 << 20
        assert (board.read("after"), board.last_seq) == (2, 4)
        assert board.check().ok


def test_reads_are_copies(board: Board) -> None:
    """A caller mutating what it wrote or read cannot change what anybody reads next."""
    value: dict[str, Any] = {"list": [1, 2], "nested": {"a": 1}}
    written = board.write("k", value)
    value["list"].append(3)
    value["new"] = True
    assert board.read("k") == {"list": [1, 2], "nested": {"a": 1}}
    assert written.value == {"list": [1, 2], "nested": {"a": 1}}
    got = board.read("k")
    got["nested"]["a"] = 99
    entry = board.get("k")
    assert entry is not None
    entry.value["list"].clear()
    board.read_prefix("")["k"]["list"].append(0)
    assert board.read("k") == {"list": [1, 2], "nested": {"a": 1}}


def test_record_layout(board: Board) -> None:
    """spec/FORMAT.md: one compact JSON object per line, fields in a fixed order, ts in UTC."""
    board.write("a", {"x": "multi\nline"}, author="someone")
    board.delete("a")
    lines = log_lines(board.path)
    assert list(json.loads(lines[0])) == [
        "blackboard_log",
        "compacted_through",
        "purged_deletes_through",
        "archived_through",
        "generation",
        "xxh3",
    ]
    put, delete = (json.loads(line) for line in lines[1:])
    order = ["seq", "op", "key", "value", "version", "author", "ts", "xxh3"]  # the checksum last (5.6)
    assert list(put) == order
    assert list(delete) == order
    assert (put["op"], put["version"], put["author"], put["value"]) == ("put", 1, "someone", {"x": "multi\nline"})
    assert (delete["op"], delete["version"], delete["value"]) == ("delete", 0, None)
    for rec in (put, delete):
        assert rec["ts"].endswith("Z") and len(rec["ts"]) == len("2024-01-01T00:00:00.000000Z")


def test_entry_file_is_pretty_json(board_path: Path) -> None:
    with Board.init(board_path, author="me") as board:
        entry = board.write("dir/k", {"a": [1, 2]})
    data = (board_path / "entries" / "dir" / "k.json").read_bytes()
    assert data.endswith(b"\n") and b"\n  " in data  # made to be `cat`
    doc = json.loads(data)
    assert list(doc) == ["key", "value", "version", "seq", "author", "ts"]
    assert doc == {
        "key": "dir/k",
        "value": {"a": [1, 2]},
        "version": 1,
        "seq": entry.seq,
        "author": "me",
        "ts": json.loads(log_lines(board_path)[-1])["ts"],
    }


@given(
    key=st.text(min_size=1, max_size=20).filter(lambda k: all(c >= " " for c in k)),
    value=json_values,
    author=st.text(min_size=1, max_size=10),
    prefix=st.text(max_size=5),
)
def test_changes_and_key_prefix_read_the_line_as_written(key: str, value: Any, author: str, prefix: str) -> None:
    """The index keeps a value's JSON from its record, and watchers pass over other prefixes'
    lines unparsed: both must agree with a full parse, for any key, value and author."""
    value_json = _codec.encode_value(value, 1 << 20)
    line = _record.encode_record(7, "put", key, value_json, 3, author, "2026-11-21T09:00:00.000001Z")[:-1]
    rec = orjson.loads(line)
    assert orjson.loads(_record.changes(rec)[0].value) == orjson.loads(value_json)
    if '"' not in prefix and "\\" not in prefix:
        # None ("parse it") is allowed only where an escape sits at the front of the key.
        answer = _record.key_starts_with(line, 7, prefix.encode())
        assert answer is key.startswith(prefix) or (answer is None and ('"' in key or "\\" in key))
    foreign = orjson.dumps({"key": key, **rec})  # another writer's field order
    assert orjson.loads(_record.changes(orjson.loads(foreign))[0].value) == orjson.loads(value_json)
    assert _record.key_starts_with(foreign, 7, b"") is None


def test_another_writers_escapes_and_extra_fields_fall_back_to_a_parse() -> None:
    """Found in review: a record with an unknown field, or a key escaped as another writer escapes it,
    must not be read by the byte shortcuts."""
    extra = b'{"seq":1,"op":"put","key":"k","value":1,"unit":"ms","version":1,"author":"a","ts":"2026-11-21T09:00:00Z"}'
    assert orjson.loads(_record.changes(orjson.loads(extra))[0].value) == 1
    escaped = json.dumps({"seq": 2, "op": "put", "key": "caf\u00e9/x"}).replace(" ", "").encode()
    assert b"\\u00e9" in escaped
    assert _record.key_starts_with(escaped, 2, "café/".encode()) is None
    assert _record.key_starts_with(escaped, 2, b"cafe") is None
    assert _record.key_starts_with(b'{"seq":3,"op":"put","key":"plain/x"}', 3, b"tea/") is False

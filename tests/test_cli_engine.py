"""The CLI verbs over the engine's features, as a real `blackboard` process: `read --at`, `blame`,
`--idempotency-key` on write and rm, `txn`, and init's compaction settings.

Every case runs the installed console script (or `python -m blackboard` without one) and checks what
a shell agent sees: one JSON line on stdout, or one `blackboard: error:` line and the documented exit
status, and that a refused command leaves log.jsonl byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blackboard import Board
from blackboard.models import DEFAULT_COMPACT_AT_BYTES

ERROR_PREFIX = "blackboard: error: "
TIMEOUT = 30
_SCRIPT = shutil.which("blackboard", path=str(Path(sys.executable).parent))
EXE = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "blackboard"]


# -- helpers ---------------------------------------------------------------------------------------


def run(board: Path, *args: str, stdin: str = "", author: str = "proc") -> subprocess.CompletedProcess[str]:
    """`blackboard --board BOARD ARGS...` as a new process, with a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    env["BLACKBOARD_AUTHOR"] = author
    return subprocess.run(
        [*EXE, "--board", str(board), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.args, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr == ""
    return proc.stdout


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The command's one line of output, parsed."""
    out = ok(proc)
    assert out.endswith("\n") and out.count("\n") == 1, out
    return json.loads(out)


def fails(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """A refused command: exit `code`, nothing on stdout, exactly one error line (returned, unprefixed)."""
    assert proc.returncode == code, (proc.args, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), proc.stderr
    return lines[0].removeprefix(ERROR_PREFIX)


def log_bytes(board: Path) -> bytes:
    return (board / "log.jsonl").read_bytes()


def refused(board: Path, *args: str, code: int, stdin: str = "") -> str:
    """Run a command that must fail with `code` and change nothing in the log; its error line."""
    before = log_bytes(board)
    line = fails(run(board, *args, stdin=stdin), code)
    assert log_bytes(board) == before, "a refused command changed the log"
    return line


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    path = tmp_path / "board"
    Board.init(path, author="tester").close()
    return path


@pytest.fixture
def history_board(tmp_path: Path) -> Path:
    """a=1 (seq 1), a=2 (seq 2), b="x" (seq 3), delete b (seq 4)."""
    path = tmp_path / "board"
    with Board.init(path, author="tester") as board:
        board.write("a", 1)
        board.write("a", 2)
        board.write("b", "x")
        board.delete("b")
    return path


# -- read --at -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "at", "value"), [("a", 1, 1), ("a", 2, 2), ("a", 4, 2), ("b", 3, "x")])
def test_read_at_prints_the_value_just_after_that_seq(history_board: Path, key: str, at: int, value: Any) -> None:
    assert ok_json(run(history_board, "read", key, "--at", str(at))) == value


def test_read_at_with_entry_prints_that_entry(history_board: Path) -> None:
    entry = ok_json(run(history_board, "read", "a", "--at", "1", "--entry"))
    assert (entry["key"], entry["value"], entry["version"], entry["seq"], entry["author"]) == ("a", 1, 1, 1, "tester")


@pytest.mark.parametrize(("key", "at"), [("a", 0), ("b", 2), ("b", 4), ("never", 3)])
def test_read_at_without_a_value_then_exits_3(history_board: Path, key: str, at: int) -> None:
    line = refused(history_board, "read", key, "--at", str(at), code=3)
    assert line == f"no such key: {key!r} at seq {at}"


def test_read_at_a_future_seq_exits_2(history_board: Path) -> None:
    assert "in the future" in refused(history_board, "read", "a", "--at", "5", code=2)


def test_read_at_a_negative_seq_is_a_usage_error(history_board: Path) -> None:
    assert "--at" in refused(history_board, "read", "a", "--at", "-1", code=2)


def test_read_at_history_compacted_away_exits_1(history_board: Path) -> None:
    ok(run(history_board, "compact"))
    line = refused(history_board, "read", "a", "--at", "1", code=1)
    assert "compacted away" in line
    assert ok_json(run(history_board, "read", "a", "--at", "4")) == 2  # after the compacted prefix: exact


def test_read_at_reads_the_archive(history_board: Path) -> None:
    ok(run(history_board, "compact", "--archive"))
    assert ok_json(run(history_board, "read", "a", "--at", "1")) == 1
    assert ok_json(run(history_board, "read", "b", "--at", "3")) == "x"


# -- blame -----------------------------------------------------------------------------------------


@pytest.fixture
def blamed(tmp_path: Path) -> Path:
    """Keys of several lengths, authors of several lengths, seqs of one and two digits, a delete."""
    path = tmp_path / "board"
    Board.init(path).close()
    with Board.open(path, author="a") as board:
        for i in range(9):
            board.write("tasks/t1", i)
    with Board.open(path, author="agent-with-a-long-name") as board:
        board.write("x", {"k": 1})
        board.write("tasks/a-much-longer-key", [1, 2])
        board.write("gone", True)
        board.delete("gone")
    return path


def test_blame_json_is_the_latest_event_of_every_key_in_key_order(blamed: Path) -> None:
    events = [json.loads(line) for line in ok(run(blamed, "blame", "--json")).splitlines()]
    assert [(e["key"], e["seq"], e["op"], e["version"]) for e in events] == [
        ("gone", 13, "delete", 0),
        ("tasks/a-much-longer-key", 11, "put", 1),
        ("tasks/t1", 9, "put", 9),
        ("x", 10, "put", 1),
    ]
    long = "agent-with-a-long-name"
    assert [e["author"] for e in events] == [long, long, "a", long]
    assert events[2]["value"] == 8
    assert set(events[0]) >= {"key", "seq", "op", "version", "author", "ts", "value"}
    with Board.open(blamed) as board:
        assert events == [e.as_dict() for e in board.blame()]


def test_blame_prefix(blamed: Path) -> None:
    keys = [json.loads(line)["key"] for line in ok(run(blamed, "blame", "tasks/", "--json")).splitlines()]
    assert keys == ["tasks/a-much-longer-key", "tasks/t1"]
    assert ok(run(blamed, "blame", "nothing/")) == ""


def test_blame_plain_columns_do_not_shift_between_lines(blamed: Path) -> None:
    lines = ok(run(blamed, "blame")).splitlines()
    assert [line.split()[0] for line in lines] == ["gone", "tasks/a-much-longer-key", "tasks/t1", "x"]
    # Text columns start at one place, number columns (seq, version) end at one place, on every line.
    columns = [
        (r" seq +\d+", "end"),
        (r"(put|delete) ", "start"),
        (r" (v\d+|-)  ", "end"),
        (r"(a|agent-with-a-long-name) ", "start"),
        (r"\d{4}-\d\d-\d\d ", "start"),
    ]
    for pattern, edge in columns:
        found = [re.search(pattern, line) for line in lines]
        assert all(found), (pattern, lines)
        assert len({m.start() if edge == "start" else m.end() for m in found if m}) == 1, (pattern, lines)
    gone, _, t1, x = lines
    assert " delete " in gone and " -  " in gone and " put " in t1 and " v9 " in t1
    assert re.search(r"\(\d+ s ago\)$", x), x  # the time, and how long ago


def test_blame_invalid_prefix_exits_2(blamed: Path) -> None:
    refused(blamed, "blame", "/abs", code=2)


# -- --idempotency-key -----------------------------------------------------------------------------


def test_write_with_an_idempotency_key_is_written_once(empty: Path) -> None:
    first = ok(run(empty, "write", "k", "1", "--idempotency-key", "req-1"))
    assert json.loads(first) == {"key": "k", "version": 1, "seq": 1}
    log = log_bytes(empty)
    # A retry (the agent does not know whether the first attempt landed) prints the same and writes nothing.
    assert ok(run(empty, "write", "k", "1", "--idempotency-key", "req-1")) == first
    assert log_bytes(empty) == log
    assert json.loads(ok(run(empty, "write", "k", "1"))) == {"key": "k", "version": 2, "seq": 2}


def test_write_reusing_an_idempotency_key_for_another_write_exits_2(empty: Path) -> None:
    ok(run(empty, "write", "k", "1", "--idempotency-key", "req-1"))
    assert "req-1" in refused(empty, "write", "k", "2", "--idempotency-key", "req-1", code=2)


@pytest.mark.parametrize("bad", ["", "x" * 300, "tab\there"])
def test_an_invalid_idempotency_key_exits_2(empty: Path, bad: str) -> None:
    assert "idempotency key" in refused(empty, "write", "k", "1", "--idempotency-key", bad, code=2)


def test_rm_with_an_idempotency_key_deletes_once(empty: Path) -> None:
    ok(run(empty, "write", "k", "1"))
    first = ok(run(empty, "rm", "k", "--idempotency-key", "del-1"))
    assert json.loads(first) == {"key": "k", "version": 0, "seq": 2}
    log = log_bytes(empty)
    assert ok(run(empty, "rm", "k", "--idempotency-key", "del-1")) == first  # not "no such key"
    assert log_bytes(empty) == log
    refused(empty, "rm", "k", code=3)


# -- txn -------------------------------------------------------------------------------------------


@pytest.fixture
def txn_board(tmp_path: Path) -> Path:
    """a=1 (seq 1), b=1 (seq 2)."""
    path = tmp_path / "board"
    with Board.init(path, author="tester") as board:
        board.write("a", 1)
        board.write("b", 1)
    return path


def doc(**fields: Any) -> str:
    return json.dumps(fields)


def test_txn_commits_every_op_as_one_record(txn_board: Path) -> None:
    document = doc(
        expect={"a": 1, "new": 0},
        ops=[
            {"op": "put", "key": "a", "value": {"n": 2}},
            {"op": "put", "key": "new", "value": None},
            {"op": "delete", "key": "b"},
        ],
    )
    assert ok_json(run(txn_board, "txn", document, "--author", "mover")) == {
        "seq": 3,
        "entries": [
            {"key": "a", "version": 2, "seq": 3},
            {"key": "new", "version": 1, "seq": 3},
            {"key": "b", "version": 0, "seq": 3},
        ],
    }
    assert len(log_bytes(txn_board).splitlines()) == 4  # the header, two writes, ONE transaction record
    with Board.open(txn_board) as board:
        assert board.read_prefix("") == {"a": {"n": 2}, "new": None}
        assert [(e.key, e.author, e.txn) for e in board.tail(3)] == [
            ("a", "mover", True),
            ("new", "mover", True),
            ("b", "mover", True),
        ]


@pytest.mark.parametrize("how", ["dash", "absent"])
def test_txn_reads_the_document_from_stdin(txn_board: Path, how: str) -> None:
    args = ["txn", "-"] if how == "dash" else ["txn"]
    out = ok_json(run(txn_board, *args, stdin=doc(ops=[{"op": "put", "key": "c", "value": [1]}]) + "\n"))
    assert out == {"seq": 3, "entries": [{"key": "c", "version": 1, "seq": 3}]}


def test_txn_author_from_the_environment(txn_board: Path) -> None:
    ok(run(txn_board, "txn", doc(ops=[{"op": "put", "key": "c", "value": 1}]), author="env-agent"))
    assert json.loads(ok(run(txn_board, "read", "c", "--entry")))["author"] == "env-agent"


def test_txn_idempotency_key_retry_writes_nothing(txn_board: Path) -> None:
    document = doc(ops=[{"op": "put", "key": "a", "value": 5}], idempotency_key="move-1")
    first = ok(run(txn_board, "txn", document))
    log = log_bytes(txn_board)
    assert ok(run(txn_board, "txn", document)) == first
    assert log_bytes(txn_board) == log


@pytest.mark.parametrize(
    ("expect", "says"),
    [
        ({"a": 2}, "'a': expected version 2, but it is at version 1"),
        ({"b": 0}, "'b': expected absent"),
        ({"zz": 1}, "'zz'"),
    ],
)
def test_txn_failed_expectation_exits_4_and_writes_nothing(txn_board: Path, expect: dict[str, int], says: str) -> None:
    document = doc(expect=expect, ops=[{"op": "put", "key": "c", "value": 1}])
    line = refused(txn_board, "txn", document, code=4)
    assert line.startswith("version conflict on ") and says in line, line


def test_txn_delete_of_a_missing_key_exits_3_and_writes_nothing(txn_board: Path) -> None:
    document = doc(ops=[{"op": "put", "key": "c", "value": 1}, {"op": "delete", "key": "missing"}])
    assert refused(txn_board, "txn", document, code=3) == "no such key: 'missing'"


BAD_DOCUMENTS = [
    # (document, the field path or words the one error line must contain)
    (doc(ops=[{"op": "put", "key": "a", "value": 1}], extra=1), "extra: Extra inputs are not permitted"),
    (doc(ops=[{"op": "put", "key": "a", "value": 1, "valeu": 2}]), "ops[0].valeu"),
    (doc(ops=[{"op": "put", "key": 7, "value": 1}]), "ops[0].key"),
    (doc(ops=[{"op": "put", "key": "a", "value": 1}], expect={"a": "1"}), "expect.a"),
    (doc(ops=[{"op": "put", "key": "a", "value": 1}], expect={"a": True}), "expect.a"),
    (doc(ops=[{"op": "put", "key": "a", "value": 1}], expect={"a": -1}), "expect.a"),
    (doc(ops=[{"op": "put", "key": "a", "value": 1}], expect=[]), "expect"),
    (doc(ops=[{"op": "put", "key": "a", "value": 1}], idempotency_key=3), "idempotency_key"),
    (doc(), "ops: Field required"),
    (doc(ops=[]), "ops: List should have at least 1 item"),
    (doc(ops={"op": "put"}), "ops"),
    (doc(ops=[{"op": "upsert", "key": "a", "value": 1}]), "ops[0].op: must be 'put' or 'delete'"),
    (doc(ops=[{"key": "a", "value": 1}]), "ops[0].op: must be 'put' or 'delete' (missing)"),
    (doc(ops=[{"op": "delete", "key": "b"}, {"op": "put", "key": "a"}]), "ops[1].value: Field required"),
    ("[1, 2]", "must be a JSON object"),
    ('{"ops": [', "not valid JSON"),
    ('{"ops": [{"op": "put", "key": "a", "value": NaN}]}', "NaN is not a JSON number"),
    ('{"ops": [{"op": "put", "key": "a", "value": ' + str(2**70) + "}]}", "does not fit in 64 bits"),
    # The library's own checks, at commit: keys, values, one change per key.
    (doc(ops=[{"op": "put", "key": "a/../b", "value": 1}]), "invalid key 'a/../b'"),
    (doc(ops=[{"op": "put", "key": "a", "value": "x" * 2000}]), "more than this board's limit"),
    (doc(ops=[{"op": "put", "key": "a", "value": 1}], expect={"a//b": 1}), "invalid key"),
    (doc(ops=[{"op": "put", "key": "a", "value": 1}, {"op": "delete", "key": "a"}]), "changed twice"),
    (doc(ops=[{"op": "put", "key": "a", "value": 1}], idempotency_key=""), "idempotency key"),
]


@pytest.mark.parametrize(("document", "says"), BAD_DOCUMENTS, ids=[says for _, says in BAD_DOCUMENTS])
def test_txn_bad_document_exits_2_and_changes_nothing(tmp_path: Path, document: str, says: str) -> None:
    board = tmp_path / "board"
    with Board.init(board, max_value_bytes=1000) as handle:
        handle.write("a", 1)
        handle.write("b", 1)
    files = {p: p.read_bytes() for p in sorted(board.rglob("*")) if p.is_file()}
    line = refused(board, "txn", document, code=2)
    assert says in line, line
    assert {p: p.read_bytes() for p in sorted(board.rglob("*")) if p.is_file()} == files


def test_txn_help_documents_the_document_with_a_working_example(txn_board: Path) -> None:
    out = ok(run(txn_board, "txn", "--help"))
    for field in ("expect", "ops", "idempotency_key", '"op": "put"', '"op": "delete"'):
        assert field in out, field
    example = re.search(r"^\s+blackboard txn '(.+)'$", out, re.MULTILINE)
    assert example is not None, out
    # The example holds on this board (a at version 1, b present): it must run as printed.
    assert ok_json(run(txn_board, "txn", example.group(1)))["seq"] == 3


def test_txn_not_a_board_exits_5(tmp_path: Path) -> None:
    fails(run(tmp_path / "nope", "txn", doc(ops=[{"op": "delete", "key": "a"}])), 5)


# -- init ------------------------------------------------------------------------------------------


def board_json(board: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((board / "board.json").read_bytes())
    return config


def test_init_defaults_to_compacting_at_64_mib(tmp_path: Path) -> None:
    board = tmp_path / "board"
    out = ok_json(run(board, "init"))
    assert out == {"board": str(board), "lock": "flock", "compact_at_bytes": DEFAULT_COMPACT_AT_BYTES, "last_seq": 0}
    assert DEFAULT_COMPACT_AT_BYTES == 64 << 20
    assert board_json(board)["compact_at_bytes"] == DEFAULT_COMPACT_AT_BYTES


def test_init_compact_at_bytes(tmp_path: Path) -> None:
    board = tmp_path / "board"
    assert ok_json(run(board, "init", "--compact-at-bytes", "4096"))["compact_at_bytes"] == 4096
    assert board_json(board)["compact_at_bytes"] == 4096
    # A second init leaves the board's settings as they are: given another one, it is an error naming it.
    assert "init was given --no-auto-compact (compact_at_bytes null)" in fails(
        run(board, "init", "--no-auto-compact"), 2
    )
    assert ok_json(run(board, "init"))["compact_at_bytes"] == 4096
    assert board_json(board)["compact_at_bytes"] == 4096


def test_init_no_auto_compact(tmp_path: Path) -> None:
    board = tmp_path / "board"
    assert ok_json(run(board, "init", "--no-auto-compact"))["compact_at_bytes"] is None
    assert board_json(board)["compact_at_bytes"] is None


def test_init_both_compaction_options_is_a_usage_error(tmp_path: Path) -> None:
    board = tmp_path / "board"
    line = fails(run(board, "init", "--no-auto-compact", "--compact-at-bytes", "4096"), 2)
    assert "--no-auto-compact" in line
    assert not board.exists()


def test_init_help_shows_the_default(tmp_path: Path) -> None:
    out = ok(run(tmp_path, "init", "--help"))
    assert "--no-auto-compact" in out
    assert re.search(rf"\[default:\s+{DEFAULT_COMPACT_AT_BYTES};", out), out

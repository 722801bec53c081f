"""One test per section of spec/FORMAT.md: what the spec says is what the code does.

The sample board in spec/examples/board/ is read here as a reader in another language would.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import time
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import filelock
import pytest
from _workers import CTX, Spawn

import blackboard
from blackboard import (
    BlackboardError,
    Board,
    Compacted,
    CorruptLog,
    InvalidKey,
    InvalidValue,
    LockTimeout,
    NotABoard,
    VersionConflict,
)
from blackboard.core.keys import key_to_relpath, relpath_to_key

ROOT = Path(__file__).parents[1]
SPEC = (ROOT / "spec" / "FORMAT.md").read_text()
SAMPLE = ROOT / "spec" / "examples" / "board"


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    board = tmp_path / "board"
    shutil.copytree(SAMPLE, board)
    return board


def log_lines(board: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (board / "log.jsonl").read_text().splitlines()]


def test_1_worked_example(tmp_path: Path) -> None:
    with Board.init(tmp_path / "b", author="alice@host") as board:
        board.write("research_results/q1", {"findings": ["appends are cheap"]})
        board.write("research_results/q1", {"findings": ["readers never wait"]})
        board.delete("research_results/q1")
    header, *records = log_lines(tmp_path / "b")
    generation = header.pop("generation")
    assert re.fullmatch(r"[0-9a-f]{16}", generation)
    assert header == {"blackboard_log": 2, "compacted_through": 0, "purged_deletes_through": 0, "archived_through": 0}
    assert [(r["seq"], r["op"], r["version"]) for r in records] == [(1, "put", 1), (2, "put", 2), (3, "delete", 0)]
    assert records[2]["value"] is None
    assert not (tmp_path / "b" / "entries" / "research_results" / "q1.json").exists()


def test_2_layout(tmp_path: Path) -> None:
    Board.init(tmp_path / "b").close()
    names = {p.name for p in (tmp_path / "b").iterdir()}
    assert {"board.json", "log.jsonl", "lock", "materialized", "materialize.lock", "entries", "tmp"} <= names
    assert not any(n.startswith(".") or n.endswith("~") for n in names)
    # A directory without board.json is not a board; init completes it.
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "log.jsonl").write_bytes(b"")
    with pytest.raises(NotABoard):
        Board.open(tmp_path / "half")
    Board.init(tmp_path / "half").close()


def test_2_layout_missing_empty_dirs(sample: Path) -> None:
    # The sample comes from git, which drops empty directories: tmp/, cursors/, archive/ are absent.
    for name in ("tmp", "cursors", "archive"):
        shutil.rmtree(sample / name, ignore_errors=True)
    with Board.open(sample, read_only=True) as reader:  # a reader accepts their absence
        assert reader.read("ünï/ça va?") == "unicode keys work"
        assert reader.cursors() == {} and reader.dead_letters() == []
        assert [e.seq for e in reader.history("research_results/q1", all=True)] == [2, 3]
        assert reader.check().ok
    with Board.open(sample) as board:  # a writer creates each one when it needs it
        board.write("new/key", 1)
        with board.watch(since=0, cursor="c1", timeout=0.1) as watcher:
            assert [e.seq for e in watcher][-1] == 6
        board.write("new/key", 2)
        board.compact(archive=True)
        assert [e.seq for e in board.history("new/key", all=True)] == [6, 7]
    assert (sample / "entries" / "new" / "key.json").exists()
    assert (sample / "cursors" / "c1").exists() and any((sample / "archive").iterdir())
    assert (sample / "tmp").is_dir()


def test_2_layout_lock_file_never_replaced(tmp_path: Path) -> None:
    with Board.init(tmp_path / "b") as board:
        lock = os.stat(tmp_path / "b" / "lock")
        for i in range(20):
            board.write(f"k/{i % 3}", i)
        board.delete("k/0")
        board.compact(retention=0, archive=True)
        board.repair()
        board.check()
    after = os.stat(tmp_path / "b" / "lock")
    assert (after.st_dev, after.st_ino) == (lock.st_dev, lock.st_ino)  # contenders must share one inode


def test_3_board_json(tmp_path: Path) -> None:
    Board.init(tmp_path / "b", max_value_bytes=100).close()
    config = json.loads((tmp_path / "b" / "board.json").read_text())
    assert config["format"] == "blackboard" and config["version"] == 2 and config["max_value_bytes"] == 100
    config["a_future_field"] = True
    (tmp_path / "b" / "board.json").write_text(json.dumps(config))
    Board.open(tmp_path / "b").close()  # unknown fields are ignored
    config["version"] = 3
    (tmp_path / "b" / "board.json").write_text(json.dumps(config))
    with pytest.raises(NotABoard, match="newer"):
        Board.open(tmp_path / "b")


@pytest.mark.parametrize("fmt", [None, "blackbird", 1], ids=["missing", "other", "not-a-string"])
def test_3_board_json_format_must_be_present(tmp_path: Path, fmt: object) -> None:
    Board.init(tmp_path / "b").close()
    config = json.loads((tmp_path / "b" / "board.json").read_text())
    if fmt is None:
        del config["format"]
    else:
        config["format"] = fmt
    (tmp_path / "b" / "board.json").write_text(json.dumps(config))
    with pytest.raises(NotABoard):
        Board.open(tmp_path / "b")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "a" * 1025,  # 1025 bytes
        "é" * 513,  # 1026 bytes in UTF-8
        "lone\ud800surrogate",
        "nul\x00",
        "tab\tkey",
        "del\x7f",
        "c1\x85control",
        "/leading",
        "trailing/",
        "empty//segment",
        "./dot",
        "a/../b",
        "..",
    ],
)
def test_4_keys_invalid_rejected_before_writing(board: Board, key: str) -> None:
    log = board.path / "log.jsonl"
    before = log.read_bytes()
    with pytest.raises(InvalidKey):
        board.write(key, 1)
    with pytest.raises(InvalidKey):
        board.delete(key)
    assert log.read_bytes() == before and board.last_seq == 0


def test_4_keys_allowed_characters_and_prefixes(board: Board) -> None:
    keys = ["a" * 1024, "spaces and %25 and \\ back/slash", "ünï/ça va?", "research_results/q1", "research"]
    for key in keys:
        board.write(key, key)
    assert {k: board.read(k) for k in keys} == {k: k for k in keys}
    assert board.keys("research") == ["research", "research_results/q1"]  # a plain string prefix
    assert sorted(board.keys("")) == sorted(keys)  # the empty prefix matches every key
    for prefix in ("/research", "res\x01"):
        with pytest.raises(InvalidKey):
            board.keys(prefix)
        with pytest.raises(InvalidKey):
            board.watch(prefix)


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("research_results/q1", "research_results/q1.json"),
        ("ünï/ça va?", "%C3%BCn%C3%AF/%C3%A7a%20va%3F.json"),
        (".env", "%2Eenv.json"),
        ("a.json/b", "a%2Ejson/b.json"),
    ],
)
def test_4_1_key_to_path(key: str, path: str) -> None:
    assert key_to_relpath(key) == path
    assert relpath_to_key(path) == key
    assert re.fullmatch(r"[A-Za-z0-9_.%/-]+", path)


def test_4_1_encoded_segment_must_fit_a_file_name(board: Board) -> None:
    board.write("a" * 250, 1)  # 250 + ".json" = 255 bytes
    board.write("x/" + "é" * 41, 1)  # 41 x "%C3%A9" = 246 bytes, + ".json" = 251
    for key in ("a" * 251, "x/" + "é" * 42, "%" * 84):  # 256, 257 and 257 bytes once encoded
        with pytest.raises(InvalidKey, match="too long"):
            board.write(key, 1)
    assert board.last_seq == 2


def test_5_1_log_header_and_5_2_records(sample: Path) -> None:
    header, *records = log_lines(sample)
    assert header["blackboard_log"] == 1  # the sample is a version-1 board: still read as it is
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    for r in records:
        assert set(r) >= {"seq", "op", "key", "value", "version", "author", "ts"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r["ts"])
        assert r["version"] == 0 if r["op"] == "delete" else r["version"] >= 1


def test_5_3_reading_the_log(sample: Path) -> None:
    with (sample / "log.jsonl").open("ab") as f:
        f.write(b'{"seq":6,"op":"put","key":"torn"')  # a writer killed mid-append
    with Board.open(sample) as board:
        assert board.last_seq == 5 and board.get("torn") is None
        assert board.write("after/torn", 1).seq == 6  # the next writer cuts the torn tail
    assert (sample / "log.jsonl").read_bytes().endswith(b"\n")
    assert [r["seq"] for r in log_lines(sample)[1:]] == [1, 2, 3, 4, 5, 6]


def test_7_entry_files_and_the_watermark(sample: Path) -> None:
    with Board.open(sample) as board:
        report = board.repair()
        assert board.read_prefix("") == {
            "research_results/q1": {"findings": ["appends are cheap", "readers never wait"], "sources": 4},
            "ünï/ça va?": "unicode keys work",
        }
    assert report.ok or report.repaired
    entry = json.loads((sample / "entries" / "research_results" / "q1.json").read_text())
    assert list(entry) == ["key", "value", "version", "seq", "author", "ts"]
    assert entry["seq"] == 3 and entry["version"] == 2
    assert not (sample / "entries" / "research_request").exists()  # deleted, directory removed
    mark = (sample / "materialized").read_bytes()
    assert len(mark) == 21 and mark.endswith(b"\n") and int(mark) == 5


def _write_one(path: str) -> int:
    with Board.open(path) as board:
        return board.write("from/another/process", 1).seq


def test_7_1_freshness(tmp_path: Path) -> None:
    board = Board.init(tmp_path / "b")
    with mp.get_context("spawn").Pool(1) as pool:
        seq = pool.apply(_write_one, (str(tmp_path / "b"),))
    assert board.read("from/another/process") == 1 and board.last_seq == seq  # never stale
    assert (tmp_path / "b" / "entries" / "from" / "another" / "process.json").exists()  # the writer closed
    board.close()


def test_8_write_protocol_header_first(tmp_path: Path) -> None:
    Board.init(tmp_path / "b").close()
    (tmp_path / "b" / "log.jsonl").write_bytes(b"")  # an empty log: the header goes first
    with Board.open(tmp_path / "b") as board:
        board.write("k", 1)
    header, record = log_lines(tmp_path / "b")
    assert header["blackboard_log"] == 2 and record["seq"] == 1


def test_9_locking_soft_mode(tmp_path: Path) -> None:
    with Board.init(tmp_path / "b", lock="soft") as board:
        assert board.config.lock == "soft"
        board.write("k", 1)
        board.write("k", 2, expect_version=1)
    with mp.get_context("spawn").Pool(2) as pool:
        seqs = pool.map(_write_one, [str(tmp_path / "b")] * 4)
    assert sorted(seqs) == [3, 4, 5, 6]
    assert json.loads((tmp_path / "b" / "board.json").read_text())["lock"] == "soft"


def test_10_2_watching_across_compaction(tmp_path: Path) -> None:
    with Board.init(tmp_path / "b") as board:
        for i in range(10):
            board.write(f"k/{i % 3}", i)
        board.delete("k/2")
        board.compact()
        events = list(board.watch(since=4, timeout=0.1))
        assert events and all(e.compacted for e in events)
        assert {e.key: e.value for e in events if e.op == "put"} == {"k/0": 9, "k/1": 7}
        board.compact(retention=0)
        with pytest.raises(Compacted):
            list(board.watch(since=4, timeout=0.1))
        assert board.last_seq == 11  # the purged delete's seq is still taken: never reused
        assert not list(board.watch(since=board.last_seq, timeout=0.1))
        assert board.write("k/9", 1).seq == 12
    with Board.open(tmp_path / "b") as board:  # a fresh process's view agrees
        assert board.last_seq == 12


def test_10_3_cursors(tmp_path: Path) -> None:
    with Board.init(tmp_path / "b") as board:
        board.write("a", 1)
        with board.watch(since=0, cursor="c1", timeout=0.1) as watcher:
            assert [e.seq for e in watcher] == [1]
    saved = (tmp_path / "b" / "cursors" / "c1").read_bytes()
    assert len(saved) == 21 and int(saved) == 1


def test_10_4_dead_letters(tmp_path: Path) -> None:
    def fail(_: object) -> None:
        raise ValueError("nope")

    with Board.init(tmp_path / "b") as board:
        board.write("a", 1)
        with board.subscribe("", fail, since=0):
            for _ in range(200):
                if board.dead_letters():
                    break
                time.sleep(0.01)
    (record,) = board.dead_letters()
    assert set(record) == {"ts", "prefix", "pid", "error", "traceback", "event"}
    assert record["event"]["seq"] == 1 and record["error"] == "ValueError: nope"


def test_12_errors_exit_codes() -> None:
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", SPEC.split("## 12. Errors")[1], re.MULTILINE))
    errors = [
        getattr(blackboard, n)
        for n in blackboard.__all__
        if n.endswith(("Error", "Board", "Key", "Value", "Conflict", "Timeout", "Log", "Compacted", "Found"))
    ]
    leaves = [e for e in errors if isinstance(e, type) and issubclass(e, BlackboardError) and e is not BlackboardError]
    assert len(leaves) == 9
    for error in leaves:
        assert f"`{error.__name__}`" in table[str(error.exit_code)], (error.__name__, error.exit_code)

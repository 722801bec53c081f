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

import pytest
import xxhash
from _workers import CTX, Spawn
from conftest import sealed

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
from blackboard.core.softlock import create_lock_dir

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
    lines = (tmp_path / "b" / "log.jsonl").read_bytes().splitlines()
    for line in lines:  # every line ends with its checksum: XXH3-64 of the bytes before the member (5.6)
        assert line[-27:-18] == b',"xxh3":"' and line.endswith(b'"}')
        assert line[-18:-2].decode() == xxhash.xxh3_64_hexdigest(line[:-27])
    header, *records = log_lines(tmp_path / "b")
    generation = header.pop("generation")
    assert re.fullmatch(r"[0-9a-f]{16}", generation)
    assert re.fullmatch(r"[0-9a-f]{16}", header.pop("xxh3"))
    assert header == {"blackboard_log": 3, "compacted_through": 0, "purged_deletes_through": 0, "archived_through": 0}
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
    assert config["format"] == "blackboard" and config["version"] == 3 and config["max_value_bytes"] == 100
    config["a_future_field"] = True
    (tmp_path / "b" / "board.json").write_text(json.dumps(config))
    Board.open(tmp_path / "b").close()  # unknown fields are ignored
    config["version"] = 5
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
    keys = [
        ("a" * 99 + "/") * 10 + "a" * 24,  # 1024 bytes, the longest key
        "spaces and %25 and \\ back/slash",
        "ünï/ça va?",
        "research_results/q1",
        "research",
    ]
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


def _hand_record(**fields: Any) -> bytes:
    """A record as another implementation may write it: fields in its own order, one of its own."""
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def test_5_2_readers_ignore_field_order_and_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with Board.init(path, author="alice@host") as board:
        board.write("k/ours", 1)  # seq 1, from our writer
    with (path / "log.jsonl").open("ab") as f:  # a version-3 log: each line with its checksum, last (5.6)
        f.write(
            sealed(
                _hand_record(
                    ts="2026-11-21T09:00:05.123456Z",
                    x_origin={"writer": "rust", "pid": 7},
                    author="bob@host",
                    version=1,
                    value={"v": [2, "two"]},
                    key="k/hand",
                    op="put",
                    seq=2,
                )
            )
        )
        f.write(
            sealed(
                _hand_record(
                    value=None,
                    op="delete",
                    x_reason="done",
                    seq=3,
                    version=0,
                    key="k/ours",
                    author="bob",
                    ts="2026-11-21T09:00:06.000000Z",
                )
            )
        )
    with Board.open(path) as board:  # a fresh handle: its index is built from the log
        assert board.read("k/hand") == {"v": [2, "two"]}
        entry = board.get("k/hand")
        assert entry is not None
        assert (entry.key, entry.value, entry.version, entry.seq, entry.author) == (
            "k/hand",
            {"v": [2, "two"]},
            1,
            2,
            "bob@host",
        )
        assert entry.ts == datetime(2026, 11, 21, 9, 0, 5, 123456, tzinfo=UTC)
        assert board.get("k/ours") is None and board.read_prefix("k/") == {"k/hand": {"v": [2, "two"]}}
        events = list(board.watch("k/", since=0, timeout=0.1))
        assert [(e.seq, e.op, e.key, e.value, e.version, e.author) for e in events] == [
            (1, "put", "k/ours", 1, 1, "alice@host"),
            (2, "put", "k/hand", {"v": [2, "two"]}, 1, "bob@host"),
            (3, "delete", "k/ours", None, 0, "bob"),
        ]
        assert events[1].ts == entry.ts
        # A writer carries on after them: next seq, next version, compare-and-set on the hand-written one.
        assert board.write("k/hand", 3, expect_version=1).seq == 4
        assert board.get("k/hand").version == 2  # type: ignore[union-attr]
        assert board.write("k/ours", 1, expect_version=0).version == 1  # the delete ended its life
    assert json.loads((path / "entries" / "k" / "hand.json").read_text())["value"] == 3


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), [1, {"deep": float("nan")}], 2**64, -(2**63) - 1],
    ids=["nan", "inf", "-inf", "nested-nan", "2^64", "-2^63-1"],
)
def test_5_2_values_not_json_or_beyond_64_bits_rejected(board: Board, value: Any) -> None:
    with pytest.raises(InvalidValue):
        board.write("k", value)
    assert board.last_seq == 0


def test_5_2_values_at_the_limits(tmp_path: Path) -> None:
    with Board.init(tmp_path / "b", max_value_bytes=64) as board:
        for value in (2**64 - 1, -(2**63), "x" * 62):  # "x" * 62 encodes to 64 bytes
            board.write("k", value)
            assert board.read("k") == value
        with pytest.raises(InvalidValue, match="64"):
            board.write("k", "x" * 63)
        assert board.last_seq == 3


def test_5_3_reading_the_log(sample: Path) -> None:
    with (sample / "log.jsonl").open("ab") as f:
        f.write(b'{"seq":6,"op":"put","key":"torn"')  # a writer killed mid-append
    with Board.open(sample) as board:
        assert board.last_seq == 5 and board.get("torn") is None
        assert board.write("after/torn", 1).seq == 6  # the next writer cuts the torn tail
    assert (sample / "log.jsonl").read_bytes().endswith(b"\n")
    assert [r["seq"] for r in log_lines(sample)[1:]] == [1, 2, 3, 4, 5, 6]


_TS = "2026-11-21T09:00:05.000000Z"
_TORN = b'{"seq":6,"op":"put","key":"late","value":1,'
_REST = b'"version":1,"author":"w","ts":"2026-11-21T09:00:05.000000Z"}\n'


def test_5_3_readers_wait_at_a_torn_tail_and_never_cut_it(sample: Path) -> None:
    with (sample / "log.jsonl").open("ab") as f:
        f.write(_TORN)  # a write in progress, as far as a reader can tell
    size = (sample / "log.jsonl").stat().st_size
    with Board.open(sample, read_only=True) as reader, Board.open(sample) as board:
        with reader.watch(since=5, timeout=5) as watcher:
            assert watcher.next_nowait() is None  # waits at its start
            for handle in (reader, board):  # neither a read-only nor a writable handle's reads cut it
                assert handle.get("late") is None and handle.last_seq == 5 and handle.check().last_seq == 5
            assert (sample / "log.jsonl").stat().st_size == size
            with (sample / "log.jsonl").open("ab") as f:
                f.write(_REST)  # the writer finishes its line
            event = next(iter(watcher))
            assert (event.seq, event.key, event.value) == (6, "late", 1)
        assert reader.read("late") == 1 and board.read("late") == 1


def test_5_3_corrupt_line_stops_readers_at_its_offset(sample: Path) -> None:
    offset = (sample / "log.jsonl").stat().st_size
    with (sample / "log.jsonl").open("ab") as f:
        f.write(b'{"seq":6,"op":"put","key":"k"}\n')  # complete, but not a valid record
        good = {"seq": 7, "op": "put", "key": "after", "value": 1, "version": 1, "author": "w", "ts": _TS}
        f.write(_hand_record(**good))  # and a good one after it, which no reader may skip to
    with Board.open(sample) as board:
        with pytest.raises(CorruptLog) as info:
            board.read("after")
        assert info.value.offset == offset
        with pytest.raises(CorruptLog) as info:
            board.write("k", 1)  # a writer does not skip it either
        assert info.value.offset == offset
        with board.watch(since=0, timeout=1) as watcher:
            seen = []
            with pytest.raises(CorruptLog) as info:
                for event in watcher:
                    seen.append(event.seq)
        assert seen == [1, 2, 3, 4, 5] and info.value.offset == offset  # the good events before it, then stop


def test_7_entry_files_and_the_watermark(sample: Path) -> None:
    with Board.open(sample) as board:
        # The sample's entry files and watermark are exact: nothing to report, nothing to rebuild.
        checked = board.check()
        assert checked.ok and checked.problems() == [] and checked.watermark == 5, checked.problems()
        report = board.repair()
        assert report.ok and report.problems() == [] and report.torn_tail_bytes == 0
        assert board.read_prefix("") == {
            "research_results/q1": {"findings": ["appends are cheap", "readers never wait"], "sources": 4},
            "ünï/ça va?": "unicode keys work",
        }
    entry = json.loads((sample / "entries" / "research_results" / "q1.json").read_text())
    assert list(entry) == ["key", "value", "version", "seq", "author", "ts"]
    assert entry["seq"] == 3 and entry["version"] == 2
    assert not (sample / "entries" / "research_request").exists()  # deleted, directory removed
    mark = (sample / "materialized").read_bytes()
    assert len(mark) == 21 and mark.endswith(b"\n") and int(mark) == 5


def test_7_repair_rebuilds_what_check_reports(sample: Path) -> None:
    entries = sample / "entries"
    (entries / "research_results" / "q1.json").write_text('{"key": "research_results/q1", "value": 0}\n')
    (entries / "%C3%BCn%C3%AF" / "%C3%A7a%20va%3F.json").unlink()
    (entries / "ghost.json").write_text("{}\n")
    with Board.open(sample) as board:
        checked = board.check()
        assert (checked.stale, checked.missing, checked.extra) == (
            ["research_results/q1"],
            ["ünï/ça va?"],
            ["ghost.json"],
        )
        assert not checked.ok
        board.repair()
        assert board.check().ok, board.check().problems()
    assert json.loads((entries / "research_results" / "q1.json").read_text())["seq"] == 3
    assert not (entries / "ghost.json").exists()


_ENTRY_FIELDS = ["key", "value", "version", "seq", "author", "ts"]


def _value_of(version: int) -> dict[str, Any]:
    """Values of very different sizes, each checkable on its own: a torn or mixed file cannot pass."""
    size = 50_000 + (version * 7919) % 5 * 100_000
    return {"version": version, "size": size, "fill": chr(ord("a") + version % 26) * size}


def _read_entry_in_a_loop(path: str, key: str, reads: Synchronized[int], stop: MpEvent, out: Any) -> None:
    versions: set[int] = set()
    problems: list[str] = []
    while not stop.is_set():
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            problems.append("no entry file (a replace that was not a rename over the target)")
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            problems.append(f"not JSON: {len(raw)} bytes, ends {raw[-20:]!r}")
            continue
        if list(doc) != _ENTRY_FIELDS or doc["key"] != key or doc["value"] != _value_of(doc["version"]):
            problems.append(f"not a whole entry: version {doc.get('version')}, {len(raw)} bytes")
        versions.add(doc["version"])
        with reads.get_lock():
            reads.value += 1
    out.put((sorted(versions), len(problems), problems[:3]))


def test_7_entry_files_written_atomically(tmp_path: Path, spawn: Spawn) -> None:
    key = "big/entry"
    target = tmp_path / "b" / "entries" / "big" / "entry.json"
    reads = CTX.Value("i", 0)
    stop, out = CTX.Event(), CTX.Queue()
    with Board.init(tmp_path / "b") as board:
        board.write(key, _value_of(1))
        board.flush()
        reader = spawn(_read_entry_in_a_loop, str(target), key, reads, stop, out)
        version, deadline = 1, time.monotonic() + 60
        while reads.value < 5 and time.monotonic() < deadline:  # the reader has started reading
            time.sleep(0.01)
        start = reads.value
        # Rewrite the key until the reader has read many times while we rewrote it.
        while (version < 20 or reads.value < start + 100) and version < 400 and time.monotonic() < deadline:
            version += 1
            board.write(key, _value_of(version))
            board.flush()
        stop.set()
        versions, problems, examples = out.get(timeout=30)
        reader.join(10)
    assert problems == 0, examples
    assert len(versions) >= 3, f"the reader saw only versions {versions}: it did not overlap the rewrites"


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
    assert header["blackboard_log"] == 3 and record["seq"] == 1


def test_8_write_protocol_conflict_writes_nothing(board: Board) -> None:
    board.write("k", 1)
    before = (board.path / "log.jsonl").read_bytes()
    with pytest.raises(VersionConflict):
        board.write("k", 2, expect_version=0)
    with pytest.raises(VersionConflict):
        board.delete("k", expect_version=2)
    assert (board.path / "log.jsonl").read_bytes() == before
    assert board.write("k", 2, expect_version=1).seq == 2  # a refused write took no seq


def _write_past_a_file_size_limit(path: str, room: int) -> str:
    """Write one record with RLIMIT_FSIZE `room` bytes past the log's end: the write() is short."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us at the limit
    with Board.open(path) as board:
        board.read("k")  # the view is up to date: the write does not grow the log by reading
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(Path(path) / "log.jsonl") + room, hard))
        try:
            board.write("big", "x" * 4000)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return "the write returned"


@pytest.mark.parametrize("room", [100, 0], ids=["short-write", "no-room"])
def test_8_write_protocol_short_write_truncated_and_reported(tmp_path: Path, room: int) -> None:
    path = tmp_path / "b"
    with Board.init(path) as board:
        board.write("k", 1)
        board.write("k", 2)
    before = (path / "log.jsonl").read_bytes()
    with mp.get_context("spawn").Pool(1) as pool:
        outcome = pool.apply(_write_past_a_file_size_limit, (str(path), room))
    assert outcome != "the write returned", "a short write must be reported as a failure"
    after = (path / "log.jsonl").read_bytes()
    assert after == before, f"the short write was not truncated back ({outcome})"
    assert after.endswith(b"\n") and all(json.loads(line) for line in after.splitlines())
    with Board.open(path) as board:
        assert board.last_seq == 2 and board.read("big") is None
        assert board.write("big", 1).seq == 3


def test_9_locking_soft_mode(tmp_path: Path) -> None:
    with Board.init(tmp_path / "b", lock="soft") as board:
        assert board.config.lock == "soft"
        board.write("k", 1)
        board.write("k", 2, expect_version=1)
    with mp.get_context("spawn").Pool(2) as pool:
        seqs = pool.map(_write_one, [str(tmp_path / "b")] * 4)
    assert sorted(seqs) == [3, 4, 5, 6]
    assert json.loads((tmp_path / "b" / "board.json").read_text())["lock"] == "soft"


def _hold_lock(kind: str, path: str, held: MpEvent, release: MpEvent) -> None:
    """Hold a writer lock as a writer in another language would take it."""
    if kind == "flock":
        fd = os.open(path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.set()
        release.wait(60)
        os.close(fd)
    else:
        # Spec 9.2: move the token from `free` to a held name, and back to release.
        token = Path(path) / "held.elsewhere.0123456789abcdef.7.x.00c0ffee.0"
        os.rename(Path(path) / "free", token)
        held.set()
        release.wait(60)
        os.rename(token, Path(path) / "free")


@pytest.mark.parametrize("mode", ["flock", "soft"])
def test_9_every_process_uses_the_boards_lock(tmp_path: Path, spawn: Spawn, mode: str) -> None:
    path = tmp_path / "b"
    Board.init(path, lock=mode).close()  # type: ignore[arg-type]
    other = "soft" if mode == "flock" else "flock"
    files = {"flock": path / "lock", "soft": path / "lock.d"}
    files["flock"].touch()
    if mode == "flock":
        create_lock_dir(files["soft"])  # a token for the other kind of lock to hold
    with Board.open(path, lock_timeout=0.3) as board:
        # The other kind of lock, held elsewhere, is not this board's lock: writers go on.
        held, release = CTX.Event(), CTX.Event()
        holder = spawn(_hold_lock, other, str(files[other]), held, release)
        assert held.wait(60)
        assert board.write("k", 1).seq == 1
        release.set()
        holder.join(10)
        # The board's kind of lock, held by another process, excludes this writer until released.
        held, release = CTX.Event(), CTX.Event()
        holder = spawn(_hold_lock, mode, str(files[mode]), held, release)
        assert held.wait(60)
        with pytest.raises(LockTimeout):
            board.write("k", 2)
        release.set()
        holder.join(10)
        assert board.write("k", 2).seq == 2


def test_9_soft_boards_watchers_poll(tmp_path: Path) -> None:
    with Board.init(tmp_path / "b", lock="soft") as board:
        with board.watch(timeout=0.1) as watcher:
            assert watcher.polling  # notifications do not cross NFS clients
        with board.watch(timeout=0.1, poll=False) as watcher:
            assert not watcher.polling  # unless asked for (all writers on this host)
    with Board.init(tmp_path / "f") as board, board.watch(timeout=0.1) as watcher:
        assert not watcher.polling


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


def test_11_archive_readers_deduplicate_by_seq(tmp_path: Path) -> None:
    with Board.init(tmp_path / "b") as board:
        for i in range(6):
            board.write("k", i)  # seqs 1-6
        board.compact(archive=True)  # seqs 1-5 go to the archive
        (segment,) = (tmp_path / "b" / "archive").glob("*.jsonl.gz")
        lines = gzip.decompress(segment.read_bytes()).splitlines()
        assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5]
        # A compaction killed after its archive was written, then redone: segments that overlap.
        overlap = b"".join(line + b"\n" for line in lines if json.loads(line)["seq"] >= 3)
        (tmp_path / "b" / "archive" / f"{3:012d}-{5:012d}.jsonl.gz").write_bytes(gzip.compress(overlap))
        history = board.history("k", all=True)
        assert [e.seq for e in history] == [1, 2, 3, 4, 5, 6]
        assert [e.value for e in history] == [0, 1, 2, 3, 4, 5]


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

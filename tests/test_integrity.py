"""Integrity of the log (issue 8; spec/FORMAT.md 5.3, 5.6, 5.7, 12.1): a damaged log is detected on
every read path and never read as another value, and `repair` takes it back to a usable board
without losing a good record, inventing a value or reusing a seq.

The judges here read the files with the standard library and `xxhash` (the checksum of spec 5.6),
not with the code under test. Child processes run tests/_integrity_workers.py.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from _integrity_workers import KEYS_PER_WRITER, ack_writer, repair_when_told
from _workers import CTX, Spawn, join_ok, snapshot, wait_until
from conftest import sealed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xxhash import xxh3_64_hexdigest

from blackboard import Board, CorruptLog, LogTruncated

ROOT = Path(__file__).resolve().parent.parent

CLI = [sys.executable, "-m", "blackboard"]
#: The checksum member that ends every line of a version-3 log: `,"xxh3":"<16 hex>"}` (spec 5.6).
SEAL_TAIL = 27
Answer = tuple[dict[str, tuple[int, Any, int]], int]
Events = list[tuple[int, str, str, Any, int, str, str]]

# -- judges and helpers -------------------------------------------------------------------------------


def seal_ok(line: bytes) -> bool:
    """Whether a line ends with a checksum member that matches the bytes before it (spec 5.6)."""
    body, tail = line[:-SEAL_TAIL], line[-SEAL_TAIL:]
    return (
        len(line) > SEAL_TAIL
        and tail.startswith(b',"xxh3":"')
        and tail.endswith(b'"}')
        and xxh3_64_hexdigest(body).encode() == tail[9:25]
    )


def lines_of(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of a log file (without newlines) and the torn tail after them."""
    *lines, torn = data.split(b"\n")
    return lines, torn


def judge_log(root: Path) -> list[dict[str, Any]]:
    """The records of a log that must be whole and valid: a version-3 header, a valid checksum on
    every line, no torn tail, and seqs that run 1, 2, 3, ... with every `lost` record standing for
    its run `from`..`seq` (spec 5.2, 5.7; none of these boards is compacted)."""
    lines, torn = lines_of((root / "log.jsonl").read_bytes())
    assert torn == b"", f"torn tail {torn!r}"
    assert all(seal_ok(line) for line in lines), [line for line in lines if not seal_ok(line)]
    header = json.loads(lines[0])
    assert header["blackboard_log"] == 3 and header["compacted_through"] == 0, header
    records = [json.loads(line) for line in lines[1:]]
    last = 0
    for rec in records:
        first = rec["from"] if rec["op"] == "lost" else rec["seq"]
        assert first == last + 1 and rec["seq"] >= first, f"seq {first}..{rec['seq']} after seq {last}"
        last = rec["seq"]
    return records


def quarantined(root: Path) -> list[dict[str, Any]]:
    """Every row of every quarantine file (spec 12.1), each file's header checked."""
    rows: list[dict[str, Any]] = []
    folder = root / "quarantine"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        head, *body = path.read_bytes().splitlines()
        assert json.loads(head)["blackboard_quarantine"] == 1, head
        rows += [json.loads(row) for row in body]
    return rows


def quarantine_files(root: Path) -> list[str]:
    folder = root / "quarantine"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def read_state(root: Path) -> Answer:
    """The whole state a read-only handle answers: key -> (version, value, seq), and the last seq."""
    with Board.open(root, read_only=True) as board:
        return {e.key: (e.version, e.value, e.seq) for e in board.entries()}, board.last_seq


def watch_all(root: Path, prefix: str, since: int = 0) -> tuple[Events, CorruptLog | None]:
    """The events a watcher from `since` delivers until it has nothing more, and the CorruptLog that
    stopped it, if one did (after the events before the bad line)."""
    events: Events = []
    with Board.open(root, read_only=True) as board:
        try:
            with board.watch(prefix, since=since) as watcher:
                while (e := watcher.next_nowait()) is not None:
                    events.append((e.seq, e.op, e.key, e.value, e.version, e.author, e.ts_text))
        except CorruptLog as exc:
            return events, exc
    return events, None


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    env["BLACKBOARD_AUTHOR"] = "cli"
    return subprocess.run(
        [*CLI, "--board", str(root), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def one_error_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The CLI failed with exit 1 and one line on stderr (no traceback) containing every word."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("blackboard: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)
    return proc.stderr


def with_key(line: bytes, key: str) -> bytes:
    """A copy of a sealed record line naming `key` instead (its first change's, for a transaction),
    with a valid checksum: a well-formed line that only the seq rule can tell from a real one."""
    rec = json.loads(line)
    rec.pop("xxh3")
    (rec["ops"][0] if rec["op"] == "txn" else rec)["key"] = key
    return sealed(json.dumps(rec, separators=(",", ":")).encode())


def write_log(root: Path, data: bytes) -> None:
    (root / "log.jsonl").write_bytes(data)


def build_mixed(root: Path) -> None:
    """30 records: puts, deletes, a transaction, an idempotent retry, four prefixes; flushed."""
    board = Board.init(root, author="tester")
    for i in range(6):
        board.write(f"tasks/t{i}", {"n": i, "text": f"v{i}"})
    board.write("notes/a", "v2")
    board.write("notes/b", [1, 2, 3])
    board.delete("tasks/t1")
    board.write("tasks/t2", {"n": 22}, idempotency_key="retry-1")
    assert board.write("tasks/t2", {"n": 22}, idempotency_key="retry-1").seq == 10  # appends nothing
    with board.transaction() as tx:
        tx.write("results/r1", {"ok": True})
        tx.write("tasks/t3", None)
        tx.delete("tasks/t4")
    for i in range(8):
        board.write(f"results/r{i % 3}", i * 1.5)
    board.write("notes/a", "v9")
    board.delete("notes/b")
    for i in range(9):
        board.write(f"misc/m{i}", {"deep": {"x": [i, "y"]}, "s": "é\u2603"})
    board.flush()
    assert board.last_seq == 30
    board.close()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The board of `build_mixed`, built once for the module: tests copy it, never change it."""
    root = tmp_path_factory.mktemp("integrity") / "mixed"
    build_mixed(root)
    return root


@pytest.fixture(scope="module")
def mixed_answers(mixed: Path) -> tuple[Answer, dict[str, Events]]:
    state = read_state(mixed)
    events = {prefix: watch_all(mixed, prefix) for prefix in ("", "notes/")}
    for found, error in events.values():
        assert error is None and found
    return state, {prefix: found for prefix, (found, _) in events.items()}


def copy_board(src: Path, folder: Path) -> Path:
    """A copy of the board `src` in a new directory under `folder` (one per hypothesis example)."""
    dst = Path(tempfile.mkdtemp(dir=folder)) / "board"
    shutil.copytree(src, dst)
    return dst


# -- 1. a flipped bit is detected, or changes nothing ------------------------------------------------


def header_version_digit(data: bytes) -> int:
    return data.index(b'"blackboard_log":3') + len(b'"blackboard_log":')


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_flipped_bit_is_detected_or_harmless(
    mixed: Path, mixed_answers: tuple[Answer, dict[str, Events]], tmp_path: Path, data: st.DataObject
) -> None:
    """One bit of one byte of the log flipped, anywhere but the final newline (that is a torn tail:
    see the next test): a read of the whole state and a watch from seq 0 (every prefix, and one
    whose lines are mostly passed over) each raise CorruptLog or give the unflipped board's answer,
    never another one. And in fact every flip is detected, but one: the header's format digit 3
    flipped to 2 or 1 (harmless alone; see test_a_header_that_claims_an_older_format_...)."""
    original = (mixed / "log.jsonl").read_bytes()
    lines, _ = lines_of(original)
    # A line, then a byte of it (its newline included but the last line's): every line is drawn as
    # often as any other, the short header as often as a long transaction.
    number = data.draw(st.integers(0, len(lines) - 1), label="line")
    start = sum(len(line) + 1 for line in lines[:number])
    room = len(lines[number]) + (0 if number == len(lines) - 1 else 1)
    pos = start + data.draw(st.integers(0, room - 1), label="byte in line")
    bit = data.draw(st.integers(0, 7), label="bit")
    flipped = bytearray(original)
    flipped[pos] ^= 1 << bit
    root = copy_board(mixed, tmp_path)
    write_log(root, bytes(flipped))

    state, events = mixed_answers
    detected = []
    try:
        assert read_state(root) == state, "a flipped bit was read as another state"
        detected.append(False)
    except CorruptLog:
        detected.append(True)
    for prefix, expected in events.items():
        found, error = watch_all(root, prefix)
        # The events before the bad line are delivered first: they must be the true ones.
        assert found == expected[: len(found)], f"watch {prefix!r} delivered a changed event"
        assert error is not None or found == expected
        detected.append(error is not None)
    # The header's digit flipped to 1 or 2 alone changes no answer (it may be detected once the bug
    # of test_a_header_that_claims_an_older_format_... is fixed); any other flip is detected.
    harmless = pos == header_version_digit(original) and flipped[pos] in b"12"
    assert harmless or detected == [True] * 3, (pos, bit, detected)


def test_a_flipped_bit_in_a_string_value_is_detected(mixed: Path, tmp_path: Path) -> None:
    """The issue's "10 of 300 flips silently changed a value": "v2" -> "v3" is one bit, and the line
    is still valid JSON. The checksum catches it: every read path names line, offset and seq."""
    root = copy_board(mixed, tmp_path)
    data = (root / "log.jsonl").read_bytes()
    lines, _ = lines_of(data)
    number = next(i for i, line in enumerate(lines) if b'"key":"notes/a","value":"v2"' in line)
    pos = data.index(b'"value":"v2"') + len(b'"value":"v')
    flipped = bytearray(data)
    flipped[pos] ^= 0x01  # '2' -> '3'
    write_log(root, bytes(flipped))
    damaged = json.loads(bytes(flipped).split(b"\n")[number])
    assert damaged["value"] == "v3" and damaged["seq"] == 7  # JSON alone sees nothing wrong

    offset = sum(len(line) + 1 for line in lines[:number])
    with Board.open(root, read_only=True) as board, pytest.raises(CorruptLog) as caught:
        board.read("notes/a")
    exc = caught.value
    assert (exc.line, exc.offset, exc.seq) == (number + 1, offset, 7)
    assert "checksum mismatch" in exc.reason and f"blackboard --board {root} repair" in str(exc)
    for prefix in ("", "notes/", "tasks/", "nothing/"):
        found, error = watch_all(root, prefix)
        assert error is not None and error.offset == offset and "checksum mismatch" in error.reason, prefix
        assert all(seq < 7 for seq, *_ in found)
    with Board.open(root, author="x") as board:
        for attempt in (lambda: board.write("notes/a", "v4"), board.compact):
            with pytest.raises(CorruptLog, match="checksum mismatch"):
                attempt()
        # check reports it (kind corrupt, spec 7.3) rather than stopping at it
        (damaged,) = [p for p in board.check().details() if p.kind == "corrupt"]
        assert "checksum mismatch" in damaged.detail and f"byte {offset}" in damaged.detail
    assert (root / "log.jsonl").read_bytes() == bytes(flipped)


def test_a_lost_final_newline_is_a_torn_tail_that_the_watermark_reveals(mixed: Path, tmp_path: Path) -> None:
    """Spec 5.6: the last line's final newline flipped reads as a torn tail (a write in progress),
    which no checksum can tell from one. The watermark had seen that record, so reads say the log
    lost its tail; without any trace of it, the board reads as it was before that record."""
    expected, _ = read_state(mixed)
    data = (mixed / "log.jsonl").read_bytes()
    for bit in range(8):
        root = copy_board(mixed, tmp_path)
        write_log(root, data[:-1] + bytes([data[-1] ^ (1 << bit)]))
        with pytest.raises(LogTruncated) as caught:
            read_state(root)
        assert (caught.value.last_seq, caught.value.seen) == (29, 30)
        (root / "materialized").unlink()  # no trace that seq 30 was ever written
        assert not (root / "checkpoint").exists()
        state, last = read_state(root)
        assert last == 29 and state == {k: v for k, v in expected.items() if v[2] < 30}
        assert "misc/m8" not in state  # the key seq 30 created


def test_a_header_that_claims_an_older_format_still_has_its_checksum_checked(mixed: Path, tmp_path: Path) -> None:
    """The header's format digit is the one byte whose flip the property above finds harmless: "3" ->
    "2" turns off checksums for the whole file, so that a second flip, in a value, is read silently.
    No writer makes a version-2 header with a checksum member: such a header is a damaged one."""
    root = copy_board(mixed, tmp_path)
    data = bytearray((mixed / "log.jsonl").read_bytes())
    data[header_version_digit(bytes(data))] ^= 0x01  # '3' -> '2'
    data[data.index(b'"value":"v9"') + len(b'"value":"v')] ^= 0x01  # "v9" -> "v8", notes/a's latest
    write_log(root, bytes(data))
    with Board.open(root, read_only=True) as board:
        try:
            value = board.read("notes/a")
        except CorruptLog:
            return
    pytest.fail(f"two flipped bits were read silently: notes/a is {value!r}, was 'v9'")


# -- 2. repair round trip ---------------------------------------------------------------------------


def build_small(root: Path) -> None:
    """20 records over three prefixes: keys written several times, two deletes, a transaction; flushed
    (so that entry files hold the latest put of each live key)."""
    board = Board.init(root, author="tester")
    for i in range(14):
        board.write(f"k/{i % 6}", {"i": i})
    board.delete("k/1")
    with board.transaction() as tx:
        tx.write("t/a", 1)
        tx.write("t/b", [2])
        tx.delete("k/2")
    for i in range(4):
        board.write(f"z/{i}", i, idempotency_key=f"z{i}")
    board.flush()
    assert board.last_seq == 20
    board.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integrity") / "small"
    build_small(root)
    return root


def damage(lines: list[bytes], data: st.DataObject) -> bytes:
    """The log of `lines` (header first) after a random combination of the damage a disk, a hand or
    a bad restore does: 0-3 flipped bits in records (the header's damage is tested apart), a line
    replaced by garbage, a line deleted (`sed -i Nd`), the tail cut at a line boundary (entry files
    are then newer), a copy of an earlier good line naming another key appended, a torn half line
    appended."""
    out: list[bytes | None] = list(lines)
    touched = set()
    for _ in range(data.draw(st.integers(0, 3), label="flips")):
        i = data.draw(st.integers(1, len(lines) - 1), label="flipped line")
        line = bytearray(out[i] or b"")
        line[data.draw(st.integers(0, len(line) - 1), label="byte")] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        out[i] = bytes(line)
        touched.add(i)
    if data.draw(st.booleans(), label="garbage"):
        i = data.draw(st.integers(1, len(lines) - 1), label="garbage line")
        out[i] = data.draw(st.sampled_from([b"garbage", b"{}", b'{"seq":5}', b"\xff\xfe", b""]), label="garbage")
        touched.add(i)
    if data.draw(st.booleans(), label="delete a line"):
        i = data.draw(st.integers(1, len(lines) - 1), label="deleted line")
        out[i] = None
        touched.add(i)
    keep = len(lines)
    if data.draw(st.booleans(), label="cut the tail"):
        keep = data.draw(st.integers(0, len(lines) - 1), label="lines kept")
    kept = [line for line in out[:keep] if line is not None]
    intact = [i for i in range(1, keep) if i not in touched]
    copy = bool(intact) and data.draw(st.booleans(), label="copy a line")
    if copy:
        kept.append(with_key(lines[data.draw(st.sampled_from(intact), label="copied line")], "copied/x"))
    blob = b"".join(line + b"\n" for line in kept)
    if data.draw(st.booleans(), label="torn tail"):
        source = lines[data.draw(st.integers(1, len(lines) - 1), label="torn line")]
        blob += source[: data.draw(st.integers(1, len(source) - 1), label="torn length")]
    return blob


def only_gaps(data: bytes, original_last: int) -> bool:
    """Whether the damage is only seqs missing from a log whose every line is good and that still
    ends at its last seq (bug in test_repair_accounts_for_a_deleted_line: such a log is not rewritten)."""
    lines, _ = lines_of(data)
    if not lines or not all(seal_ok(line) for line in lines):
        return False
    seqs = [json.loads(line)["seq"] for line in lines[1:]]
    increasing = all(a < b for a, b in itertools.pairwise(seqs))
    return increasing and bool(seqs) and seqs[-1] == original_last and seqs != list(range(1, original_last + 1))


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_repair_round_trip(small: Path, tmp_path: Path, data: st.DataObject) -> None:
    """After any combination of `damage`, one repair leaves a board that reads and checks clean, whose
    log holds every good line byte for byte, and otherwise only `lost` records and records put back
    from entry files (exactly the original records of their seqs); seqs gapless, none twice, the next
    write above every seq ever used; every damaged line is in the quarantine; a second repair changes
    nothing."""
    original = (small / "log.jsonl").read_bytes()
    lines, _ = lines_of(original)
    by_seq = {rec["seq"]: rec for rec in map(json.loads, lines[1:])}
    damaged_log = damage(lines, data)
    # Known bug, tested on its own (xfail): a log whose only damage is a missing line is not rewritten.
    root = copy_board(small, tmp_path)
    write_log(root, damaged_log)

    with Board.open(root, author="repairer") as board:
        report = board.repair()

    records = judge_log(root)
    new_lines, _ = lines_of((root / "log.jsonl").read_bytes())
    for line, rec in zip(new_lines[1:], records, strict=True):
        if rec["op"] == "lost":
            assert rec["author"] == "blackboard-repair"
            continue
        if line in lines:
            continue
        # Put back from an entry file: the puts of the original record of that seq, word for word.
        old = by_seq[rec["seq"]]
        puts = [c for c in (old["ops"] if old["op"] == "txn" else [old]) if c["op"] == "put"]
        made = rec["ops"] if rec["op"] == "txn" else [rec]
        assert rec["author"] == old["author"] and rec["ts"] == old["ts"], (rec, old)
        assert all(c["op"] == "put" for c in made)
        assert {(c["key"], json.dumps(c["value"]), c["version"]) for c in made} <= {
            (c["key"], json.dumps(c["value"]), c["version"]) for c in puts
        }, (rec, old)
    assert [(r["from"], r["seq"]) for r in records if r["op"] == "lost"] == report.lost
    # No good line dropped; every other line of the damaged log (and its torn tail) is quarantined.
    kept = set(new_lines)
    damaged_lines, torn = lines_of(damaged_log)
    rows = quarantined(root)
    hexes = {row["hex"] for row in rows}
    for line in damaged_lines:
        if line == lines[0]:
            continue  # the old header: the new log has a new generation
        assert line in kept or line.hex() in hexes, line
        assert line not in lines or line in kept, f"a good line was dropped: {line!r}"
    assert torn == b"" or torn.hex() in hexes
    assert len(report.quarantined) == len(rows) and (report.quarantine_file is not None) == bool(rows)

    with Board.open(root, author="after") as board:
        state = {e.key: (e.value, e.version, e.seq) for e in board.entries()}
        assert board.check().ok
        events, error = watch_all(root, "")
        assert error is None and [e[0] for e in events] == sorted(e[0] for e in events)
        for key, (value, version, seq) in state.items():
            # Each live key's value is the one its original record of that seq made.
            made = {(json.dumps(c["value"]), c["version"]) for c in changes_of(by_seq[seq]) if c["key"] == key}
            assert (json.dumps(value), version) in made, (key, value, version, seq)
        entry = board.write("after/x", 1)
        assert entry.seq == records[-1]["seq"] + 1 > max(by_seq), (entry.seq, report.seen)
    log_before, files_before = (root / "log.jsonl").read_bytes(), quarantine_files(root)
    with Board.open(root, author="repairer") as board:
        again = board.repair()
    assert not again.rewrote_log and not again.quarantined and again.ok, again.problems()
    assert (root / "log.jsonl").read_bytes() == log_before and quarantine_files(root) == files_before


def changes_of(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(rec["ops"]) if rec["op"] == "txn" else [rec]


# -- 3. the reproductions -------------------------------------------------------------------


def board_of(root: Path, writes: list[tuple[str, Any]]) -> list[bytes]:
    """A board with these writes, flushed and closed; its log's lines."""
    with Board.init(root, author="tester") as board:
        for key, value in writes:
            board.write(key, value)
        board.flush()
    lines, torn = lines_of((root / "log.jsonl").read_bytes())
    assert torn == b""
    return lines


def test_a_corrupt_record_in_the_middle_stops_every_command_until_the_advised_repair(tmp_path: Path) -> None:
    root = tmp_path / "board"
    lines = board_of(root, [(f"k/{i}", {"i": i}) for i in range(5)])
    data = bytearray((root / "log.jsonl").read_bytes())
    offset = sum(len(line) + 1 for line in lines[:3])  # line 4: seq 3, k/2's latest put
    data[offset + lines[3].index(b'{"i":2}') + 5] ^= 0x04  # 2 -> 6: still valid JSON
    write_log(root, bytes(data))
    before = snapshot(root)

    with Board.open(root, author="tester") as board:
        for attempt in (lambda: board.read("k/0"), lambda: board.write("k/9", 9), board.keys):
            with pytest.raises(CorruptLog) as caught:
                attempt()
            assert (caught.value.line, caught.value.offset, caught.value.seq) == (4, offset, 3)
            assert f"run `blackboard --board {root} repair`" in str(caught.value)
        (damaged,) = [p for p in board.check().details() if p.kind == "corrupt"]
        assert (damaged.line, damaged.seq) == (4, 3) and "repair" in damaged.detail
    for args in (["ls"], ["read", "k/0"], ["write", "k/9", "9"]):
        one_error_line(cli(root, *args), "line 4", f"byte {offset}", "(seq 3)", "checksum mismatch", "repair")
    checked = cli(root, "check")  # a finding, not an error: exit 6 with the line and what repair does
    assert checked.returncode == 6 and "damaged record at line 4 (seq 3)" in checked.stdout, checked
    assert snapshot(root) == before, "a refused command changed the board's files"

    proc = cli(root, "repair")  # the command the errors advise
    assert proc.returncode == 0, proc.stderr
    assert "quarantined line 4" in proc.stdout and "recovered seq 3 of 'k/2'" in proc.stdout
    with Board.open(root, author="tester") as board:
        assert board.read_prefix("k/") == {f"k/{i}": {"i": i} for i in range(5)}
        assert board.write("k/9", 9).seq == 6
        assert board.check().ok
    [row] = quarantined(root)
    assert bytes.fromhex(row["hex"]) == bytes(data).split(b"\n")[3]
    assert (row["line"], row["offset"], row["seq"], row["keys"]) == (4, offset, 3, ["k/2"])


def delete_line(root: Path, number: int) -> bytes:
    """`sed -i {number}d log.jsonl`: the line removed whole, the file otherwise untouched."""
    lines, torn = lines_of((root / "log.jsonl").read_bytes())
    gone = lines.pop(number - 1)
    write_log(root, b"".join(line + b"\n" for line in lines) + torn)
    return gone


def test_a_deleted_line_is_a_seq_gap_every_reader_reports(tmp_path: Path) -> None:
    """The checksum cannot see a line removed whole; the seq rule does (spec 5.6)."""
    root = tmp_path / "board"
    board_of(root, [("a", 1), ("a", 2), ("a", 3)])
    delete_line(root, 3)  # seq 2
    before = snapshot(root)
    with Board.open(root, author="tester") as board:
        for attempt in (lambda: board.read("a"), lambda: board.write("b", 1), lambda: board.last_seq):
            with pytest.raises(CorruptLog, match="seq 3 after seq 1") as caught:
                attempt()
            assert (caught.value.line, caught.value.seq) == (3, 3) and "repair" in str(caught.value)
        (damaged,) = [p for p in board.check().details() if p.kind == "corrupt"]
        assert (damaged.line, damaged.seq) == (3, 3) and "seq 3 after seq 1" in damaged.detail
    for prefix in ("", "a", "b"):
        events, error = watch_all(root, prefix)
        assert error is not None and "seq 3 after seq 1" in error.reason and error.line == 3, prefix
        assert [e[0] for e in events] == ([1] if prefix == "a" or not prefix else [])
    one_error_line(cli(root, "ls"), "line 3", "seq 3 after seq 1", "repair")
    assert snapshot(root) == before


@pytest.mark.parametrize(
    ("writes", "lost", "recovered"),
    [
        ([("a", 1), ("a", 2), ("a", 3)], [(2, 2)], []),  # seq 2 was superseded: nothing holds it
        ([("a", 1), ("b", 2), ("a", 3)], [], [(2, "b")]),  # b's entry file still holds seq 2
    ],
    ids=["superseded", "in-an-entry-file"],
)
def test_repair_accounts_for_a_deleted_line(
    tmp_path: Path, writes: list[tuple[str, Any]], lost: list[tuple[int, int]], recovered: list[tuple[int, str]]
) -> None:
    root = tmp_path / "board"
    board_of(root, writes)
    delete_line(root, 3)  # sed -i 3d: seq 2
    proc = cli(root, "repair", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["lost"] == [list(r) for r in lost]
    assert report["recovered"] == [{"seq": s, "key": k} for s, k in recovered]
    assert [r["seq"] for r in judge_log(root)] == [1, 2, 3]
    with Board.open(root, author="tester") as board:
        assert board.read("a") == 3 and board.check().ok
        assert board.write("c", 4).seq == 4  # seq 2 is never given out again


def test_a_copied_line_with_another_key_is_corruption_not_a_replay(tmp_path: Path) -> None:
    """A copy of seq 2's line naming another key, with a valid checksum, appended at the end: only
    the seq rule can tell it. Watchers must not pass over it (not even one whose prefix it does not
    match, nor one that starts after its seq); reads and the CLI refuse; repair quarantines it."""
    root = tmp_path / "board"
    lines = board_of(root, [(f"k/{i}", i) for i in range(4)])
    copy = with_key(lines[2], "other/x")
    assert seal_ok(copy) and json.loads(copy)["seq"] == 2
    write_log(root, (root / "log.jsonl").read_bytes() + copy + b"\n")
    offset = sum(len(line) + 1 for line in lines)

    for prefix, since in [("", 0), ("k/", 0), ("other/", 0), ("none/", 0), ("", 3), ("other/", 3)]:
        events, error = watch_all(root, prefix, since)
        assert error is not None, f"watch({prefix!r}, since={since}) passed over a copied line"
        assert (error.line, error.offset) == (6, offset) and "repair" in str(error)
        assert [e[0] for e in events] == [s for s in (1, 2, 3, 4) if s > since and prefix in ("", "k/")]
    with Board.open(root, read_only=True) as board, pytest.raises(CorruptLog, match="seq 2 after seq 4"):
        board.read("k/1")
    one_error_line(cli(root, "ls"), "line 6", "seq 2 after seq 4", "repair")
    one_error_line(cli(root, "read", "k/1"), "line 6", "repair")

    with Board.open(root, author="tester") as board:
        report = board.repair()
        assert report.rewrote_log and not report.lost and not report.recovered
        assert [(d.line, d.offset, d.seq, d.keys) for d in report.quarantined] == [(6, offset, 2, ["other/x"])]
        assert board.read_prefix("") == {f"k/{i}": i for i in range(4)}
        assert board.write("k/9", 9).seq == 5
    assert [bytes.fromhex(row["hex"]) for row in quarantined(root)] == [copy]


def test_a_watcher_names_the_seq_a_copied_line_claims(tmp_path: Path) -> None:
    root = tmp_path / "board"
    lines = board_of(root, [(f"k/{i}", i) for i in range(4)])
    write_log(root, (root / "log.jsonl").read_bytes() + with_key(lines[2], "other/x") + b"\n")
    _, error = watch_all(root, "")
    assert error is not None and error.line == 6
    assert error.seq == 2 and "(seq 2)" in str(error)


@pytest.mark.parametrize("damage_kind", ["copied-line", "flipped-seq-digit"])
def test_a_live_watcher_started_on_a_damaged_last_line_delivers_exactly_the_new_writes(
    tmp_path: Path, damage_kind: str
) -> None:
    root = tmp_path / "board"
    lines = board_of(root, [(f"k/{i}", i) for i in range(4)])
    if damage_kind == "copied-line":
        write_log(root, (root / "log.jsonl").read_bytes() + with_key(lines[2], "other/x") + b"\n")
    else:
        last = bytearray(lines[-1])
        last[len(b'{"seq":')] ^= 0x02  # "seq":4 -> "seq":6, the checksum no longer matches
        write_log(root, b"".join(line + b"\n" for line in [*lines[:-1], bytes(last)]))
    with Board.open(root, author="tester") as board:
        # The start "from now" comes from the last line, which is checked like any other: a damaged
        # or copied one must not set the position (an older seq would replay, a larger one skip).
        with pytest.raises(CorruptLog) as info:
            board.watch("", since=None)
        assert info.value.line == 6 if damage_kind == "copied-line" else info.value.line == 5
        board.repair()
        watcher = board.watch("", since=None)
        assert watcher.next_nowait() is None
        new = [board.write("n/a", 1).seq, board.write("n/b", 2).seq]
        delivered = []
        while (event := watcher.next_nowait()) is not None:
            delivered.append(event.seq)
        watcher.close()
    assert delivered == new


def test_a_log_restored_from_an_older_copy_is_continued_not_rewound(tmp_path: Path) -> None:
    """The log lost its tail (an older copy restored after more writes): reads say so, a write
    refuses (nothing written), repair puts back what entry files hold and the next write's seq is
    above every seq ever used."""
    root = tmp_path / "board"
    with Board.init(root, author="tester") as board:
        for i in range(3):
            board.write(f"k/{i}", i)
        board.flush()
        older = (root / "log.jsonl").read_bytes()
        for i in range(3):
            board.write(f"k/{i}", i + 10)
        board.delete("k/0")
        board.write("n/new", "x")
        board.flush()
        assert board.last_seq == 8
    write_log(root, older)
    before = snapshot(root)
    with Board.open(root, author="tester") as board:
        for attempt in (lambda: board.read("k/1"), lambda: board.last_seq, lambda: board.write("k/1", 99)):
            with pytest.raises(LogTruncated) as caught:
                attempt()
            assert (caught.value.last_seq, caught.value.seen) == (3, 8) and "repair" in str(caught.value)
    one_error_line(cli(root, "write", "k/1", "99"), "lost its tail", "repair")
    assert snapshot(root) == before, "a write to a log that lost its tail changed the board"

    with Board.open(root, author="tester") as board:
        report = board.repair()
        assert report.seen == 8 and report.rewrote_log
        assert sorted(report.recovered) == [(5, "k/1"), (6, "k/2"), (8, "n/new")]
        assert report.lost == [(4, 4), (7, 7)]  # k/0's put at 4 (deleted at 7: no entry file holds either)
        state = board.read_prefix("")
        assert {k: state[k] for k in ("k/1", "k/2", "n/new")} == {"k/1": 11, "k/2": 12, "n/new": "x"}
        assert board.write("k/1", 99).seq == 9
        assert board.check().ok
    judge_log(root)


def test_a_deleted_log_is_named_by_every_command_and_repair_brings_it_back(tmp_path: Path) -> None:
    root = tmp_path / "board"
    board_of(root, [("a", 1), ("b", [2]), ("a", 3)])
    (root / "log.jsonl").unlink()
    for args in (["ls"], ["init"], ["read", "a"], ["write", "a", "4"], ["check"]):
        one_error_line(cli(root, *args), f"{root / 'log.jsonl'}", "no log file", f"blackboard --board {root} repair")
    assert not (root / "log.jsonl").exists()

    proc = cli(root, "repair")
    assert proc.returncode == 0, proc.stderr
    with Board.open(root, author="tester") as board:
        assert board.read_prefix("") == {"a": 3, "b": [2]}
        assert board.write("c", 5).seq == 4  # after seq 3, which a's entry file shows
        assert board.check().ok
    records = judge_log(root)
    assert [(r["op"], r["seq"]) for r in records] == [("lost", 1), ("put", 2), ("put", 3), ("put", 4)]


EXAMPLES = Path(__file__).resolve().parent.parent / "spec" / "examples"


def test_a_version_2_board_reads_appends_unsealed_and_compacts_to_version_3(tmp_path: Path) -> None:
    root = tmp_path / "board"
    shutil.copytree(EXAMPLES / "board-v2", root)
    old_lines, _ = lines_of((root / "log.jsonl").read_bytes())
    assert json.loads(old_lines[0])["blackboard_log"] == 2 and not any(seal_ok(line) for line in old_lines)
    with Board.open(root, author="tester") as board:
        before = board.read_prefix("")
        assert board.last_seq == 7 and before["research_request/q2"] == {"question": "Why one record per transaction?"}
        assert board.write("research_results/q2", {"x": 1}).seq == 8
        appended = (root / "log.jsonl").read_bytes().split(b"\n")[-2]
        assert json.loads(appended)["key"] == "research_results/q2" and not seal_ok(appended)
        assert b"xxh3" not in appended  # a version-2 log stays of its format until rewritten
        assert json.loads((root / "board.json").read_text())["version"] == 2
        events, error = watch_all(root, "", since=5)
        assert error is None and [e[0] for e in events] == [6, 6, 6, 7, 8]

        board.compact()
        assert json.loads((root / "board.json").read_text())["version"] == 3
        new_lines = judge_log_compacted(root)
        # Each kept record is its old line, byte for byte, with its checksum added.
        assert set(new_lines[1:]) <= {sealed(line) for line in [*old_lines[1:], appended]}
        assert board.read_prefix("") == {**before, "research_results/q2": {"x": 1}}
        assert board.check().ok


def judge_log_compacted(root: Path) -> list[bytes]:
    """The lines of a compacted version-3 log: each sealed, seqs increasing."""
    lines, torn = lines_of((root / "log.jsonl").read_bytes())
    assert torn == b"" and all(seal_ok(line) for line in lines)
    assert json.loads(lines[0])["blackboard_log"] == 3
    seqs = [json.loads(line)["seq"] for line in lines[1:]]
    assert seqs == sorted(set(seqs))
    return lines


def test_a_damaged_header_is_replaced_and_every_record_kept(tmp_path: Path) -> None:
    root = tmp_path / "board"
    lines = board_of(root, [(f"k/{i}", i) for i in range(4)])
    header = bytearray(lines[0])
    header[header.index(b"generation") + 14] ^= 0x01
    write_log(root, b"".join(line + b"\n" for line in [bytes(header), *lines[1:]]))
    with Board.open(root, read_only=True) as board, pytest.raises(CorruptLog, match="header"):
        board.read("k/0")
    with Board.open(root, author="tester") as board:
        report = board.repair()
        assert [(d.line, d.offset) for d in report.quarantined] == [(1, 0)] and not report.lost
        assert board.read_prefix("") == {f"k/{i}": i for i in range(4)}
        assert board.write("k/9", 9).seq == 5
    new_lines, _ = lines_of((root / "log.jsonl").read_bytes())
    assert new_lines[1:5] == lines[1:]
    assert [bytes.fromhex(row["hex"]) for row in quarantined(root)] == [bytes(header)]


def test_a_damaged_header_does_not_make_a_damaged_record_pass_as_unsealed(tmp_path: Path) -> None:
    root = tmp_path / "board"
    lines = board_of(root, [(f"k/{i}", i) for i in range(4)])
    header, record = bytearray(lines[0]), bytearray(lines[2])
    header[0] ^= 0x01  # not JSON any more
    tail = len(record) - SEAL_TAIL
    record[tail + 2] ^= 0x01  # ,"xxh3": -> ,"yxh3":  (the member name)
    record[record.index(b'"value":1') + 8] ^= 0x08  # 1 -> 9: the damage the checksum was there to catch
    write_log(root, b"".join(line + b"\n" for line in [bytes(header), lines[1], bytes(record), *lines[3:]]))
    with Board.open(root, author="tester") as board:
        report = board.repair()
        assert [d.line for d in report.quarantined] == [1, 3]
        assert board.read("k/1") == 1  # put back from its entry file, not the damaged 9


# -- 4. writers go on through damage and repairs ------------------------------------------------------

WRITERS = 3
ROUNDS = 4


def read_acks(paths: list[Path]) -> list[dict[str, Any]]:
    acks: list[dict[str, Any]] = []
    for path in paths:
        if path.exists():
            data = path.read_bytes()
            acks += [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]
    return acks


def wait_for_acks(paths: list[Path], count: int) -> None:
    wait_until(lambda: len(read_acks(paths)) >= count, 60, f"{count} acknowledged writes")


def damaged_line(kind: int, log: bytes) -> bytes:
    """A damaged line to append (with its newline): garbage; the last record again with the next seq
    but its old checksum (a seq the repair must never give out); a copy of the first record naming
    another key with a valid checksum (only the seq rule tells); the last record with a flipped bit."""
    lines, _ = lines_of(log)
    last = lines[-1]
    if kind == 0:
        return b"\x00garbage, not JSON\n"
    if kind == 1 and json.loads(last).get("op") == "put":
        seq = json.loads(last)["seq"]
        return last.replace(b'{"seq":%d,' % seq, b'{"seq":%d,' % (seq + 1), 1) + b"\n"
    if kind == 2 and len(lines) > 1:
        return with_key(lines[1], "copied/x") + b"\n"
    flipped = bytearray(last)
    flipped[len(flipped) // 2] ^= 0x10
    return bytes(flipped) + b"\n"


@pytest.mark.timeout(120)
def test_writers_go_on_through_injected_damage_and_repairs(tmp_path: Path, spawn: Spawn) -> None:
    """Writer processes write their own keys, acknowledging each write once `write` returned and
    retrying one that a damaged log refused; meanwhile, holding the writer lock, the test appends a
    damaged line and repairs, round after round. Every acknowledged write is then in the log with
    its value and seq, seqs are gapless and unique, and the board checks clean."""
    root = tmp_path / "board"
    Board.init(root, author="main").close()
    stop = CTX.Event()
    ack_files = [tmp_path / f"acks-{n}.jsonl" for n in range(WRITERS)]
    procs = [spawn(ack_writer, str(root), f"w{n}", str(ack_files[n]), stop, 10) for n in range(WRITERS)]
    injected: list[bytes] = []
    claimed: list[int] = []
    with Board.open(root, author="main") as board:
        for kind in range(ROUNDS):
            # Writes land between two repairs (the writers run until told to stop).
            target = len(read_acks(ack_files)) + WRITERS * 5
            wait_for_acks(ack_files, target)
            with board.engine.locked():  # no write is half done: the damaged line is whole, and last
                line = damaged_line(kind, (root / "log.jsonl").read_bytes())
                fd = os.open(root / "log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                try:
                    offset = os.fstat(fd).st_size
                    os.write(fd, line)
                finally:
                    os.close(fd)
            report = board.repair()
            # Nothing was appended after it: every writer's refresh stops at it.
            assert [d.offset for d in report.quarantined] == [offset], report.problems()
            assert report.rewrote_log
            injected.append(line[:-1])
            if kind == 1:  # the seq it claims is never given out: a `lost` record holds it
                claimed.append(json.loads(line)["seq"])
                assert report.lost == [(claimed[-1], claimed[-1])], report.problems()
        stop.set()
        for proc in procs:
            join_ok(proc, 60)

        acks = read_acks(ack_files)
        records = judge_log(root)
        by_seq = {rec["seq"]: rec for rec in records}
        for ack in acks:
            rec = by_seq.get(ack["seq"])
            assert rec is not None and rec["op"] == "put", f"acknowledged write lost: {ack}"
            assert (rec["key"], rec["value"], rec["version"]) == (ack["key"], ack["value"], ack["version"]), ack
        assert len({ack["seq"] for ack in acks}) == len(acks)
        assert all(by_seq[seq]["op"] == "lost" for seq in claimed)
        latest: dict[str, Any] = {}
        for ack in sorted(acks, key=lambda a: a["seq"]):
            latest[ack["key"]] = ack["value"]
        assert board.read_prefix("w/") == latest
        assert len(latest) == WRITERS * KEYS_PER_WRITER
        assert board.check().ok
    assert {bytes.fromhex(row["hex"]) for row in quarantined(root)} == set(injected)


# -- 5. a repair killed at any moment -----------------------------------------------------------------

CRASH_ROUNDS = 6


def build_crash_base(root: Path) -> tuple[bytes, bytes, list[bytes]]:
    """A board of 1500 records (so that a repair takes a while to kill), with one superseded record
    in the middle damaged. Returns the damaged log, the damaged line and the good record lines."""
    with Board.init(root, author="tester") as board:
        for i in range(1500):
            board.write(f"k/{i % 150}", {"i": i, "pad": "x" * 64})
        board.flush()
    lines, _ = lines_of((root / "log.jsonl").read_bytes())
    bad = bytearray(lines[700])  # seq 700, superseded by seq 850: a lost seq, not a recovered one
    bad[len(bad) // 2] ^= 0x01
    damaged = b"".join(line + b"\n" for line in [*lines[:700], bytes(bad), *lines[701:]])
    write_log(root, damaged)
    return damaged, bytes(bad), [*lines[1:700], *lines[701:]]


@pytest.mark.timeout(120)
def test_a_repair_killed_at_any_moment_leaves_a_board_that_repair_finishes(tmp_path: Path, spawn: Spawn) -> None:
    """A child repairs a damaged board and is SIGKILLed after a random delay, anywhere in the repair.
    The board is then either still damaged (the log untouched) or repaired (the damaged line
    already in a quarantine file); a repair after it finishes: check clean, no good record lost,
    the damaged line's bytes in a quarantine file, the next seq fresh. (The delay only picks the
    moment; what is asserted holds for every moment.)"""
    base = tmp_path / "base"
    damaged, bad, good = build_crash_base(base)
    timing = copy_board(base, tmp_path)
    started = time.perf_counter()
    with Board.open(timing, author="timing") as board:
        board.repair()
    window = (time.perf_counter() - started) * 1.5
    rng = random.Random(20261202)
    for _ in range(CRASH_ROUNDS):
        root = copy_board(base, tmp_path)
        parent, child = CTX.Pipe()
        proc = spawn(repair_when_told, str(root), child)
        assert parent.poll(60) and parent.recv() == "ready"
        parent.send("go")
        time.sleep(rng.uniform(0, window))
        if proc.pid is not None and proc.exitcode is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode in (0, -signal.SIGKILL), proc.exitcode

        log = (root / "log.jsonl").read_bytes()
        if log == damaged:
            with pytest.raises(CorruptLog, match="line 701"):
                read_state(root)
        else:  # switched: the quarantine was written first, the new log is whole
            assert bad.hex() in {row["hex"] for row in quarantined(root)}
            judge_log(root)
            read_state(root)

        with Board.open(root, author="after") as board:
            board.repair()
            assert board.check().ok
            assert board.write("k/new", 1).seq == 1501
        records = judge_log(root)
        new_lines = set(lines_of((root / "log.jsonl").read_bytes())[0])
        assert all(line in new_lines for line in good), "a good record was lost"
        assert [(r["from"], r["seq"]) for r in records if r["op"] == "lost"] == [(700, 700)]
        assert bad.hex() in {row["hex"] for row in quarantined(root)}


def test_what_a_killed_repair_left_in_tmp_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "board"
    board_of(root, [("a", 1), ("a", 2)])
    dead = 2**22 + 1  # a pid no process has (above the default pid_max): a killed repair's
    leftovers = [root / "tmp" / f"log.repair.{dead}.0123456789ab.tmp", root / "tmp" / f"quarantine.{dead}.ab.tmp"]
    for path in leftovers:
        path.write_bytes((root / "log.jsonl").read_bytes())
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    write_log(root, (root / "log.jsonl").read_bytes() + b"garbage\n")
    with Board.open(root, author="tester") as board:
        board.repair()
        board.compact()
    assert [path.name for path in leftovers if path.exists()] == []


# -- from a review of the change -----------------------------------------------------------------------


def test_a_file_switched_in_while_a_handle_opens_the_log_is_no_lost_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader opens the log (file A), and before it looks at the traces another handle compacts
    (file B at the path), writes and flushes: the watermark is past A's end. That is no lost tail:
    the reader looks at the path again and reads B (spec 5.3)."""
    import blackboard.core.engine as engine_module
    from blackboard.core.entries import read_watermark as real

    root = tmp_path / "board"
    writer = Board.init(root)
    for i in range(20):
        writer.write(f"k{i % 3}", i)
    writer.flush()
    fired: list[int] = []

    def between_open_and_traces(layout: Any) -> int:
        if not fired:  # the moment: the reader's log is open, its traces not read yet
            fired.append(1)
            assert writer.compact().skipped is None
            for i in range(5):
                writer.write("new", i)
            writer.flush()
        return real(layout)

    monkeypatch.setattr(engine_module, "read_watermark", between_open_and_traces)
    with Board.open(root, read_only=True) as reader:
        assert reader.last_seq == 25 and reader.read("new") == 4
    assert fired
    writer.close()


def test_board_json_is_never_downgraded(tmp_path: Path) -> None:
    """A handle opened on a version-1 board, then compaction (another handle) makes it 3 with a
    sealed log; the first handle's transaction (which needs 2) must not write 2 back: a release that
    reads 2 would append lines without checksums to the sealed log (spec 3)."""
    root = tmp_path / "board"
    Board.init(root).close()
    (root / "board.json").write_text(json.dumps({**json.loads((root / "board.json").read_text()), "version": 1}))
    write_log(
        root,
        b'{"blackboard_log":1,"compacted_through":0,"purged_deletes_through":0}\n'
        b'{"seq":1,"op":"put","key":"a","value":1,"version":1,"author":"x","ts":"2026-01-01T00:00:00.000000Z"}\n'
        b'{"seq":2,"op":"put","key":"a","value":2,"version":2,"author":"x","ts":"2026-01-01T00:00:01.000000Z"}\n',
    )
    with Board.open(root) as old_view:
        assert old_view.read("a") == 2 and old_view.config.version == 1
        with Board.open(root) as compactor:
            assert compactor.compact().skipped is None
        assert json.loads((root / "board.json").read_text())["version"] == 3
        with old_view.transaction() as tx:
            tx.write("b", 1)
            tx.write("c", 2)
    assert json.loads((root / "board.json").read_text())["version"] == 3
    lines = (root / "log.jsonl").read_bytes().splitlines()
    assert all(line.endswith(b'"}') and b',"xxh3":"' in line for line in lines), "a line without a checksum"
    with Board.open(root, read_only=True) as reader:
        assert reader.read_prefix("") == {"a": 2, "b": 1, "c": 2}


def test_a_transaction_put_back_from_entry_files_reports_the_key_it_deleted(tmp_path: Path) -> None:
    """The sample's seq-6 transaction deletes research_request/q1; damaged, it is put back from the
    entry files of its puts, and its delete is unknown: the key is live again, and the report says
    it was probably deleted (spec 12.1)."""
    root = tmp_path / "board"
    shutil.copytree(ROOT / "spec" / "examples" / "board-v2", root)
    lines = (root / "log.jsonl").read_bytes().split(b"\n")
    txn = next(i for i, line in enumerate(lines) if b'"op":"txn"' in line)
    lines[txn] = lines[txn].replace(b'"ops":[', b'"ops":{', 1)  # no longer JSON
    write_log(root, b"\n".join(lines))
    with Board.open(root, author="tester") as board:
        report = board.repair()
        assert [seq for seq, _key in report.recovered] and {seq for seq, _ in report.recovered} == {6}
        assert "research_request/q1" in report.probably_deleted
        assert any("probably deleted" in line for line in report.problems())
        assert board.check().ok

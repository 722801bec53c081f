"""A soft board's defences on shared mounts that a local disk can show (issue 9; spec 7.3, 9).

The two-client cases are in test_sharedfs.py (two bindfs views); these need no FUSE: check finding
an acknowledged write that a stale client overwrote, and the uncached log view falling back where
the filesystem refuses unaligned O_DIRECT reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from blackboard import Board
from blackboard.core.log import LogFile
from blackboard.core.record import encode_record
from blackboard.core.softlock import parse_note


def _overwrite_last_record(log: Path, value: bytes) -> None:
    """What a client with a stale view does on NFS: its record, with the seq it thought was next,
    written over the last acknowledged one (no torn line: a whole, valid record)."""
    data = log.read_bytes()
    last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
    old = json.loads(data[last_start:])
    line = encode_record(old["seq"], "put", "other", value, 1, "stale-client", old["ts"], sealed=True)
    log.write_bytes(data[:last_start] + line)


def test_7_3_check_finds_an_acknowledged_write_that_was_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with Board.init(path, lock="soft") as board:
        for i in range(3):
            board.write("k", i)
    note = parse_note((path / "lock.d" / "free").read_bytes())
    assert note is not None and note.seq == 3  # the last release's note: what check proves against
    _overwrite_last_record(path / "log.jsonl", b'"a longer value than the one it replaced"')
    with Board.open(path, read_only=True) as board:
        report = board.check()
    kinds = [p.kind for p in report.details()]
    assert not report.ok and "lost_write" in kinds, kinds
    lost = next(p for p in report.details() if p.kind == "lost_write")
    assert lost.seq == 3 and "acknowledged" in lost.summary
    cli = subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(path), "check", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert cli.returncode == 6, cli.stderr
    assert "lost_write" in [p["kind"] for p in json.loads(cli.stdout)["problems"]]


def test_7_3_a_healthy_soft_board_has_no_lost_write(tmp_path: Path) -> None:
    """Nor after a compaction (its hold leaves no note) or a delete: no false alarm."""
    with Board.init(tmp_path / "b", lock="soft") as board:
        for i in range(20):
            board.write(f"k/{i % 4}", i)
        board.delete("k/0")
        assert board.check().ok
        board.compact()
        assert board.check().ok
        board.write("k/1", "after")
        assert board.check().ok


def test_uncached_view_falls_back_where_o_direct_wants_alignment(tmp_path: Path) -> None:
    """ext4 refuses unaligned O_DIRECT reads (EINVAL): a view made uncached (as on a mount of a
    type we do not know) reads and writes through the cache instead, correctly."""
    with Board.init(tmp_path / "b", lock="soft") as board:
        board.engine.log = LogFile(board.engine.layout.log, reopen=True, uncached=True)
        for i in range(5):
            assert board.write("k", i).seq == i + 1
        assert board.read("k") == 4
        assert not board.engine.log.uncached  # it fell back, once
        assert board.check().ok

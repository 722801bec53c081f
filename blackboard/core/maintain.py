"""Looking after a board: `check`, `repair`, `stats`. Functions of a Board, kept out of its module.

Lock order, as everywhere: the writer lock, then the materialize lock, then the handle's mutex.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from .entries import Report, compare, materialize_lock, read_watermark, rebuild

if TYPE_CHECKING:
    from ..board import Board


def stats(board: Board) -> dict[str, Any]:
    """Keys, events and bytes of the log, its dead-record ratio, seqs, archive size."""
    with board._mutex:
        index = board._refresh()
        log_bytes = board._log.offset
        live = len(index.live)
        records = index.records
        first = index.first_seq
    archive = 0
    with contextlib.suppress(FileNotFoundError):
        archive = sum(e.stat().st_size for e in os.scandir(board._layout.archive) if e.is_file())
    return {
        "keys": live,
        "events": records,
        "log_bytes": log_bytes,
        "dead_ratio": round(1 - live / records, 4) if records else 0.0,
        "last_seq": index.last_seq,
        "oldest_seq": first,
        "compacted_through": index.compacted_through,
        "entries_at_seq": read_watermark(board._layout),
        "archive_bytes": archive,
        "cursors": len(board.cursors()),
    }


def check(board: Board) -> Report:
    """Compare entry files with the log; report a torn log tail. Changes nothing.

    Keys changed after the watermark are pending for a background flush, not inconsistent.
    """
    report = Report()
    # Lock order everywhere: writer lock, then materialize lock, then _mutex. The torn-tail look
    # takes the writer lock, so it comes first, with nothing else held.
    report.torn_tail_bytes = _torn_tail_under_lock(board)
    with materialize_lock(board._layout), board._mutex:
        index = board._refresh()
        report.last_seq, report.keys = index.last_seq, len(index.live)
        report.watermark = read_watermark(board._layout)
        compare(board._layout, index, report)
        mark = report.watermark
        pending = {k for k, _ in index.changed_since(mark)}
        report.missing = [k for k in report.missing if k not in pending]
        report.stale = [k for k in report.stale if k not in pending]
    return report


def _torn_tail_under_lock(board: Board) -> int:
    # Only under the writer lock is an incomplete last line known to be torn, not in progress.
    # A read-only handle cannot take it: report a tail that stays incomplete for a moment.
    if board.read_only:
        with board._mutex:
            board._refresh()
            torn = board._log.torn_bytes()
        if torn:
            time.sleep(0.1)
            with board._mutex:
                board._refresh()
                torn = board._log.torn_bytes()
        return torn
    board._lock.acquire(board.lock_timeout)
    try:
        with board._mutex:
            board._refresh(writable=True)
            return board._log.torn_bytes()
    finally:
        board._lock.release()


def repair(board: Board) -> Report:
    """Cut a torn log tail and rebuild every entry file that differs from the log."""
    report = Report()
    board._lock.acquire(board.lock_timeout)
    try:
        with board._mutex:
            board._refresh(writable=True)
            report.torn_tail_bytes = board._log.truncate_torn_tail()
    finally:
        board._lock.release()
    with materialize_lock(board._layout), board._mutex:
        index = board._refresh()
        report.last_seq, report.keys = index.last_seq, len(index.live)
        compare(board._layout, index, report)
        rebuild(board._layout, index, report)
        report.watermark = index.last_seq
    report.repaired = True
    return report

"""Looking after a board: `check`, `repair`, `stats`, through the engine.

Lock order, as everywhere: the writer lock, then the materialize lock, then the handle's mutex.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from .entries import Report, compare, materialize_lock, read_watermark, rebuild
from .keys import key_to_relpath

if TYPE_CHECKING:
    from .engine import Engine


def stats(engine: Engine) -> dict[str, Any]:
    """Keys, events and bytes of the log, its dead-record ratio, seqs, archive and checkpoint size."""
    with engine.mutex:
        index = engine.refresh()
        log_bytes = engine.log.offset
        live = len(index.live)
        records = index.records
        first = index.first_seq
    archive = checkpoint = 0
    with contextlib.suppress(FileNotFoundError):
        archive = sum(e.stat().st_size for e in os.scandir(engine.layout.archive) if e.is_file())
    with contextlib.suppress(FileNotFoundError):
        checkpoint = engine.layout.checkpoint.stat().st_size
    return {
        "keys": live,
        "events": records,
        "log_bytes": log_bytes,
        # A transaction writes several keys in one record: more live keys than records is possible.
        "dead_ratio": max(0.0, round(1 - live / records, 4)) if records else 0.0,
        "last_seq": index.last_seq,
        "oldest_seq": first,
        "compacted_through": index.compacted_through,
        "entries_at_seq": read_watermark(engine.layout),
        "archive_bytes": archive,
        "checkpoint_bytes": checkpoint,
    }


def check(engine: Engine, *, read_only: bool = False) -> Report:
    """Compare entry files with the log; report a torn log tail. Changes nothing.

    Keys changed after the watermark are pending for a background flush, not inconsistent.
    """
    report = Report()
    # Lock order everywhere: writer lock, then materialize lock, then _mutex. The torn-tail look
    # takes the writer lock, so it comes first, with nothing else held.
    report.torn_tail_bytes = _torn_tail_under_lock(engine, read_only)
    with materialize_lock(engine.layout), engine.mutex:
        index = engine.refresh()
        report.last_seq, report.keys = index.last_seq, len(index.live)
        report.watermark = read_watermark(engine.layout)
        compare(engine.layout, index, report)
        mark = report.watermark
        pending = {k for k, _ in index.changed_since(mark)}
        report.missing = [k for k in report.missing if k not in pending]
        report.stale = [k for k in report.stale if k not in pending]
        # An entry file whose key's delete is after the watermark is pending too (spec 7.1): the
        # next batch removes it.
        pending_paths = {key_to_relpath(k) for k in pending}
        report.extra = [p for p in report.extra if p not in pending_paths]
    return report


def _torn_tail_under_lock(engine: Engine, read_only: bool) -> int:
    # Only under the writer lock is an incomplete last line known to be torn, not in progress.
    # A read-only handle cannot take it: report a tail that stays incomplete for a moment.
    if read_only:
        with engine.mutex:
            engine.refresh()
            torn = engine.log.torn_bytes()
        if torn:
            time.sleep(0.1)
            with engine.mutex:
                engine.refresh()
                torn = engine.log.torn_bytes()
        return torn
    with engine.locked(), engine.mutex:
        engine.refresh(writable=True)
        return engine.log.torn_bytes()


def repair(engine: Engine) -> Report:
    """Cut a torn log tail and rebuild every entry file that differs from the log."""
    report = Report()
    with engine.locked(), engine.mutex:
        engine.refresh(writable=True)
        report.torn_tail_bytes = engine.log.truncate_torn_tail()
    with materialize_lock(engine.layout), engine.mutex:
        index = engine.refresh()
        report.last_seq, report.keys = index.last_seq, len(index.live)
        compare(engine.layout, index, report)
        rebuild(engine.layout, index, report)
        report.watermark = index.last_seq
    report.repaired = True
    return report

"""Reading the past: a key's history, the log's tail, a key's value as of a seq, and blame.

All of it reads the current log file (and, where asked or needed, the archive compaction left):
records are history, the index only holds the present.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import Compacted, InvalidValue
from ..models import Event
from .log import LogFile
from .record import LOST, TXN, fast_seq, is_sealed, parse_record

if TYPE_CHECKING:
    from .engine import Engine
    from .layout import Layout


def events_of(rec: dict[str, Any], *, compacted: bool = False) -> list[Event]:
    """The events a checked record makes: one for a put or delete, one per change of a transaction,
    none for a repair's `lost` record."""
    if rec["op"] == LOST:
        return []
    if rec["op"] != TXN:
        return [
            Event(
                rec["seq"], rec["op"], rec["key"], rec.get("value"), rec["version"], rec["author"], rec["ts"], compacted
            )
        ]
    seq, author, ts = rec["seq"], rec["author"], rec["ts"]
    return [
        Event(seq, op["op"], op["key"], op.get("value"), op["version"], author, ts, compacted, True)
        for op in rec["ops"]
    ]


def archived_records(layout: Layout) -> Iterator[dict[str, Any]]:
    """Every record in archive segments, oldest segment first (segments may overlap: dedupe by seq),
    each checked: a segment cut from a sealed log has a checksum on every line."""
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(layout.archive)):
            if name.endswith(".jsonl.gz"):
                path, offset = layout.archive / name, 0
                with gzip.open(path, "rb") as f:
                    head = [next(f, b"") for _ in range(16)]
                    # Cut from one log file, so all sealed or none: what the first lines say together
                    # (one whose checksum member is damaged must not turn the checks off).
                    sealed = any(is_sealed(raw.rstrip(b"\n")) for raw in head)
                    for raw in itertools.chain(head, f):
                        line = raw.rstrip(b"\n")
                        if line.strip():
                            yield parse_record(path, offset, line, sealed=sealed, check_ts=False)
                        offset += len(raw)


def history(engine: Engine, key: str, *, include_archive: bool = False) -> list[Event]:
    """Every retained event of `key`, oldest first, deletes included."""
    records: dict[int, dict[str, Any]] = {}
    if include_archive:
        records = {rec["seq"]: rec for rec in archived_records(engine.layout) if _touches(rec, key)}
    records.update((rec["seq"], rec) for rec in engine.scan() if _touches(rec, key))
    return [e for seq in sorted(records) for e in events_of(records[seq]) if e.key == key]


def _touches(rec: dict[str, Any], key: str) -> bool:
    if rec["op"] == LOST:
        return False
    if rec["op"] != TXN:
        return bool(rec["key"] == key)
    return any(op["key"] == key for op in rec["ops"])


def tail(engine: Engine, count: int) -> list[Event]:
    """The last `count` events of the log, oldest first."""
    if not count:
        return []
    return list(deque((e for rec in engine.scan() for e in events_of(rec)), maxlen=count))


def value_at(engine: Engine, key: str, at: int) -> Event | None:
    """The event that left `key` as it was just after seq `at` (None: it had no value then).

    Exact from the current log when `at` is at or after its compacted prefix; before it, only if
    every compaction archived what it removed (the header's `archived_through`), else `Compacted`.
    """
    if type(at) is not int or at < 0:
        raise InvalidValue(f"at must be a seq >= 0, not {at!r}")
    last = engine.last_seq
    if at > last:
        raise InvalidValue(f"seq {at} is in the future: the last seq is {last}")
    # One file for the header and the records: a compaction between two opens would pair the
    # header of one log file with the records of another.
    log = LogFile(engine.layout.log, uncached=engine.log.uncached)
    try:
        log.sync()
        return _value_at(engine, log, key, at)
    finally:
        log.close()


def _value_at(engine: Engine, log: LogFile, key: str, at: int) -> Event | None:
    header = log.read_header()
    records: Iterator[dict[str, Any]] = (
        parse_record(log.path, offset, line, sealed=log.sealed) for offset, line in log.read_lines()
    )
    if at < header.compacted_through:
        if header.archived_through < header.compacted_through:
            raise Compacted(
                at,
                header.compacted_through,
                reason=f"the history of seqs up to {header.compacted_through} was compacted away without "
                "an archive (compact --archive keeps it)",
            )
        records = _chain(archived_records(engine.layout), records)
    found: Event | None = None
    found_seq = -1
    for rec in records:
        seq = rec["seq"]
        if found_seq < seq <= at and _touches(rec, key):
            found = next(e for e in events_of(rec) if e.key == key)
            found_seq = seq
    return found if found is not None and found.op == "put" else None


def _chain(*parts: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for part in parts:
        yield from part


#: Below this many bytes between the bounds, `line_of` reads them in one go rather than bisect on.
_BISECT_WINDOW = 1 << 13


def line_of(engine: Engine, seq: int) -> tuple[dict[str, Any], bytes, bool] | None:
    """The record of `seq` in the current log file (checked), its line and whether the log is sealed;
    None if the file has none (compacted away, or not written). A bisection on byte offsets: seqs
    rise through the file, and our writer puts each line's seq first; a line laid out otherwise
    ends the bisection, and the rest is read in order."""
    log = LogFile(engine.layout.log, uncached=engine.log.uncached)
    try:
        log.sync()
        log.read_header()
        lo = log.offset  # the first record's offset; `hi` is always a line's start or the end
        hi = os.fstat(log.fd).st_size
        while hi - lo > _BISECT_WINDOW:
            mid = (lo + hi) // 2
            head = os.pread(log.fd, 4096, mid)
            nl = head.find(b"\n")
            if nl < 0:
                break  # a long line: read in order
            start = mid + nl + 1
            if start >= hi:
                break
            found = fast_seq(log.read_line_at(start))
            if found is None:
                break
            if found <= seq:
                lo = start
            else:
                hi = start
        # The record, if the file has it, starts in [lo, hi): `hi` is the end or a line of a later seq.
        data = os.pread(log.fd, hi - lo, lo)
        offset = lo
        for line in data.split(b"\n")[: data.count(b"\n")]:  # complete lines only
            found = fast_seq(line)
            if found is None or found == seq:
                rec = parse_record(log.path, offset, line, sealed=log.sealed)
                if rec["seq"] == seq:
                    return rec, line, log.sealed
                found = rec["seq"]
            if found > seq:
                break
            offset += len(line) + 1
        return None
    finally:
        log.close()

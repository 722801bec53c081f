"""A process's in-memory index of the log: the latest record of every key, kept up to date from the
log's end. It is what makes reads cheap (no file per read) and never stale (it is refreshed from
the log, the source of truth, before every answer).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, cast

from ..errors import CorruptLog
from . import codec as _codec

PUT = "put"
DELETE = "delete"
_OPS = frozenset((PUT, DELETE))


class Slot(NamedTuple):
    """The latest record of one key. The line is kept raw: each read decodes its own copy of the
    value, so a caller mutating what it got cannot change what others read."""

    seq: int
    version: int
    op: str
    line: bytes
    #: the value's JSON alone: reads decode only it, and a listing decodes all of them in one call
    value: bytes


def parse_record(path: Path, offset: int, line: bytes, *, check_ts: bool = True) -> dict[str, Any]:
    """Decode and check one log line; a bad complete line is corruption (never silently skipped)."""
    try:
        rec = _codec.decode(line)
    except _codec.DecodeError as exc:
        raise CorruptLog(str(path), offset, f"not JSON ({exc})") from None
    try:
        ok = (
            type(rec["seq"]) is int
            and rec["op"] in _OPS
            and type(rec["key"]) is str
            and type(rec["version"]) is int
            and "value" in rec
            and type(rec["author"]) is str
            and type(rec["ts"]) is str
        )
    except (KeyError, TypeError):  # a field missing, or not an object at all
        ok = False
    if not ok:
        raise CorruptLog(
            str(path), offset, "not a record (seq, op, key, value, version, author or ts missing or mistyped)"
        )
    if check_ts:
        try:
            datetime.fromisoformat(rec["ts"])
        except ValueError:
            raise CorruptLog(str(path), offset, f"ts {rec['ts']!r} is not an RFC 3339 time") from None
    return cast("dict[str, Any]", rec)


def is_gap(last: int, seq: int, compacted_through: int) -> bool:
    """Whether `seq` right after `last` breaks spec 5.2: seqs are gapless after the compacted prefix
    (up to `compacted_through` records may be missing; after it, none)."""
    return seq != last + 1 and (last >= compacted_through or seq > compacted_through + 1)


class Index:
    """Latest slot per key (dict order = order of last change), plus the sorted list of live keys."""

    def __init__(self, compacted_through: int = 0) -> None:
        self.slots: dict[str, Slot] = {}
        self.live: list[str] = []
        self.last_record_seq = 0
        self.first_seq = 0  # the oldest record in this log file
        self.records = 0
        self.compacted_through = compacted_through

    @property
    def last_seq(self) -> int:
        """The last seq ever assigned: a compacted log may end with removed records (a purged delete),
        and their seqs must never be assigned again."""
        return max(self.last_record_seq, self.compacted_through)

    def apply(self, path: Path, offset: int, line: bytes) -> dict[str, Any]:
        rec = parse_record(path, offset, line)
        self.add(path, offset, rec, line, _codec.value_slice(line, rec))
        return rec

    def add(self, path: Path, offset: int, rec: dict[str, Any], line: bytes, value: bytes) -> None:
        seq: int = rec["seq"]
        # Seqs are strictly increasing, and gapless after the compacted prefix.
        last = self.last_record_seq
        if seq <= last or is_gap(last, seq, self.compacted_through):
            raise CorruptLog(str(path), offset, f"seq {seq} after seq {last} (gap or reorder)")
        key: str = rec["key"]
        old = self.slots.pop(key, None)
        op = rec["op"]
        self.slots[key] = Slot(seq, rec["version"], op, line, value)
        was_live = old is not None and old.op == PUT
        if op == PUT and not was_live:
            insort(self.live, key)
        elif op == DELETE and was_live:
            del self.live[bisect_left(self.live, key)]
        self.last_record_seq = seq
        self.first_seq = self.first_seq or seq
        self.records += 1

    def live_slot(self, key: str) -> Slot | None:
        slot = self.slots.get(key)
        return slot if slot is not None and slot.op == PUT else None

    def version(self, key: str) -> int:
        slot = self.live_slot(key)
        return slot.version if slot is not None else 0

    def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with `prefix`, sorted: a bisect, not a scan."""
        if not prefix:
            return list(self.live)
        live = self.live
        lo = bisect_left(live, prefix)
        if prefix[-1] == "\U0010ffff":
            return [k for k in live[lo:] if k.startswith(prefix)]
        # The end: a second bisect on the smallest string above every key with this prefix.
        return live[lo : bisect_left(live, prefix[:-1] + chr(ord(prefix[-1]) + 1), lo)]

    def changed_since(self, seq: int) -> Iterator[tuple[str, Slot]]:
        """Keys whose latest record is after `seq`, newest first: stops at the first older one."""
        for key in reversed(self.slots):
            slot = self.slots[key]
            if slot.seq <= seq:
                return
            yield key, slot

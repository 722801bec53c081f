"""A process's in-memory index of the log: the latest change of every key, kept up to date from the
log's end. It is what makes reads cheap (no file per read) and never stale (it is refreshed from
the log, the source of truth, before every answer).
"""

from __future__ import annotations

import sys
from bisect import bisect_left, insort
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from .record import DELETE, PUT, Change, changes, check_order, first_seq, parse_record

__all__ = ["DELETE", "PUT", "Index", "Slot"]


class Slot(NamedTuple):
    """The latest change of one key. The value is kept as JSON: each read decodes its own copy, so a
    caller mutating what it got cannot change what others read."""

    seq: int
    version: int
    op: str
    value: bytes
    author: str
    ts: str
    #: part of a multi-key transaction (the other keys share its seq)
    txn: bool


class Index:
    """Latest slot per key (dict order = order of last change), plus the sorted list of live keys."""

    def __init__(self, compacted_through: int = 0) -> None:
        self.slots: dict[str, Slot] = {}
        self.live: list[str] = []
        self.last_record_seq = 0
        self.first_seq = 0  # the oldest record in this log file
        self.records = 0
        self.compacted_through = compacted_through
        #: idempotency key -> (seq, byte offset of its record in the current log file)
        self.idem: dict[str, tuple[int, int]] = {}
        self._authors: dict[str, str] = {}

    @property
    def last_seq(self) -> int:
        """The last seq ever assigned: a compacted log may end with removed records (a purged delete),
        and their seqs must never be assigned again."""
        return max(self.last_record_seq, self.compacted_through)

    def apply(self, path: Path | str, offset: int, line: bytes, sealed: bool) -> None:
        """Check one log line (its checksum too, in a `sealed` log) and apply its changes."""
        rec = parse_record(path, offset, line, sealed=sealed)
        self.add(path, offset, rec["seq"], changes(rec), rec["author"], rec["ts"], rec.get("idem"), first_seq(rec))

    def add(
        self,
        path: Path | str,
        offset: int,
        seq: int,
        changed: list[Change],
        author: str,
        ts: str,
        idem: str | None = None,
        first: int = 0,
    ) -> None:
        """Apply one record's changes (checked, or built by our own writer). `first`: the first seq the
        record covers, if not only its own (a repair's `lost` record)."""
        last = self.last_record_seq
        # Seqs are strictly increasing, and gapless after the compacted prefix.
        check_order(path, offset, last, first or seq, self.compacted_through, seq)
        # One str per author, not one per record: an index holds a slot per key.
        known = self._authors.get(author)
        if known is not None:
            author = known
        elif len(self._authors) < 4096:
            author = self._authors[author] = sys.intern(author)
        txn = len(changed) > 1
        slots, live = self.slots, self.live
        for change in changed:
            key, op = change.key, change.op
            old = slots.pop(key, None)
            slots[key] = Slot(seq, change.version, op, change.value, author, ts, txn)
            was_live = old is not None and old.op == PUT
            if op == PUT and not was_live:
                insort(live, key)
            elif op == DELETE and was_live:
                del live[bisect_left(live, key)]
        if idem is not None:
            self.idem[idem] = (seq, offset)
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
        """Keys whose latest change is after `seq`, newest first: stops at the first older one."""
        for key in reversed(self.slots):
            slot = self.slots[key]
            if slot.seq <= seq:
                return
            yield key, slot

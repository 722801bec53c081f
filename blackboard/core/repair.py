"""Repair: take a damaged board back to a consistent, usable state without losing what can be kept,
and without inventing or reusing a seq (spec/FORMAT.md section 12.1).

What it does, under the writer lock and the materialize lock (so that no write and no batch runs):
1. reads the log line by line, the way a reader would, and sorts every line into a good record or a
   damaged one (not JSON, a checksum that does not match, a seq that does not increase, ...);
2. finds the highest seq any durable trace shows: the log, the watermark, the checkpoint, the entry
   files, earlier quarantine files, the seqs the damaged lines claim;
3. if anything was damaged or lost, moves the damaged lines to a new file in `quarantine/` (with
   their offsets and line numbers; nothing is deleted), and rewrites the log beside the old one:
   the good records byte for byte, and for every seq after the compacted prefix that no good record
   holds, up to the highest seq seen, the record an entry file still holds for it (an entry file is
   its key's put at its seq, word for word), else a `lost` record (spec 5.7) for each run of them:
   the next write takes a fresh seq. The new log replaces the old one with one rename, as
   compaction does;
4. rebuilds the entry files from the log and sets the watermark.

A torn tail alone (a writer killed mid-append: never acknowledged) is saved to the quarantine and
cut, without rewriting the log.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CorruptLog
from ..models import FORMAT_VERSION
from . import codec as _codec
from .checkpoint import seen_seq
from .entries import (
    Report,
    compare,
    materialize_lock,
    read_watermark,
    rebuild,
    remove_entry,
    scan_entries,
    torn_tail_summary,
    write_entry,
)
from .index import Index
from .layout import fsync_path, upgrade_config, write_all
from .log import complete_end, complete_lines, file_size, line_number
from .record import (
    LOST,
    PUT,
    TXN,
    Change,
    Header,
    encode_lost,
    encode_record,
    encode_txn,
    first_seq,
    is_gap,
    is_sealed,
    log_header,
    parse_header,
    parse_record,
    reseal,
)

if TYPE_CHECKING:
    from .engine import Engine
    from .layout import Layout

#: the author of the records a repair writes (`lost` records, records recovered from entry files)
REPAIR_AUTHOR = "blackboard-repair"
QUARANTINE_FORMAT = 1
_TORN = "a torn tail: an append that never finished (never acknowledged)"
_SEQ = re.compile(rb'"seq"\s*:\s*(\d{1,19})')


@dataclass
class Damaged:
    """A line moved to the quarantine."""

    offset: int
    line: int
    reason: str
    #: the seq the line claims, if one can be read in it (it may be damaged too)
    seq: int | None = None
    #: the keys the line names, if it still parses as JSON (the damage may be elsewhere in it)
    keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "line": self.line, "seq": self.seq, "keys": self.keys, "reason": self.reason}


@dataclass
class RepairReport:
    """What a repair did. `entries` is the check-and-rebuild of entry files that ends every repair."""

    entries: Report
    #: damaged lines, moved to `quarantine_file`
    quarantined: list[Damaged] = field(default_factory=list)
    quarantine_file: str | None = None
    #: runs of seqs (first, last) that no record holds any more: a `lost` record stands for each
    lost: list[tuple[int, int]] = field(default_factory=list)
    #: (seq, key) of the records put back from entry files (of seqs no good record held)
    recovered: list[tuple[int, str]] = field(default_factory=list)
    #: key -> versions that no record of the log holds any more (a gap in its version numbers)
    lost_versions: dict[str, list[int]] = field(default_factory=dict)
    #: live keys whose entry file a batch removed although the log has no delete for them: deleted at
    #: a lost seq (or the file was removed by hand). Live again, at their last value the log holds.
    probably_deleted: list[str] = field(default_factory=list)
    #: the highest seq a trace showed, and which trace: the repaired log's last seq is at least this
    seen: int = 0
    seen_in: str = "the log"
    torn_tail_bytes: int = 0
    rewrote_log: bool = False

    @property
    def last_seq(self) -> int:
        return self.entries.last_seq

    @property
    def keys(self) -> int:
        return self.entries.keys

    @property
    def watermark(self) -> int:
        return self.entries.watermark

    @property
    def repaired(self) -> bool:
        return True

    @property
    def ok(self) -> bool:
        """Whether the board was already consistent (nothing was quarantined, lost or rebuilt)."""
        return not (self.quarantined or self.lost or self.recovered or self.torn_tail_bytes) and self.entries.ok

    def problems(self) -> list[str]:
        """One line per thing repaired (what the CLI prints)."""
        out = [
            f"quarantined line {d.line}, byte {d.offset}"
            + (f" (seq {d.seq})" if d.seq is not None else "")
            + f": {d.reason}"
            + (f"; it named {', '.join(map(repr, d.keys))}" if d.keys else "")
            for d in self.quarantined
            if d.reason != _TORN
        ]
        out += [f"lost seqs {a}..{b}: no record holds them now" for a, b in self.lost]
        out += [
            f"recovered seq {seq} of {key!r} from its entry file (without the idempotency key it may have had)"
            for seq, key in self.recovered
        ]
        out += [
            f"{key!r} is live in the log, but its entry file is gone: it was probably deleted at a lost seq"
            for key in self.probably_deleted
        ]
        out += [
            f"{key!r} may have lost version{'s' if len(v) > 1 else ''} {', '.join(map(str, v))}"
            for key, v in sorted(self.lost_versions.items())
        ]
        if self.torn_tail_bytes:
            out.append(torn_tail_summary(self.torn_tail_bytes))  # cut, its bytes quarantined
        return out + self.entries.problems()

    def as_dict(self) -> dict[str, Any]:
        entries = self.entries.as_dict()
        return {
            **entries,
            "ok": self.ok,
            "repaired": True,
            "rewrote_log": self.rewrote_log,
            "quarantine_file": self.quarantine_file,
            "quarantined": [d.as_dict() for d in self.quarantined],
            "lost": [list(r) for r in self.lost],
            "recovered": [{"seq": s, "key": k} for s, k in self.recovered],
            "lost_versions": self.lost_versions,
            "probably_deleted": self.probably_deleted,
            "seen": self.seen,
            "seen_in": self.seen_in,
            "torn_tail_bytes": self.torn_tail_bytes,
        }


def repair(engine: Engine) -> RepairReport:
    """Repair the board (see the module doc). Safe to run on a healthy board: it then only checks."""
    layout = engine.layout
    # Lock order, as everywhere: the writer lock, then the materialize lock, then the engine's mutex.
    with engine.locked(), materialize_lock(layout), engine.mutex:
        report = _repair_log(engine)
        # A fresh view of whatever is at log.jsonl now (the index may hold the old file's records).
        engine.log.close()
        engine.index = Index()
        mark = read_watermark(layout)
        index = engine.refresh(writable=True)
        header = engine.log.header
        # The repaired log is what the next writer must see (spec 9.1): its note, or none.
        engine.leave_note(index.last_seq, engine.log.offset, header.generation if header else "")
        entries = Report(last_seq=index.last_seq, keys=len(index.live), watermark=mark)
        # Keys changed after the watermark are pending, not damage (as check says, spec 7.3): they
        # are brought up to date as a batch would, and only the others are reported.
        pending = list(index.changed_since(mark)) if mark <= index.last_seq else []
        compare(layout, index, entries, pending_after=mark if pending else None)
        for key, slot in pending:
            if slot.op == PUT:
                write_entry(layout, key, slot)
            else:
                remove_entry(layout, key)
        rebuild(layout, index, entries)
        entries.watermark = index.last_seq
        entries.repaired = True
        report.entries = entries
    return report


# -- the log ----------------------------------------------------------------------------------------


class _Rewrite:
    """The new log, built in tmp/ while the old one is read: good lines copied, `lost` records for holes."""

    def __init__(self, layout: Layout, header: Header | None, docs: list[tuple[int, str, dict[str, Any]]]) -> None:
        self.layout = layout
        self.path = layout.tmp_file("log.repair")
        self.fd = -1  # opened on the first flush: a repair that rewrites nothing writes nothing
        self.header = header or Header()
        line = log_header(
            self.header.compacted_through,
            self.header.purged_deletes_through,
            archived_through=self.header.archived_through,
        )
        self.buffer = [line]
        self.size = 0
        self.last = 0  # the seq of the last line written
        self.ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        self.lost: list[tuple[int, int]] = []
        #: key -> its version after the records written so far (0: deleted)
        self.versions: dict[str, int] = {}
        self.lost_versions: dict[str, list[int]] = {}
        #: entry files by seq: each holds the put of its key at that seq, word for word
        self.by_seq: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for seq, key, doc in docs:
            self.by_seq.setdefault(seq, []).append((key, doc))
        self.docs = sorted(self.by_seq)
        self.recovered: list[tuple[int, str]] = []
        #: key -> the seq of its latest record written so far
        self.latest: dict[str, int] = {}

    def record(self, line: bytes, rec: dict[str, Any], sealed: bool) -> None:
        first = first_seq(rec)
        self.cover(first - 1)
        self.buffer.append((line if sealed else reseal(line)) + b"\n")
        self.last = rec["seq"]
        if rec["op"] == LOST:
            return
        changes = rec["ops"] if rec["op"] == TXN else (rec,)
        for change in changes:
            key, version = change["key"], change["version"]
            if rec["seq"] > self.header.compacted_through and change["op"] == PUT:
                # Gapless seqs after the compacted prefix: a put's version follows the key's last one.
                before = self.versions.get(key, 0)
                if version > before + 1:
                    self.lost_versions.setdefault(key, []).extend(range(before + 1, version))
            self.versions[key] = version if change["op"] == PUT else 0
            self.latest[key] = rec["seq"]
        if len(self.buffer) > 4096:
            self.flush()

    def cover(self, through: int) -> None:
        """Account for the seqs after the last line up to `through`, if the seq rule needs it (they are
        after the compacted prefix): a record an entry file still holds for one of them is put back,
        a `lost` record stands for each run of the others."""
        if through <= self.last or not is_gap(self.last, through + 1, self.header.compacted_through):
            return
        for seq in self.docs[bisect_right(self.docs, max(self.last, self.header.compacted_through)) :]:
            if seq > through:
                break
            self._lost(seq - 1)
            self._put_back(seq)
        self._lost(through)

    def _lost(self, through: int) -> None:
        first = max(self.last, self.header.compacted_through) + 1  # seqs of the compacted prefix may be missing
        if through >= first:
            self.buffer.append(encode_lost(first, through, REPAIR_AUTHOR, self.ts))
            self.lost.append((first, through))
            self.last = through

    def _put_back(self, seq: int) -> None:
        """The record of `seq` as its entry files hold it: a put (of every key whose entry file has that
        seq: a transaction's puts; its deletes left no entry file)."""
        group = sorted(self.by_seq[seq])
        key, doc = group[0]
        if len(group) == 1:
            line = encode_record(seq, PUT, key, _codec.dumps(doc["value"]), doc["version"], doc["author"], doc["ts"])
        else:
            changes = [Change(PUT, k, d["version"], _codec.dumps(d["value"])) for k, d in group]
            line = encode_txn(seq, changes, doc["author"], doc["ts"])
        try:
            rec = parse_record(self.path, 0, line[:-1], sealed=True)
        except CorruptLog:
            return  # not a valid record (a ts that is no time): its seq stays lost
        self.record(line[:-1], rec, True)
        self.recovered += [(seq, k) for k, _ in group]

    def flush(self) -> None:
        if self.fd < 0:
            os.makedirs(self.layout.tmp, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        data = b"".join(self.buffer)
        write_all(self.fd, data, self.path)
        self.size += len(data)
        self.buffer.clear()

    def switch(self, layout: Layout) -> None:
        self.flush()
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.replace(self.path, layout.log)
        fsync_path(layout.root)

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _repair_log(engine: Engine) -> RepairReport:
    """Steps 1-3 of the module doc: quarantine, rewrite and switch the log if it needs it."""
    layout = engine.layout
    report = RepairReport(entries=Report())
    damaged: list[tuple[Damaged, bytes]] = []
    _remove_leftovers(layout)
    try:
        fd = os.open(layout.log, os.O_RDONLY | os.O_CLOEXEC | engine.open_flags())
    except FileNotFoundError:
        fd = -1  # deleted: a new log goes on after every seq the traces show
    new: _Rewrite | None = None
    try:
        end = complete_end(fd) if fd >= 0 else 0  # we hold the writer lock: nobody appends meanwhile
        docs = _entry_records(layout)
        header, new = _copy(layout, fd, end, docs, damaged)
        log_last = new.last
        seen, seen_in = _seen(layout, log_last, docs, damaged)
        report.seen, report.seen_in = seen, seen_in
        new.cover(seen)
        report.recovered = new.recovered
        size = file_size(fd) if fd >= 0 else 0
        report.torn_tail_bytes = size - end
        if report.torn_tail_bytes:
            torn = os.pread(fd, report.torn_tail_bytes, end)
            damaged.append((Damaged(end, line_number(fd, end), _TORN, _claimed(torn)), torn))
        if damaged:
            report.quarantined = [d for d, _ in damaged]
            report.quarantine_file = _write_quarantine(layout, header, damaged, new.last)
        only_torn = len(damaged) == 1 and report.torn_tail_bytes > 0
        holes = bool(new.lost or new.recovered)  # a line removed from the middle: nothing damaged, a gap
        if fd < 0 or header is None or holes or new.last > log_last or (damaged and not only_torn):
            if engine.config.version < FORMAT_VERSION:
                engine.config = upgrade_config(layout.root, engine.config)
            new.switch(layout)
            report.rewrote_log = True
            report.lost, report.lost_versions = new.lost, new.lost_versions
            # A lost record, or a transaction put back from entry files without its deletes.
            report.probably_deleted = _probably_deleted(layout, new, docs) if holes else []
        elif only_torn:
            engine.refresh(writable=True, truncated_ok=True)
            engine.log.truncate_torn_tail()
    finally:
        if new is not None:
            new.discard()
        if fd >= 0:
            os.close(fd)
    return report


def _remove_leftovers(layout: Layout) -> None:
    """The temp files of a repair that was killed: we hold the writer lock, which every repair holds
    from start to end, so none is being written."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(layout.tmp):
            if name.startswith(("log.repair.", "quarantine.")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(layout.tmp / name)


def _copy(
    layout: Layout,
    fd: int,
    end: int,
    docs: list[tuple[int, str, dict[str, Any]]],
    damaged: list[tuple[Damaged, bytes]],
) -> tuple[Header | None, _Rewrite]:
    """The old log's header (None if damaged or missing), and the new log with every good record;
    every damaged line goes to `damaged`."""
    lines = _numbered(fd, end)
    head = next(lines, None)
    header = salvaged = None
    if head is not None:
        try:
            header = parse_header(layout.log, head[2])
        except CorruptLog as exc:
            damaged.append((_damaged(head[0], head[1], head[2], exc.reason), head[2]))
            salvaged = _salvage_header(head[2])
    new = _Rewrite(layout, header or salvaged, docs)
    # Without a header, what most lines say: a log's lines all carry a checksum or none do, and a
    # damaged line must not pass as one without (a flipped member name).
    sealed = header.sealed if header is not None else _mostly_sealed(fd, end)
    for offset, number, line in lines:
        try:
            rec = parse_record(layout.log, offset, line, sealed=sealed)
            first = first_seq(rec)
            if first <= new.last:
                raise CorruptLog(
                    str(layout.log),
                    offset,
                    f"seq {first} is not above the previous record's ({new.last}): a copied line",
                )
        except CorruptLog as exc:
            damaged.append((_damaged(offset, number, line, exc.reason), line))
            continue
        new.record(line, rec, sealed)
    return header, new


def _probably_deleted(layout: Layout, new: _Rewrite, docs: list[tuple[int, str, dict[str, Any]]]) -> list[str]:
    """Keys the repaired log has live, at a seq entry files were current through, with no entry file:
    a batch removed it, so a delete the log lost came after (spec 12.1)."""
    watermark = read_watermark(layout)
    filed = {key for _, key, _ in docs}
    return sorted(
        key for key, version in new.versions.items() if version and key not in filed and new.latest[key] <= watermark
    )


def _salvage_header(line: bytes) -> Header | None:
    """The seqs a damaged header still shows (its compacted prefix must not become `lost` records,
    nor its purged deletes be forgotten); None unless they read as a header's would."""
    seqs = []
    for name in (b"compacted_through", b"purged_deletes_through", b"archived_through"):
        match = re.search(b'"' + name + rb'"\s*:\s*(\d{1,19})', line)
        seqs.append(int(match.group(1)) if match else -1)
    through, purged, archived = seqs
    if through < 0 or not 0 <= purged <= through or archived > through:
        return None
    return Header(through, purged, archived_through=max(archived, 0))


def _numbered(fd: int, end: int) -> Iterator[tuple[int, int, bytes]]:
    """(offset, 1-based line number, line) of the log's complete lines (none if it is missing)."""
    if fd >= 0:
        for number, (offset, line) in enumerate(complete_lines(fd, 0, end), 1):
            yield offset, number, line


def _mostly_sealed(fd: int, end: int) -> bool:
    votes = [is_sealed(line) for _offset, _number, line in _numbered(fd, end)]
    return votes.count(True) >= votes.count(False)


def _damaged(offset: int, number: int, line: bytes, reason: str) -> Damaged:
    keys: list[str] = []
    with contextlib.suppress(Exception):
        rec = _codec.decode(line)
        if isinstance(rec, dict):
            changes = rec.get("ops") if rec.get("op") == TXN else [rec]
            keys = [c["key"] for c in changes or [] if isinstance(c, dict) and isinstance(c.get("key"), str)]
    return Damaged(offset, number, reason, _claimed(line), keys)


def _claimed(line: bytes) -> int | None:
    """The seq a damaged line claims, if one can be read in it."""
    match = _SEQ.search(line)
    return int(match.group(1)) if match else None


# -- the traces ---------------------------------------------------------------------------------------


def _seen(
    layout: Layout, log_last: int, docs: list[tuple[int, str, dict[str, Any]]], damaged: list[tuple[Damaged, bytes]]
) -> tuple[int, str]:
    """The highest seq a durable trace shows, and which trace (spec 12.1)."""
    traces = [
        (log_last, "the log"),
        (read_watermark(layout), "the watermark (materialized)"),
        (seen_seq(layout), "the checkpoint"),
        (max((seq for seq, _, _ in docs), default=0), "an entry file"),
        (_quarantined_through(layout), "an earlier quarantine"),
    ]
    # A damaged line's seq counts where it is plausible: a flipped digit must not skip a billion seqs.
    bound = max(seq for seq, _ in traces) + len(damaged)
    claimed = [d.seq for d, _ in damaged if d.seq is not None and d.seq <= bound]
    traces.append((max(claimed, default=0), "a quarantined record"))
    return max(traces)


def _quarantined_through(layout: Layout) -> int:
    """The highest `log_last_seq` an earlier repair's quarantine file records."""
    best = 0
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(layout.quarantine):
            with (
                contextlib.suppress(OSError, ValueError, TypeError, _codec.DecodeError),
                open(layout.quarantine / name, "rb") as f,
            ):
                head = _codec.decode(f.readline())
                if isinstance(head, dict) and type(head.get("log_last_seq")) is int:
                    best = max(best, head["log_last_seq"])
    return best


def _entry_records(layout: Layout) -> list[tuple[int, str, dict[str, Any]]]:
    """(seq, key, document) of every well-formed entry file."""
    out = []
    for key, path in scan_entries(layout):
        if not key:
            continue
        with contextlib.suppress(OSError, ValueError, _codec.DecodeError):
            doc = _codec.decode(path.read_bytes())
            ok = (
                isinstance(doc, dict)
                and doc.get("key") == key
                and "value" in doc
                and type(doc.get("seq")) is int
                and doc["seq"] > 0
                and type(doc.get("version")) is int
                and doc["version"] > 0
                and type(doc.get("author")) is str
                and type(doc.get("ts")) is str
            )
            if ok:
                out.append((doc["seq"], key, doc))
    return out


# -- the quarantine -----------------------------------------------------------------------------------


def _write_quarantine(layout: Layout, header: Header | None, damaged: list[tuple[Damaged, bytes]], last: int) -> str:
    """Write the damaged lines to a new file in quarantine/, durably, before the log changes."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{stamp}-{os.urandom(4).hex()}.jsonl"
    head = {
        "blackboard_quarantine": QUARANTINE_FORMAT,
        "log_header": header.line.decode(errors="replace") if header is not None else None,
        "repaired_at": stamp,
        "log_last_seq": last,
    }
    rows = [_codec.dumps(head)]
    for d, data in damaged:
        try:
            text: str | None = data.decode()
        except UnicodeDecodeError:
            text = None
        rows.append(_codec.dumps({**d.as_dict(), "text": text, "hex": data.hex()}))
    tmp = layout.tmp_file("quarantine")
    os.makedirs(layout.tmp, exist_ok=True)  # a board copied by git has no empty directories
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            write_all(fd, b"\n".join(rows) + b"\n", tmp)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.makedirs(layout.quarantine, exist_ok=True)
        os.replace(tmp, layout.quarantine / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_path(layout.quarantine)
    return f"quarantine/{name}"

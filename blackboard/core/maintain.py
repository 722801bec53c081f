"""Looking after a board: `check`, `repair`, `stats`, through the engine.

Lock order, as everywhere: the writer lock, then the materialize lock, then the handle's mutex.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import CorruptLog, LockTimeout, ReadOnlyBoard
from . import codec as _codec
from .entries import Problem, Report, compare, materialize_lock, read_watermark, torn_tail_summary
from .log import complete_end, complete_lines, file_size, line_numbers
from .record import check_order, first_seq, parse_header, parse_record
from .softlock import Note, read_note

if TYPE_CHECKING:
    from .engine import Engine
    from .index import Index
    from .layout import Layout
    from .log import LogFile


def stats(engine: Engine) -> dict[str, Any]:
    """Keys, events and bytes of the log, its dead-record ratio, seqs, archive and checkpoint size."""
    with engine.mutex:
        index = engine.refresh(truncated_ok=True)
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
    """Compare entry files and the watermark with the log; report a torn log tail. A read: it changes
    nothing and works on a board this process cannot write (spec 7.3).

    Keys changed after the watermark are pending for a background flush, not inconsistent.
    """
    report = Report()
    layout = engine.layout
    # Lock order everywhere: writer lock, then materialize lock, then _mutex. The torn-tail look
    # takes the writer lock, so it comes first, with nothing else held.
    try:
        report.torn_tail_bytes, torn = _torn_tail_under_lock(engine, read_only)
    except CorruptLog:
        torn = None  # a damaged record before the end: reported below, with every other one
    if torn is not None:
        report.found.append(torn)
    with _batches_paused(layout), engine.mutex:
        # The watermark before the log: every seq it names is then in the index we compare with
        # (read after, a batch could have moved it past what we read).
        report.watermark = read_watermark(layout)
        # The lock's note before the log too: a write that lands between would otherwise make the
        # note name a seq our view of the log does not reach yet (a false lost write).
        note = read_note(layout.soft_lock_dir) if engine.config.lock == "soft" else None
        # Every line, checked: a checkpoint lets a reader skip the lines it covers, and damage there
        # would otherwise go unseen until a reader without one meets it.
        report.corrupt, scanned_last = damaged_lines(engine)
        try:
            index = engine.refresh(truncated_ok=True)
        except CorruptLog:
            # Our view stops at the first bad record: comparing entry files with that part would
            # report every later change as a problem. The damage itself is the finding.
            report.last_seq = scanned_last
            return report
        report.last_seq, report.keys = index.last_seq, len(index.live)
        seen, trace = engine.floor
        if seen > index.last_seq and seen > report.watermark:  # the watermark's own kind says the rest
            report.lost_tail = (seen, trace)
        if note is not None:
            report.lost_write = _lost_write(engine, index, note)
        compare(layout, index, report, pending_after=report.watermark)
        if report.found:
            _add_lines(engine, index, report)
    return report


#: `check` reports at most this many damaged records (repair quarantines them all).
_MAX_DAMAGED = 100


def damaged_lines(engine: Engine) -> tuple[list[Problem], int]:
    """Every complete line of the log that fails its checks (spec 5.3, 5.6: JSON, checksum, seq
    order), each with its line number, byte offset and claimed seq, and the highest good seq: one
    pass over the file."""
    path = engine.layout.log
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | engine.open_flags())
    except FileNotFoundError:
        return [], 0
    found: list[Problem] = []
    last: int | None = 0  # the last good record's seq (None: unknown, after a damaged line)
    high = 0
    try:
        lines = complete_lines(fd, 0, complete_end(fd))
        first = next(lines, None)
        if first is None:
            return [], 0
        try:
            header = parse_header(path, first[1])
        except CorruptLog as exc:
            return [_damaged(exc, 1)], 0
        for number, (offset, line) in enumerate(lines, 2):
            try:
                rec = parse_record(path, offset, line, sealed=header.sealed)
                if last is not None:  # after a damaged line, the one that follows starts over
                    check_order(path, offset, last, first_seq(rec), header.compacted_through, rec["seq"])
                last = rec["seq"]
                high = max(high, rec["seq"])
            except CorruptLog as exc:
                found.append(_damaged(exc, number))
                last = None
                if len(found) >= _MAX_DAMAGED:
                    break
    finally:
        os.close(fd)
    return found, high


def _damaged(exc: CorruptLog, line: int) -> Problem:
    claimed = f" (seq {exc.seq})" if exc.seq is not None else ""
    return Problem(
        "corrupt",
        None,
        exc.seq,
        f"line {line}, byte {exc.offset}{claimed}: {exc.reason}; `blackboard repair` moves it to quarantine/ "
        "(nothing is deleted) and puts back what entry files still hold of it; what they do not hold is lost",
        f"damaged record at line {line}{claimed}: {exc.reason}",
        path="log.jsonl",
        line=line,
    )


def _lost_write(engine: Engine, index: Index, note: Note) -> tuple[int, str] | None:
    """The last acknowledged write of a soft board, as the lock's note records it (spec 9.1), if the
    log does not hold it: the note's seq must be in the log and, in the same file, be the record
    that ends at the note's offset."""
    if note.seq > index.last_seq:
        return note.seq, f"the log ends at seq {index.last_seq}"
    log = engine.log
    if log.header is None or log.header.generation != note.generation or note.seq <= index.compacted_through:
        return None  # another file (compaction, repair): the seqs say it all
    size = file_size(log.fd)
    if note.end > size:
        return note.seq, f"the log has {size} bytes, and that record ended at byte {note.end}"
    window = os.pread(log.fd, min(note.end, 1 << 20), note.end - min(note.end, 1 << 20))
    if not window.endswith(b"\n"):
        return note.seq, f"no record ends at byte {note.end}"
    line = window[window.rfind(b"\n", 0, len(window) - 1) + 1 : -1]
    try:
        seq = parse_record(log.path, note.end - len(line) - 1, line, sealed=log.sealed)["seq"]
    except CorruptLog:
        return note.seq, f"the record that ends at byte {note.end} is damaged"
    if seq != note.seq:
        return note.seq, f"the record that ends at byte {note.end} is seq {seq}"
    return None


@contextlib.contextmanager
def _batches_paused(layout: Layout) -> Iterator[None]:
    """Hold materialize.lock, so that no batch moves entry files or the watermark while we compare
    (a batch writing a key changed after our look at the log would make it look stale). A process
    that may not write the board takes it through a read-only fd; only a board that lacks the file
    and where we may not create it (a copy made by hand) goes without: no batch has run there."""
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            stack.enter_context(materialize_lock(layout))
        yield


def _add_lines(engine: Engine, index: Index, report: Report) -> None:
    """The log line of each problem's record, where the index knows its offset: records that carry
    an idempotency key (the index keeps no offset per key: that would cost every write)."""
    offsets = {seq: offset for seq, offset in index.idem.values()}
    known = [(i, p, offsets[p.seq]) for i, p in enumerate(report.found) if p.line is None and p.seq in offsets]
    if not known:
        return
    log = engine.log
    # Only if the record is still there (an index kept across a compaction has older offsets).
    known = [(i, p, offset) for i, p, offset in known if _seq_at(log, offset) == p.seq]
    lines = line_numbers(log.fd, [offset for _, _, offset in known])
    for i, p, offset in known:
        report.found[i] = dataclasses.replace(p, line=lines.get(offset))


def _seq_at(log: LogFile, offset: int) -> int | None:
    """The seq of the record at `offset`, if a record starts there (only to find it: not checked)."""
    try:
        rec = _codec.decode(log.read_line_at(offset))
    except (_codec.DecodeError, OSError):
        return None
    seq = rec.get("seq") if isinstance(rec, dict) else None
    return seq if type(seq) is int else None


class _Tail(NamedTuple):
    size: int  # bytes after the last complete line
    offset: int  # where they start
    after: int  # the seq of the last complete record
    fd: int  # a dup of the log's fd (-1 if there is no torn tail): to count lines once the lock is free


def _torn_tail_under_lock(engine: Engine, read_only: bool) -> tuple[int, Problem | None]:
    """The bytes after the log's last complete line, if no write is in progress, and the problem."""
    engine.refresh(truncated_ok=True)  # catch up before any lock, so that the lock is held only for the last records
    tail = _look_at_tail(engine, read_only)
    if not tail.size:
        return 0, None
    try:
        line = line_numbers(tail.fd, [tail.offset]).get(tail.offset)
    finally:
        os.close(tail.fd)
    detail = (
        f"log.jsonl ends in {tail.size} bytes that are no complete line, from byte {tail.offset}"
        + (f" (line {line})" if line is not None else "")
        + f", after the record of seq {tail.after}: a writer killed mid-append (the next write cuts them)"
    )
    return tail.size, Problem(
        "torn_tail", None, tail.after, detail, torn_tail_summary(tail.size), path="log.jsonl", line=line
    )


def _look_at_tail(engine: Engine, read_only: bool) -> _Tail:
    # Only under the writer lock is an incomplete last line known to be torn, not in progress.
    if not read_only:
        try:
            with engine.locked():
                return _tail(engine)
        except ReadOnlyBoard:
            pass  # a read-only mount, another user's board: look as a read-only handle does
        except LockTimeout:
            return _look_twice(engine)  # check is a read: a stuck writer must not make it fail
    # flock needs no write access: a process that can read `lock` can take the writer lock with it.
    if engine.config.lock == "flock":
        with _read_only_flock(engine) as locked:
            if locked:
                return _tail(engine)
    return _look_twice(engine)


def _look_twice(engine: Engine) -> _Tail:
    # No lock to be had (a soft-lock board we may not write, a lock we may not read, a holder past
    # the timeout): report a tail that stays incomplete for a moment. A write is one write() of a
    # whole line: it takes far less.
    tail = _tail(engine)
    if tail.size:
        os.close(tail.fd)
        time.sleep(0.1)
        tail = _tail(engine)
    return tail


def _tail(engine: Engine) -> _Tail:
    with engine.mutex:
        index = engine.refresh(truncated_ok=True)
        log = engine.log
        size = log.torn_bytes()
        return _Tail(size, log.offset, index.last_record_seq, os.dup(log.fd) if size else -1)


@contextlib.contextmanager
def _read_only_flock(engine: Engine) -> Iterator[bool]:
    """The flock writer lock through a read-only fd (it excludes writers like theirs: same inode), for
    at most the lock timeout. Yields whether it was taken: not if the file cannot be opened read-only
    or the filesystem refuses flock on such an fd (NFS: EBADF), nor after the timeout."""
    try:
        fd = os.open(engine.layout.lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        yield _flock_within(fd, engine.lock_timeout)
    finally:
        os.close(fd)  # closing drops the flock


def _flock_within(fd: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.0001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        except OSError:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.01)

"""Compaction: rewrite the log to the latest state of every key, while everything else runs.

The compacted log is built beside the live one and switched in with one rename under the writer
lock (spec/FORMAT.md, section 11), so a crash at any moment leaves the old log or the new one. It
streams: memory holds one small tuple per key, never the log. Writers wait only while the records
appended during the build are copied over; watchers notice the new inode and read its header.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NO_ROOM, CorruptLog, OutOfSpace, ReadOnlyBoard, open_or_read_only
from .checkpoint import encode, save
from .entries import materialize, read_watermark
from .index import Index
from .layout import STALE_TMP_SECONDS, fsync_path, upgrade_config
from .lock import host_tag, side_lock
from .log import LogFile, complete_end, complete_lines, line_number
from .maintain import stats
from .record import DELETE, LOST, TXN, Header, log_header, parse_header, parse_record, reseal

if TYPE_CHECKING:
    from .engine import Engine
    from .layout import Layout

#: Without a board setting, `compact --if-needed` acts once the log passes this size.
DEFAULT_COMPACT_AT_BYTES = 16 << 20

Progress = Callable[[int], None]


@dataclass
class CompactReport:
    """What a compaction did. `skipped` says why it did nothing, if it did nothing; then
    `compacted_through` is the log's as it stays (an earlier compaction's, or 0)."""

    bytes_before: int = 0
    bytes_after: int = 0
    events_before: int = 0
    events_after: int = 0
    deletes_kept: int = 0
    deletes_purged: int = 0
    archived: int = 0
    compacted_through: int = 0
    seconds: float = 0.0
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: A checkpoint's or board.json's temp file older than this was left by a killed process (one that
#: is alive renames its file within milliseconds).
def _remove_leftovers(layout: Layout) -> None:
    # Under compact.lock no other compaction of this host is running: a compaction temp file of this
    # host is a crashed one's. Another host's (the lock may not cross hosts), like the temp files of
    # checkpoints and board.json, only once it is stale.
    now = time.time()
    ours = f"log.compact.{host_tag()}."
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(layout.tmp):
            path = layout.tmp / name
            with contextlib.suppress(FileNotFoundError):
                if name.startswith(ours) or (
                    name.startswith(("log.compact.", "checkpoint.", "board.json."))
                    and now - path.stat().st_mtime > STALE_TMP_SECONDS
                ):
                    os.unlink(path)


def require_writable(layout: Layout) -> None:
    """`ReadOnlyBoard` unless this process can write the board (compaction replaces the log): said
    before anything is touched, on a read-only mount (EROFS) or another user's board (EACCES), rather
    than a raw OS error from whichever file compaction meets first (compact.lock, tmp/, the log)."""
    root = layout.root
    flags = 0
    with contextlib.suppress(OSError):
        flags = os.statvfs(root).f_flag
    if flags & os.ST_RDONLY:
        raise ReadOnlyBoard(str(root), "read-only filesystem")
    effective = os.access in os.supports_effective_ids
    for directory in (root, layout.tmp):
        if directory.is_dir() and not os.access(directory, os.W_OK | os.X_OK, effective_ids=effective):
            raise ReadOnlyBoard(str(root), f"cannot write {'the board directory' if directory == root else 'tmp/'}")
    os.close(open_or_read_only(str(root / "compact.lock"), os.O_RDWR | os.O_CREAT, "compact.lock"))


def compact(
    engine: Engine,
    *,
    retention: float | None = None,
    archive: bool = False,
    wait: bool = True,
    progress: Progress | None = None,
) -> CompactReport:
    """Compact the board's log (see module doc). `wait=False` returns at once if one is running."""
    layout = engine.layout
    keep_after = time.time() - (engine.config.retention_seconds if retention is None else retention)
    report = CompactReport()
    started = time.monotonic()
    require_writable(layout)
    layout.tmp.mkdir(exist_ok=True)
    with side_lock(layout.root / "compact.lock", wait=wait) as mine:
        if not mine:
            report.skipped = "another compaction is running"
            return report
        _remove_leftovers(layout)
        # So that deletes due for removal are already out of entries/ (see _plan). Skipped when entry
        # files are current: a fresh process would rebuild its whole index to learn that there is
        # nothing to do.
        if read_watermark(layout) < _last_seq(layout):
            materialize(layout, engine.snapshot)
        fd = os.open(layout.log, os.O_RDONLY | os.O_CLOEXEC | engine.open_flags())
        tmp = layout.tmp / f"log.compact.{host_tag()}.{os.getpid()}.tmp"
        try:
            _build_and_switch(engine, fd, tmp, keep_after, archive, progress, report)
        except CorruptLog as exc:
            raise exc.numbered(line_number(fd, exc.offset)) from None
        except OSError as exc:
            if exc.errno in NO_ROOM and not isinstance(exc, OutOfSpace):
                # Buffered writes fail naming no file: say which board, and what is left. The temp
                # file still there means the switch (the last step) did not happen.
                outcome = "compaction stopped; the log is unchanged" if tmp.exists() else "compaction stopped"
                raise OutOfSpace(str(layout.log), exc.errno, outcome) from exc
            raise
        finally:
            os.close(fd)
            # Left only if we gave up or failed: a full disk must not keep the half-built log or
            # archive segment (they hold the room that writes need, and the next try too).
            for leftover in (tmp, _archive_tmp(layout)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
    report.seconds = time.monotonic() - started
    return report


def _build_and_switch(
    engine: Engine,
    fd: int,
    tmp: Path,
    keep_after: float,
    archive: bool,
    progress: Progress | None,
    report: CompactReport,
) -> None:
    layout = engine.layout
    end = complete_end(fd)
    report.bytes_before = os.fstat(fd).st_size
    # Contracts that keep their prefix's history (spec/TRUST.md 2): (prefix, keep records after).
    now = time.time()
    history = [(c.prefix, now - c.retention) for c in engine.rules().contracts.values() if c.retention is not None]
    plan = _plan(layout, fd, end, keep_after, progress, report, history)
    if plan is None:
        return
    keep, last_seq, purged, old = plan
    # Every removed record is in archive/ if this compaction archives and every earlier one did.
    archived = last_seq if archive and old.archived_through >= old.compacted_through else old.archived_through
    header = log_header(last_seq, purged, archived_through=archived)
    # An older board's log is rewritten at the current format: every line gets its checksum (each was
    # checked by the plan's pass), and board.json says so before the switch (under the writer lock).
    sealed = old.sealed
    # The new file's index, built as its lines are written: saved as its checkpoint before the switch,
    # so that no open handle has to replay the new log (compactions must not stall writers).
    index = Index(last_seq)
    with open(tmp, "wb", buffering=1 << 20) as out:
        out.write(header)
        if archive:
            _write_archive(layout, fd, end, keep, report)
        last_line = b""
        for offset, line in complete_lines(fd, 0, end, None):
            if offset in keep:
                kept = line if sealed else reseal(line)
                index.apply(tmp, out.tell(), kept, True)
                out.write(kept + b"\n")
                last_line = kept
        report.events_after = len(keep)
        # The new log's checkpoint (of what is written so far), in place before the new log is: a
        # handle that finds the new log keeps its index (see checkpoint.load), or loads this (~2 us a
        # key) rather than replay the file (~3 us a record). Written outside the writer lock.
        out.flush()
        save(layout, encode(index, header[:-1], out.tell(), last_line), current_log_only=False)
        # The switch, under the writer lock: copy what writers appended meanwhile, then rename.
        with engine.locked():
            # A fresh open under the lock: on NFS that is what shows other hosts' latest appends.
            fresh = os.open(layout.log, os.O_RDONLY | os.O_CLOEXEC | engine.open_flags())
            try:
                # The same file, by its header (an inode number can come back for another file).
                if os.pread(fresh, len(old.line) + 1, 0) != old.line + b"\n":
                    report.skipped = "the log was replaced meanwhile (another compaction?)"
                    return
                stop = complete_end(fresh)
                tail = list(complete_lines(fresh, end, stop, None))
                # On a shared mount our view must reach where the last writer left the log (spec 9).
                last_in_view = parse_record(layout.log, *tail[-1], sealed=sealed)["seq"] if tail else last_seq
                engine.check_handover(old.generation, last_in_view, stop)
                for offset, line in tail:
                    # Checked before it is copied: a checksum added to a damaged line would vouch for it.
                    parse_record(layout.log, offset, line, sealed=sealed)
                    out.write((line if sealed else reseal(line)) + b"\n")
                    report.events_after += 1
            finally:
                os.close(fresh)
            out.flush()
            os.fsync(out.fileno())
            report.bytes_after = out.tell()
            if not sealed:  # older releases must refuse the board before they can meet the new log
                engine.config = upgrade_config(layout.root, engine.config)
            engine.check_hold()  # a hold broken meanwhile would switch away another writer's appends
            os.replace(tmp, layout.log)
            fsync_path(layout.root)
            engine.leave_note(last_in_view, report.bytes_after, parse_header(layout.log, header[:-1]).generation)
    report.compacted_through = last_seq


_Latest = dict[str, tuple[int, int, bool, str]]


def _scan(
    layout: Layout,
    fd: int,
    end: int,
    keep_after: float,
    progress: Progress | None,
    report: CompactReport,
    history: list[tuple[str, float]],
) -> tuple[Header, _Latest, set[int], dict[int, list[str]], int] | None:
    """Pass 1 over the log: every key's latest record (seq, offset, is_delete, ts), the young lines
    kept superseded or not (with idempotency keys; under a contract's history retention), the keys
    of lines that may be kept for more than one key, the last seq."""
    path = layout.log
    header = None
    latest: _Latest = {}
    recent_idem: set[int] = set()
    # The keys of lines that may be kept for another reason than being a key's latest record: a
    # transaction line while it is some key's latest (`refs` counts for how many keys), a young
    # line with an idempotency key. Replaying such a line sets its other keys to older states, so a
    # tombstone of one of those keys must stay (or the old state comes back to life).
    multi: dict[int, list[str]] = {}
    refs: dict[int, int] = {}
    last_seq = 0
    for offset, line in complete_lines(fd, 0, end, progress):
        if offset == 0:
            header = parse_header(path, line)
            continue
        rec = parse_record(path, offset, line, sealed=header is not None and header.sealed)
        seq, ts = rec["seq"], rec["ts"]
        if rec["op"] == LOST:  # seqs a repair quarantined: the new log's compacted prefix covers them
            last_seq = seq
            report.events_before += 1
            continue
        changes = rec["ops"] if rec["op"] == TXN else (rec,)
        for change in changes:
            key = change["key"]
            previous = latest.get(key)
            if previous is not None and previous[1] in refs:
                left = refs[previous[1]] - 1
                if left:
                    refs[previous[1]] = left
                else:
                    del refs[previous[1]]
                    if previous[1] not in recent_idem:
                        del multi[previous[1]]
            latest[key] = (seq, offset, change["op"] == DELETE, ts)
        if len(changes) > 1:
            refs[offset] = len(changes)
            multi[offset] = [c["key"] for c in changes]
        if ("idem" in rec and _epoch(ts) >= keep_after) or (history and _kept_history(changes, ts, history)):
            recent_idem.add(offset)
            multi[offset] = [c["key"] for c in changes]
        last_seq = seq
        report.events_before += 1
    if header is None:
        return None
    return header, latest, recent_idem, multi, last_seq


def _kept_history(changes: Any, ts: str, history: list[tuple[str, float]]) -> bool:
    """Whether a record changes a key whose contract keeps its history, and is younger than that."""
    when = _epoch(ts)
    return any(when >= after and c["key"].startswith(prefix) for c in changes for prefix, after in history)


def _plan(
    layout: Layout,
    fd: int,
    end: int,
    keep_after: float,
    progress: Progress | None,
    report: CompactReport,
    history: list[tuple[str, float]],
) -> tuple[set[int], int, int, Header] | None:
    """Pass 1: which lines to keep (their offsets), the last seq, the new purged-deletes mark, and
    the old header.

    Holds one small tuple per key, (seq, offset, is_delete, ts), never the log. A transaction's line
    is kept while any of its changes is its key's latest (replaying it then sets its other keys to
    older states, which the later records of those keys supersede). A record carrying an idempotency
    key is kept while it is younger than the retention: a retry within it must find it.
    """
    scan = _scan(layout, fd, end, keep_after, progress, report, history)
    if scan is None:
        report.skipped = "the log is empty"
        return None
    header, latest, recent_idem, multi, last_seq = scan
    last_seq = max(last_seq, header.compacted_through)
    keep: set[int] = set(recent_idem)
    # A delete that entry files do not reflect yet must stay: once it is gone no batch would remove
    # the key's entry file. (compact() flushes first, so this only holds back the newest ones.)
    applied = read_watermark(layout)
    candidates: list[tuple[str, int, int]] = []
    for key, (seq, offset, is_delete, ts) in latest.items():
        if is_delete and seq <= applied and _epoch(ts) < keep_after:
            candidates.append((key, seq, offset))
        else:
            keep.add(offset)
    guarded = {key for offset in keep.intersection(multi) for key in multi[offset]}
    changed = True
    while changed:  # keeping a tombstone's line may guard more keys (a transaction's other keys)
        changed = False
        for key, _seq, offset in candidates:
            if key in guarded and offset not in keep:
                keep.add(offset)
                guarded.update(multi.get(offset, ()))
                changed = True
    purged = header.purged_deletes_through
    for _key, seq, offset in candidates:
        if offset not in keep:
            purged = max(purged, seq)
            report.deletes_purged += 1
    report.deletes_kept = sum(1 for _seq, offset, is_delete, _ts in latest.values() if is_delete and offset in keep)
    if len(keep) == report.events_before and header.sealed:  # an older log is rewritten all the same (spec 3)
        report.skipped = (
            "nothing to compact: every record is kept (the latest of a key, or young with an idempotency key)"
        )
        report.bytes_after, report.events_after = report.bytes_before, report.events_before
        # What the log is compacted through already (an earlier compaction's): as stats says.
        report.compacted_through = header.compacted_through
        return None
    return keep, last_seq, purged, header


def _archive_tmp(layout: Layout) -> Path:
    return layout.tmp / f"log.compact.{host_tag()}.{os.getpid()}.archive.tmp"


def _write_archive(layout: Layout, fd: int, end: int, keep: set[int], report: CompactReport) -> None:
    """The records compaction removes, as one gzip ndjson segment in archive/, durable before the switch."""
    segment_tmp = _archive_tmp(layout)  # compact() removes it if this fails
    first = last_archived = 0
    sealed = True
    with gzip.open(segment_tmp, "wb", compresslevel=5) as segment:
        for offset, line in complete_lines(fd, 0, end, None):
            if not offset:
                sealed = parse_header(layout.log, line).sealed
            elif offset not in keep:
                last_archived = parse_record(layout.log, offset, line, sealed=sealed)["seq"]
                first = first or last_archived
                segment.write(line + b"\n")
                report.archived += 1
    if not report.archived:
        os.unlink(segment_tmp)
        return
    layout.archive.mkdir(exist_ok=True)
    fsync_path(segment_tmp)
    os.replace(segment_tmp, layout.archive / f"{first:012d}-{last_archived:012d}.jsonl.gz")
    fsync_path(layout.archive)


def _last_seq(layout: Layout) -> int:
    """The log's last seq, from its last line (or its header), without reading the rest."""
    log = LogFile(layout.log)
    try:
        log.sync()
        _before, last = log.seek_end()
        floor = log.read_header().compacted_through
        seq = parse_record(layout.log, log.offset, last, sealed=log.sealed)["seq"] if last is not None else 0
        return max(seq, floor)
    finally:
        log.close()


def _epoch(ts: str) -> float:
    try:
        return datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return 0.0  # an unreadable time: old enough


def needs_compaction(engine: Engine, min_bytes: int | None = None, min_dead_ratio: float | None = None) -> bool:
    """Whether the log is past the size and superseded-record ratio that call for a compaction."""
    threshold = min_bytes if min_bytes is not None else (engine.config.compact_at_bytes or DEFAULT_COMPACT_AT_BYTES)
    ratio = min_dead_ratio if min_dead_ratio is not None else engine.config.compact_at_dead_ratio
    figures = stats(engine)
    return bool(figures["log_bytes"] >= threshold and figures["dead_ratio"] >= ratio)

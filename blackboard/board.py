"""`Board`: the policy. The write protocol, reads from the log, and when entry files are brought up to date.

Write protocol (spec/FORMAT.md, "Write protocol"): take the writer lock; bring this process's view
of the log up to date from its end (and repair a torn tail: we hold the lock, so nobody is writing
it); check the expected version; assign seq = last seq + 1; append the whole record with one
write(); release. The write has then happened: it is in the log, which survives SIGKILL of any
process. Entry files follow in the background (see `_entries`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from .core import codec as _codec
from .core import entries as _entries
from .core import layout as _layout
from .core import settings as _settings
from .core.index import DELETE, PUT, Index, Slot
from .core.keys import validate_key, validate_prefix
from .core.lock import FlockLock, SoftLock
from .core.log import LogFile
from .errors import CorruptLog, InvalidValue, KeyNotFound, ReadOnlyBoard, VersionConflict
from .models import BoardConfig, Entry, Event, entry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from .core.compact import CompactReport
    from .core.watch import Subscription, Watcher

logger = logging.getLogger("blackboard")

_MAX_AUTHOR = 256
_SCALARS = (str, int, float, bool, type(None))
#: A background batch of entry files is followed by a pause this many times its duration.
_PACING = 10.0


class _Clock:
    """UTC timestamps with microseconds, formatting the date part once per second (~0.3 us a call)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        ns = time.time_ns()
        second = ns // 1_000_000_000
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{(ns // 1000) % 1_000_000:06d}Z"


def _check_author(author: str) -> str:
    if not isinstance(author, str) or not author or len(author) > _MAX_AUTHOR or not author.isprintable():
        raise InvalidValue(f"author {author!r} must be 1-{_MAX_AUTHOR} printable characters")
    return author


def entry_from_line(line: bytes) -> Entry:
    rec = _codec.decode(line)
    return entry(rec["key"], rec["value"], rec["version"], rec["seq"], rec.get("author", ""), rec["ts"])


class Board:
    """A handle on a board directory. Safe to share between threads; open one per process.

    >>> board = Board.init(tmp / "b")
    >>> board.write("research_results/q1", {"answer": 42}).version
    1
    >>> board.read("research_results/q1")
    {'answer': 42}
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        author: str | None = None,
        read_only: bool = False,
        lock_timeout: float = _settings.DEFAULT_LOCK_TIMEOUT,
        flush_interval: float = _settings.DEFAULT_FLUSH_INTERVAL,
    ) -> None:
        self.path = Path(path)
        self.config: BoardConfig = _layout.read_config(self.path)
        self.author = _check_author(_settings.author(author))
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self.flush_interval = flush_interval
        self._layout = _layout.Layout(self.path)
        soft = self.config.lock == "soft"
        self._lock = SoftLock(self._layout.soft_lock) if soft else FlockLock(self._layout.lock)
        self._log = LogFile(self._layout.log, reopen=soft)
        self._index = Index()
        self._mutex = threading.RLock()
        self._clock = _Clock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._last_batch = 0.0
        self._flusher: threading.Thread | None = None
        self._flusher_pid = -1
        self._closed = False
        self.flush_error: BaseException | None = None
        self._finalizer = weakref.finalize(self, _release_files, self._lock, self._log, self._stop)
        _open_boards.add(self)

    # -- opening and closing -----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        lock: Literal["flock", "soft"] = "flock",
        max_value_bytes: int = 1 << 20,
        fsync: bool = False,
        retention_seconds: float = 24 * 3600,
        compact_at_bytes: int | None = None,
        compact_at_dead_ratio: float = 0.5,
        **handle: Any,
    ) -> Board:
        """Create a board (idempotent: an existing board keeps its settings) and open it.

        `lock="soft"` is for boards on NFS/SMB; `fsync=True` makes every write survive power loss;
        `compact_at_bytes` lets writers compact once the log passes that size and
        `compact_at_dead_ratio` of it is superseded; compaction keeps deletes `retention_seconds`.
        """
        try:
            config = BoardConfig(
                lock=lock,
                max_value_bytes=max_value_bytes,
                fsync=fsync,
                retention_seconds=retention_seconds,
                compact_at_bytes=compact_at_bytes,
                compact_at_dead_ratio=compact_at_dead_ratio,
            )
        except ValidationError as exc:
            raise InvalidValue("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
        _layout.init(Path(path), config)
        return cls(path, **handle)

    @classmethod
    def open(cls, path: str | os.PathLike[str], **handle: Any) -> Board:
        """Open an existing board; `NotABoard` if `path` is not one (or is of a newer format)."""
        return cls(path, **handle)

    def close(self) -> None:
        """Bring entry files up to date and release this handle's files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._dirty.set()
        try:
            flusher = self._flusher
            if flusher is not None and self._flusher_pid == os.getpid():
                flusher.join()
                self.flush()
        finally:
            # The writer lock first, with no other lock held: it waits for a write in flight in another
            # thread, which takes the writer lock before _mutex (the lock order everywhere).
            self._lock.close()
            with self._mutex:
                self._finalizer()  # closes the log (and the lock again: a no-op)
            _open_boards.discard(self)

    def __enter__(self) -> Board:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Board({str(self.path)!r})"

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyBoard(str(self.path), "opened with read_only=True")

    # -- the log view ------------------------------------------------------------------------------

    def _refresh(self, writable: bool = False) -> Index:
        """Bring the index up to the log's end. Cheap when nothing changed: one fstat and one stat."""
        with self._mutex:
            log = self._log
            if log.sync(writable):
                # A new file (first look, or compaction replaced it): its header says where seqs stand.
                self._index = Index(log.read_header().compacted_through)
            index = self._index
            for offset, line in log.read_lines():
                try:
                    index.apply(log.path, offset, line)
                except CorruptLog:
                    log.offset = offset  # stay at the bad record: report it again, never skip it
                    raise
            return index

    @property
    def last_seq(self) -> int:
        """The seq of the newest record in the log (0 for an empty board)."""
        return self._refresh().last_seq

    # -- writing -----------------------------------------------------------------------------------

    def write(self, key: str, value: Any, *, author: str | None = None, expect_version: int | None = None) -> Entry:
        """Set `key` to `value` (any JSON value). `expect_version` makes it a compare-and-set:
        `0` means "only if absent"; on a mismatch `VersionConflict` is raised and nothing is written.
        """
        validate_key(key)
        value_json = _codec.encode_value(value, self.config.max_value_bytes)
        rec = self._commit(key, PUT, value_json, expect_version, author)
        # The caller keeps its object; the Entry holds a copy (scalars are immutable: no copy needed).
        stored = value if type(value) in _SCALARS else _codec.decode(value_json)
        return entry(key, stored, rec["version"], rec["seq"], rec["author"], rec["ts"])

    def delete(self, key: str, *, author: str | None = None, expect_version: int | None = None) -> Entry:
        """Delete `key` (`KeyNotFound` if it has no live value). Its next put starts again at version 1.

        Returns the delete as an Entry: value None, version 0, the delete's seq.
        """
        validate_key(key)
        rec = self._commit(key, DELETE, b"null", expect_version, author)
        return entry(key, None, 0, rec["seq"], rec["author"], rec["ts"])

    def _commit(
        self, key: str, op: str, value_json: bytes, expect_version: int | None, author: str | None
    ) -> dict[str, Any]:
        self._check_writable()
        if self._closed:
            raise ReadOnlyBoard(str(self.path), "this handle is closed")
        if expect_version is not None and (type(expect_version) is not int or expect_version < 0):
            raise InvalidValue(f"expect_version must be an int >= 0, not {expect_version!r}")
        who = self.author if author is None else _check_author(author)
        self._lock.acquire(self.lock_timeout)
        try:
            if self._closed:  # closed by another thread while we waited for the lock
                raise ReadOnlyBoard(str(self.path), "this handle is closed")
            with self._mutex:
                index = self._refresh(writable=True)
                # We hold the lock, so bytes after the last complete line are no write in progress:
                # they are a writer killed mid-append. Cut them before appending after them.
                if self._log.truncate_torn_tail():
                    logger.warning("%s: repaired a torn record at the end of the log", self._log.path)
                current = index.version(key)
                if expect_version is not None and expect_version != current:
                    raise VersionConflict(key, expect_version, current)
                if op == DELETE and current == 0:
                    raise KeyNotFound(key)
                seq = index.last_seq + 1
                version = current + 1 if op == PUT else 0
                ts = self._clock.now()
                line = _codec.encode_record(seq, op, key, value_json, version, who, ts)
                offset = self._log.append(line)
                rec = {"seq": seq, "op": op, "key": key, "version": version, "author": who, "ts": ts}
                try:
                    index.add(self._log.path, offset, rec, line[:-1], _codec.exact(value_json))
                except BaseException:
                    # The record is in the log but maybe not in the index (a Ctrl-C between the two):
                    # forget this view, so that the next look rereads the log rather than reuse the seq.
                    self._log.close()
                    raise
                # A duplicate: another thread may reopen the log (and close its fd) once we let go.
                durable_fd = os.dup(self._log.fd) if self.config.fsync else -1
                if self._log.reopen:
                    self._log.release_fd()  # NFS: close before the lock goes (spec section 9)
        finally:
            self._lock.release()
        if durable_fd >= 0:
            # Outside the lock: fdatasync flushes every byte of the file written so far, ours
            # included, so concurrent writers' flushes overlap (group commit) instead of queueing
            # behind the lock. The write is acknowledged only once it is on the device.
            try:
                os.fdatasync(durable_fd)
            finally:
                os.close(durable_fd)
        self._schedule_flush()
        return rec

    # -- reading (never takes the writer lock) -------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The key's latest entry, or None if it has no live value."""
        slot = self._live_slot(key)
        return None if slot is None else entry_from_line(slot.line)

    def read(self, key: str, default: Any = None) -> Any:
        """The key's latest value (a fresh copy), or `default`."""
        slot = self._live_slot(key)
        return default if slot is None else _codec.decode(slot.value)

    def _live_slot(self, key: str) -> Slot | None:
        with self._mutex:
            slot = self._refresh().slots.get(key)
        if slot is None:
            validate_key(key)  # a miss may be a typo'd or invalid key: say so rather than return None
            return None
        return slot if slot.op == PUT else None

    def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with `prefix` (a plain string prefix), in key order."""
        validate_prefix(prefix)
        with self._mutex:
            return self._refresh().keys(prefix)

    def _live_slots(self, prefix: str) -> tuple[list[str], list[Slot]]:
        validate_prefix(prefix)
        with self._mutex:
            index = self._refresh()
            keys = index.keys(prefix)
            slots = index.slots
            return keys, [slots[k] for k in keys]

    def read_prefix(self, prefix: str) -> dict[str, Any]:
        """Every live key starting with `prefix`, with its value, in key order."""
        keys, slots = self._live_slots(prefix)
        # One decode for all the values (~0.4 us a key), not one per key.
        values = _codec.decode(b"[" + b",".join([slot.value for slot in slots]) + b"]")
        return dict(zip(keys, values, strict=True))

    def entries(self, prefix: str = "") -> Iterator[Entry]:
        """Entries of the live keys starting with `prefix`, in key order (a snapshot taken at the call)."""
        return (entry_from_line(slot.line) for slot in self._live_slots(prefix)[1])

    def history(self, key: str, *, all: bool = False) -> list[Event]:
        """Every retained event of `key`, oldest first, deletes included.

        Compaction keeps only the latest state of each key; with `all=True` the history that
        `compact(archive=True)` moved to archive/ is included.
        """
        validate_key(key)
        records: dict[int, dict[str, Any]] = {}
        if all:
            from .core.compact import archived_records

            records = {rec["seq"]: rec for rec in archived_records(self._layout) if rec["key"] == key}
        records.update((rec["seq"], rec) for rec in self._scan_log() if rec["key"] == key)
        return [Event.from_record(records[seq]) for seq in sorted(records)]

    def tail(self, count: int = 10) -> list[Event]:
        """The last `count` events of the log, oldest first."""
        from collections import deque

        return [Event.from_record(rec) for rec in deque(self._scan_log(), maxlen=count)] if count else []

    def _scan_log(self, after: int = 0) -> Iterator[dict[str, Any]]:
        """Every record of the current log file with seq > `after`, read through a private fd."""
        from .core.index import parse_record

        log = LogFile(self._layout.log, reopen=False)
        try:
            log.sync()
            for offset, line in log.read_lines():
                rec = parse_record(log.path, offset, line)
                if rec["seq"] > after:
                    yield rec
        finally:
            log.close()

    # -- entry files --------------------------------------------------------------------------------

    def _snapshot(self, mark: int) -> tuple[int, list[tuple[str, Slot]]]:
        with self._mutex:
            index = self._refresh()
            return index.last_seq, list(index.changed_since(mark))

    def flush(self) -> int:
        """Bring entry files up to the log now (writers do it in the background). Returns files changed."""
        self._check_writable()
        return _entries.materialize(self._layout, self._snapshot)

    def _schedule_flush(self) -> None:
        if self._flusher_pid != os.getpid():  # first write, or a forked child: threads do not survive fork
            with self._mutex:  # two threads' first writes must start one flusher, not two
                if self._flusher_pid != os.getpid():
                    self._dirty = threading.Event()
                    self._flusher = threading.Thread(
                        target=_flush_loop,
                        args=(weakref.ref(self), self._dirty, self._stop),
                        name="blackboard-flush",
                        daemon=True,
                    )
                    self._flusher.start()
                    self._flusher_pid = os.getpid()
        self._dirty.set()

    def _flush_once(self) -> None:
        started = time.monotonic()
        try:
            self.flush()
            self._maybe_compact()
            self.flush_error = None
        except Exception as exc:  # keep the thread alive: the next batch retries from the watermark
            self.flush_error = exc
            logger.warning("%s: could not update entry files: %s", self.path, exc)
        self._last_batch = time.monotonic() - started

    # -- watching (blackboard.core.watch) ------------------------------------------------------------------

    def watch(
        self,
        prefix: str = "",
        *,
        since: int | None = None,
        cursor: str | None = None,
        timeout: float | None = None,
        poll: bool | None = None,
        poll_interval: float | None = None,
    ) -> Watcher:
        """Iterate over every event whose key starts with `prefix`, in seq order, each once.

        `since=None`: from the next change; `since=N`: replay every event after seq N, then live.
        `cursor="name"`: resume where the consumer of that name stopped (kept in the board).
        `timeout`: stop after that many idle seconds. `poll=True` (or BLACKBOARD_POLL=1) polls the
        log every `poll_interval` seconds instead of waiting for notifications (NFS, SMB).

        >>> for event in board.watch("research_request/", cursor="researcher"):
        ...     board.write(f"research_results/{event.key.split('/')[-1]}", work(event.value))
        """
        from .core.watch import Watcher

        return Watcher(
            self, prefix, since=since, cursor=cursor, timeout=timeout, poll=poll, poll_interval=poll_interval
        )

    def awatch(
        self,
        prefix: str = "",
        *,
        since: int | None = None,
        cursor: str | None = None,
        timeout: float | None = None,
        poll: bool | None = None,
        poll_interval: float | None = None,
    ) -> AsyncIterator[Event]:
        """`watch` for asyncio: `async for event in board.awatch("tasks/"): ...`"""
        from .core.watch import awatch

        return awatch(self, prefix, since=since, cursor=cursor, timeout=timeout, poll=poll, poll_interval=poll_interval)

    def subscribe(
        self,
        prefix: str,
        callback: Callable[[Event], Any],
        *,
        since: int | None = None,
        cursor: str | None = None,
        poll: bool | None = None,
        poll_interval: float | None = None,
    ) -> Subscription:
        """Call `callback(event)` for every event of `prefix` from a background thread until closed.

        A callback that raises does not end the subscription: see `dead_letters()`.
        """
        from .core.watch import Subscription

        return Subscription(self, prefix, callback, since=since, cursor=cursor, poll=poll, poll_interval=poll_interval)

    def cursors(self) -> dict[str, int]:
        """Every named consumer position: name -> the last seq it finished with."""
        from .core import cursors as _cursors

        return _cursors.list_all(self._layout)

    def reset_cursor(self, name: str, seq: int | None = None) -> None:
        """Move cursor `name` to `seq`, or delete it (None) so that its consumer starts afresh."""
        from .core import cursors as _cursors

        self._check_writable()
        _cursors.reset(self._layout, name, seq)

    def dead_letters(self) -> list[dict[str, Any]]:
        """Events whose subscription callback raised, with the error (from deadletter.jsonl)."""
        from .core.watch import read_dead_letters

        return read_dead_letters(self)

    # -- compaction (blackboard.core.compact) ------------------------------------------------------------

    def compact(
        self,
        *,
        retention: float | None = None,
        archive: bool = False,
        wait: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> CompactReport:
        """Rewrite the log to the latest put of every live key and the deletes younger than
        `retention` seconds (default: the board's `retention_seconds`), seqs unchanged. Safe while
        others write and watch. `archive=True` keeps the removed history in archive/.
        """
        from .core.compact import compact

        self._check_writable()
        return compact(self, retention=retention, archive=archive, wait=wait, progress=progress)

    def stats(self) -> dict[str, Any]:
        """Keys, events and bytes of the log, its dead-record ratio, seqs, archive size, cursors."""
        from .core.maintain import stats

        return stats(self)

    def _maybe_compact(self) -> None:
        """Writers compact opportunistically when the board says so (compact_at_bytes)."""
        if self.config.compact_at_bytes is None or self._log.offset < self.config.compact_at_bytes:
            return
        from .core.compact import compact, needs_compaction

        if needs_compaction(self):
            compact(self, wait=False)

    # -- consistency (blackboard.core.maintain) ------------------------------------------------------------

    def check(self) -> _entries.Report:
        """Compare entry files with the log; report a torn log tail. Changes nothing.

        Keys changed after the watermark are pending for a background flush, not inconsistent.
        """
        from .core.maintain import check

        return check(self)

    def repair(self) -> _entries.Report:
        """Cut a torn log tail and rebuild every entry file that differs from the log."""
        from .core.maintain import repair

        self._check_writable()
        return repair(self)


def _flush_loop(ref: weakref.ref[Board], dirty: threading.Event, stop: threading.Event) -> None:
    """The background flusher. It holds its board only while flushing, so that a handle nobody
    closed can still be collected (its finalizer releases its files)."""
    while not stop.is_set():
        dirty.wait()
        board = ref()
        if board is None:
            return
        # Let more writes arrive (one file per key per batch), and pace batches so that they take at
        # most ~1/(1+_PACING) of the time: entry-file replaces must not starve the writing thread.
        pause = max(board.flush_interval, _PACING * board._last_batch)
        del board
        # close() sets stop before waking us: checking it after each wait is what keeps a close that
        # lands during a batch from leaving this thread waiting forever.
        if stop.wait(pause):
            return
        dirty.clear()
        board = ref()
        if board is None:
            return
        board._flush_once()
        del board


def _release_files(lock: FlockLock | SoftLock, log: LogFile, stop: threading.Event) -> None:
    """Finalizer of a Board nobody closed: stop its flusher, close its fds."""
    stop.set()
    lock.close()
    log.close()


_open_boards: weakref.WeakSet[Board] = weakref.WeakSet()


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children
    """Locks held by another thread of the parent at fork() stay held forever in the child: renew them.

    (fds and threads are renewed lazily: each object checks os.getpid() before using its own.)
    """
    for board in list(_open_boards):
        board._mutex = threading.RLock()
        board._lock._thread_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_open_boards() -> None:
    """A process that exits without closing its handles still leaves entry files up to date."""
    for board in list(_open_boards):
        try:
            board.close()
        except Exception as exc:
            logger.warning("%s: %s", board.path, exc)

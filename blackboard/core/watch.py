"""Following the log: `watch` (an iterator), `awatch` (its async twin) and `subscribe` (callbacks).

A watcher is a reader with its own fd, byte offset and seq: it reads the log from where it stopped,
so replay and live are one loop and there is no seam to lose or repeat an event at. Notifications
(`_notify`) only wake it; it also re-checks on a timer. Compaction replaces the log file: the
watcher notices the new inode, rereads from the top and uses the header to decide what it may have
missed (spec/FORMAT.md, "Watching across compaction").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import os
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..errors import Compacted, CorruptLog, InvalidValue
from ..models import Event
from . import codec as _codec
from . import cursors as _cursors
from . import settings as _settings
from .history import events_of
from .keys import validate_key, validate_prefix
from .layout import write_all
from .log import LogFile
from .mount import fstype_of
from .notify import Hub, hub_for
from .record import (
    DELETE,
    LOST,
    PUT,
    Header,
    check_order,
    check_seal,
    fast_seq,
    first_seq,
    key_starts_with,
    parse_record,
)

if TYPE_CHECKING:
    from .engine import Engine
    from .layout import Layout

logger = logging.getLogger("blackboard")

#: With notifications, a watcher still re-reads the log this often: a lost wake-up costs this much.
SAFETY_INTERVAL = 0.25
_BATCH = 4096


class Watcher:
    """An iterator of the log's events whose key starts with `prefix` (or is `key`), in seq order, each once.

    `since=None` starts after the current last event, `since=N` replays every event after seq N first.
    `cursor="name"` resumes from the position saved under that name (at-least-once: the event being
    handled when a consumer dies is delivered again). `timeout` ends the iteration after that many
    idle seconds. Use as a context manager, or call `close()`, to release it promptly.
    """

    def __init__(
        self,
        engine: Engine,
        prefix: str = "",
        *,
        key: str | None = None,
        since: int | None = None,
        cursor: str | None = None,
        timeout: float | None = None,
        poll: bool | None = None,
        poll_interval: float | None = None,
        waker: Callable[[], None] | None = None,
    ) -> None:
        layout = engine.layout
        self.prefix = validate_prefix(prefix)
        #: the one key watched, if any: `responses/r1` must not match `responses/r10`
        self.key = None if key is None else validate_key(key)
        if self.key is not None:
            if self.prefix:
                raise InvalidValue(f"watch a prefix or one key, not both (prefix {prefix!r}, key {key!r})")
            prefix = self.prefix = self.key  # the prefix filter passes it over the other keys' lines unparsed
        # For passing over other prefixes' lines unparsed (see record.key_starts_with).
        self._prefix_bytes = prefix.encode() if prefix and '"' not in prefix and "\\" not in prefix else b""
        self.timeout = timeout
        # Notifications do not cross the clients of a shared filesystem: a board made for one, or on
        # one (a FUSE or network mount), polls by default.
        shared = engine.config.lock == "soft" or fstype_of(layout.root).network
        self.polling = _settings.poll(poll if poll is not None or not shared else True)
        self.poll_interval = _settings.poll_interval(poll_interval)
        self._wake = threading.Event()
        self._io = threading.Lock()
        self._closed = False
        #: events read, each with the position a consumer has finished once it is handled: its seq,
        #: or seq - 1 while more events of its transaction follow (a cursor must not pass them)
        self._pending: deque[tuple[Event, int]] = deque()
        #: the Compacted that ended this watch, raised again by every later step
        self._gone: Compacted | None = None
        #: (offset, lines) read but not yet taken: what is left of a chunk when the queue filled
        self._rest: tuple[int, list[bytes]] = (-1, [])
        #: the seq of the line before our offset in the file (0 at its top): every line's must be above
        #: it, the lines we pass over included (a copied line must not hide behind our position)
        self._line_last = 0
        #: (offset, line number) of the bad record we stopped at, if any
        self._line_of = (-1, 0)
        self._delivered: int | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if since is not None and (type(since) is not int or since < 0):
            raise InvalidValue(f"since must be a seq >= 0 or None, not {since!r}")
        # Reopened for every look on a shared filesystem: a fresh open is what revalidates a client's
        # cache (sshfs never updates the size seen through an open fd).
        self._log = LogFile(layout.log, reopen=shared, uncached=engine.log.uncached)
        # Load before opening: opening creates the file, and a new cursor must start at `since`.
        saved = _cursors.load(layout, cursor) if cursor is not None else None
        self._cursor = _cursors.CursorFile(layout, cursor) if cursor is not None else None
        try:
            self._start(since if saved is None else saved, new_cursor=saved is None)
        except BaseException:
            self.close()  # a watch refused (Compacted, CorruptLog) leaves no fd open
            raise
        self._waker = waker or self._wake.set
        hub = None if self.polling else hub_for(layout.root)
        if hub is not None and not hub.add(self._waker):
            self.polling = True
        # Released by close(), or when the watcher is dropped unclosed (`for e in watch(): break`).
        self._finalizer = weakref.finalize(self, _release, hub, self._waker, self._log, self._cursor)

    def _start(self, start: int | None, *, new_cursor: bool) -> None:
        self._log.sync()
        if start is None:
            log = self._log
            before, last = log.seek_end()
            floor = log.read_header().compacted_through  # a compacted log may end before its last seq
            self._line_last = 0
            if last is not None:
                # Our start comes from the last line: checked as any line is, and after the one before
                # it (a damaged or copied last line must not set where we start).
                end = log.offset - len(last) - 1
                try:
                    rec = parse_record(log.path, end, last, sealed=log.sealed)
                    if before is not None:
                        previous = parse_record(log.path, end - len(before) - 1, before, sealed=log.sealed)
                        check_order(log.path, end, previous["seq"], first_seq(rec), floor, rec["seq"])
                except CorruptLog as exc:
                    raise self._numbered(exc) from None
                self._line_last = rec["seq"]
            self.seq = max(self._line_last, floor)
            self._flag_through = 0
        else:
            self.seq = start
            self._flag_through = self._header_rules(self._log.read_header())
        if self._cursor is not None and new_cursor:
            self._cursor.save(self.seq)  # a new cursor starts where this watch starts

    def _header_rules(self, header: Header) -> int:
        """Decide, from a log header, what this watcher at `self.seq` may have lost to compaction."""
        if self.seq < header.purged_deletes_through:
            raise Compacted(self.seq, header.purged_deletes_through)
        return header.compacted_through if self.seq < header.compacted_through else 0

    # -- reading ---------------------------------------------------------------------------------

    def _fill(self) -> None:
        """Read what the log has after our position into the pending queue (at most a batch)."""
        try:
            self._fill_once()
        except OSError as exc:
            # NFS: the file of our fd was replaced and deleted by another client mid-look (ESTALE,
            # from any call on the fd): the next look opens the file at the path and goes on from
            # the last event delivered, as after a compaction's switch.
            if exc.errno != errno.ESTALE:
                raise
            with self._io:
                self._log.forget_file()

    def _fill_once(self) -> None:
        log = self._log
        with self._io:
            if self._closed:
                return
            if self._gone is not None:
                raise self._gone  # every later step too: the events after it cannot be delivered
            if log.sync():  # the log was replaced (compaction): reread it from the top
                self._rest, self._line_last = (-1, []), 0
                try:
                    self._flag_through = self._header_rules(log.read_header())
                except Compacted as exc:
                    self._gone = exc
                    raise

            compacted_through = (log.header or Header()).compacted_through
            while len(self._pending) < _BATCH:
                # The lines a full queue left over, if we are still where they start: a chunk is
                # read (and split) once, not once per batch.
                base, lines = self._rest if self._rest[0] == log.offset else log.read_chunk()
                self._rest = (-1, [])
                if not lines or not self._take(base, lines, compacted_through):
                    return

    def _take(self, base: int, lines: list[bytes], compacted_through: int) -> bool:
        """Queue the events of `lines` (read from `base`) after our position; move the log's offset
        past what was taken. False once the queue is full or a bad record stops us."""
        log, path, prefix, pending, exact = self._log, self._log.path, self.prefix, self._pending, self.key
        prefix_bytes, flag, sealed = self._prefix_bytes, self._flag_through, log.sealed
        offset, last = base, self._line_last
        for i, line in enumerate(lines):
            start = offset
            offset += len(line) + 1
            position = self.seq
            try:
                # Peek at the seq without parsing only where that can save the parse: a prefix to filter on.
                seq = fast_seq(line) if prefix_bytes else None
                rec = None
                if seq is None:
                    rec = parse_record(path, start, line, sealed=sealed)
                    seq = rec["seq"]
                if seq <= last:
                    raise CorruptLog(
                        str(path), start, f"seq {seq} after seq {last} (a reorder or a copied line)", seq=seq
                    )
                if seq <= position:
                    if rec is None and sealed:
                        check_seal(path, start, line)  # passed over unparsed, but never unchecked
                    last = seq
                    continue  # replayed part we already had, or before `since`
                if rec is None:
                    if key_starts_with(line, seq, prefix_bytes) is False:
                        if sealed:
                            check_seal(path, start, line)
                        check_order(path, start, last, seq, compacted_through, seq)
                        self.seq = last = seq  # another prefix's record, passed over unparsed
                        continue
                    rec = parse_record(path, start, line, sealed=sealed)
                first = first_seq(rec)
                check_order(path, start, last, first, compacted_through, seq)
                self.seq = last = seq
                if rec["op"] == PUT or rec["op"] == DELETE:  # the common case, built here (a list costs)
                    key = rec["key"]
                    if key.startswith(prefix) and (exact is None or key == exact):
                        event = Event(
                            seq, rec["op"], key, rec["value"], rec["version"], rec["author"], rec["ts"], seq <= flag
                        )
                        pending.append((event, seq))
                else:
                    self._queue_other(rec, first, seq)
            except (CorruptLog, ValueError) as exc:
                log.offset, self.seq = start, position  # stay at the bad record: report it again
                self._line_last = last
                if pending:
                    return False  # deliver the good events before it first
                if not isinstance(exc, CorruptLog):
                    exc = CorruptLog(str(path), start, str(exc))
                raise self._numbered(exc) from None
            if len(pending) >= _BATCH:
                log.offset, self._line_last = offset, last
                self._rest = (offset, lines[i + 1 :])
                return False
        log.offset, self._line_last = offset, last
        return True

    def _numbered(self, exc: CorruptLog) -> CorruptLog:
        """The error with its line number, counted once per bad record (it is raised again each look)."""
        if self._line_of[0] != exc.offset:
            self._line_of = (exc.offset, self._log.line_number(exc.offset))
        return exc.numbered(self._line_of[1])

    def _queue_other(self, rec: dict[str, Any], first: int, seq: int) -> None:
        """A transaction's events of our prefix, one seq; none for a repair's `lost` record."""
        if rec["op"] == LOST:
            _warn_lost(self._log.path, first, seq, self.prefix)
            return
        events = [e for e in events_of(rec, compacted=seq <= self._flag_through) if self._matches(e.key)]
        for left, event in enumerate(events, 1 - len(events)):
            self._pending.append((event, seq if left == 0 else seq - 1))

    def _matches(self, key: str) -> bool:
        return key == self.key if self.key is not None else key.startswith(self.prefix)

    def next_nowait(self) -> Event | None:
        """The next event if one is already in the log, else None. Marks the previous one finished."""
        self.commit()
        if not self._pending:
            self._fill()
        if self._pending:
            event, self._delivered = self._pending.popleft()
            return event
        self._save(self.seq)  # nothing pending: everything up to here is handled
        return None

    def commit(self) -> None:
        """Record the last delivered event as handled (done for you by the next `next`)."""
        if self._delivered is not None:
            self._save(self._delivered)
            self._delivered = None  # saved: a later commit must not move the cursor back to it

    def _save(self, seq: int) -> None:
        # Under _io, like close(): a close from another thread must not close the fd mid-write.
        if self._cursor is not None:
            with self._io:
                if not self._closed:
                    self._cursor.save(seq)

    def wait_interval(self) -> float:
        return self.poll_interval if self.polling else SAFETY_INTERVAL

    def __iter__(self) -> Watcher:
        return self

    def __next__(self) -> Event:
        if self._pending and self._cursor is None and not self._closed:  # the common case, kept short
            event, self._delivered = self._pending.popleft()
            return event
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not self._closed:
            found = self.next_nowait()
            if found is not None:
                return found
            wait = self.wait_interval()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(wait, remaining)
            self._wake.wait(wait)
            self._wake.clear()
        self.close()
        raise StopIteration

    def close(self) -> None:
        """Stop: the iteration ends at its next step. Safe to call from another thread."""
        self._closed = True
        self._wake.set()
        with self._io:
            if self._finalizer is not None:
                self._finalizer()
            else:  # refused in __init__, before the finalizer existed
                _release(None, None, self._log, self._cursor)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _release(
    hub: Hub | None, waker: Callable[[], None] | None, log: LogFile, cursor: _cursors.CursorFile | None
) -> None:
    if hub is not None and waker is not None:
        hub.remove(waker)
    log.close()
    if cursor is not None:
        cursor.close()


def awatch(engine: Engine, prefix: str = "", **options: Any) -> AsyncIterator[Event]:
    """The async twin of `Watcher`: the same reader, waiting on an asyncio.Event instead of a thread.

    The watcher is created here, at the call, like `watch()`'s: with `since=None` an event written
    between the call and the first `async for` step is delivered, not lost.
    """
    wakers: list[Callable[[], None]] = []

    def waker() -> None:
        for wake in wakers:
            wake()

    watcher = Watcher(engine, prefix, waker=waker, **options)
    return _aiterate(watcher, wakers)


async def _aiterate(watcher: Watcher, wakers: list[Callable[[], None]]) -> AsyncIterator[Event]:
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(ready.set)

    wakers.append(wake)
    try:
        deadline = None if watcher.timeout is None else loop.time() + watcher.timeout
        while True:
            event = watcher.next_nowait()
            if event is not None:
                yield event
                deadline = None if watcher.timeout is None else loop.time() + watcher.timeout
                continue
            ready.clear()
            event = watcher.next_nowait()  # a change between the read and the clear
            if event is not None:
                yield event
                continue
            wait = watcher.wait_interval()
            if deadline is not None:
                if loop.time() >= deadline:
                    return
                wait = min(wait, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), wait)
    finally:
        watcher.close()


class Subscription:
    """Calls `callback(event)` for every event of `prefix`, from a background thread, until closed.

    A coroutine-function callback runs as a task on the event loop that was running when `subscribe`
    was called (or on a private loop if none was). A callback that raises does not end the
    subscription: the event and the error are appended to the board's `deadletter.jsonl`.
    """

    def __init__(self, engine: Engine, prefix: str, callback: Callable[[Event], Any], **options: Any) -> None:
        self.layout = engine.layout
        self.prefix = prefix
        self.callback = callback
        self.errors = 0
        self.delivered = 0
        #: what ended the subscription early (Compacted, CorruptLog), if anything did
        self.error: BaseException | None = None
        self._is_async = inspect.iscoroutinefunction(callback)
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop() if self._is_async else None
        except RuntimeError:
            self._loop = None
        self._watcher = Watcher(engine, prefix, **options)
        self._thread = threading.Thread(target=self._run, name=f"blackboard-subscribe-{prefix}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        private = asyncio.new_event_loop() if self._is_async and self._loop is None else None
        try:
            for event in self._watcher:
                try:
                    self._call(event, private)
                    self.delivered += 1
                except Exception as exc:
                    self.errors += 1
                    record_dead_letter(self.layout, self.prefix, event, exc)
        except Exception as exc:  # Compacted, CorruptLog: the subscription cannot go on
            self.error = exc
            logger.error("%s: subscription to %r ended: %s", self.layout.root, self.prefix, exc)
        finally:
            if private is not None:
                private.close()

    def _call(self, event: Event, private: asyncio.AbstractEventLoop | None) -> None:
        if not self._is_async:
            self.callback(event)
        elif private is not None:
            private.run_until_complete(self.callback(event))
        else:
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(self.callback(event), self._loop).result()

    def close(self, timeout: float = 5.0) -> None:
        """Stop delivering and wait (up to `timeout`) for a callback in progress to return.

        Called from the event loop the callbacks run on, it does not wait: the callback in progress
        needs that loop to finish, and the delivery thread ends right after it.
        """
        self._watcher.close()
        if threading.current_thread() is self._thread or self._on_own_loop():
            return
        self._thread.join(timeout)

    def _on_own_loop(self) -> bool:
        try:
            return self._loop is not None and asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_dead_letter(
    layout: Layout, prefix: str, event: Event, error: BaseException | str, details: dict[str, Any] | None = None
) -> bool:
    """Append the failed event and its error to deadletter.jsonl (one write of a whole line).

    `error` is what the callback raised (its traceback is kept too) or a description; `details` adds
    fields (`watch --exec` gives the command, its exit status, attempts and stderr tail). False if the
    letter could not be written (a read-only board): the error is logged, and the caller decides.
    """
    record: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prefix": prefix,
        "pid": os.getpid(),
    }
    if isinstance(error, BaseException):
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = "".join(traceback.format_exception(error))
    else:
        record["error"] = error
    record.update(details or {})
    record["event"] = event.as_dict()
    try:
        fd = os.open(layout.deadletter, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            # An append cut short (a full disk) left part of a line: start on a line of our own, or
            # this letter would be lost in the fragment (readers report the fragment as unreadable).
            size = os.fstat(fd).st_size
            cut = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            write_all(fd, (b"\n" if cut else b"") + _codec.dumps(record) + b"\n", layout.deadletter)
        finally:
            os.close(fd)
    except OSError as write_error:  # a read-only board: the error still reaches the log
        logger.error(
            "%s: seq %d failed (%s); cannot record a dead letter: %s",
            layout.root,
            event.seq,
            record["error"],
            write_error,
        )
        return False
    logger.warning(
        "%s: seq %d (%s) failed, recorded in deadletter.jsonl: %s", layout.root, event.seq, event.key, record["error"]
    )
    return True


def read_dead_letters(layout: Layout) -> list[dict[str, Any]]:
    try:
        data = layout.deadletter.read_bytes()
    except FileNotFoundError:
        return []
    # Complete lines only: a subscription may be appending the last one right now.
    return [_letter(line) for line in data.split(b"\n")[:-1] if line.strip()]


def _letter(line: bytes) -> dict[str, Any]:
    """One dead letter; a line a failed append left half-written comes back as what it is."""
    try:
        letter = _codec.decode(line)
    except _codec.DecodeError:
        letter = None
    return letter if isinstance(letter, dict) else {"unreadable": line.decode(errors="replace")}


def _warn_lost(path: object, first: int, seq: int, prefix: str) -> None:
    """A repair quarantined the records of these seqs: their events, of any prefix, cannot be delivered."""
    logging.getLogger("blackboard").warning(
        "%s: seqs %d..%d were lost to a repair (see quarantine/); events of %r among them are missing",
        path,
        first,
        seq,
        prefix,
    )

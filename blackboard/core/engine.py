"""The engine: the writer lock, this process's view of the log, its index, and the write protocol.

Compaction, maintenance, watching and the board use it through these methods, never through each
other's private state. Write protocol (spec/FORMAT.md section 8): take the writer lock; bring the view
of the log up to date from its end (and cut a torn tail: we hold the lock, so nobody is writing it);
check the expected versions; assign seq = last seq + 1; append the whole record with one write();
release. The write has then happened: it is in the log, which survives SIGKILL of any process.

Lock order, everywhere: the writer lock, then the materialize lock, then `mutex`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import CorruptLog, Fenced, InvalidValue, KeyNotFound, LockLost, LogTruncated, StaleView, VersionConflict
from ..models import SOFT_LOCK_VERSION, BoardConfig, Signer
from . import checkpoint as _checkpoint
from . import codec as _codec
from .entries import read_watermark
from .index import Index
from .layout import Layout, upgrade_config
from .lock import FlockLock
from .log import LogFile
from .mount import fstype_of
from .notice import warn
from .record import DELETE, PUT, Change, Sign, changes, encode_record, encode_txn, parse_record, signature_message
from .rules import CONTRACTS_KEY, KEYS_PREFIX, NO_RULES, Rules, registered_kids
from .softlock import Note, SoftLock


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


class Op(NamedTuple):
    """A change asked of the engine: a put of `value` (its JSON) or a delete of `key`."""

    op: str
    key: str
    value: bytes = b"null"


class Committed(NamedTuple):
    """A record the engine appended, or (`duplicate`) the one an idempotency key already names."""

    seq: int
    author: str
    ts: str
    changes: list[Change]
    duplicate: bool = False


class Engine:
    """One process's engine for one board. Safe to share between threads."""

    def __init__(self, root: Path, config: BoardConfig, *, lock_timeout: float) -> None:
        self.layout = Layout(root)
        self.config = config
        self.lock_timeout = lock_timeout
        soft = config.lock == "soft"
        self.lock: FlockLock | SoftLock = SoftLock(self.layout.soft_lock) if soft else FlockLock(self.layout.lock)
        # On a FUSE or network mount, past the client's page and attribute caches (see LogFile).
        self.log = LogFile(self.layout.log, reopen=soft, uncached=soft and fstype_of(root).network)
        self.index = Index()
        self.mutex = threading.RLock()
        self.clock = _Clock()
        #: records in the index since it was loaded from (or saved to) a checkpoint
        self.since_checkpoint = 0
        #: the highest seq a durable trace outside the log file showed when we opened it, and which
        #: trace: a log that ends below it lost its tail (spec 5.3), and is neither read nor written
        self.floor: tuple[int, str] = (0, "")
        self._seen_before = 0
        self._rules = NO_RULES
        self._kid_cache: dict[str, tuple[int, frozenset[str]]] = {}

    # -- the view of the log -------------------------------------------------------------------------

    def refresh(self, writable: bool = False, *, truncated_ok: bool = False) -> Index:
        """Bring the index up to the log's end. Cheap when nothing changed: one fstat and one stat.

        A log that ends below a seq a durable trace shows raises `LogTruncated` (after the replay),
        unless `truncated_ok` (check and repair look at such a log)."""
        for _ in range(_STALE_RETRIES):
            try:
                return self._refresh(writable, truncated_ok)
            except OSError as exc:
                # NFS: our fd's file was replaced and deleted by another client mid-look (ESTALE,
                # from any call on the fd). The index holds what was applied; go on with the file
                # at the path, as after a compaction's switch.
                if exc.errno != errno.ESTALE:
                    raise
                with self.mutex:
                    self.log.forget_file()
        return self._refresh(writable, truncated_ok)

    def _refresh(self, writable: bool, truncated_ok: bool, depth: int = 0) -> Index:
        if depth > _STALE_RETRIES:  # the file at the path keeps changing under every look
            raise OSError(errno.ESTALE, "the log was replaced under every look", str(self.log.path))
        with self.mutex:
            log = self.log
            if log.sync(writable):
                # A new file (first look, or compaction replaced it): start from a checkpoint of it
                # if a valid one exists (keeping our index across a compaction), else from its header.
                old = self.index if self.index.last_record_seq else None
                try:
                    # Our own view of the file this one replaced is a trace too: a compaction's file
                    # holds every seq the old one had, a copy restored over it may not.
                    self._seen_before = old.last_seq if old is not None else 0
                    new = _checkpoint.load(self.layout, log, carry=old)
                    # A checkpoint of this very file shows nothing past it: read it again only if not.
                    self.floor = self._traces(checkpoint=new is None)
                    new = new or Index(log.read_header().compacted_through)
                except BaseException:
                    # The fd is on the new file but the index is not: forget both, so that the next
                    # look starts over (else it would replay the new file onto the old index).
                    log.close()
                    self.index = Index()
                    raise
                self.index = new
                self.since_checkpoint = 0
            index = self.index
            apply, path = index.apply, log.path
            rechecked = False
            while True:
                base, lines = log.read_chunk()
                if not lines:
                    if log.fd < 0:  # the file went away under us (NFS ESTALE, FUSE): the one at the path
                        return self._refresh(writable, truncated_ok, depth + 1)
                    if index.last_seq >= self.floor[0] or truncated_ok:
                        return index
                    # The traces were read after the file was opened: a compaction or repair may have
                    # put another file at the path meanwhile, whose records moved them on, and a
                    # watermark read mid-rewrite may overstate. Look once more: the file at the
                    # path, then the traces, then the log up to its end again.
                    if log.replaced():
                        return self._refresh(writable, truncated_ok, depth + 1)
                    if rechecked:
                        raise LogTruncated(str(path), log.offset, index.last_seq, *self.floor)
                    rechecked, self.floor = True, self._traces()
                    continue
                offset, done, sealed = base, 0, log.sealed
                try:
                    for line in lines:
                        apply(path, offset, line, sealed)
                        offset += len(line) + 1
                        done += 1
                except CorruptLog as exc:
                    raise exc.numbered(log.line_number(offset)) from None
                finally:
                    # Up to the bad record, if one stopped us: it is reported again, never skipped.
                    self.since_checkpoint += done
                    log.offset = offset

    def _traces(self, *, checkpoint: bool = True) -> tuple[int, str]:
        """The highest seq a trace outside the log file shows, and which (spec 5.3)."""
        return max(
            (read_watermark(self.layout), "the watermark (materialized)"),
            (_checkpoint.seen_seq(self.layout) if checkpoint else 0, "the checkpoint"),
            (self._seen_before, "this process's view of the log file it replaced"),
        )

    @property
    def last_seq(self) -> int:
        return self.refresh().last_seq

    @property
    def board_id(self) -> str:
        """board.json's `id` ("" on a board made before ids): what signatures bind a record to."""
        found = self.config.extra.get("id", "")
        return found if type(found) is str else ""

    def rules(self, index: Index | None = None) -> Rules:
        """The board's contracts as of `index` (default: the log's end), compiled once per version."""
        if index is None:
            index = self.refresh()
        slot = index.slots.get(CONTRACTS_KEY)
        live = slot is not None and slot.op == PUT
        seq = slot.seq if slot is not None and live else 0
        rules = self._rules
        if rules.seq != seq:
            # Two threads may both compile a new version: the same result, and either may win.
            rules = self._rules = Rules(seq, slot.value if slot is not None and live else None)
        return rules

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writer lock (compaction's switch, repair)."""
        self.lock.acquire(self.lock_timeout)
        try:
            self._mark_soft_board()
            yield
        finally:
            self.lock.release()

    def _mark_soft_board(self) -> None:
        """Holding the token lock of a soft board an older release made: mark board.json version 4
        first (spec 3), so that releases that take only filelock's claims refuse the board."""
        if isinstance(self.lock, SoftLock) and self.config.version < SOFT_LOCK_VERSION:
            self.config = upgrade_config(self.layout.root, self.config, SOFT_LOCK_VERSION)

    def leave_note(self, seq: int, end: int, generation: str) -> None:
        """Under `locked()`, after replacing the log: the note the release leaves (spec 9.1), for a
        log file of `generation` that ends at `end` after `seq` (0, 0, "": nothing to check)."""
        if isinstance(self.lock, SoftLock):
            self.lock.note_out = Note(seq, end, generation) if generation else _NO_NOTE

    def snapshot(self, mark: int) -> tuple[int, list[tuple[str, Any]]]:
        """(last seq, keys changed after `mark`, newest first): what a batch of entry files needs."""
        with self.mutex:
            index = self.refresh()
            return index.last_seq, list(index.changed_since(mark))

    def scan(self, after: int = 0) -> Iterator[dict[str, Any]]:
        """Every record of the current log file with seq > `after`, read through a private fd."""
        return (rec for rec, _line, _sealed in self.scan_lines() if rec["seq"] > after)

    def scan_lines(self) -> Iterator[tuple[dict[str, Any], bytes, bool]]:
        """Every record of the current log file, with its line and whether the log is sealed: what a
        signature check needs (spec/TRUST.md 4)."""
        log = LogFile(self.layout.log, uncached=self.log.uncached)
        try:
            log.sync()
            for offset, line in log.read_lines():
                yield parse_record(log.path, offset, line, sealed=log.sealed), line, log.sealed
        finally:
            log.close()

    # -- writing (lock held) ---------------------------------------------------------------------------

    def commit(
        self,
        ops: list[Op],
        expect: dict[str, int],
        author: str,
        idem: str | None = None,
        fences: dict[str, int] | None = None,
        signer: Signer | None = None,
    ) -> Committed:
        """Append one record making `ops` (one op: a put or delete record; several: a transaction),
        if every key in `expect` is at its expected version (0: absent), every key in `fences`
        has its latest live change at that seq, and the board's contracts allow it. All or nothing.
        `signer` signs it if its name is `author`.

        An `idem` (idempotency key) that a record in the log already carries appends nothing: the
        record it names is returned, `duplicate=True`.
        """
        sign = self._sign_with(signer) if signer is not None and signer.name == author else None
        self._catch_up()
        self.lock.acquire(self.lock_timeout)
        try:
            self._mark_soft_board()
            with self.mutex:
                index = self.refresh(writable=True)
                if isinstance(self.lock, SoftLock):
                    index = self._fresh_view(index, self.lock.note)
                # We hold the lock, so bytes after the last complete line are no write in progress:
                # they are a writer killed mid-append. Cut them before appending after them.
                if self.log.truncate_torn_tail():
                    warn("%s: repaired a torn record at the end of the log", self.log.path)
                if idem is not None and idem in index.idem:
                    done = self._duplicate(index, ops, idem)
                    if self.config.fsync:
                        # The first attempt may have died before its fdatasync: acknowledge the
                        # record only once it is on the device, as the first would have.
                        os.fdatasync(self.log.fd)
                    return done
                made = _changes(index, ops, expect, fences)
                self._check_rules(index, made, author, signer if sign is not None else None)
                if (len(made) > 1 or idem is not None) and self.config.version < 2:
                    # Records older releases cannot read: mark the board so that they refuse it
                    # (format 2; format 3 is for boards whose log carries checksums: spec 3).
                    self.config = upgrade_config(self.layout.root, self.config, 2)
                seq = index.last_seq + 1
                ts = self.clock.now()
                sealed = self.log.sealed  # an older board's log stays of its format until compacted
                if len(made) == 1:
                    c = made[0]
                    line = encode_record(
                        seq, c.op, c.key, c.value, c.version, author, ts, idem, sealed=sealed, sign=sign
                    )
                else:
                    line = encode_txn(seq, made, author, ts, idem, sealed=sealed, sign=sign)
                self._before_append(index)
                offset = self.log.append(line)
                try:
                    index.add(self.log.path, offset, seq, made, author, ts, idem)
                    self.since_checkpoint += 1
                except BaseException:
                    # The record is in the log but maybe not in the index (a Ctrl-C between the two):
                    # forget this view, so that the next look rereads the log rather than reuse the seq.
                    self.log.close()
                    raise
                # A dup of the fd: another thread may reopen the log (and close its fd) once we let go.
                durable_fd = os.dup(self.log.fd) if self.config.fsync else -1
                self._after_append(seq)
        finally:
            if self.log.reopen:
                # NFS: close before the lock goes (spec section 9), on every way out: a writable fd
                # left open after a conflict keeps this client's cache of the log stale.
                with self.mutex:
                    self.log.release_fd()
            self.lock.release()
        if durable_fd >= 0:
            # Outside the lock: fdatasync flushes every byte of the file written so far, ours
            # included, so concurrent writers' flushes overlap (group commit) instead of queueing
            # behind the lock. The write is acknowledged only once it is on the device.
            try:
                os.fdatasync(durable_fd)
            finally:
                os.close(durable_fd)
        return Committed(seq, author, ts, made)

    def _check_rules(self, index: Index, made: list[Change], author: str, signer: Signer | None) -> None:
        """Under the lock, against the contracts as of the log's end: a contract that another
        process set a moment ago applies to this write (checked before the lock, it might not)."""
        signed = signer is not None and signer.kid in self._kids(index, author)
        self.rules(index).check(made, author, signed, lambda key: index.live_slot(key) is not None)

    def _kids(self, index: Index, name: str) -> frozenset[str]:
        """The key ids `name` has registered in the board (spec/TRUST.md 3), decoded once per version."""
        slot = index.live_slot(KEYS_PREFIX + name)
        if slot is None:
            return frozenset()
        cached = self._kid_cache.get(name)
        if cached is None or cached[0] != slot.seq:
            cached = self._kid_cache[name] = (slot.seq, registered_kids(slot.value))
        return cached[1]

    def _sign_with(self, signer: Signer) -> Sign:
        """What signs a record's bytes: the signer, over the board's context (spec/TRUST.md 4)."""
        board_id = self.board_id
        return lambda body: signer.sign(signature_message(board_id, body))

    def _catch_up(self) -> None:
        """Before taking the lock, parse what other writers appended, so that the lock is held only
        for the few records that land meanwhile (the others wait on it). One fstat when nothing did."""
        with self.mutex:  # another thread (the flusher) may reopen the log, closing this fd
            log = self.log
            if log.uncached:
                return  # FUSE, NFS: each open is a round trip, and the look under the lock opens it again
            # A grown log, or one that compaction replaced (the old fd does not grow): either way the
            # work of catching up (a replay, a checkpoint load) is done before the lock, not under it.
            if log.reopen or log.fd < 0 or os.fstat(log.fd).st_size > log.offset or log.replaced():
                # Writable only on a local board: on NFS nothing holds the log open for writing
                # outside the lock (it would keep that client's cache stale: see LogFile.sync).
                self.refresh(writable=not log.reopen)

    def _before_append(self, index: Index) -> None:
        """On a soft board, right before the append: we still hold the lock, and the file ends where
        our view does (spec 9: a holder whose lease ran out must not write over its successor)."""
        if isinstance(self.lock, SoftLock):
            self.check_hold()
            if not self.log.at_end():
                raise StaleView(str(self.log.path), index.last_seq, self.log.offset)

    def _after_append(self, seq: int) -> None:
        """On a soft board: the note our release leaves, the log as our append left it (spec 9.1)."""
        if isinstance(self.lock, SoftLock):
            header = self.log.header
            self.lock.note_out = Note(seq, self.log.offset, header.generation if header else "")

    def check_hold(self) -> None:
        """Under the soft writer lock, right before changing the log: renew the hold now and raise
        `LockLost` if it was broken (a pause past the lease), so that a process that lost the lock
        never writes beside the one that took it."""
        if isinstance(self.lock, SoftLock) and not self.lock.renew_now():
            raise LockLost(str(self.lock.directory))

    def open_flags(self) -> int:
        """Flags for another fd on the log (compaction, repair): O_DIRECT where this view reads past
        the client's cache (once our own fd found that the filesystem serves it)."""
        if self.log.uncached and not self.log.direct_ok:
            self.refresh(truncated_ok=True)  # opens ours, which tries O_DIRECT (and may give it up)
        return os.O_DIRECT if self.log.uncached else 0

    def check_handover(self, generation: str, last_seq: int, end: int) -> None:
        """Under the writer lock: raise `StaleView` if a view of the log file with `generation`
        that ends at `end` after `last_seq` is behind the last release's note (compaction's switch)."""
        note = self.lock.note if isinstance(self.lock, SoftLock) else None
        if note is None:
            return
        if (generation == note.generation and end < note.end) or last_seq < note.seq:
            raise StaleView(str(self.log.path), last_seq, end, note.seq, note.end)

    def _fresh_view(self, index: Index, note: Note | None) -> Index:
        """Under the soft lock: our view of the log must reach where the last release left it (its
        note). A client whose fresh open still shows less is served cached data (FUSE attribute
        caching, a held NFS delegation): appending there would overwrite the records it does not see
        or reuse their seqs. Look again for a while, then refuse (`StaleView`), writing nothing."""
        deadline = time.monotonic() + STALE_VIEW_WAIT
        while note is not None and self._behind(index, note):
            if time.monotonic() >= deadline:
                raise StaleView(str(self.log.path), index.last_seq, self.log.offset, note.seq, note.end)
            time.sleep(0.01)
            self.log.release_fd()  # the next look opens the file again: what revalidates a cache
            index = self.refresh(writable=True)
        return index

    def _behind(self, index: Index, note: Note) -> bool:
        header = self.log.header
        if header is not None and header.generation == note.generation:
            return self.log.offset < note.end or index.last_seq < note.seq
        return index.last_seq < note.seq  # another file (compaction keeps every seq): seqs only

    def _duplicate(self, index: Index, ops: list[Op], idem: str) -> Committed:
        """The record an idempotency key names, if it made the same changes as `ops`."""
        seq, offset = index.idem[idem]
        line = self.log.read_line_at(offset)
        rec = parse_record(self.log.path, offset, line, sealed=self.log.sealed)
        if rec["seq"] != seq:  # the index and the file disagree: never answer from a wrong record
            raise InvalidValue(f"idempotency key {idem!r}: its record moved (seq {seq}); retry")
        made = changes(rec)
        # The same change: the same ops on the same keys with the same JSON values (1.0 is 1, true is not).
        same = len(ops) == len(made) and all(
            op.op == c.op and op.key == c.key and _codec.same_value(op.value, c.value)
            for op, c in zip(ops, made, strict=True)
        )
        if not same:
            raise InvalidValue(f"idempotency key {idem!r} was used by seq {seq} for a different write")
        return Committed(seq, rec["author"], rec["ts"], made, duplicate=True)

    def close(self) -> None:
        """Release the writer lock's fd and the log's. The lock first, with no other lock held: it
        waits for a write in flight in another thread, which takes the writer lock before `mutex`."""
        self.lock.close()
        with self.mutex:
            self.log.close()


#: Looks again at a log whose file went away under a look (NFS ESTALE) before the error counts.
_STALE_RETRIES = 3
#: How long a writer on a soft board waits for its view of the log to reach the last release's note.
STALE_VIEW_WAIT = 2.0
#: A note that asks the next holder to check nothing (a repaired log without a header).
_NO_NOTE = Note(0, 0, "")


def _changes(index: Index, ops: list[Op], expect: dict[str, int], fences: dict[str, int] | None) -> list[Change]:
    """The changes `ops` make now, with their versions, if every condition holds (else the error
    that says which does not, and nothing is written)."""
    for key, expected in expect.items():
        current = index.version(key)
        if expected != current:
            raise VersionConflict(key, expected, current)
    for key, seq in (fences or {}).items():
        slot = index.live_slot(key)
        if slot is None or slot.seq != seq:
            raise Fenced(key, seq, 0 if slot is None else slot.seq)
    if len(ops) > 1 and len({op.key for op in ops}) != len(ops):
        raise InvalidValue("a key is changed twice in one transaction")
    made = []
    slots = index.slots
    for op in ops:
        slot = slots.get(op.key)
        current = slot.version if slot is not None and slot.op == PUT else 0
        if op.op == DELETE and current == 0:
            raise KeyNotFound(op.key)
        # An exact-size copy of the value: the index keeps it (orjson's output holds ~4 KiB).
        made.append(Change(op.op, op.key, current + 1 if op.op == PUT else 0, _codec.exact(op.value)))
    return made

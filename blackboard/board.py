"""`Board`: the public face of a board directory, over the engine (`blackboard.core.engine`).

It validates what callers give it, turns records into `Entry`/`Event` objects, and decides when the
entry files, the checkpoint and compaction follow the log (`core.flusher`). The write protocol itself
is the engine's. Layers above (agents, work, trust, the adapters) use this class's public names.
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from .core import checkpoint as _checkpoint
from .core import codec as _codec
from .core import layout as _layout
from .core import settings as _settings
from .core.engine import Committed, Engine, Op
from .core.flusher import Flusher
from .core.index import DELETE, PUT, Slot
from .core.keys import validate_key, validate_prefix
from .core.notice import warn
from .core.perms import group_id
from .core.record import new_generation, signature_message, signed_bytes
from .core.rules import CONTRACTS_KEY, Contract
from .core.softlock import SoftLock
from .errors import NO_ROOM, BlackboardError, InvalidValue, ReadOnlyBoard
from .models import (
    DEFAULT_COMPACT_AT_BYTES,
    DEFAULT_COMPACT_AT_DEAD_RATIO,
    DEFAULT_RETENTION_SECONDS,
    FORMAT_VERSION,
    SOFT_LOCK_VERSION,
    BoardConfig,
    Entry,
    Event,
    Fence,
    HasFence,
    LogRecord,
    Signer,
    as_fence,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from .agents import Agent
    from .core.compact import CompactReport
    from .core.entries import Report
    from .core.repair import RepairReport
    from .core.softlock import Claim
    from .core.watch import Subscription, Watcher
    from .transaction import Transaction
    from .work import Lease

_MAX_AUTHOR = 256
_MAX_IDEM = 256
_SCALARS = (str, int, float, bool, type(None))
#: Records replayed beyond the checkpoint before a writer's batch writes a new one: at least this,
#: and at least a quarter of the keys (writing one costs ~0.5 us a key).
CHECKPOINT_EVERY = 2000


def _check_author(author: str) -> str:
    if not isinstance(author, str) or not author or len(author) > _MAX_AUTHOR or not author.isprintable():
        raise InvalidValue(f"author {author!r} must be 1-{_MAX_AUTHOR} printable characters")
    return author


def _check_idem(idem: str | None) -> str | None:
    if idem is not None and (not isinstance(idem, str) or not idem or len(idem) > _MAX_IDEM or not idem.isprintable()):
        raise InvalidValue(f"idempotency key {idem!r} must be 1-{_MAX_IDEM} printable characters")
    return idem


def _entry(key: str, slot: Slot) -> Entry:
    return Entry(key, _codec.decode(slot.value), slot.version, slot.seq, slot.author, slot.ts)


def _choose_lock(root: Path, lock: Literal["flock", "soft"] | None, force: bool) -> Literal["flock", "soft"]:
    """The lock a new board at `root` gets (spec 9.2): by its filesystem's type unless given; flock
    on a filesystem whose clients flock may not exclude only if forced."""
    from .core.mount import fstype_of

    mount = fstype_of(root)
    if lock is None:
        return "soft" if mount.network else "flock"
    if lock == "flock" and mount.network and not force:
        raise InvalidValue(
            f"{root} is on a {mount.kind} filesystem ({mount.fstype} at {mount.mount_point}), where flock does not "
            "exclude writers of other clients: use lock 'soft' (or force flock if every writer runs on this host; "
            "`blackboard doctor` probes the mount)"
        )
    return lock


#: boards this process has already warned about (the warning is once per path)
_warned_shared: set[Path] = set()


def _warn_if_shared(path: Path) -> None:
    """Warn once if a flock board is on a FUSE or network filesystem (spec 9.2): fine only while
    every writer runs on this host."""
    if path in _warned_shared:
        return
    _warned_shared.add(path)
    from .core.mount import fstype_of

    mount = fstype_of(path)
    if mount.network:
        warn(
            "%s: a flock board on a %s filesystem (%s): flock does not exclude writers of other clients, so "
            "two hosts writing it corrupt it; fine only if every writer runs on this host (`blackboard doctor`)",
            path,
            mount.kind,
            mount.fstype,
        )


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
        signer: Signer | None = None,
    ) -> None:
        self.path = Path(path)
        config = _layout.read_config(self.path)
        self.author = _check_author(_settings.author(author))
        self.read_only = read_only
        #: signs every record whose author is its name (`blackboard.trust.load_signer`; spec/TRUST.md 4)
        self.signer = signer
        #: the core's interface, for the layers built on a board (compaction, watching, maintenance)
        self.engine = Engine(self.path, config, lock_timeout=lock_timeout)
        self._flusher = Flusher(self._flush_once, flush_interval)
        self._closed = False
        #: what the last background batch failed with, if it failed (the next batch retries)
        self.flush_error: BaseException | None = None
        #: the log's size after this handle's last compaction (see _maybe_compact)
        self._compacted_to = 0
        #: size and seconds of the last checkpoint this handle wrote
        self.checkpoint_bytes = 0
        self.checkpoint_seconds = 0.0
        self._finalizer = weakref.finalize(self, _release, self.engine, self._flusher)
        _open_boards.add(self)
        if config.lock == "flock" and not read_only:
            _warn_if_shared(self.path)

    @property
    def config(self) -> BoardConfig:
        return self.engine.config

    @property
    def lock_timeout(self) -> float:
        return self.engine.lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float) -> None:
        self.engine.lock_timeout = seconds

    @property
    def flush_interval(self) -> float:
        return self._flusher.interval

    @property
    def id(self) -> str:
        """board.json's `id`, which every signature binds its record to ("" on a board made before ids)."""
        return self.engine.board_id

    # -- opening and closing -----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        lock: Literal["flock", "soft"] | None = None,
        force_lock: bool = False,
        max_value_bytes: int = 1 << 20,
        fsync: bool = False,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        compact_at_bytes: int | None = DEFAULT_COMPACT_AT_BYTES,
        compact_at_dead_ratio: float = DEFAULT_COMPACT_AT_DEAD_RATIO,
        group: str | None = None,
        **handle: Any,
    ) -> Board:
        """Create a board (idempotent: an existing board keeps its settings) and open it.

        `lock`: "flock" (local disks) or "soft" (NFS, SMB, FUSE: spec section 9); by default the
        filesystem's type decides (soft on FUSE and network filesystems). "flock" on a FUSE or network
        filesystem is refused (flock does not exclude across its clients) unless `force_lock`: every
        writer then runs on this one host. `fsync=True` makes every write survive power loss.
        Writers compact in the background once the log passes `compact_at_bytes` (default 64 MiB;
        None: never) and `compact_at_dead_ratio` of it is superseded; compaction keeps deletes and
        idempotency keys `retention_seconds`. `group`: a board that group can use and nobody else
        (setgid directories whose default ACL makes every later file group-writable: spec/TRUST.md 6).
        """
        root = Path(path)
        gid = None if group is None else group_id(group)
        if not _layout.Layout(root).config.exists():
            lock = _choose_lock(root, lock, force_lock)
        try:
            config = BoardConfig(
                version=SOFT_LOCK_VERSION if lock == "soft" else FORMAT_VERSION,
                lock=lock or "flock",
                max_value_bytes=max_value_bytes,
                fsync=fsync,
                retention_seconds=retention_seconds,
                compact_at_bytes=compact_at_bytes,
                compact_at_dead_ratio=compact_at_dead_ratio,
                # The board's identity, which signatures bind each record to (spec/TRUST.md 4).
                extra={"id": new_generation(), **({} if group is None else {"group": group})},
            )
        except (ValueError, TypeError) as exc:
            raise InvalidValue(str(exc)) from None
        _layout.init(Path(path), config, gid=gid)
        return cls(path, **handle)

    @classmethod
    def open(cls, path: str | os.PathLike[str], **handle: Any) -> Board:
        """Open an existing board; `NotABoard` if `path` is not one (or is of a newer format)."""
        return cls(path, **handle)

    def close(self) -> None:
        """Bring entry files (and the checkpoint) up to date and release this handle's files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._flusher.running:
                self._flusher.stop()
                try:
                    self.flush()
                except OSError as exc:
                    if exc.errno not in NO_ROOM:
                        raise
                    # A full disk fails no close(): the log has every write and reads answer from
                    # it; entry files catch up at any writer's next batch (or `check --repair`).
                    self.flush_error = exc
                    warn("%s: could not update entry files: %s", self.path, exc)
            self._save_checkpoint()
        finally:
            self._finalizer()
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

    @property
    def last_seq(self) -> int:
        """The seq of the newest record in the log (0 for an empty board)."""
        return self.engine.last_seq

    # -- writing -----------------------------------------------------------------------------------

    def write(
        self,
        key: str,
        value: Any,
        *,
        author: str | None = None,
        expect_version: int | None = None,
        idempotency_key: str | None = None,
        fence: Fence | HasFence | None = None,
    ) -> Entry:
        """Set `key` to `value` (any JSON value). `expect_version` makes it a compare-and-set:
        `0` means "only if absent"; on a mismatch `VersionConflict` is raised and nothing is written.

        `idempotency_key`: a retry of a write that already landed with this key (within the board's
        retention) appends nothing and returns the original entry.

        `fence` (a `Fence`, or a lease): written only while the fence holds, else `Fenced`: a holder
        paused past its lease cannot overwrite what its successor wrote.
        """
        validate_key(key)
        value_json = _codec.encode_value(value, self.config.max_value_bytes)
        done = self._commit([Op(PUT, key, value_json)], key, expect_version, author, idempotency_key, fence)
        change = done.changes[0]
        if done.duplicate:
            return Entry(key, _codec.decode(change.value), change.version, done.seq, done.author, done.ts)
        # The caller keeps its object; the Entry holds a copy (scalars are immutable: no copy needed).
        stored = value if type(value) in _SCALARS else _codec.decode(value_json)
        return Entry(key, stored, change.version, done.seq, done.author, done.ts)

    def delete(
        self,
        key: str,
        *,
        author: str | None = None,
        expect_version: int | None = None,
        idempotency_key: str | None = None,
        fence: Fence | HasFence | None = None,
    ) -> Entry:
        """Delete `key` (`KeyNotFound` if it has no live value). Its next put starts again at version 1.

        Returns the delete as an Entry: value None, version 0, the delete's seq. `fence`: as `write`.
        """
        validate_key(key)
        done = self._commit([Op(DELETE, key)], key, expect_version, author, idempotency_key, fence)
        return Entry(key, None, 0, done.seq, done.author, done.ts)

    def _commit(
        self,
        ops: list[Op],
        key: str,
        expect_version: int | None,
        author: str | None,
        idem: str | None,
        fence: Fence | HasFence | None = None,
    ) -> Committed:
        if expect_version is not None and (type(expect_version) is not int or expect_version < 0):
            raise InvalidValue(f"expect_version must be an int >= 0, not {expect_version!r}")
        expect = {} if expect_version is None else {key: expect_version}
        fences = None if fence is None else dict([as_fence(fence)])
        return self.commit(ops, expect=expect, author=author, idem=idem, fences=fences)

    def commit(
        self,
        ops: list[Op],
        *,
        expect: dict[str, int],
        author: str | None = None,
        idem: str | None = None,
        fences: dict[str, int] | None = None,
    ) -> Committed:
        """Append one record of `ops` if every key of `expect` is at its version and every key of
        `fences` has its latest change at that seq: the seam that `transaction()` builds on; most
        callers want `write`. Each op's value must come from `codec.encode_value` (its keys and ops
        are checked here, its bytes are not)."""
        for op in ops:
            validate_key(op.key)
            if op.op not in (PUT, DELETE) or type(op.value) is not bytes:
                raise InvalidValue(f"not an op: {op!r}")
        self._check_writable()
        if self._closed:
            raise ReadOnlyBoard(str(self.path), "this handle is closed")
        who = self.author if author is None else _check_author(author)
        done = self.engine.commit(ops, expect, who, _check_idem(idem), fences, self.signer)
        if not done.duplicate:
            self._flusher.poke()
        return done

    def transaction(self, *, author: str | None = None, idempotency_key: str | None = None) -> Transaction:
        """Several puts and deletes as ONE record with one seq: all of them or none.

        >>> with board.transaction() as tx:
        ...     balance = tx.read("accounts/a", 0)   # the commit requires it unchanged since
        ...     tx.write("accounts/a", balance - 5)
        ...     tx.write("accounts/b", tx.read("accounts/b", 0) + 5)
        ...     tx.expect("accounts/lock", 0)        # ...and this key absent

        Committed when the block ends without an exception (`VersionConflict` naming the key if a
        condition fails: nothing is written); `tx.entries` then holds the entries it made.
        """
        from .transaction import Transaction

        return Transaction(self, author=author, idempotency_key=idempotency_key)

    # -- reading (never takes the writer lock) -------------------------------------------------------

    def get(self, key: str, *, at: int | None = None) -> Entry | None:
        """The key's latest entry (or, with `at`, its entry just after that seq), or None."""
        if at is not None:
            validate_key(key)
            from .core.history import value_at

            event = value_at(self.engine, key, at)
            return None if event is None else event.to_entry()
        slot = self._live_slot(key)
        return None if slot is None else _entry(key, slot)

    def read(self, key: str, default: Any = None, *, at: int | None = None) -> Any:
        """The key's latest value (a fresh copy), or `default`. With `at=SEQ`: its value just after
        that seq, from the retained history and the archive (`Compacted` where that history is gone)."""
        if at is not None:
            found = self.get(key, at=at)
            return default if found is None else found.value
        slot = self._live_slot(key)
        return default if slot is None else _codec.decode(slot.value)

    def _live_slot(self, key: str) -> Slot | None:
        engine = self.engine
        with engine.mutex:
            slot = engine.refresh().slots.get(key) if type(key) is str else None
        if slot is None:
            validate_key(key)  # a miss may be a typo'd or invalid key: say so rather than return None
            return None
        return slot if slot.op == PUT else None

    def contracts(self) -> dict[str, Contract]:
        """The board's contracts as every writer enforces them now, by prefix (spec/TRUST.md 2).
        `blackboard.trust` sets and removes them."""
        rules = self.engine.rules()
        if rules.broken is not None:
            raise InvalidValue(f"the board's contracts are unusable: {rules.broken}", CONTRACTS_KEY)
        return dict(rules.contracts)

    def record(self, seq: int) -> LogRecord | None:
        """The record of `seq` as the log holds it (None if the current log file has none): for
        checking its signature (spec/TRUST.md 4). A bisection of the log, not a scan."""
        from .core.history import line_of

        found = line_of(self.engine, seq)
        return None if found is None else self._log_record(*found)

    def records(self) -> Iterator[LogRecord]:
        """Every record of the current log file, oldest first, as `record` gives them."""
        for rec, line, sealed in self.engine.scan_lines():
            yield self._log_record(rec, line, sealed)

    def _log_record(self, rec: dict[str, Any], line: bytes, sealed: bool) -> LogRecord:
        body = signed_bytes(line, rec["sig"], sealed=sealed) if "sig" in rec else None
        return LogRecord(rec, None if body is None else signature_message(self.engine.board_id, body))

    def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with `prefix` (a plain string prefix), in key order."""
        validate_prefix(prefix)
        with self.engine.mutex:
            return self.engine.refresh().keys(prefix)

    def _live_slots(self, prefix: str) -> tuple[list[str], list[Slot]]:
        validate_prefix(prefix)
        with self.engine.mutex:
            index = self.engine.refresh()
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
        keys, slots = self._live_slots(prefix)
        return (_entry(key, slot) for key, slot in zip(keys, slots, strict=True))

    def snapshot(self, prefix: str = "") -> tuple[int, list[Entry]]:
        """The live entries starting with `prefix`, in key order, and the seq they are exact at: a
        watch from that seq goes on from them with no gap and no repeat (the web view's page)."""
        validate_prefix(prefix)
        with self.engine.mutex:  # one refresh for both: a write between two would skew them
            index = self.engine.refresh()
            seq, keys = index.last_seq, index.keys(prefix)
            slots = [index.slots[k] for k in keys]
        return seq, [_entry(key, slot) for key, slot in zip(keys, slots, strict=True)]

    def blame(self, prefix: str = "") -> list[Event]:
        """Who last changed each key starting with `prefix`, when, at which seq: the latest event of
        every key the log still knows, deletes included (a deleted key's event is its delete), in
        key order."""
        validate_prefix(prefix)
        with self.engine.mutex:
            slots = self.engine.refresh().slots
            # Deletes only while their record is certainly in the log (after the compacted prefix):
            # older ones may be gone (compaction), and every handle must answer alike.
            through = self.engine.index.compacted_through
            found = sorted(
                (k, s) for k, s in slots.items() if k.startswith(prefix) and (s.op == PUT or s.seq > through)
            )
        return [
            Event(
                s.seq,
                "put" if s.op == PUT else "delete",
                k,
                _codec.decode(s.value),
                s.version,
                s.author,
                s.ts,
                txn=s.txn,
            )
            for k, s in found
        ]

    def history(self, key: str, *, all: bool = False) -> list[Event]:
        """Every retained event of `key`, oldest first, deletes included.

        Compaction keeps only the latest state of each key; with `all=True` the history that
        `compact(archive=True)` moved to archive/ is included.
        """
        validate_key(key)
        from .core.history import history

        return history(self.engine, key, include_archive=all)

    def tail(self, count: int = 10) -> list[Event]:
        """The last `count` events of the log, oldest first."""
        from .core.history import tail

        return tail(self.engine, count)

    # -- entry files and the checkpoint --------------------------------------------------------------

    def flush(self) -> int:
        """Bring entry files up to the log now (writers do it in the background). Returns files changed."""
        self._check_writable()
        from .core.entries import materialize

        return materialize(self.engine.layout, self.engine.snapshot)

    def _flush_once(self) -> float:
        """One background batch: entry files, the checkpoint, a compaction if due. Returns the
        seconds to pace the next batch by (the compaction's are not counted)."""
        started = time.monotonic()
        try:
            self.flush()
            self._save_checkpoint()
        except Exception as exc:  # keep the thread alive: the next batch retries from the watermark
            self.flush_error = exc
            self._flusher.retry_later()  # even if nothing is written meanwhile (room may be freed)
            warn("%s: could not update entry files or the checkpoint: %s", self.path, exc)
            return time.monotonic() - started
        spent = time.monotonic() - started
        try:
            self._maybe_compact()
            self.flush_error = None
        except Exception as exc:
            self.flush_error = exc
            warn("%s: could not compact: %s", self.path, exc)
        return spent

    def _save_checkpoint(self) -> None:
        """Write a checkpoint once enough changes came after the last one (writers' batches, and any
        handle's close: a reader that replayed a long log saves the next process that work)."""
        engine = self.engine
        with engine.mutex:
            if engine.since_checkpoint < max(CHECKPOINT_EVERY, len(engine.index.slots) // 4):
                return
            # Of the log file at the path now: after a compaction, a checkpoint of the file it replaced
            # would overwrite the one compaction wrote for the new file, and help nobody.
            try:
                index = engine.refresh()
            except (BlackboardError, OSError):
                return  # not the moment (a corrupt record, a read-only view): the next batch tries again
            header = engine.log.header
            if engine.log.fd < 0 or header is None:
                return
            started = time.perf_counter()
            offset = engine.log.offset
            last_line = _checkpoint.line_ending_at(engine.log, offset)
            view = _checkpoint.View(index)  # encoded outside the mutex: writers need it meanwhile
            engine.since_checkpoint = 0
        data = _checkpoint.encode(view, header.line, offset, last_line)
        size = _checkpoint.save(engine.layout, data)
        if size:
            self.checkpoint_bytes, self.checkpoint_seconds = size, time.perf_counter() - started

    # -- watching (blackboard.core.watch) ------------------------------------------------------------

    def watch(
        self,
        prefix: str = "",
        *,
        key: str | None = None,
        since: int | None = None,
        cursor: str | None = None,
        timeout: float | None = None,
        poll: bool | None = None,
        poll_interval: float | None = None,
    ) -> Watcher:
        """Iterate over every event whose key starts with `prefix`, in seq order, each once.

        `key="responses/r1"` instead: the events of that one key only (not `responses/r10`).
        `since=None`: from the next change; `since=N`: replay every event after seq N, then live.
        `cursor="name"`: resume where the consumer of that name stopped (kept in the board).
        `timeout`: stop after that many idle seconds. `poll=True` (or BLACKBOARD_POLL=1) polls the
        log every `poll_interval` seconds instead of waiting for notifications (NFS, SMB).

        >>> for event in board.watch("research_request/", cursor="researcher"):
        ...     board.write(f"research_results/{event.key.split('/')[-1]}", work(event.value))
        """
        from .core.watch import Watcher

        return Watcher(
            self.engine,
            prefix,
            key=key,
            since=since,
            cursor=cursor,
            timeout=timeout,
            poll=poll,
            poll_interval=poll_interval,
        )

    def awatch(
        self,
        prefix: str = "",
        *,
        key: str | None = None,
        since: int | None = None,
        cursor: str | None = None,
        timeout: float | None = None,
        poll: bool | None = None,
        poll_interval: float | None = None,
    ) -> AsyncIterator[Event]:
        """`watch` for asyncio: `async for event in board.awatch("tasks/"): ...`"""
        from .core.watch import awatch

        return awatch(
            self.engine,
            prefix,
            key=key,
            since=since,
            cursor=cursor,
            timeout=timeout,
            poll=poll,
            poll_interval=poll_interval,
        )

    def subscribe(
        self,
        prefix: str,
        callback: Callable[[Event], Any],
        *,
        key: str | None = None,
        since: int | None = None,
        cursor: str | None = None,
        poll: bool | None = None,
        poll_interval: float | None = None,
    ) -> Subscription:
        """Call `callback(event)` for every event of `prefix` from a background thread until closed.

        A callback that raises does not end the subscription: see `dead_letters()`. `key=` (with
        prefix "") follows that one key only.
        """
        from .core.watch import Subscription

        return Subscription(
            self.engine, prefix, callback, key=key, since=since, cursor=cursor, poll=poll, poll_interval=poll_interval
        )

    def cursors(self) -> dict[str, int]:
        """Every named consumer position: name -> the last seq it finished with."""
        from .core import cursors as _cursors

        return _cursors.list_all(self.engine.layout)

    def reset_cursor(self, name: str, seq: int | None = None) -> None:
        """Move cursor `name` to `seq`, or delete it (None) so that its consumer starts afresh."""
        from .core import cursors as _cursors

        self._check_writable()
        _cursors.reset(self.engine.layout, name, seq)

    def agent(self, name: str, **options: Any) -> Agent:
        """Act as agent `name` (spec/AGENTS.md): `with board.agent("atlas", capabilities=["search"],
        ttl=30) as me:` registers it, signs life in the background and leaves at the end; `me.send`,
        `me.inbox`, `me.request`, `me.call`, ... The agents layer sits above the board and uses its
        public API only; this is its door."""
        from .agents import Agent

        return Agent(self, name, **options)

    def lease(self, name: str, *, ttl: float, holder: str | None = None, wait: float = 0.0) -> Lease:
        """An exclusive lease on `name` (spec/WORK.md): `with board.lease("deploy", ttl=30) as lease:`
        claims it (waiting up to `wait` s, else `Held`), renews it in the background, releases it at
        the end; `board.write(k, v, fence=lease)` is refused once it was granted to another. `holder`:
        an agent name (default: BLACKBOARD_AGENT, else this host and pid)."""
        from .agents import agent_from_env, process_name
        from .work import Lease

        who = holder or agent_from_env() or process_name()
        return Lease(self, name, who, ttl=ttl, wait=wait)

    def mark_seen(self, name: str) -> None:
        """Record that `name` (an agent, a consumer) is alive now, without a log record: the mtime of
        `seen/<name>` (spec/AGENTS.md). Works on a read-only handle of a writable board."""
        from .core import seen

        seen.mark(self.engine.layout, name)

    def last_seen(self) -> dict[str, float]:
        """name -> when `mark_seen(name)` was last called (seconds since the epoch, the file's mtime)."""
        from .core import seen

        return seen.last_seen(self.engine.layout)

    def record_dead_letter(
        self, event: Event, error: BaseException | str, *, prefix: str = "", details: dict[str, Any] | None = None
    ) -> bool:
        """Append `event` and why its handling failed to deadletter.jsonl, as a subscription does for
        a callback that raised. `details` adds fields. False if it could not be written (logged)."""
        from .core.watch import record_dead_letter

        return record_dead_letter(self.engine.layout, prefix, event, error, details)

    def dead_letters(self) -> list[dict[str, Any]]:
        """Events whose subscription callback raised, with the error (from deadletter.jsonl)."""
        from .core.watch import read_dead_letters

        return read_dead_letters(self.engine.layout)

    # -- compaction and maintenance ------------------------------------------------------------------

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
        return compact(self.engine, retention=retention, archive=archive, wait=wait, progress=progress)

    def stats(self) -> dict[str, Any]:
        """Keys, events and bytes of the log, its dead-record ratio, seqs, archive, checkpoint, cursors."""
        from .core.maintain import stats

        return {**stats(self.engine), "cursors": len(self.cursors())}

    def _maybe_compact(self) -> None:
        """Writers compact opportunistically when the board says so (compact_at_bytes), and again only
        once the log has doubled since: records kept for their idempotency keys count as dead, and a
        compaction that can remove little must not run at every batch."""
        threshold = self.config.compact_at_bytes
        if threshold is None or self.engine.log.offset < max(threshold, 2 * self._compacted_to):
            return
        from .core.compact import compact, needs_compaction

        if needs_compaction(self.engine):
            report = compact(self.engine, wait=False)
            if report.skipped is None or report.skipped.startswith("nothing"):
                self._compacted_to = report.bytes_after

    def unlock(self, *, force: bool = False) -> list[Claim]:
        """The soft writer lock's claims (spec 9.1), each broken if its owner is provably gone, or
        with `force` whatever its owner: only once a crashed host's writer is known to be dead (a
        live holder would then write beside the next one). A flock board has none: the kernel drops
        a flock when its holder exits."""
        lock = self.engine.lock
        return lock.unlock(force=force) if isinstance(lock, SoftLock) else []

    def check(self) -> Report:
        """Compare entry files and the watermark with the log; report a torn log tail. Changes nothing,
        and works on a board this process cannot write (a read-only mount, another user's board).

        Keys changed after the watermark are pending for a background flush, not inconsistent.
        `report.details()` gives each problem's key, seq and (when known) line of the log.

        >>> report = board.check()
        >>> report.ok or report.problems()
        True
        """
        from .core.maintain import check

        return check(self.engine, read_only=self.read_only)

    def repair(self) -> RepairReport:
        """Take a damaged board back to a consistent, usable state (spec 12.1): damaged records go to
        `quarantine/` and the log goes on after the highest seq any trace shows, a torn tail is cut,
        entry files are rebuilt from the log. On a healthy board it only checks."""
        from .core.repair import repair

        self._check_writable()
        return repair(self.engine)


def _release(engine: Engine, flusher: Flusher) -> None:
    """Close a board's files (close(), or the finalizer of a Board nobody closed): stop its flusher,
    then the engine's fds."""
    flusher.stop()
    engine.close()


_open_boards: weakref.WeakSet[Board] = weakref.WeakSet()


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children
    """Locks held by another thread of the parent at fork() stay held forever in the child: renew them.

    (fds and threads are renewed lazily: each object checks os.getpid() before using its own.)
    """
    import threading

    for board in list(_open_boards):
        board.engine.mutex = threading.RLock()
        board._flusher.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_open_boards() -> None:
    """A process that exits without closing its handles still leaves entry files up to date."""
    for board in list(_open_boards):
        try:
            board.close()
        except Exception as exc:
            warn("%s: %s", board.path, exc)

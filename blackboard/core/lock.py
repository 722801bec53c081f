"""The writer lock: one process (and one thread in it) at a time appends to the log.

Two strategies, recorded in board.json so every process uses the same one:

- `flock` (local disks): `fcntl.flock` on the `lock` file. ~1 us, released by the kernel when a
  process dies, so a crash never leaves a stale lock. filelock's `FileLock` is the same flock under
  ~125 us of bookkeeping per acquire+release, which would be most of the cost of a write here, so
  we take the flock directly.
- `soft` (NFS, SMB, FUSE): a token file moved by rename (`softlock.py`), because flock may exclude
  nothing across clients. Its holder's identity (host, pid, start time) is what this module judges:
  a holder of this host is gone when the boot differs, or its pid is gone, a zombie, or another
  process (start time) (spec section 9.1).

Both follow filelock's template (`BaseFileLock` owns the policy, each backend only `_acquire` and
`_release`): `LockPolicy` owns the thread lock, the deadline and the wait, fork safety, the
`LockTimeout` and `close()`; a backend makes one non-blocking attempt (`_acquire() -> bool`),
releases (`_release()`), and opens and closes what it keeps between acquisitions (`_open()`,
`_close()`: filelock opens the lock file on every acquire, which we cannot afford for flock).
The races each part prevents:

- the thread lock: a flock belongs to an open file description, which the threads of a process
  share, so a second thread's flock "succeeds" on a description its sibling already locked;
- the pid check: after `fork()` the child's fd is the parent's description (its flock is the
  parent's), and filelock refuses an instance inherited across a fork: the child opens its own;
- the after-fork hook: a parent thread that held the thread lock at fork() does not exist in the
  child, which would wait on that lock forever; and the child's copy of the parent's fd would keep
  the parent's flock alive after the parent died (the kernel drops it at the last close), so the
  child closes it at once, while it is certainly still the inherited fd;
- `close()` takes the thread lock: closing the fd under a write in flight in another thread would
  drop its flock mid-append.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import random
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from xxhash import xxh3_64_hexdigest

from ..errors import LockTimeout, open_or_read_only


class LockPolicy(ABC):
    """What both writer locks do the same way; subclasses implement one attempt and the release."""

    #: Waiting polls with exponential backoff from the first delay to the last: holds are ~10 us,
    #: so start fast, and back off so that a waiter burns no core.
    _first_poll: ClassVar[float] = 0.00002
    _max_poll: ClassVar[float] = 0.001

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._pid = -1  # the process whose resources the backend holds (-1: none, or closed)
        _live_locks.add(self)

    def acquire(self, timeout: float) -> None:
        """Take the lock within `timeout` seconds, else raise `LockTimeout` naming the lock's path."""
        deadline = time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=max(timeout, 0)):
            raise LockTimeout(str(self.path), timeout, self._holder())
        try:
            if self._pid != os.getpid():  # first use, after close(), or a forked child: our own fd/claim
                self._open()
                self._pid = os.getpid()
            delay = self._first_poll
            while not self._acquire():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeout(str(self.path), timeout, self._holder())
                # Jitter: waiters that started together drift apart rather than retry in lockstep
                # (filelock jitters for this).
                time.sleep(min(delay * random.uniform(0.5, 1.0), remaining))
                delay = min(delay * 2, self._max_poll)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        try:
            self._release()
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        """Drop the fd or claim object; waits for a holder in another thread. acquire() reopens."""
        with self._thread_lock:
            if self._pid == os.getpid():
                self._close()
            self._pid = -1

    def _forget_parent(self) -> None:
        """In a forked child, right after fork: what the parent held is not ours (see the module)."""
        self._thread_lock = threading.Lock()
        if self._pid != -1:
            with contextlib.suppress(OSError):  # best effort: a hook must not fail the fork
                self._close()
            self._pid = -1

    def _holder(self) -> str | None:
        """Who holds the lock, for the timeout's message, if this backend can tell."""
        return None

    @abstractmethod
    def _open(self) -> None:
        """Set up what attempts need in this process (the fd, the soft lock's identity)."""

    @abstractmethod
    def _close(self) -> None:
        """Drop what `_open` set up; the lock is not held."""

    @abstractmethod
    def _acquire(self) -> bool:
        """One non-blocking attempt: True if the lock is now ours."""

    @abstractmethod
    def _release(self) -> None:
        """Give up the lock, which we hold."""


class FlockLock(LockPolicy):
    """Exclusive `flock` on a file that is never deleted or replaced (contenders must share an inode)."""

    def __init__(self, path: Path) -> None:
        self._fd = -1
        super().__init__(path)

    def _open(self) -> None:
        self._fd = open_or_read_only(str(self.path), os.O_RDWR | os.O_CREAT, "the writer lock for writing")

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


# -- who owns a claim, and whether it is gone (spec section 9.1) ------------------------------------------
# This process's identity as a soft lock's token names it (host name, PID namespace, boot, start
# ticks): the same scheme as filelock's claims, so that a process is named alike by both.

_INITIAL_PID_NAMESPACE = 0xEFFFFFFC  # PROC_PID_INIT_INO: the inode of the host's PID namespace
_INITIAL_TIME_NAMESPACE = 0xEFFFFFFA  # PROC_TIME_INIT_INO
_HOST_VERBATIM = frozenset(range(0x21, 0x7F)) - {ord("?")}
_LOW_64 = (1 << 64) - 1


def this_host() -> str:
    """This host as a claim names it: the host name (bytes outside printable ASCII, and `?`, as
    `?xx`), plus `?pidns-<inode hex>` in a PID namespace other than the host's, where pids mean
    something else; names over 253 characters end in a digest."""
    import socket  # here, not at the top: a read (a CLI command's start) never needs it

    name = "".join(
        chr(byte) if byte in _HOST_VERBATIM else f"?{byte:02x}"
        for byte in socket.gethostname().encode("utf-8", "surrogateescape")
    )
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = _INITIAL_PID_NAMESPACE  # no procfs (not Linux), or a kernel before 3.8
    if namespace != _INITIAL_PID_NAMESPACE:
        name += f"?pidns-{namespace:x}"
    if len(name) > 253:
        import hashlib

        name = f"{name[:244]}-{hashlib.sha256(name[244:].encode()).hexdigest()[:8]}"
    return name or "?"


@functools.cache
def host_tag() -> str:
    """This host (and PID namespace) in the names of temp files, 8 hex digits: processes of two hosts
    sharing a board have the same PIDs, and only a file of our own host can be known to be a dead
    process's (another host's cleanup would delete a file being written)."""
    # No import here: a process that dropped its privileges may no longer reach the standard library
    # (xxhash is loaded with the record format).
    return xxh3_64_hexdigest(this_host().encode())[:8]


@functools.cache
def boot_id() -> int:
    """This boot's id as an integer, or 0 if unknown (a file mounted over it may carry another's)."""
    path = "/proc/sys/kernel/random/boot_id"
    try:
        if os.stat(path).st_dev != os.stat("/proc").st_dev:
            return 0
        with open("/proc/self/mountinfo", "rb") as mounts:
            if any(line.split(b" ", 5)[4] == path.encode() for line in mounts):
                return 0
        with open(path, encoding="ascii") as file:
            return int(file.read().strip().replace("-", ""), 16)
    except (OSError, ValueError, IndexError):
        return 0


def _procfs_is_ours() -> bool:
    """Whether /proc/PID describes pid PID of our namespace with start times as its owner saw them:
    a procfs of another PID namespace names other processes, a shifted time namespace other times."""
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return False
        with open("/proc/self/status", "rb") as status:  # NSpid lists one pid per nested namespace
            if any(line.startswith(b"NSpid:") and len(line.split()) != 2 for line in status):
                return False
    except OSError:
        return False  # no procfs (not Linux): nothing to read start times from
    try:
        return os.stat("/proc/thread-self/ns/time").st_ino == _INITIAL_TIME_NAMESPACE
    except FileNotFoundError:
        return True  # a kernel without time namespaces
    except OSError:
        return False


def _process(pid: int) -> tuple[int, bool] | None:
    """(start time in clock ticks since boot, is a zombie) of a process, or None if unknown."""
    if not _procfs_is_ours():
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
        # The command name may hold spaces and parentheses: count fields after the last ')'.
        fields = stat[stat.rfind(b")") + 1 :].split()
        state, start = fields[0], int(fields[19])  # fields 3 and 22 of proc_pid_stat(5)
        with open(f"/proc/{pid}/status", "rb") as file:
            threads = next((line.split()[1] for line in file if line.startswith(b"Threads:")), b"")
    except (OSError, ValueError, IndexError):
        return None
    # A zombie thread-group leader whose other threads still run is alive: only Threads: 1 is dead.
    return start, state in (b"Z", b"X") and threads == b"1"


def start_token(pid: int) -> int | None:
    """A process's start as a claim records it: (boot id << 64) | start ticks; None if unknown."""
    seen = _process(pid)
    return None if seen is None else boot_id() << 64 | seen[0]


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # EPERM: it exists, another user's
    return True


def claim_is_stale(pid: int, host: str, start: int | None) -> bool:
    """Whether the process that wrote a claim (its pid, host and start token) is provably gone.

    Only proof counts: a claim of another host, or one we cannot judge, is held (fail closed).
    """
    if host != this_host():
        return False  # its pids are not ours to check: the operator's runbook (spec section 9)
    if start is not None and (claimed_boot := start >> 64) and (ours := boot_id()) and claimed_boot != ours:
        return True  # written before this host rebooted: start ticks of another boot prove nothing
    if not _pid_exists(pid):
        return True
    seen = _process(pid)
    if seen is None:
        return False
    ticks, zombie = seen
    if zombie:
        return True  # killed, not yet reaped: whoever wrote the claim runs no more under this pid
    # A live pid with another start time is a recycled pid: the claim's writer is gone.
    return start is not None and start & _LOW_64 != ticks


#: Every writer lock of this process, for the after-fork hook.
_live_locks: weakref.WeakSet[LockPolicy] = weakref.WeakSet()


def _after_fork_in_child() -> None:  # runs in forked children, before any other code of theirs
    for lock in list(_live_locks):
        lock._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def side_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on one of the board's side locks (materialize.lock, compact.lock).

    Yields whether it was taken (always, when `wait`). Blocking is right for these: only background
    batches, repairs and compactions wait on them, never a writer. It is a flock, which a process
    that may not write the board can still take (flock needs no write access), so that `check` works
    for it; on a soft board (its `lock.d/` exists) also a soft lock (`PATH.d/`), since flock may not
    exclude across its clients. Both, not either: a process that took the flock alone before
    `lock.d/` appeared (a board of an older release) still excludes one that takes both.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        if not os.path.isdir(path.parent / "lock.d"):
            yield True
            return
        from .softlock import SoftLock

        soft = SoftLock(path)
        try:
            soft.acquire(SIDE_LOCK_WAIT if wait else 0.0)
        except LockTimeout:
            if wait:
                raise
            yield False
            return
        except PermissionError:  # ReadOnlyBoard: a reader (check) that may not move the token
            yield True
            return
        try:
            yield True
        finally:
            soft.release()
    finally:
        os.close(fd)  # closing drops the flock


#: How long a soft side lock is waited for (a compaction holds one for as long as it runs).
SIDE_LOCK_WAIT = 3600.0

"""The writer lock: one process (and one thread in it) at a time appends to the log.

Two strategies, recorded in board.json so every process uses the same one:

- `flock` (local disks): `fcntl.flock` on the `lock` file. ~1 us, released by the kernel when a
  process dies, so a crash never leaves a stale lock. filelock's `FileLock` is the same flock under
  ~125 us of bookkeeping per acquire+release, which would be most of the cost of a write here, so
  we take the flock directly.
- `soft` (NFS, SMB): filelock's `StrictSoftFileLock`, an exclusively created claim file, because
  flock may exclude nothing across NFS clients. A claim left by a crashed host is never broken by
  age; an operator breaks it (`blackboard check` names it).

Both follow filelock's template (`BaseFileLock` owns the policy, each backend only `_acquire` and
`_release`): `_LockPolicy` owns the thread lock, the deadline and the wait, fork safety, the
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
import os
import random
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..errors import LockTimeout, ReadOnlyBoard, open_or_read_only

if TYPE_CHECKING:
    import filelock


class _LockPolicy(ABC):
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
            raise LockTimeout(str(self.path), timeout)
        try:
            if self._pid != os.getpid():  # first use, after close(), or a forked child: our own fd/claim
                self._open()
                self._pid = os.getpid()
            delay = self._first_poll
            while not self._acquire():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeout(str(self.path), timeout)
                # Jitter: waiters that started together drift apart rather than retry in lockstep
                # (for the soft lock each collision costs claim files; filelock jitters for this).
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

    @abstractmethod
    def _open(self) -> None:
        """Set up what attempts need in this process (the fd, the filelock object)."""

    @abstractmethod
    def _close(self) -> None:
        """Drop what `_open` set up; the lock is not held."""

    @abstractmethod
    def _acquire(self) -> bool:
        """One non-blocking attempt: True if the lock is now ours."""

    @abstractmethod
    def _release(self) -> None:
        """Give up the lock, which we hold."""


class FlockLock(_LockPolicy):
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


class SoftLock(_LockPolicy):
    """filelock's strict soft lock, for filesystems where flock cannot be trusted."""

    # An attempt scans the claim directory and publishes claim files (round trips on NFS): poll
    # more gently, up to filelock's own backoff cap for this lock.
    _first_poll = 0.001
    _max_poll = 0.05

    def __init__(self, path: Path) -> None:
        self._lock: filelock.StrictSoftFileLock | None = None
        self._timeout: type[Exception] = TimeoutError  # filelock.Timeout, once imported
        super().__init__(path)

    def _open(self) -> None:
        import filelock

        # Not thread-local: our thread lock already admits one thread, and the hold belongs to this
        # object, not to the thread that happened to take it.
        self._lock = filelock.StrictSoftFileLock(self.path, thread_local=False)
        self._timeout = filelock.Timeout

    def _close(self) -> None:
        # In a forked child this drops the parent's object untouched: filelock does nothing for an
        # instance inherited across a fork, so the parent's claim stays the parent's.
        self._lock = None

    def _acquire(self) -> bool:
        assert self._lock is not None
        try:
            self._lock.acquire(timeout=0)  # one attempt: filelock's Timeout if a claim is in the way
        except self._timeout:
            return False
        except PermissionError:
            raise ReadOnlyBoard(str(self.path.parent), "cannot create the lock claim") from None
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise ReadOnlyBoard(str(self.path.parent), "read-only filesystem") from None
            raise
        return True

    def _release(self) -> None:
        assert self._lock is not None
        self._lock.release()


#: Every writer lock of this process, for the after-fork hook.
_live_locks: weakref.WeakSet[_LockPolicy] = weakref.WeakSet()


def _after_fork_in_child() -> None:  # runs in forked children, before any other code of theirs
    for lock in list(_live_locks):
        lock._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def side_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive flock on one of the board's side locks (materialize.lock, compact.lock).

    Yields whether it was taken (always, when `wait`). Blocking is right for these: only background
    batches, repairs and compactions wait on them, never a writer. A process that may not write the
    board can still take one (flock needs no write access), so that `check` works for it.
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
        yield True
    finally:
        os.close(fd)  # closing drops the flock

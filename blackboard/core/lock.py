"""The writer lock: one process (and one thread in it) at a time appends to the log.

Two strategies, recorded in board.json so every process uses the same one:

- `flock` (local disks): `fcntl.flock` on the `lock` file. ~1 us, released by the kernel when a
  process dies, so a crash never leaves a stale lock. filelock's `FileLock` is the same flock under
  ~125 us of bookkeeping per acquire+release, which would be most of the cost of a write here, so
  we take the flock directly.
- `soft` (NFS, SMB): filelock's `StrictSoftFileLock`, an exclusively created claim file, because
  flock may exclude nothing across NFS clients. A claim left by a crashed host is never broken by
  age; an operator breaks it (`blackboard check` names it).

flock locks belong to an open file description, which threads share, so a `threading.Lock` is
taken first; after a fork the child opens its own description (the parent's would be shared).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ..errors import LockTimeout, ReadOnlyBoard, open_or_read_only

#: Waiting polls: start fast (holds are ~10 us), back off to this, so a waiter burns no core.
_MAX_POLL = 0.001


class WriterLock(Protocol):
    path: Path

    def acquire(self, timeout: float) -> None: ...

    def release(self) -> None: ...


class FlockLock:
    """Exclusive `flock` on a file that is never deleted or replaced (contenders must share an inode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd = -1
        self._pid = -1

    def _open(self) -> int:
        if self._pid != os.getpid():  # first use, or we are a forked child: never share the parent's fd
            self._fd = open_or_read_only(str(self.path), os.O_RDWR | os.O_CREAT, "the writer lock for writing")
            self._pid = os.getpid()
        return self._fd

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=max(timeout, 0)):
            raise LockTimeout(str(self.path), timeout)
        try:
            fd = self._open()
            delay = 0.00002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    pass
                if time.monotonic() >= deadline:
                    raise LockTimeout(str(self.path), timeout)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_POLL)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        # Wait for a write in flight in another thread: closing the fd would drop its flock mid-append.
        with self._thread_lock:
            if self._pid == os.getpid() and self._fd >= 0:
                os.close(self._fd)
            self._fd, self._pid = -1, -1


class SoftLock:
    """filelock's strict soft lock, for filesystems where flock cannot be trusted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._lock: object = None
        self._pid = -1

    def acquire(self, timeout: float) -> None:
        import filelock

        if not self._thread_lock.acquire(timeout=max(timeout, 0)):
            raise LockTimeout(str(self.path), timeout)
        try:
            if self._pid != os.getpid():
                self._lock = filelock.StrictSoftFileLock(self.path, poll_interval=_MAX_POLL)
                self._pid = os.getpid()
            assert isinstance(self._lock, filelock.StrictSoftFileLock)
            try:
                self._lock.acquire(timeout=timeout)
            except filelock.Timeout:
                raise LockTimeout(str(self.path), timeout) from None
            except PermissionError:
                raise ReadOnlyBoard(str(self.path.parent), "cannot create the lock claim") from None
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        import filelock

        try:
            assert isinstance(self._lock, filelock.StrictSoftFileLock)
            self._lock.release()
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:  # as FlockLock.close: never drop a claim a writer still relies on
            self._lock, self._pid = None, -1


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

"""The background flusher of a writing handle: entry files, the checkpoint and opportunistic
compaction follow the log in paced batches, off the writing thread's path.

A replace costs ~1.2 ms on our disk against ~20 us for a write, so a batch starts `interval` after a
write (coalescing what arrives meanwhile) and batches are paced to take at most ~1/(1 + PACING) of
the time: the batch shares the process (and its GIL) with the writers. The thread holds its job only
through a weak reference, so a handle nobody closed can still be collected.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable

#: A batch is followed by a pause of at least this many times its duration.
PACING = 10.0
#: After a failed batch (a full disk) the next comes this long after, written to or not, the pause
#: doubling per failure up to RETRY_MAX: the entry files catch up once room is freed with no write
#: needed, and a disk that stays full costs a warning per pause, not one per batch of writes.
RETRY_MIN = 1.0
RETRY_MAX = 60.0


class Flusher:
    """Runs `job()` in a daemon thread after each `poke()`, paced; `stop()` ends it."""

    def __init__(self, job: Callable[[], float | None], interval: float) -> None:
        self._job = weakref.WeakMethod(job)  # a bound method of the board
        self.interval = interval
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._mutex = threading.Lock()
        self.last_batch = 0.0
        #: seconds until a retry of the failed last batch (0: it did not fail)
        self.retry_in = 0.0
        self._failed = False

    def poke(self) -> None:
        """Something changed: run a batch soon (starting the thread on first use, and in a fork)."""
        if self._pid != os.getpid():  # first write, or a forked child: threads do not survive fork
            with self._mutex:  # two threads' first writes must start one thread, not two
                if self._pid != os.getpid():
                    self._dirty = threading.Event()
                    self._thread = threading.Thread(
                        target=_loop, args=(self, self._dirty, self._stop), name="blackboard-flush", daemon=True
                    )
                    self._thread.start()
                    self._pid = os.getpid()
        if not self._dirty.is_set():  # set() takes a lock: most writes land while it is set already
            self._dirty.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._pid == os.getpid()

    def stop(self) -> None:
        """End the thread after the batch in progress (if any), and wait for it in this process."""
        self._stop.set()
        self._dirty.set()
        if self._thread is not None and self._pid == os.getpid() and self._thread is not threading.current_thread():
            self._thread.join()

    def after_fork(self) -> None:
        self._mutex = threading.Lock()

    def retry_later(self) -> None:
        """Called by the job whose batch failed: run another after a pause even if nothing is poked."""
        self._failed = True

    def run_once(self) -> None:
        job = self._job()
        if job is None:
            return
        started = time.monotonic()
        self._failed = False
        paced = job()
        # The job may say how much of its time to pace by (an occasional compaction must not hold
        # entry files back for ten times its length).
        self.last_batch = time.monotonic() - started if paced is None else paced
        self.retry_in = min(RETRY_MAX, max(RETRY_MIN, 2 * self.retry_in)) if self._failed else 0.0


def _loop(flusher: Flusher, dirty: threading.Event, stop: threading.Event) -> None:
    while not stop.is_set():
        if flusher.retry_in:  # the last batch failed: the next comes after the pause, poked or not
            if stop.wait(flusher.retry_in):
                return
        else:
            dirty.wait()
        # Let more writes arrive (one file per key per batch), and pace batches.
        pause = max(flusher.interval, PACING * flusher.last_batch)
        # stop() sets stop before waking us: checking it after each wait is what keeps a stop that
        # lands during a batch from leaving this thread waiting forever.
        if stop.wait(pause):
            return
        dirty.clear()
        if flusher._job() is None:
            return
        flusher.run_once()

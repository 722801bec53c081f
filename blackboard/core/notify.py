"""Wake-ups when the log changes: one watchfiles watcher per board per process, fanned out in-process.

A wake-up is only a hint: every watcher reads the log from its own offset and seq, and re-checks on a
timer, so a lost notification (inotify queue overflow, NFS) costs latency, never an event. The board
directory is watched non-recursively: the log lives there, compaction renames a new log into place
there, and entry files and tmp/ (below it) raise no events. inotify instances are limited (128 per
user), hence one per process. watchfiles is tuned for latency: debounce 0, step 1 ms (its defaults
take ~80 ms per change) for ~5% of a core while idle.

We use watchfiles' public `watch()` generator, not its private `_rust_notify.RustNotify`. Measured on
one wake per append, 3 ms apart (2 vCPUs, ext4): p50 1.69 ms / p99 2.24 ms with RustNotify,
the same within noise through `watch()` (its per-batch cost, a set comprehension, is microseconds).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("blackboard")

Waker = Callable[[], None]

_STEP_MS = 1
_TIMEOUT_MS = 500
#: Seconds the watch outlives its last waiter (see `Hub.remove`).
LINGER = 2.0


class _StopEvent:
    """The `stop_event` handed to watchfiles: it asks `is_set()` once per step, from inside its wait.

    watchfiles creates its inotify watch lazily, on the generator's first `next()`, and only then
    waits, asking this object each step. So the first `is_set()` call proves the watch exists: only
    then may `Hub.add` return, else a write made between add() returning and the watch starting
    would raise no wake-up (costing that watcher a 250 ms re-check).
    """

    def __init__(self, stop: threading.Event, ready: threading.Event) -> None:
        self._stop = stop
        self._ready: threading.Event | None = ready

    def is_set(self) -> bool:
        if self._ready is not None:
            self._ready.set()
            self._ready = None
        return self._stop.is_set()


class Hub:
    """Runs watchfiles in a daemon thread while at least one waiter is registered (and `LINGER`
    seconds after the last one left)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._wakers: set[Waker] = set()
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed = False
        self.linger = LINGER

    def add(self, waker: Waker) -> bool:
        """Register a waker; False if notifications are unavailable here (poll instead)."""
        with self._mutex:
            if self.failed:
                return False
            self._wakers.add(waker)
            # A thread whose stop is set is on its way out: start a fresh one with its own stop event
            # rather than join it here (it may be waiting for this mutex).
            if self._thread is None or not self._thread.is_alive() or self._stop.is_set():
                self._stop = threading.Event()
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop, ready), name="blackboard-notify", daemon=True
                )
                self._thread.start()
                ready.wait()
            return not self.failed

    def remove(self, waker: Waker) -> None:
        with self._mutex:
            self._wakers.discard(waker)
            if not self._wakers:
                # Not at once: a process that waits again and again (an agent's request after
                # request, a queue consumer's take) would restart the watch each time, 0.5 ms per
                # wake-up and ~20 ms the first time. It lingers, then stops if nobody came back.
                timer = threading.Timer(self.linger, self._stop_if_idle, (self._stop,))
                timer.daemon = True
                timer.start()

    def _stop_if_idle(self, stop: threading.Event) -> None:
        with self._mutex:
            if not self._wakers:
                stop.set()  # this thread's own stop event: a newer thread is not ours to end

    def _run(self, stop: threading.Event, ready: threading.Event) -> None:
        try:
            import watchfiles

            changes = watchfiles.watch(
                self.root,
                watch_filter=None,  # every change: the log, and a compacted log renamed over it
                debounce=0,
                step=_STEP_MS,
                stop_event=_StopEvent(stop, ready),
                rust_timeout=_TIMEOUT_MS,
                # Explicit, so that WATCHFILES_* variables (force polling, debug prints) do not apply:
                # our own polling mode is the fallback, and it is chosen per watcher.
                debug=False,
                force_polling=False,
                raise_interrupt=False,
                recursive=False,
                ignore_permission_denied=False,
            )
            for _ in changes:
                with self._mutex:
                    wakers = list(self._wakers)
                for wake in wakers:
                    try:
                        wake()
                    except Exception as exc:  # one broken waiter must not end everyone's wake-ups
                        logger.warning("%s: a watcher's wake-up failed: %s", self.root, exc)
        except Exception as exc:  # EMFILE/ENOSPC (inotify limits), or watchfiles unusable here
            if not ready.is_set():
                logger.warning("%s: no change notifications (%s); polling the log instead", self.root, exc)
                self.failed = True
            else:  # the watch broke after it started: its watchers fall back on their re-check timer
                logger.warning("%s: change notifications stopped (%s)", self.root, exc)
        finally:
            ready.set()  # whatever happened: add() must never wait forever


class _Registry:
    """The hubs of this process, one per board directory."""

    def __init__(self) -> None:
        self.hubs: dict[Path, Hub] = {}
        self.mutex = threading.Lock()


_registry = _Registry()


def hub_for(root: Path) -> Hub:
    key = root.resolve()
    with _registry.mutex:
        hub = _registry.hubs.get(key)
        if hub is None:
            hub = _registry.hubs[key] = Hub(key)
        return hub


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children
    """The parent's notifier threads do not exist in a child, and their locks may be held: start afresh.

    Hubs that inherited watchers still point to get fresh locks too (their finalizers run at exit).
    """
    for hub in _registry.hubs.values():
        hub._mutex = threading.Lock()
        hub._wakers.clear()
    _registry.__init__()  # type: ignore[misc]


os.register_at_fork(after_in_child=_after_fork_in_child)

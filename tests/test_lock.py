"""The writer lock's policy (blackboard/core/lock.py), for both backends, across real processes.

One policy, two backends: exclusion between processes and between threads, a timeout that names the
lock's path, fork safety (a child never shares the parent's flock, nor waits on a thread lock that a
parent thread held at fork, nor keeps a dead parent's flock alive), and a close() that waits for a
holder in another thread. Children are spawned (they share nothing with the test but files), or
forked where fork itself is what is tested.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import pytest
from _workers import CTX, Spawn, join_ok, wait_until

from blackboard import LockTimeout, ReadOnlyBoard
from blackboard.core.lock import FlockLock
from blackboard.core.softlock import SoftLock

pytestmark = pytest.mark.timeout(120)

LockClass = type[FlockLock] | type[SoftLock]
BACKENDS: dict[str, tuple[LockClass, str]] = {"flock": (FlockLock, "lock"), "soft": (SoftLock, "lock")}


def make_lock(kind: str, board: str) -> FlockLock | SoftLock:
    cls, name = BACKENDS[kind]
    return cls(Path(board) / name)


@pytest.fixture(params=sorted(BACKENDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def held_in_thread(lock: FlockLock | SoftLock, hold: float) -> Iterator[list[float]]:
    """Hold `lock` in another thread for `hold` seconds; yields once it is held. Yields a list that
    receives the monotonic time of the release."""
    taken, released_at = threading.Event(), []

    def holder() -> None:
        lock.acquire(10)
        taken.set()
        time.sleep(hold)
        released_at.append(time.monotonic())
        lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    assert taken.wait(10)
    try:
        yield released_at
    finally:
        thread.join(30)


# -- exclusion ----------------------------------------------------------------------------------------


def _count_under_lock(kind: str, board: str, rounds: int, go: MpEvent, out: Queue[int]) -> None:
    """Two threads sharing one lock object each do `rounds` read-modify-writes of a counter file under
    it; reports how often a section found another one in progress (its O_EXCL marker existed)."""
    lock = make_lock(kind, board)
    counter, marker = Path(board) / "counter", Path(board) / "in-section"
    overlaps = [0]
    assert go.wait(60)

    def work() -> None:
        for _ in range(rounds):
            lock.acquire(60)
            try:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    overlaps[0] += 1
                n = int(counter.read_text())
                time.sleep(0.0002)  # widen the window in which a second holder would lose an update
                counter.write_text(str(n + 1))
                marker.unlink(missing_ok=True)
            finally:
                lock.release()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lock.close()
    out.put(overlaps[0])


def test_exclusion_between_processes_and_threads(tmp_path: Path, spawn: Spawn, kind: str) -> None:
    procs, rounds = (4, 150) if kind == "flock" else (3, 15)
    (tmp_path / "counter").write_text("0")
    go, out = CTX.Event(), CTX.Queue()
    children = [spawn(_count_under_lock, kind, str(tmp_path), rounds, go, out) for _ in range(procs)]
    go.set()
    overlaps = [out.get(timeout=100) for _ in children]
    for child in children:
        join_ok(child, 30)
    assert overlaps == [0] * procs
    assert int((tmp_path / "counter").read_text()) == procs * 2 * rounds  # no update lost


# -- timeouts -----------------------------------------------------------------------------------------


def _hold(kind: str, board: str, held: MpEvent, release: MpEvent) -> None:
    lock = make_lock(kind, board)
    lock.acquire(10)
    held.set()
    release.wait(60)
    lock.release()
    lock.close()


def test_timeout_names_the_lock_path(tmp_path: Path, spawn: Spawn, kind: str) -> None:
    lock = make_lock(kind, str(tmp_path))
    held, release = CTX.Event(), CTX.Event()
    holder = spawn(_hold, kind, str(tmp_path), held, release)
    assert held.wait(60)
    for timeout in (0.0, 0.3):
        start = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            lock.acquire(timeout)
        elapsed = time.monotonic() - start
        assert timeout <= elapsed < timeout + 1.0
        assert info.value.lock_path == str(lock.path) and info.value.timeout == timeout
        assert str(lock.path) in str(info.value)
    release.set()
    holder.join(30)
    lock.acquire(10)  # a timed-out acquire left nothing behind: the lock is free once released
    lock.release()
    lock.close()


def test_timeout_against_a_thread_of_this_process(tmp_path: Path, kind: str) -> None:
    lock = make_lock(kind, str(tmp_path))
    with held_in_thread(lock, 0.5):
        with pytest.raises(LockTimeout) as info:
            lock.acquire(0.1)
        assert info.value.lock_path == str(lock.path)
        lock.acquire(10)  # the holder thread releases after 0.5 s
        lock.release()
    lock.close()


# -- fork safety --------------------------------------------------------------------------------------


def _fork() -> int:
    with warnings.catch_warnings():  # 3.12+ warns about fork() in a process with threads: intended here
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def test_fork_child_takes_its_own_lock(tmp_path: Path, kind: str) -> None:
    """A thread holds the lock while the process forks. The child must not get it while the parent
    holds it (a shared flock description would let it in at once), and must get it once the parent
    releases (the parent thread's hold on the thread lock must not follow it into the child)."""
    lock = make_lock(kind, str(tmp_path))
    tried_r, tried_w = os.pipe()
    released_r, released_w = os.pipe()
    lock.acquire(1)  # used in the parent first: its fd / claim object exist at the fork
    lock.release()
    holding, let_go = threading.Event(), threading.Event()

    def holder() -> None:
        lock.acquire(10)
        holding.set()
        let_go.wait(30)
        lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(10)
    pid = _fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            try:
                lock.acquire(0.2)
                code = 3  # it got the lock the parent holds
            except LockTimeout:
                os.write(tried_w, b"x")
                os.read(released_r, 1)
                lock.acquire(10)
                lock.release()
                lock.close()
                code = 0
        except BaseException:
            code = 4
        finally:
            os._exit(code)
    try:
        assert os.read(tried_r, 1) == b"x", "the child got the lock while the parent held it"
    finally:
        let_go.set()
        thread.join(30)
        os.write(released_w, b"x")
        _, status = os.waitpid(pid, 0)
        for fd in (tried_r, tried_w, released_r, released_w):
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    lock.acquire(1)  # the parent's own lock object is untouched by the child's
    lock.release()
    lock.close()


def _hold_and_fork(board: str, conn: Connection) -> None:
    lock = FlockLock(Path(board) / "lock")
    lock.acquire(10)
    pid = _fork()
    if pid == 0:  # pragma: no cover - the grandchild: lives on after its parent is killed
        time.sleep(60)
        os._exit(0)
    conn.send(pid)
    time.sleep(60)


def test_fork_child_does_not_keep_a_dead_parents_flock(tmp_path: Path, spawn: Spawn) -> None:
    """The kernel drops a flock at the last close of its file description: a forked child still
    holding the parent's fd would keep the lock of a parent that died mid-write, forever."""
    theirs, ours = CTX.Pipe()
    parent = spawn(_hold_and_fork, str(tmp_path), theirs)
    assert ours.poll(60)
    child = int(ours.recv())
    try:
        parent.kill()
        # Not join(): the child inherited the parent's sentinel pipe, so that waits for the child too.
        wait_until(lambda: parent.exitcode is not None, 10, "the killed parent to be reaped")
        lock = FlockLock(tmp_path / "lock")
        lock.acquire(5)  # LockTimeout if the surviving child pinned the dead parent's flock
        lock.release()
        lock.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


# -- close ---------------------------------------------------------------------------------------------


def test_close_waits_for_a_holder_in_another_thread(tmp_path: Path, kind: str) -> None:
    lock = make_lock(kind, str(tmp_path))
    with held_in_thread(lock, 0.3) as released_at:
        lock.close()  # must not drop the fd / claim under the holder's write
        closed_at = time.monotonic()
        assert released_at and closed_at >= released_at[0]
    lock.acquire(1)  # a closed lock opens again on its next use
    lock.release()
    lock.close()
    lock.close()  # idempotent


def test_close_of_a_lock_never_used(tmp_path: Path, kind: str) -> None:
    make_lock(kind, str(tmp_path)).close()


# -- read-only ----------------------------------------------------------------------------------------


def _acquire_without_write_access(kind: str, board: str) -> str:
    with tempfile.TemporaryDirectory() as warm:  # import what an attempt imports while we still can
        warm_lock = make_lock(kind, warm)
        warm_lock.acquire(1)
        warm_lock.release()
        warm_lock.close()
    if os.geteuid() == 0:
        os.setgid(65534)  # nobody: root could write anywhere
        os.setuid(65534)
    lock = make_lock(kind, board)
    try:
        lock.acquire(1)
    except Exception as exc:
        return type(exc).__name__
    lock.release()
    return "acquired"


def test_no_write_access_is_read_only_board(kind: str) -> None:
    with tempfile.TemporaryDirectory() as board:  # not under tmp_path: its parents are private to us
        os.chmod(board, 0o755)  # others may look, not write
        with CTX.Pool(1) as pool:
            outcome = pool.apply(_acquire_without_write_access, (kind, board))
    assert outcome == ReadOnlyBoard.__name__

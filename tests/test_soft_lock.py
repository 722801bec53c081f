"""The soft writer lock (blackboard/core/softlock.py, spec/FORMAT.md section 9.1), on real files with real
processes: a token file in `lock.d/`, moved by rename (`free` <-> `held.<owner>.<n>`).

What is checked: a holder killed on this host is broken and the token goes back to one `free`; a live
holder (another process, this very process, a pid whose start is unknown) is kept and named by the
timeout; stale holders of this host (a dead pid, a recycled pid, another boot) are broken at once; another
host's hold only once the lease ran out, never while its holder renews; renewal moves the token to `.1`,
`.2`...; a holder whose hold was broken says so; racing breakers exclude each other; names beside the token
(`.nfs*`, `.fuse_hidden*`) are ignored; `lock.d/` is made lazily and atomically; the handover note refuses a
stale view (`StaleView`); the `unlock` runbook; fork.

Tokens are planted by hand the way the protocol allows: by renaming the one token there is to another
name (never by creating a second one). Their names are built here from the spec's rules, not with the
module's helpers, so that the code is checked against the spec. The lease and renewal periods are patched
small (the code reads them at call time); no assertion depends on how fast the machine is, only on lower
bounds of the monotonic clock and on the order of events.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import pytest
from _workers import CTX, Spawn, join_ok, run_jobs, wait_until
from xxhash import xxh3_64_hexdigest

import blackboard.core.engine as engine_module
from blackboard import Board, LockLost, LockTimeout, StaleView
from blackboard.core import softlock
from blackboard.core.lock import side_lock, start_token, this_host
from blackboard.core.softlock import SoftLock, create_lock_dir

pytestmark = pytest.mark.timeout(120)

#: A pid no process can have: above Linux's largest pid_max (2**22).
DEAD_PID = 2**31 - 1
LOW_64 = (1 << 64) - 1
OTHER_HOST = "elsewhere.example"
ERROR_PREFIX = "blackboard: error: "
#: The lease and renewal periods of the tests that wait for a lease (the defaults are 15 s and 3 s).
LEASE = 1.0
RENEW = 0.05


# -- the token's names, from the spec --------------------------------------------------------------------


def name_part(host: str) -> str:
    """A host as the token names it (spec 9.1): bytes other than [A-Za-z0-9-] as _xx, at most 64."""
    ok = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"
    return "".join(chr(b) if b in ok else f"_{b:02x}" for b in host.encode())[:64] or "_"


def held_name(pid: int, start: int | None, *, host: str | None = None, n: int = 0) -> str:
    """`held.<host>.<hosttag>.<pid>.<start>.<nonce>.<n>`, with a new nonce."""
    host = this_host() if host is None else host
    start_part = "x" if start is None else format(start, "x")
    tag = xxh3_64_hexdigest(host.encode())
    return f"held.{name_part(host)}.{tag}.{pid}.{start_part}.{secrets.token_hex(4)}.{n}"


def tokens(lock_dir: Path) -> list[str]:
    """The token names in a lock directory (other names are not tokens)."""
    return sorted(name for name in os.listdir(lock_dir) if name == "free" or name.startswith("held."))


def plant(lock_dir: Path, name: str) -> str:
    """Move the one token there is to `name`, as a holder would (there is never a second token)."""
    (token,) = tokens(lock_dir)
    os.rename(lock_dir / token, lock_dir / name)
    return name


def renewals(name: str) -> int:
    return int(name.rsplit(".", 1)[1])


def base(name: str) -> str:
    """A held name without its renewal count: what stays the same over one hold."""
    return name.rsplit(".", 1)[0]


def pid_of(name: str) -> int:
    return int(name.split(".")[3])


def soft_board(tmp_path: Path) -> Path:
    path = tmp_path / "b"
    Board.init(path, lock="soft").close()
    return path


def my_start() -> int:
    start = start_token(os.getpid())
    if start is None:
        pytest.skip("no start token on this platform (no procfs of our own)")
    return start


def _quiet_lost_warnings() -> list[logging.LogRecord]:
    """In a child: collect the "blackboard" logger's warnings instead of printing them; returns the list."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("blackboard")
    logger.addHandler(Collect())
    logger.propagate = False
    return records


def lost_warnings(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if "hold on the writer lock was broken" in r.getMessage()]


@pytest.fixture
def warnings_of_blackboard(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.WARNING, logger="blackboard")
    yield caplog


def _fork() -> int:
    with warnings.catch_warnings():  # 3.12+ warns about fork() in a process with threads: intended here
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _wait_child(pid: int, timeout: float) -> int:
    """The forked child's exit code; killed (and failed) if it does not end within `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the forked child {pid} did not end within {timeout} s (killed)")
        time.sleep(0.01)


# -- 1. a holder killed while holding --------------------------------------------------------------------


def _hold_the_writer_lock(board: str, held: MpEvent) -> None:
    """Take the board's writer lock, say so, and hold it until killed."""
    handle = Board.open(board)
    handle.engine.lock.acquire(10)
    held.set()
    time.sleep(600)


def _process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rfind(b")") + 1 :].split()[0].decode()


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_killed_holder_is_broken_by_the_next_writer(tmp_path: Path, spawn: Spawn, reaped: bool) -> None:
    """SIGKILL while holding leaves its held token; the next writer breaks it and writes, and the token
    goes back to one `free`. Unreaped, the dead holder is a zombie, which holds nothing either."""
    path = soft_board(tmp_path)
    held = CTX.Event()
    holder = spawn(_hold_the_writer_lock, str(path), held)
    assert held.wait(60)
    assert holder.pid is not None
    (left,) = tokens(path / "lock.d")
    assert pid_of(left) == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    if reaped:
        holder.join(30)
        assert holder.exitcode == -signal.SIGKILL
    assert tokens(path / "lock.d") == [left], "the killed holder should have left its token"
    with Board.open(path, lock_timeout=30) as board:
        assert board.write("k", 1).seq == 1
    assert tokens(path / "lock.d") == ["free"]
    if not reaped:
        assert _process_state(holder.pid) == "Z", "the holder was reaped: this run did not test a zombie"
        holder.join(30)


# -- 2, 3. holds that are kept ---------------------------------------------------------------------------


def test_live_holder_is_not_broken(tmp_path: Path, spawn: Spawn) -> None:
    """A holder that sleeps is alive: its token stays, and the timeout names its pid, host and token."""
    path = soft_board(tmp_path)
    held = CTX.Event()
    holder = spawn(_hold_the_writer_lock, str(path), held)
    assert held.wait(60)
    (token,) = tokens(path / "lock.d")
    with Board.open(path, lock_timeout=0.5) as board, pytest.raises(LockTimeout) as info:
        board.write("k", 1)
    assert info.value.holder is not None
    assert f"pid {holder.pid} on host {name_part(this_host())}" in info.value.holder
    assert f"pid {holder.pid} on host {name_part(this_host())}" in str(info.value)
    assert f"{path / 'lock.d' / token}" in str(info.value)
    assert tokens(path / "lock.d") == [token]
    assert (path / "log.jsonl").read_bytes().count(b"\n") == 1  # the header only: nothing written


@pytest.mark.parametrize("case", ["this process", "this process, start unknown", "a live child, start unknown"])
def test_token_of_a_live_process_is_held(tmp_path: Path, case: str) -> None:
    """A token naming this very process (pid and start token) is held; with the start unknown (`x`) a
    live pid is held too: nothing proves it was recycled."""
    path = soft_board(tmp_path)
    child = None
    if case == "a live child, start unknown":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        pid, start = child.pid, None
    else:
        pid, start = os.getpid(), None if "unknown" in case else my_start()
    try:
        name = plant(path / "lock.d", held_name(pid, start))
        with Board.open(path, lock_timeout=0.3) as board, pytest.raises(LockTimeout) as info:
            board.write("k", 1)
        assert f"pid {pid} on host {name_part(this_host())}" in str(info.value)
        assert tokens(path / "lock.d") == [name]
    finally:
        if child is not None:
            child.kill()
            child.wait()


# -- 4. stale holders of this host ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["recycled pid", "another boot", "dead pid", "dead pid, start unknown"])
def test_stale_holder_of_this_host_is_broken(tmp_path: Path, case: str) -> None:
    """A hold of this host whose process is provably gone: a live pid with another start time (the pid
    was recycled), a start token of another boot, a pid that does not exist (with or without a start)."""
    path = soft_board(tmp_path)
    start = my_start()
    if case == "another boot" and start >> 64 == 0:
        pytest.skip("no boot id on this host: a start token of another boot cannot be told")
    pid, planted_start = {
        "recycled pid": (os.getpid(), start >> 64 << 64 | (start & LOW_64) + 1),
        "another boot": (os.getpid(), ((start >> 64) ^ 1) << 64 | start & LOW_64),
        "dead pid": (DEAD_PID, start),
        "dead pid, start unknown": (DEAD_PID, None),
    }[case]
    plant(path / "lock.d", held_name(pid, planted_start))
    with Board.open(path, lock_timeout=30) as board:
        assert board.write("k", 1).seq == 1
    assert tokens(path / "lock.d") == ["free"]


# -- 5. another host's hold, and the lease ----------------------------------------------------------------


def test_another_hosts_hold_is_broken_only_once_the_lease_ran_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warnings_of_blackboard: pytest.LogCaptureFixture
) -> None:
    """Another host's pids are not ours to judge (its pid is dead here, and that proves nothing): its hold
    is kept until the contender has seen the same name for LEASE_SECONDS, then broken, with a warning."""
    monkeypatch.setattr(softlock, "LEASE_SECONDS", LEASE)
    monkeypatch.setattr(SoftLock, "_look_every", 0.01)
    path = soft_board(tmp_path)
    name = plant(path / "lock.d", held_name(DEAD_PID, None, host=OTHER_HOST))
    with Board.open(path) as board:
        first_look = time.monotonic()
        board.engine.lock_timeout = LEASE / 4
        with pytest.raises(LockTimeout) as info:
            board.write("k", 1)
        assert f"pid {DEAD_PID} on host {name_part(OTHER_HOST)}" in str(info.value)
        assert tokens(path / "lock.d") == [name], "broken before the lease ran out"
        assert not warnings_of_blackboard.records
        board.engine.lock_timeout = 30
        assert board.write("k", 1).seq == 1
        assert time.monotonic() - first_look >= LEASE
    assert tokens(path / "lock.d") == ["free"]
    (record,) = warnings_of_blackboard.records
    assert record.name == "blackboard"
    assert f"broke the writer lock of pid {DEAD_PID} on host {name_part(OTHER_HOST)}" in record.getMessage()


def _hold_renewing(
    board: str, lease: float, renew: float, hold: float, held: MpEvent, releasing: MpEvent, out: Queue[Any]
) -> None:
    """Hold the writer lock `hold` s with the lease and renewal patched; say when releasing (set just
    before the release, so that a contender that gets the lock earlier broke the hold)."""
    softlock.LEASE_SECONDS, softlock.RENEW_SECONDS = lease, renew
    records = _quiet_lost_warnings()
    lock = SoftLock(Path(board) / "lock")
    lock.acquire(10)
    (first,) = tokens(Path(board) / "lock.d")
    held.set()
    time.sleep(hold)
    (last,) = tokens(Path(board) / "lock.d")  # still ours, or a contender broke it
    out.put(("releasing", first, last))
    releasing.set()  # an Event, not the queue: a put reaches the other side later (a feeder thread)
    lock.release()
    lock.close()
    out.put(("released", lost_warnings(records)))


def test_renewing_holder_in_another_process_is_never_broken(
    tmp_path: Path, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lease of 40 renewals: a renewer thread delayed that long on a loaded machine is not what
    # this test is about (a test must not race the machine's speed).
    lease = 40 * RENEW
    monkeypatch.setattr(softlock, "LEASE_SECONDS", lease)
    monkeypatch.setattr(SoftLock, "_look_every", 0.01)
    path = soft_board(tmp_path)
    held, releasing, out = CTX.Event(), CTX.Event(), CTX.Queue()
    child = spawn(_hold_renewing, str(path), lease, RENEW, 2.5 * lease, held, releasing, out)
    assert held.wait(60)
    lock = SoftLock(path / "lock")
    lock.acquire(60)
    try:
        assert releasing.is_set(), "the holder's hold was broken while it renewed"
        what, first, last = out.get(timeout=10)
        assert what == "releasing"
        assert base(last) == base(first) and renewals(last) > renewals(first), (first, last)
    finally:
        lock.release()
        lock.close()
    assert out.get(timeout=30) == ("released", [])
    join_ok(child, 30)


def test_renewing_holder_in_another_thread_is_never_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two lock objects of one process (two boards opened on one path): one holds, renewing, longer than
    the lease; the other waits for it to release, however long that takes."""
    monkeypatch.setattr(softlock, "LEASE_SECONDS", LEASE)
    monkeypatch.setattr(softlock, "RENEW_SECONDS", RENEW)
    monkeypatch.setattr(SoftLock, "_look_every", 0.01)
    holder, contender = SoftLock(tmp_path / "lock"), SoftLock(tmp_path / "lock")
    renewed, releasing = threading.Event(), threading.Event()

    def hold() -> None:
        holder.acquire(10)
        # This process's renewer may be asleep at the default period: the first renewal shows it is
        # at the patched one.
        wait_until(lambda: renewals(tokens(tmp_path / "lock.d")[0]) >= 1, 30, "the first renewal")
        renewed.set()
        time.sleep(2.5 * LEASE)
        releasing.set()
        holder.release()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert renewed.wait(30)
        contender.acquire(60)
        assert releasing.is_set(), "the contender broke a hold that was renewed"
        contender.release()
    finally:
        thread.join(30)
    holder.close()
    contender.close()
    assert tokens(tmp_path / "lock.d") == ["free"]


def test_another_hosts_renewing_hold_is_never_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another host's holder renews by renaming its token (.0, .1, ...): every new name starts the
    contender's lease anew, so it waits for that host's release."""
    monkeypatch.setattr(softlock, "LEASE_SECONDS", LEASE)
    monkeypatch.setattr(SoftLock, "_look_every", 0.01)
    lock_dir = tmp_path / "lock.d"
    create_lock_dir(lock_dir)
    name = plant(lock_dir, held_name(DEAD_PID, None, host=OTHER_HOST))
    releasing, broken = threading.Event(), []

    def other_host() -> None:
        current, deadline = name, time.monotonic() + 2.5 * LEASE
        try:
            while time.monotonic() < deadline:
                time.sleep(RENEW)
                new = f"{base(current)}.{renewals(current) + 1}"
                os.rename(lock_dir / current, lock_dir / new)
                current = new
            releasing.set()
            os.rename(lock_dir / current, lock_dir / "free")
        except FileNotFoundError:
            broken.append(current)

    thread = threading.Thread(target=other_host)
    thread.start()
    lock = SoftLock(tmp_path / "lock")
    try:
        lock.acquire(60)
        assert releasing.is_set() and not broken, f"broke {broken}"
        lock.release()
    finally:
        thread.join(30)
        lock.close()


# -- 6. renewal, and a hold broken meanwhile ---------------------------------------------------------------


def test_a_long_hold_renews_its_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hold longer than RENEW_SECONDS moves its token to `.1`, `.2`, ...: the same hold (host, pid,
    start, nonce), a new name; the note in it goes along; the release puts back one `free`."""
    monkeypatch.setattr(softlock, "RENEW_SECONDS", RENEW)
    lock_dir = tmp_path / "lock.d"
    create_lock_dir(lock_dir)
    note = b"7 1234 0123456789abcdef".ljust(63) + b"\n"
    (lock_dir / "free").write_bytes(note)
    lock = SoftLock(tmp_path / "lock")
    lock.acquire(10)
    try:
        (first,) = tokens(lock_dir)
        assert renewals(first) == 0 and pid_of(first) == os.getpid()
        assert first.startswith(f"held.{name_part(this_host())}.{xxh3_64_hexdigest(this_host().encode())}.")
        seen = [first]

        def moved_twice() -> bool:
            (now,) = tokens(lock_dir)
            if now != seen[-1]:
                seen.append(now)
            return renewals(now) >= 2

        wait_until(moved_twice, 30, "two renewals")
        assert {base(name) for name in seen} == {base(first)}
        assert [renewals(name) for name in seen] == sorted({renewals(name) for name in seen})
        assert (lock_dir / seen[-1]).read_bytes() == note
    finally:
        lock.release()
    lock.close()
    assert tokens(lock_dir) == ["free"]
    assert (lock_dir / "free").read_bytes() == note


def test_release_of_a_broken_hold_warns(tmp_path: Path, warnings_of_blackboard: pytest.LogCaptureFixture) -> None:
    """A holder whose token was broken meanwhile (as a contender does: renamed to `free`) finds it gone on
    release, says so, and adds no token."""
    lock_dir = tmp_path / "lock.d"
    lock = SoftLock(tmp_path / "lock")
    lock.acquire(10)
    (mine,) = tokens(lock_dir)
    os.rename(lock_dir / mine, lock_dir / "free")
    lock.release()
    lock.close()
    assert tokens(lock_dir) == ["free"]
    (record,) = warnings_of_blackboard.records
    message = record.getMessage()
    assert str(lock_dir / mine) in message
    assert "was broken while it held it" in message and "another writer may have written" in message


def test_a_broken_hold_found_by_the_renewer_is_reported_once_naming_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warnings_of_blackboard: pytest.LogCaptureFixture
) -> None:
    """The renewer finds the token gone first and warns; the release must not warn again naming no token.

    Fails today: renew_if_due sets `_name = ""` on ENOENT, and `_release` then renames "" (ENOENT)
    and calls `_lost("")`: a second warning that begins ": this process's hold ..."."""
    monkeypatch.setattr(softlock, "RENEW_SECONDS", RENEW)
    lock_dir = tmp_path / "lock.d"
    lock = SoftLock(tmp_path / "lock")
    lock.acquire(10)
    (mine,) = tokens(lock_dir)
    os.rename(lock_dir / mine, lock_dir / "free")
    wait_until(lambda: bool(warnings_of_blackboard.records), 30, "the renewer to find its token gone")
    lock.release()
    lock.close()
    assert tokens(lock_dir) == ["free"]
    messages = [r.getMessage() for r in warnings_of_blackboard.records]
    assert all(m.startswith(str(lock_dir / mine)) for m in messages), messages
    assert len(messages) == 1, messages


# -- 7. racing breakers -------------------------------------------------------------------------------------


def _die_holding(lock_dir: Path) -> None:
    """Leave the lock as a holder that died would: our held token renamed to a dead pid's held name."""
    (mine,) = tokens(lock_dir)
    assert pid_of(mine) == os.getpid(), f"holding, but the token is {mine}"
    os.rename(lock_dir / mine, lock_dir / held_name(DEAD_PID, None))


def _count_and_die(board: str, rounds: int, go: MpEvent, out: Queue[tuple[int, int]]) -> None:
    """`rounds` read-modify-writes of a counter under the soft lock; each hold ends as a dead holder's
    (see _die_holding), so that every next holder must first break one, racing every other waiter that
    found it too. Reports how often a section found another in progress, and the lost-hold warnings."""
    SoftLock._look_every = 0.005  # look often: more breakers race for each dead hold
    records = _quiet_lost_warnings()
    lock = SoftLock(Path(board) / "lock")
    counter, marker, lock_dir = Path(board) / "counter", Path(board) / "in-section", Path(board) / "lock.d"
    overlaps = 0
    assert go.wait(60)
    for _ in range(rounds):
        lock.acquire(60)
        try:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                overlaps += 1
            n = int(counter.read_text())
            time.sleep(0.005)  # widen the window in which a second holder would get in (a wrong breaker)
            counter.write_text(str(n + 1))
            marker.unlink(missing_ok=True)
            _die_holding(lock_dir)
        finally:
            lock.release()  # finds its token gone, as a holder whose hold was broken does
    lock.close()
    out.put((overlaps, len(lost_warnings(records))))


def test_racing_breakers_exclude_each_other(tmp_path: Path, spawn: Spawn) -> None:
    procs, rounds = 4, 8
    (tmp_path / "counter").write_text("0")
    create_lock_dir(tmp_path / "lock.d")
    plant(tmp_path / "lock.d", held_name(DEAD_PID, None))  # stale from the start
    go, out = CTX.Event(), CTX.Queue()
    children = [spawn(_count_and_die, str(tmp_path), rounds, go, out) for _ in range(procs)]
    go.set()
    results = [out.get(timeout=100) for _ in children]
    for child in children:
        join_ok(child, 30)
    assert results == [(0, rounds)] * procs  # no overlap; every release found its token gone
    assert int((tmp_path / "counter").read_text()) == procs * rounds  # no update lost
    (last,) = tokens(tmp_path / "lock.d")  # one token: the last dead hold
    assert pid_of(last) == DEAD_PID


def test_racing_breakers_in_threads_of_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warnings_of_blackboard: pytest.LogCaptureFixture
) -> None:
    """Two lock objects of one process (two boards opened on one path) both find every dead hold."""
    monkeypatch.setattr(SoftLock, "_look_every", 0.005)
    lock_dir, rounds = tmp_path / "lock.d", 10
    create_lock_dir(lock_dir)
    plant(lock_dir, held_name(DEAD_PID, None))
    locks = [SoftLock(tmp_path / "lock") for _ in range(2)]
    inside, overlaps, errors = [0], [0], []
    barrier = threading.Barrier(2)

    def work(lock: SoftLock) -> None:
        try:
            barrier.wait(10)
            for _ in range(rounds):
                lock.acquire(30)
                try:
                    inside[0] += 1
                    if inside[0] > 1:
                        overlaps[0] += 1
                    time.sleep(0.005)  # a wrong breaker would get in meanwhile
                    inside[0] -= 1
                    _die_holding(lock_dir)
                finally:
                    lock.release()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for lock in locks:
        lock.close()
    assert not errors and overlaps == [0]
    assert len(lost_warnings(warnings_of_blackboard.records)) == 2 * rounds
    (last,) = tokens(lock_dir)
    assert pid_of(last) == DEAD_PID


# -- 8. names beside the token ------------------------------------------------------------------------------


def test_silly_renamed_files_beside_the_token_are_ignored(tmp_path: Path) -> None:
    """NFS and FUSE leave `.nfs*` and `.fuse_hidden*` names behind: they are not tokens. Writes go on, a
    dead holder beside them is broken, a live one is named."""
    path = soft_board(tmp_path)
    lock_dir = path / "lock.d"
    strangers = [".fuse_hidden0000001a00000001", ".nfs0000000000abcdef00000001"]
    for name in strangers:
        (lock_dir / name).write_bytes(b"x" * 64)
    with Board.open(path, lock_timeout=0.3) as board:
        assert board.write("k", 1).seq == 1
        plant(lock_dir, held_name(DEAD_PID, my_start()))
        board.engine.lock_timeout = 30
        assert board.write("k", 2).seq == 2
        live = plant(lock_dir, held_name(os.getpid(), my_start()))
        board.engine.lock_timeout = 0.3
        with pytest.raises(LockTimeout) as info:
            board.write("k", 3)
        assert f"token {lock_dir / live}" in str(info.value)
        os.rename(lock_dir / live, lock_dir / "free")  # as that holder's release would
        assert board.write("k", 3).seq == 3
    assert sorted(os.listdir(lock_dir)) == sorted([*strangers, "free"])


# -- 9. the lock directory, made lazily ---------------------------------------------------------------------


def test_lock_dir_is_made_by_the_first_write(tmp_path: Path) -> None:
    """A soft board without `lock.d/` (made by an older release) gets one, with one token, on its first
    write; nothing is left of its making under tmp/."""
    path = soft_board(tmp_path)
    shutil.rmtree(path / "lock.d")
    with Board.open(path, lock_timeout=10) as board:
        assert board.write("k", 1).seq == 1
    assert tokens(path / "lock.d") == ["free"] and os.listdir(path / "lock.d") == ["free"]
    assert os.listdir(path / "tmp") == []


def test_a_soft_board_is_version_4_and_an_older_one_is_marked_so_on_its_first_write(tmp_path: Path) -> None:
    """Spec 3: releases that know only filelock's claims must refuse a board whose writers take the
    token lock (they would not exclude each other): init writes 4, a writer upgrades an older one."""
    path = soft_board(tmp_path)
    assert json.loads((path / "board.json").read_text())["version"] == 4
    config = json.loads((path / "board.json").read_text())
    (path / "board.json").write_text(json.dumps({**config, "version": 3}))
    shutil.rmtree(path / "lock.d")  # as an older release left it
    with Board.open(path) as board:
        assert board.read("k") is None  # a read changes nothing
        assert json.loads((path / "board.json").read_text())["version"] == 3
        board.write("k", 1)
    assert json.loads((path / "board.json").read_text())["version"] == 4
    flock = tmp_path / "f"
    Board.init(flock).close()
    assert json.loads((flock / "board.json").read_text())["version"] == 3  # flock boards: unchanged


def _create_lock_dirs(root: str, count: int, barrier: Barrier) -> None:
    barrier.wait(60)
    for i in range(count):
        create_lock_dir(Path(root) / f"l{i}.d")


def test_concurrent_creators_leave_one_token(tmp_path: Path) -> None:
    """Processes making the same lock directories at once: each ends with exactly one token."""
    count = 30
    run_jobs([(_create_lock_dirs, (str(tmp_path), count))] * 5, timeout=60)
    for i in range(count):
        assert os.listdir(tmp_path / f"l{i}.d") == ["free"], i
        assert (tmp_path / f"l{i}.d" / "free").read_bytes() == b" " * 63 + b"\n"
    assert os.listdir(tmp_path / "tmp") == [], "the losers' staging directories were left"


def test_side_lock_without_wait_on_a_new_soft_board(tmp_path: Path) -> None:
    """`side_lock(wait=False)` with nobody holding it is taken, even before its `.d/` exists.

    Fails today: SoftLock.acquire(0.0) makes one attempt; on a lock whose directory is not made yet that
    attempt creates it (`_token` -> `create_lock_dir`) and returns False, and the deadline has passed.
    So a new soft board's first `compact(wait=False)` (the board's auto-compaction) reports "another
    compaction is running", and its first checkpoint save under compact.lock is skipped."""
    path = soft_board(tmp_path)
    with side_lock(path / "compact.lock", wait=False) as taken:
        assert taken, "nobody holds compact.lock, yet side_lock(wait=False) did not take it"


def _try_side_lock(path: str, out: Queue[bool]) -> None:
    with side_lock(Path(path), wait=False) as taken:
        out.put(taken)


def test_side_locks_exclude_while_lock_dir_appears(tmp_path: Path, spawn: Spawn) -> None:
    """A side lock taken while the board had no `lock.d/` (a flock on compact.lock) must still exclude a
    process that takes it after a first write made `lock.d/`.

    Fails today: side_lock picks its kind by whether `lock.d/` exists at the call, so the second process
    takes the soft kind (compact.lock.d/) while the first holds the flock kind: two compactions (or two
    entry-file batches, materialize.lock) at once on a soft board, once, when lock.d/ is made lazily."""
    path = soft_board(tmp_path)
    shutil.rmtree(path / "lock.d")
    create_lock_dir(path / "compact.lock.d")  # made, so that the soft kind's first attempt can succeed
    out = CTX.Queue()
    with side_lock(path / "compact.lock") as taken:  # lock.d/ absent: the flock kind
        assert taken
        with Board.open(path, lock_timeout=10) as board:
            board.write("k", 1)  # makes lock.d/
        assert (path / "lock.d").is_dir()
        child = spawn(_try_side_lock, str(path / "compact.lock"), out)
        got = out.get(timeout=60)
        join_ok(child, 30)
    assert got is False, "a second process took compact.lock while this one held it"


# -- 10. the note: a stale view --------------------------------------------------------------------------


def put_note(lock_dir: Path, seq: int, end: int, generation: str) -> None:
    """Write a handover note (spec 9.1: `<seq> <end> <generation>`, 64 bytes) into the token."""
    (token,) = tokens(lock_dir)
    fd = os.open(lock_dir / token, os.O_WRONLY)
    try:
        os.pwrite(fd, f"{seq} {end} {generation}".encode().ljust(63) + b"\n", 0)
    finally:
        os.close(fd)


def board_with_records(tmp_path: Path, n: int = 3) -> tuple[Path, bytes, str]:
    path = soft_board(tmp_path)
    with Board.open(path) as board:
        for i in range(n):
            board.write(f"k{i}", i)
    log = (path / "log.jsonl").read_bytes()
    return path, log, json.loads(log.split(b"\n", 1)[0])["generation"]


@pytest.mark.parametrize("case", ["seq ahead", "end ahead", "another generation, seq ahead"])
def test_a_view_behind_the_note_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """A token whose note is ahead of what this process sees of the log (a client served stale data):
    the write waits, then raises StaleView, and the log is unchanged byte for byte."""
    monkeypatch.setattr(engine_module, "STALE_VIEW_WAIT", 0.2)
    path, log, generation = board_with_records(tmp_path)
    seq, end, gen = {
        "seq ahead": (4, len(log), generation),
        "end ahead": (3, len(log) + 1, generation),
        "another generation, seq ahead": (4, 0, "0123456789abcdef"),
    }[case]
    put_note(path / "lock.d", seq, end, gen)
    with Board.open(path, lock_timeout=5) as board:
        start = time.monotonic()
        with pytest.raises(StaleView) as info:
            board.write("new", 1)
        assert time.monotonic() - start >= 0.2
        assert (info.value.seen_seq, info.value.note_seq, info.value.note_end) == (3, seq, end)
        assert board.get("new") is None
    assert (path / "log.jsonl").read_bytes() == log
    assert tokens(path / "lock.d") == ["free"]  # released


def test_cli_write_on_a_stale_view_is_one_error_line(tmp_path: Path) -> None:
    path, log, generation = board_with_records(tmp_path)
    put_note(path / "lock.d", 9, len(log) + 500, generation)
    proc = subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(path), "write", "new", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr.startswith(ERROR_PREFIX) and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nothing was written" in proc.stderr and "seq 9" in proc.stderr
    assert (path / "log.jsonl").read_bytes() == log


@pytest.mark.parametrize("case", ["equal", "behind", "another generation, end ahead", "no note"])
def test_a_view_at_or_past_the_note_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """A note the view reaches (equal, behind, or of another log file whose seqs it has) lets writes go
    on; so does a token with no note. The release leaves the new note."""
    monkeypatch.setattr(engine_module, "STALE_VIEW_WAIT", 0.2)
    path, log, generation = board_with_records(tmp_path)
    if case == "no note":
        (token,) = tokens(path / "lock.d")
        (path / "lock.d" / token).write_bytes(b" " * 63 + b"\n")
    else:
        seq, end, gen = {
            "equal": (3, len(log), generation),
            "behind": (2, len(log) - 10, generation),
            "another generation, end ahead": (3, len(log) + 1000, "0123456789abcdef"),
        }[case]
        put_note(path / "lock.d", seq, end, gen)
    with Board.open(path, lock_timeout=5) as board:
        assert board.write("new", 1).seq == 4
    size = (path / "log.jsonl").stat().st_size
    assert (path / "lock.d" / "free").read_bytes() == f"4 {size} {generation}".encode().ljust(63) + b"\n"


# -- 11. the runbook: blackboard unlock ---------------------------------------------------------------------


def _unlock(board: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(board), "unlock", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0 and proc.stderr == "", (proc.args, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def test_unlock_breaks_a_dead_holder_of_this_host(tmp_path: Path) -> None:
    path = soft_board(tmp_path)
    lock_dir, host = path / "lock.d", name_part(this_host())
    plant(lock_dir, held_name(DEAD_PID, None))
    (claim,) = json.loads(_ok(_unlock(path, "--json")))
    assert {k: claim[k] for k in ("state", "pid", "host", "stale", "broken")} == {
        "state": "held",
        "pid": DEAD_PID,
        "host": host,
        "stale": True,
        "broken": True,
    }
    assert tokens(lock_dir) == ["free"]
    plant(lock_dir, held_name(DEAD_PID, my_start()))
    out = _ok(_unlock(path))
    assert out.startswith(f"broke the held claim of pid {DEAD_PID} on host {host}"), out
    assert out.rstrip().endswith(": its process is gone") and out.count("\n") == 1, out
    assert tokens(lock_dir) == ["free"]
    assert _ok(_unlock(path)).strip() == "no claims: the writer lock is free"
    assert json.loads(_ok(_unlock(path, "--json"))) == []


@pytest.mark.parametrize("holder", ["another host", "a live process of this host"])
def test_unlock_keeps_a_live_or_foreign_holder_until_forced(tmp_path: Path, holder: str) -> None:
    path = soft_board(tmp_path)
    lock_dir = path / "lock.d"
    if holder == "another host":
        pid, host, name = DEAD_PID, name_part(OTHER_HOST), held_name(DEAD_PID, None, host=OTHER_HOST)
    else:
        pid, host, name = os.getpid(), name_part(this_host()), held_name(os.getpid(), my_start())
    plant(lock_dir, name)
    (claim,) = json.loads(_ok(_unlock(path, "--json")))
    assert (claim["pid"], claim["host"], claim["stale"], claim["broken"]) == (pid, host, False, False)
    assert isinstance(claim["age"], float) and claim["age"] >= 0
    kept = _ok(_unlock(path))
    assert kept.startswith(f"kept the held claim of pid {pid} on host {host}") and "--force breaks it" in kept
    assert tokens(lock_dir) == [name]
    with Board.open(path, lock_timeout=0.3) as board, pytest.raises(LockTimeout) as info:
        board.write("k", 0)
    assert f"pid {pid} on host {host}" in str(info.value) and "unlock --force" in str(info.value)
    forced = _ok(_unlock(path, "--force"))
    assert forced.startswith(f"broke the held claim of pid {pid} on host {host}") and "(--force)" in forced
    assert tokens(lock_dir) == ["free"]
    with Board.open(path, lock_timeout=5) as board:
        assert board.write("k", 1).seq == 1


def test_unlock_force_puts_a_token_back(tmp_path: Path) -> None:
    """A lock directory left with no token (nobody can take the lock): the timeout says so, and
    `unlock --force` puts a `free` back."""
    path = soft_board(tmp_path)
    os.rename(path / "lock.d" / "free", tmp_path / "lost-token")
    with Board.open(path, lock_timeout=0.3) as board, pytest.raises(LockTimeout) as info:
        board.write("k", 1)
    assert "holds no token" in str(info.value) and "unlock --force" in str(info.value)
    _ok(_unlock(path, "--force"))
    assert os.listdir(path / "lock.d") == ["free"]
    with Board.open(path, lock_timeout=5) as board:
        assert board.write("k", 1).seq == 1


def test_unlock_does_not_call_a_tokenless_lock_free(tmp_path: Path) -> None:
    """Without --force, a lock directory with no token is reported as what it is.

    Fails today: SoftLock.unlock returns [] both for a `free` token and for no token at all, and
    admin.unlock prints "no claims: the writer lock is free" for both, while every writer times out
    ("nobody: ... holds no token (`unlock --force` puts one back)")."""
    path = soft_board(tmp_path)
    os.rename(path / "lock.d" / "free", tmp_path / "lost-token")
    out = _ok(_unlock(path))
    assert "the writer lock is free" not in out, out
    assert "no token" in out and "--force" in out, out


def test_unlock_reports_the_age_of_a_hold_it_broke(tmp_path: Path) -> None:
    """The claim of a broken hold says how long ago its token last moved, as a kept one does.

    Fails today: SoftLock.unlock computes `_age(directory / token)` after renaming that token to `free`,
    so the stat fails and `age` is always None (null in --json, no ", N s old" in the text)."""
    path = soft_board(tmp_path)
    plant(path / "lock.d", held_name(DEAD_PID, None))
    (claim,) = json.loads(_ok(_unlock(path, "--json")))
    assert claim["broken"] is True
    assert isinstance(claim["age"], float) and claim["age"] >= 0, claim


def test_unlock_on_a_flock_board_has_nothing_to_break(tmp_path: Path) -> None:
    path = tmp_path / "b"
    Board.init(path).close()
    assert _ok(_unlock(path, "--force")).strip() == "a flock board: no claims"
    assert json.loads(_ok(_unlock(path, "--json"))) == []
    assert not (path / "lock.d").exists()


# -- 12. fork ------------------------------------------------------------------------------------------------
# tests/test_lock.py checks, for both backends, that a child forked while the parent holds does not get
# the lock until the parent releases, then gets it. Here: what only the soft lock has, its token and
# its renewer thread (threads do not survive fork).


def test_fork_child_holds_and_renews_its_own_token(tmp_path: Path) -> None:
    lock_dir = tmp_path / "lock.d"
    lock = SoftLock(tmp_path / "lock")
    lock.acquire(10)
    (parents,) = tokens(lock_dir)
    released_r, released_w = os.pipe()
    pid = _fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            softlock.RENEW_SECONDS = RENEW  # the parent's renewer keeps the default: it renews nothing here
            os.read(released_r, 1)
            lock.acquire(10)
            (mine,) = tokens(lock_dir)
            code = 2 if pid_of(mine) != os.getpid() or base(mine) == base(parents) else 3
            if code == 3:
                deadline = time.monotonic() + 30
                while renewals(tokens(lock_dir)[0]) < 2 and time.monotonic() < deadline:
                    time.sleep(0.005)
                code = 0 if base(tokens(lock_dir)[0]) == base(mine) and renewals(tokens(lock_dir)[0]) >= 2 else 4
            lock.release()
            if tokens(lock_dir) != ["free"]:
                code = 5
        except BaseException:
            code = 6
        finally:
            os._exit(code)
    try:
        lock.release()
        os.write(released_w, b"x")
        code = _wait_child(pid, 60)
    finally:
        os.close(released_r)
        os.close(released_w)
    assert code == 0, {2: "the child's token is not its own", 4: "the child's hold was not renewed"}.get(code, code)
    lock.acquire(10)  # the parent's lock object is untouched by the child's
    lock.release()
    lock.close()


def test_fork_while_the_renewer_renews(tmp_path: Path) -> None:
    """A fork while this process's renewer thread is inside renew_if_due (it holds the lock's `_state`
    for the rename): the child must still take and release the lock.

    Fails today (the child hangs, holding the token it just took): LockPolicy._forget_parent gives the
    child a new `_thread_lock`, but SoftLock's `_state` is copied as the renewer thread held it, and no
    thread of the child will ever release it; `_acquire` then blocks on `with self._state:` right after
    its rename took the token. A thread here holds `_state` across the fork, as renew_if_due does."""
    lock = SoftLock(tmp_path / "lock")
    lock.acquire(10)
    lock.release()
    inside, leave = threading.Event(), threading.Event()

    def renewing() -> None:
        with lock._state:
            inside.set()
            leave.wait(30)

    thread = threading.Thread(target=renewing)
    thread.start()
    assert inside.wait(10)
    try:
        pid = _fork()
        if pid == 0:  # pragma: no cover - the child
            status = 1
            try:
                lock.acquire(5)
                lock.release()
                status = 0
            except BaseException:
                status = 2
            finally:
                os._exit(status)
    finally:
        leave.set()
        thread.join(30)
    try:
        code: int | None = _wait_child(pid, 5)
    except AssertionError:
        code = None  # hung, and killed: its token names a dead pid now, which the next acquire breaks
    lock.acquire(10)
    lock.release()
    lock.close()
    assert code is not None, "the forked child hung taking the lock (SoftLock._state inherited locked)"
    assert code == 0


def test_unlock_never_adds_a_token_beside_others(tmp_path: Path) -> None:
    """Two tokens (never made by the protocol: a restore, a hand edit) are reported, not fixed: a
    `--force` must not add a third."""
    path = soft_board(tmp_path)
    lock_dir = path / "lock.d"
    (lock_dir / "held.elsewhere.0123456789abcdef.7.x.00c0ffee.0").write_bytes(b" " * 63 + b"\n")
    proc = _unlock(path, "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    (claim,) = json.loads(proc.stdout)
    assert claim["state"] == "several" and claim["broken"] is False
    assert sorted(os.listdir(lock_dir)) == ["free", "held.elsewhere.0123456789abcdef.7.x.00c0ffee.0"]
    text = _unlock(path)
    assert text.returncode == 0 and "several tokens" in text.stdout, text.stdout


def test_a_hold_broken_before_the_append_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A holder paused past the lease (here: its token moved away by a breaker between its look at the
    log and its append, and its last renewal as old as the lease) must not write beside the next
    holder: the write fails with LockLost, and the log is unchanged byte for byte."""
    path = soft_board(tmp_path)
    with Board.open(path) as board:
        board.write("k", 1)
        before = (path / "log.jsonl").read_bytes()
        fresh_view = engine_module.Engine._fresh_view

        def broken_meanwhile(engine: Any, index: Any, note: Any) -> Any:
            seen = fresh_view(engine, index, note)
            lock = engine.lock
            os.rename(lock._name, path / "lock.d" / "free")  # what a breaker does
            monkeypatch.setattr(softlock, "LEASE_SECONDS", 0.0)  # our last renewal: as old as the lease
            return seen

        monkeypatch.setattr(engine_module.Engine, "_fresh_view", broken_meanwhile)
        with pytest.raises(LockLost):
            board.write("k", 2)
    assert (path / "log.jsonl").read_bytes() == before
    assert os.listdir(path / "lock.d") == ["free"]

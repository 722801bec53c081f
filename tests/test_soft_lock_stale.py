"""Stale soft locks on the same host (spec section 9.1, issue 8), across real processes.

A `soft` board's writer lock is filelock's strict soft lock: owner-specific claim files that record
the owner's host, pid and start token. A claim whose owner is provably gone (this host, and another
boot, or its pid gone, a zombie, or a different process under it) is broken by the next writer; any
other claim is held, and the `LockTimeout` names its holder. Claims are faked by writing a record in
filelock's format (`plant_claim`), with the host and start token taken from a claim filelock itself
wrote for this process (`filelock_identity`), not from the code under test.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import filelock
import pytest
from _workers import CTX, Spawn, join_ok

from blackboard import Board, LockTimeout
from blackboard.core.lock import SoftLock, start_token, this_host

pytestmark = pytest.mark.timeout(120)

#: A pid no process can have: above Linux's largest pid_max (2**22), within a claim's range.
DEAD_PID = 2**31 - 1
LOW_64 = (1 << 64) - 1


def claims_dir(lock_path: Path) -> Path:
    return Path(f"{lock_path}.filelock") / "claims"


def claims_of(lock_path: Path) -> list[filelock.StrictSoftFileClaim]:
    return list(filelock.StrictSoftFileLock(lock_path).claims)


def filelock_identity(scratch: Path) -> tuple[str, int | None]:
    """This process's host name and start token, as filelock writes them into its claims."""
    lock = filelock.StrictSoftFileLock(scratch / "identity.lock", thread_local=False)
    with lock.acquire(timeout=10):
        (claim, *_) = lock.claims
    assert claim.pid == os.getpid()
    return claim.hostname, claim.start


def plant_claim(lock_path: Path, *, pid: int, host: str, start: int | None, state: str = "held") -> str:
    """Publish a claim in filelock's record format (as a writer that died holding would leave it)."""
    token = secrets.token_hex(16)
    record = f"filelock-strict-v1\n{token}\n{pid}\n{host.encode().hex()}\n{'' if start is None else start}\n"
    directory = claims_dir(lock_path)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{state}-v1-{token}.claim"
    # Written beside the lock (filelock refuses strangers in its own directories), then renamed in:
    # a reader never sees a partial record.
    scratch = lock_path.parent / f"planting-{token}"
    scratch.write_text(record, encoding="ascii")
    os.rename(scratch, directory / name)
    return name


def soft_board(tmp_path: Path) -> Path:
    path = tmp_path / "b"
    Board.init(path, lock="soft").close()
    return path


# -- a writer killed while holding the lock --------------------------------------------------------------


def _hold_the_soft_lock(board: str, conn: Connection) -> None:
    """Take the board's writer lock, say so, and hold it until killed."""
    handle = Board.open(board)
    handle.engine.lock.acquire(10)
    conn.send(os.getpid())
    time.sleep(600)


def _process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rfind(b")") + 1 :].split()[0].decode()


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_9_1_killed_holders_claim_is_broken(tmp_path: Path, spawn: Spawn, reaped: bool) -> None:
    """SIGKILL while holding leaves the claims; the next writer breaks them and writes, within its
    timeout. Unreaped, the dead holder is a zombie, which holds nothing either."""
    path = soft_board(tmp_path)
    theirs, ours = CTX.Pipe()
    holder = spawn(_hold_the_soft_lock, str(path), theirs)
    assert ours.poll(60)
    pid = int(ours.recv())
    with Board.open(path, lock_timeout=0.2) as board, pytest.raises(LockTimeout) as info:
        board.write("k", 1)  # alive: held, and the error says by whom
    assert f"pid {pid} on host" in str(info.value)
    os.kill(pid, signal.SIGKILL)
    if reaped:
        holder.join(30)
        assert holder.exitcode == -signal.SIGKILL
    left = claims_of(path / "lock.soft")
    assert {claim.pid for claim in left} == {pid}, "the killed holder should have left its claims"
    with Board.open(path, lock_timeout=30) as board:
        assert board.write("k", 1).seq == 1
    assert {claim.pid for claim in claims_of(path / "lock.soft")} == set()
    if not reaped:
        assert _process_state(pid) == "Z", "the holder was reaped: this run did not test a zombie"
        holder.join(30)


# -- claims that are held -----------------------------------------------------------------------------


def test_9_1_live_holders_claim_is_not_broken(tmp_path: Path, spawn: Spawn) -> None:
    """A holder that sleeps is alive: its claim stays, and the timeout names its host and pid."""
    path = soft_board(tmp_path)
    host, _ = filelock_identity(tmp_path)
    theirs, ours = CTX.Pipe()
    spawn(_hold_the_soft_lock, str(path), theirs)
    assert ours.poll(60)
    pid = int(ours.recv())
    with Board.open(path, lock_timeout=0.5) as board, pytest.raises(LockTimeout) as info:
        board.write("k", 1)
    assert info.value.holder is not None
    assert f"pid {pid} on host {host}" in info.value.holder
    assert f"pid {pid} on host {host}" in str(info.value)
    assert {claim.pid for claim in claims_of(path / "lock.soft")} == {pid}


@pytest.mark.parametrize(
    "case",
    ["this process", "this process, start unknown"],
)
def test_9_1_claim_of_a_live_pid_with_its_start_is_held(tmp_path: Path, case: str) -> None:
    """A claim naming this very process (pid and start token as filelock records them) is held;
    without a start token a live pid is held too: nothing proves it was recycled."""
    path = soft_board(tmp_path)
    host, start = filelock_identity(tmp_path)
    name = plant_claim(path / "lock.soft", pid=os.getpid(), host=host, start=None if "unknown" in case else start)
    with Board.open(path, lock_timeout=0.3) as board, pytest.raises(LockTimeout) as info:
        board.write("k", 1)
    assert f"pid {os.getpid()} on host {host}" in str(info.value)
    assert (claims_dir(path / "lock.soft") / name).exists()


def test_9_1_another_hosts_claim_is_not_broken(tmp_path: Path) -> None:
    """A claim from another host is never broken, however dead its pid looks here: the error names
    that host, and the operator's runbook (remove the claim files) lets writers go on."""
    path = soft_board(tmp_path)
    name = plant_claim(path / "lock.soft", pid=DEAD_PID, host="elsewhere.example", start=None)
    with Board.open(path, lock_timeout=0.3) as board:
        with pytest.raises(LockTimeout) as info:
            board.write("k", 1)
        assert info.value.holder is not None and "host elsewhere.example" in info.value.holder
        assert f"pid {DEAD_PID} on host elsewhere.example" in str(info.value)
        assert f"{path / 'lock.soft'}.filelock/claims/" in str(info.value)  # where the runbook looks
        assert (claims_dir(path / "lock.soft") / name).exists()
        for leftover in claims_dir(path / "lock.soft").glob(f"*-v1-{name.split('-')[2]}"):
            leftover.unlink()  # the runbook, once the operator knows that writer is dead
        assert board.write("k", 1).seq == 1


# -- claims that are stale ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["recycled pid", "another boot", "dead pid", "dead pid, start unknown", "intent only"],
)
def test_9_1_stale_claim_of_this_host_is_broken(tmp_path: Path, case: str) -> None:
    """A claim of this host whose writer is provably gone: a live pid with another start time (the
    pid was recycled), a start token of another boot, a pid that does not exist (with or without a
    start token), and the intent claim of a writer killed half-way through the doorway."""
    path = soft_board(tmp_path)
    host, start = filelock_identity(tmp_path)
    if start is None or (case == "another boot" and start >> 64 == 0):
        pytest.skip("this platform records no start token (or no boot id) in filelock's claims")
    pid, planted_start, state = {
        "recycled pid": (os.getpid(), start >> 64 << 64 | (start & LOW_64) + 1, "held"),
        "another boot": (os.getpid(), ((start >> 64) ^ 1) << 64 | start & LOW_64, "held"),
        "dead pid": (DEAD_PID, start, "held"),
        "dead pid, start unknown": (DEAD_PID, None, "held"),
        "intent only": (DEAD_PID, start, "intent"),
    }[case]
    name = plant_claim(path / "lock.soft", pid=pid, host=host, start=planted_start, state=state)
    with Board.open(path, lock_timeout=30) as board:
        assert board.write("k", 1).seq == 1
    assert not (claims_dir(path / "lock.soft") / name).exists()


# -- many waiters breaking one stale claim ----------------------------------------------------------------


def _count_breaking_stale_claims(board: str, host: str, rounds: int, go: MpEvent, out: Queue[int]) -> None:
    """`rounds` read-modify-writes of a counter under the soft lock; before each release, plant a
    stale claim (a dead pid of this host), so that every next holder must first break one, racing
    every other waiter that found it too. Reports how often a section found another in progress."""
    lock = SoftLock(Path(board) / "lock.soft")
    counter, marker = Path(board) / "counter", Path(board) / "in-section"
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
            plant_claim(lock.path, pid=DEAD_PID, host=host, start=None)
        finally:
            lock.release()
    lock.close()
    out.put(overlaps)


def test_9_1_racing_breakers_exclude_each_other(tmp_path: Path, spawn: Spawn) -> None:
    procs, rounds = 4, 8
    host, _ = filelock_identity(tmp_path)
    (tmp_path / "counter").write_text("0")
    plant_claim(tmp_path / "lock.soft", pid=DEAD_PID, host=host, start=None)  # stale from the start
    go, out = CTX.Event(), CTX.Queue()
    children = [spawn(_count_breaking_stale_claims, str(tmp_path), host, rounds, go, out) for _ in range(procs)]
    go.set()
    overlaps = [out.get(timeout=100) for _ in children]
    for child in children:
        join_ok(child, 30)
    assert overlaps == [0] * procs
    assert int((tmp_path / "counter").read_text()) == procs * rounds  # no update lost
    assert [claim.pid for claim in claims_of(tmp_path / "lock.soft")] == [DEAD_PID]  # the last one planted


def test_racing_breakers_in_threads_of_one_process(tmp_path: Path) -> None:
    """Two lock objects of one process (as two boards opened on one path) both find the stale claim."""
    host, _ = filelock_identity(tmp_path)
    plant_claim(tmp_path / "lock.soft", pid=DEAD_PID, host=host, start=None)
    locks = [SoftLock(tmp_path / "lock.soft") for _ in range(2)]
    inside, overlaps, errors = [0], [0], []
    barrier = threading.Barrier(2)

    def work(lock: SoftLock) -> None:
        try:
            barrier.wait(10)
            for _ in range(10):
                lock.acquire(30)
                inside[0] += 1
                if inside[0] > 1:
                    overlaps[0] += 1
                time.sleep(0.005)  # a breaker that removed a live claim would get in meanwhile
                inside[0] -= 1
                plant_claim(lock.path, pid=DEAD_PID, host=host, start=None)
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


# -- identity and the error ---------------------------------------------------------------------------


def test_identity_matches_filelocks_claims(tmp_path: Path) -> None:
    """Our host name and start token are the ones filelock writes: were they to drift apart (a
    filelock upgrade), no claim of this host would look like ours, and none would ever be broken."""
    host, start = filelock_identity(tmp_path)
    assert this_host() == host
    assert start_token(os.getpid()) == start


def test_lock_timeout_with_a_holder_pickles() -> None:
    import pickle

    err = LockTimeout("/srv/b/lock.soft", 1.5, holder="pid 7 on host h (claim files *-v1-ab.claim)")
    assert str(err).startswith("could not take the writer lock /srv/b/lock.soft within 1.5 s (held by pid 7")
    assert "\n" not in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert (back.lock_path, back.timeout, back.holder, str(back)) == (err.lock_path, 1.5, err.holder, str(err))
    assert LockTimeout("/srv/b/lock", 1.5).holder is None


# -- the operator's runbook: blackboard unlock ------------------------------------------------------------


def _unlock(board: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(board), "unlock", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_9_1_unlock_breaks_a_dead_writers_claim_and_keeps_another_hosts_until_forced(tmp_path: Path) -> None:
    path = soft_board(tmp_path)
    lock_path = path / "lock.soft"
    dead = plant_claim(lock_path, pid=_dead_pid(), host=this_host(), start=None)
    other = plant_claim(lock_path, pid=os.getpid(), host="other-host.example", start=None)
    proc = _unlock(path, "--json")
    assert proc.returncode == 0, proc.stderr
    found = {(c["host"], c["broken"], c["stale"]) for c in json.loads(proc.stdout)}
    assert found == {(this_host(), True, True), ("other-host.example", False, False)}
    assert [c.name for c in claims_of(lock_path)] == [other], "only the dead writer's claim goes"
    assert dead not in [c.name for c in claims_of(lock_path)]
    # The runbook: another host's claim stays until the operator, who checked that host, forces it.
    with Board.open(path, lock_timeout=0.3) as board, pytest.raises(LockTimeout) as info:
        board.write("k", 0)
    assert "on host other-host.example" in str(info.value) and " s old" in str(info.value)
    assert "unlock --force" in str(info.value)
    kept = _unlock(path)
    assert kept.returncode == 0 and "kept the held claim of pid" in kept.stdout and "other-host.example" in kept.stdout
    forced = _unlock(path, "--force")
    assert forced.returncode == 0 and "broke the held claim" in forced.stdout and "(--force)" in forced.stdout
    assert claims_of(lock_path) == []
    with Board.open(path, lock_timeout=5) as board:
        assert board.write("k", 1).seq == 1  # the lock is free again
    free = _unlock(path)
    assert free.returncode == 0 and free.stdout.strip() == "no claims: the writer lock is free"


def test_unlock_on_a_flock_board_has_nothing_to_break(tmp_path: Path) -> None:
    path = tmp_path / "b"
    Board.init(path).close()
    proc = _unlock(path, "--force")
    assert proc.returncode == 0 and proc.stdout.strip() == "a flock board: no claims"
    assert json.loads(_unlock(path, "--json").stdout) == []


def _dead_pid() -> int:
    """A pid that no process has: a child that exited and was reaped."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(child.stdout)

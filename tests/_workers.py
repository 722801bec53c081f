"""Helpers for the library tests, and the code their child processes run.

Spawned children import this module by name, so every function a child runs lives here, at top level.
The helpers that judge a board read its files with the standard library only (`json`, `os`), not
with the code under test: a replay of the log written here is what the library's own view is checked
against.
"""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import queue
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from blackboard import (
    BlackboardError,
    Board,
    Compacted,
    ContractViolation,
    CorruptLog,
    Fenced,
    Held,
    InvalidKey,
    InvalidValue,
    KeyNotFound,
    LockLost,
    LockTimeout,
    LogGone,
    LogTruncated,
    NoSuchMessage,
    NotABoard,
    OutOfSpace,
    ReadOnlyBoard,
    Refused,
    StaleView,
    TimedOut,
    UnknownAgent,
    Unverified,
    VersionConflict,
)
from blackboard.core.keys import key_to_relpath

ENTRY_FIELDS = ("key", "value", "version", "seq", "author", "ts")
TESTS_DIR = str(Path(__file__).resolve().parent)
#: Exit status of a watcher child that went idle before its stop key arrived (`watch_and_record`).
EXIT_NO_STOP = 3
#: How the tests start children: spawned, so that a child shares nothing with the parent but its files.
CTX = multiprocessing.get_context("spawn")
#: The `spawn` fixture (tests/conftest.py): `spawn(target, *args, **kwargs)` starts a child, returns it.
Spawn = Callable[..., SpawnProcess]

# -- judging a board from its files ------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes (and every directory, as None) under `root`, by path relative to it."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            out[(base / name).relative_to(root).as_posix() + "/"] = None
        for name in filenames:
            out[(base / name).relative_to(root).as_posix()] = (base / name).read_bytes()
    return out


def log_lines(board: Path) -> list[bytes]:
    """The log's lines without their newlines; the log must end with one (no torn tail)."""
    data = (board / "log.jsonl").read_bytes()
    assert data.endswith(b"\n"), f"the log ends in an incomplete line: {data[-80:]!r}"
    return data.split(b"\n")[:-1]


def log_records(board: Path) -> list[dict[str, Any]]:
    """Every record after the header, parsed with the standard library; seqs must run 1, 2, 3, ..."""
    lines = log_lines(board)
    header = json.loads(lines[0])
    assert isinstance(header, dict) and "blackboard_log" in header, header
    records = [json.loads(line) for line in lines[1:]]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1)), "seqs are not gapless from 1"
    return records


def replay(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The live keys after applying `records` in order: key -> entry document. Checks versions too."""
    state: dict[str, dict[str, Any]] = {}
    for rec in records:
        key = rec["key"]
        previous = state.get(key)
        if rec["op"] == "put":
            expected = 1 if previous is None else previous["version"] + 1
            assert rec["version"] == expected, f"seq {rec['seq']}: version {rec['version']}, expected {expected}"
            state[key] = {f: rec[f] for f in ENTRY_FIELDS}
        elif rec["op"] == "delete":
            assert previous is not None, f"seq {rec['seq']} deletes {key!r}, which is not live"
            assert rec["version"] == 0
            del state[key]
        else:
            raise AssertionError(f"unknown op in {rec}")
    return state


def entry_files(board: Path) -> dict[str, Any]:
    """Every file under entries/, parsed: relative path -> JSON document."""
    root = board / "entries"
    out: dict[str, Any] = {}
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = json.loads(path.read_bytes())
    return out


def assert_entries_match_log(board: Path) -> dict[str, dict[str, Any]]:
    """entries/ holds exactly one file per live key, equal to a replay of the log. Returns the replay."""
    state = replay(log_records(board))
    expected = {key_to_relpath(key): doc for key, doc in state.items()}
    actual = entry_files(board)
    assert actual.keys() == expected.keys(), (
        f"missing {sorted(expected.keys() - actual.keys())}, extra {sorted(actual.keys() - expected.keys())}"
    )
    for rel, doc in expected.items():
        assert actual[rel] == doc, rel
    return state


# -- errors --------------------------------------------------------------------------------------------


def error_samples() -> dict[str, BlackboardError]:
    """One instance of every error class, built as the library builds them."""
    return {
        "InvalidKey": InvalidKey("a//b", "empty segment ('//')"),
        "InvalidValue": InvalidValue("nan is not a JSON number", key="k"),
        "NotABoard": NotABoard("/srv/b", "not a board: no board.json"),
        "KeyNotFound": KeyNotFound("tasks/1"),
        "VersionConflict": VersionConflict("tasks/1", 2, 3),
        "LockTimeout": LockTimeout("/srv/b/lock", 1.5),
        "ReadOnlyBoard": ReadOnlyBoard("/srv/b", "opened with read_only=True"),
        "CorruptLog": CorruptLog("/srv/b/log.jsonl", 120, "not JSON"),
        "Compacted": Compacted(5, 10),
        "LogGone": LogGone("/srv/b/log.jsonl"),
        "LogTruncated": LogTruncated("/srv/b/log.jsonl", 417, 4, 9, "the watermark (materialized)"),
        "OutOfSpace": OutOfSpace("/srv/b/log.jsonl", errno.ENOSPC),
        "LockLost": LockLost("/srv/b/lock.d"),
        "StaleView": StaleView("/srv/b/log.jsonl", 4, 400, 5, 480),
        "UnknownAgent": UnknownAgent("bobb", ["bob"]),
        "NoSuchMessage": NoSuchMessage("bob", "m-0123456789ab"),
        "TimedOut": TimedOut("no reply to request m-0123456789ab from bob within 5 s"),
        "Refused": Refused("conversation c-0123456789ab is closed"),
        "Fenced": Fenced("leases/job", 10, 12),
        "Held": Held("job", "atlas", "2026-12-02T08:00:00.000000Z", 10),
        "ContractViolation": ContractViolation(
            "results/q1", "results/", "schema/properties/answer/type", '"x" is not of type "integer"', "$.answer"
        ),
        "Unverified": Unverified(7, "plan/a", "atlas", "the signature does not match"),
    }


def raise_sample(name: str) -> None:
    """Raise one of `error_samples()` (in a pool worker: the parent receives it pickled)."""
    raise error_samples()[name]


# -- running children -------------------------------------------------------------------------------

Job = tuple[Callable[..., Any], tuple[Any, ...]]


def _run_job(target: Callable[..., Any], args: tuple[Any, ...], barrier: Barrier, out: Queue[Any], slot: int) -> None:
    try:
        result = target(*args, barrier)
    except BaseException:
        out.put((slot, "error", traceback.format_exc()))
        raise
    out.put((slot, "ok", result))


def run_jobs(jobs: Sequence[Job], *, timeout: float) -> list[Any]:
    """Run each `target(*args, barrier)` in its own spawned process; they meet at `barrier` to start
    together. Returns their results in order; fails with the child's traceback if one raised.
    Every child is reaped, killed first if it is still running when we give up."""
    ctx = multiprocessing.get_context("spawn")
    out: Queue[Any] = ctx.Queue()
    barrier = ctx.Barrier(len(jobs))
    procs = [
        ctx.Process(target=_run_job, args=(target, args, barrier, out, slot), daemon=True)
        for slot, (target, args) in enumerate(jobs)
    ]
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.start()
        while len(results) < len(procs):
            try:
                slot, status, payload = out.get(timeout=0.2)
            except queue.Empty:
                assert time.monotonic() < deadline, f"workers did not finish within {timeout} s"
                gone = [i for i, p in enumerate(procs) if i not in results and p.exitcode is not None]
                if gone:  # its result may have landed just now; give it one last chance
                    try:
                        slot, status, payload = out.get(timeout=1.0)
                    except queue.Empty:
                        raise AssertionError(
                            f"worker {gone[0]} exited with {procs[gone[0]].exitcode} and no result"
                        ) from None
                else:
                    continue
            assert status == "ok", f"worker {slot} failed:\n{payload}"
            results[slot] = payload
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            assert proc.exitcode == 0, f"{proc.name} exited with {proc.exitcode}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
        out.close()
        out.join_thread()
    return [results[i] for i in range(len(procs))]


def join_ok(proc: SpawnProcess, timeout: float) -> None:
    """Wait up to `timeout` s for the child `proc`, which must have exited with status 0."""
    proc.join(timeout)
    assert proc.exitcode is not None, f"{proc.name} still running after {timeout} s"
    assert proc.exitcode != EXIT_NO_STOP, f"{proc.name} went idle before its stop key (see its stderr)"
    assert proc.exitcode == 0, f"{proc.name} exited with {proc.exitcode} (see its stderr)"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail, naming `what` was awaited, after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.005)


# -- what children record -------------------------------------------------------------------------------


def append_doc(fd: int, doc: dict[str, Any]) -> None:
    """Append `doc` to `fd` as one JSON line."""
    # One write() of the whole line: a SIGKILL before it leaves nothing, after it the whole line.
    os.write(fd, json.dumps(doc).encode() + b"\n")


def read_docs(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a child wrote to `path` (none if it wrote nothing yet)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    assert not data or data.endswith(b"\n"), f"{path} ends in an incomplete line"
    return [json.loads(line) for line in data.split(b"\n") if line]


# -- children's bodies --------------------------------------------------------------------------------


def cas_incrementer(path: str, n: int, barrier: Barrier) -> dict[str, Any]:
    """Increment the counter `n` times by compare-and-set, retrying on conflicts."""
    board = Board.open(path, author=f"cas-{os.getpid()}")
    barrier.wait(60)
    seqs: list[int] = []
    conflicts = 0
    while len(seqs) < n:
        entry = board.get("counter")
        assert entry is not None
        try:
            written = board.write("counter", entry.value + 1, expect_version=entry.version)
        except VersionConflict as exc:
            assert (exc.key, exc.expected) == ("counter", entry.version)
            assert exc.actual > entry.version, "a conflict must mean somebody else got there first"
            conflicts += 1
            continue
        assert written.version == entry.version + 1
        assert written.value == entry.value + 1
        seqs.append(written.seq)
    board.close()
    return {"seqs": seqs, "conflicts": conflicts}


def counter_reader(path: str, target: int, barrier: Barrier) -> dict[str, Any]:
    """Read the counter until it reaches `target`: it only moves forward, and value == version - 1."""
    board = Board.open(path, read_only=True)
    barrier.wait(60)
    last = 0
    reads = 0
    deadline = time.monotonic() + 100
    while last < target + 1:
        assert time.monotonic() < deadline, f"the counter stopped at version {last}"
        entry = board.get("counter")
        assert entry is not None
        assert entry.value == entry.version - 1, entry
        assert entry.version >= last, f"went back from version {last} to {entry.version}"
        last = entry.version
        reads += 1
    board.close()
    return {"reads": reads, "last": last}


def distinct_writer(path: str, prefix: str, n: int, barrier: Barrier) -> dict[str, Any]:
    """Write `n` keys of our own, reading each back at once (read-your-writes across processes)."""
    board = Board.open(path, author=prefix)
    barrier.wait(60)
    seqs: list[int] = []
    for i in range(n):
        key = f"{prefix}/{i}"
        value = {"by": prefix, "i": i}
        entry = board.write(key, value)
        assert entry.version == 1
        assert board.read(key) == value
        seqs.append(entry.seq)
    board.close()
    return {"seqs": seqs}


def crash_writer(path: str, conn: Connection, go: Event, seed: int) -> None:
    """Write and delete forever (until SIGKILL), sending each change once its call has returned."""
    rng = random.Random(seed)
    board = Board.open(path, author=f"crasher-{os.getpid()}", flush_interval=0.001)
    conn.send(("ready", os.getpid()))
    go.wait(60)
    i = 0
    while True:
        i += 1
        key = f"k/{rng.randrange(8)}"
        if rng.random() < 0.2:
            try:
                entry = board.delete(key)
            except KeyNotFound:
                continue
            conn.send(("delete", entry.seq, key, None))
        else:
            value = {"pid": os.getpid(), "i": i, "pad": "x" * rng.randrange(300)}
            entry = board.write(key, value)
            conn.send(("put", entry.seq, key, value))


def watch_and_record(
    path: str,
    prefix: str,
    out: str,
    *,
    stop_key: str,
    since: int | None,
    cursor: str | None = None,
    poll: bool = False,
    ready: Event | None = None,
    slow: float = 0.0,
    idle_timeout: float = 30.0,
) -> None:
    """Watch `prefix`, appending each event to `out` (its JSON document), until the event of `stop_key`;
    that event is committed (a no-op without `cursor`). Exits with EXIT_NO_STOP, saying so on stderr,
    if `idle_timeout` seconds pass without an event before it.

    The board is opened read-only unless a cursor must be saved in it. `ready` is set once the watch
    exists (with `since=None` it sees what is written after that); `slow` seconds of "work" per event
    make a consumer that lags behind busy writers (and, while compacting, behind compactions).
    """
    board = Board.open(path, read_only=cursor is None)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        with board.watch(
            prefix, since=since, cursor=cursor, timeout=idle_timeout, poll=poll, poll_interval=0.005
        ) as watcher:
            if ready is not None:
                ready.set()
            for event in watcher:
                append_doc(fd, event.as_dict())
                if event.key == stop_key:
                    watcher.commit()
                    return
                if slow:
                    time.sleep(slow)
        print(f"watcher of {prefix!r}: no event for {idle_timeout} s before its stop key", file=sys.stderr)
        sys.exit(EXIT_NO_STOP)
    finally:
        os.close(fd)
        board.close()


def lock_holder(path: str, conn: Connection) -> None:
    """Take the board's writer lock (flock) and hold it until killed."""
    fd = os.open(Path(path) / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    conn.send("locked")
    time.sleep(600)


# -- a process that cannot write the board -------------------------------------------------------------


def _attempt(fn: Callable[[], Any]) -> list[Any]:
    try:
        result = fn()
    except Exception as exc:
        return ["error", type(exc).__name__, str(exc), isinstance(exc, BlackboardError)]
    return ["ok", result]


def probe_unwritable(path: str, drop_to_uid: int | None) -> dict[str, list[Any]]:
    """Every board operation, from a process that may read but not write the board at `path`."""
    if drop_to_uid is not None:
        # What the probe imports lazily, imported while we may still read this interpreter's stdlib
        # (a pyenv Python lives under /root, which another user cannot read).
        import blackboard.core.compact
        import blackboard.core.history
        import blackboard.core.maintain  # noqa: F401

        os.setgroups([])
        os.setgid(drop_to_uid)
        os.setuid(drop_to_uid)
    out: dict[str, list[Any]] = {}
    handle = Board.open(path)
    out["read"] = _attempt(lambda: handle.read("k"))
    out["keys"] = _attempt(handle.keys)
    out["history"] = _attempt(lambda: len(handle.history("k")))
    out["last_seq"] = _attempt(lambda: handle.last_seq)
    out["write"] = _attempt(lambda: handle.write("k", "new"))
    out["delete"] = _attempt(lambda: handle.delete("k"))
    out["repair"] = _attempt(lambda: handle.repair().ok)
    out["check"] = _attempt(lambda: handle.check().ok)
    out["flush"] = _attempt(handle.flush)
    out["close"] = _attempt(handle.close)
    ro = Board.open(path, read_only=True)
    out["ro_read"] = _attempt(lambda: ro.read("k"))
    out["ro_write"] = _attempt(lambda: ro.write("k2", 1))
    out["ro_check"] = _attempt(lambda: ro.check().ok)
    out["ro_close"] = _attempt(ro.close)
    out["init_existing"] = _attempt(lambda: Board.init(path).read("k"))
    out["init_new"] = _attempt(lambda: Board.init(Path(path) / "nested").path.name)
    return out


def probe_main() -> None:
    """`python -c` entry point: probe_unwritable(argv[1], argv[2] or None), printed as JSON."""
    uid = int(sys.argv[2]) if sys.argv[2] else None
    print(json.dumps(probe_unwritable(sys.argv[1], uid)))


def init_and_write(path: str, name: str, barrier: Barrier) -> int:
    """Create the board (all children at once: init is idempotent) and write one key."""
    barrier.wait(60)
    with Board.init(path, author=name) as board:
        return board.write(f"by/{name}", name).seq


#: The settings a CLI test must not inherit from the environment it runs in.
_CLI_ENV_DROP = (
    "BLACKBOARD_DIR",
    "BLACKBOARD_AUTHOR",
    "BLACKBOARD_AGENT",
    "BLACKBOARD_POLL",
    "BLACKBOARD_POLL_INTERVAL",
    "NO_COLOR",
)


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without the board's settings (and NO_COLOR), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _CLI_ENV_DROP}
    env.update(extra)
    return env


def on_pty(argv: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, bytes, str]:
    """Run `argv` with a pseudo-terminal as its stdout: its exit status, all it printed there (as
    bytes, with the terminal's \r\n), and its stderr."""
    import pty
    import tempfile

    main, child = pty.openpty()
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=child, stderr=err, env=env)
            os.close(child)
            child = -1
            out = b""
            while True:
                try:
                    data = os.read(main, 1 << 16)
                except OSError:  # EIO: the child end is closed (the process ended)
                    break
                if not data:
                    break
                out += data
            status = proc.wait(timeout)
        finally:
            if child >= 0:
                os.close(child)
            os.close(main)
        err.seek(0)
        return status, out, err.read().decode(errors="replace")


def command(board: Board, *args: str) -> list[str]:
    """`blackboard ARGS --board B` as this interpreter runs it."""
    return [sys.executable, "-m", "blackboard", *args, "--board", str(board.path)]

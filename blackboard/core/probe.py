"""`blackboard doctor`: what the filesystem under a directory does when tried.

It tries locks, exclusive creates, renames, hard links, change notifications and attribute caching
in a private scratch directory (and, given a second mount of the same directory, what crosses
between the two) and recommends a lock mode and a watch mode. What no probe from one host can show
is stated in every report (`cannot_prove`).

    >>> report = probe("/srv/board")
    >>> report.lock, report.watch, report.poll_interval
    ('soft', 'poll', 0.02)
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

from . import settings as _settings
from .mount import MountInfo, fstype_of

#: A fresh open showing a size older than this is attribute caching, and a writer trusting it
#: appends at a stale end of the log.
LAG_LIMIT = 0.1
#: Polling on a shared mount: each look is a fresh open (a round trip to an NFS server), so half the
#: default rate; p50 stays about 10 ms.
SHARED_POLL_INTERVAL = 0.02
_NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})


class Probe(NamedTuple):
    """One probe's outcome. `ok` is what a board needs (a lock excludes, a rename replaces, ...)."""

    name: str
    ok: bool
    detail: str
    #: A measured delay: a notification's latency, an attribute lag.
    seconds: float | None = None
    #: Fresh looks that still showed the old state (0: the first look after the write saw it).
    samples: int | None = None


class MountReport(NamedTuple):
    """What `probe` found, and the strategy it recommends."""

    path: str
    peer: str | None
    mount: MountInfo
    peer_mount: MountInfo | None
    probes: tuple[Probe, ...]
    lock: Literal["flock", "soft"]
    watch: Literal["notify", "poll"]
    #: Seconds between a polling watcher's looks; None with notify.
    poll_interval: float | None
    warnings: tuple[str, ...]
    cannot_prove: str

    @property
    def network(self) -> bool:
        """Whether DIR (or PEER) is on a mount other clients may share (FUSE, network, unknown)."""
        return self.mount.network or (self.peer_mount is not None and self.peer_mount.network)

    @property
    def safe_for_flock(self) -> bool:
        """A local or memory filesystem whose flock excluded (and crossed to PEER, if given)."""
        return self.lock == "flock"

    def result(self, name: str) -> Probe | None:
        return next((p for p in self.probes if p.name == name), None)

    def as_dict(self) -> dict[str, object]:
        """For `doctor --json`: plain JSON types, probes keyed by name in the order they ran."""
        return {
            "path": self.path,
            "peer": self.peer,
            "mount": self.mount._asdict(),
            "peer_mount": self.peer_mount._asdict() if self.peer_mount is not None else None,
            "network": self.network,
            "safe_for_flock": self.safe_for_flock,
            "lock": self.lock,
            "watch": self.watch,
            "poll_interval": self.poll_interval,
            "probes": {p.name: {k: v for k, v in p._asdict().items() if k != "name"} for p in self.probes},
            "warnings": list(self.warnings),
            "cannot_prove": self.cannot_prove,
        }


_SKIPPED = "skipped: PEER does not show DIR's files"
PEER_PROBES = (
    "peer_same_file",
    "peer_flock",
    "peer_fcntl",
    "peer_notify",
    "peer_lag",
    "peer_lag_reverse",
    "peer_o_excl",
)


def probe(
    path: str | os.PathLike[str], *, peer: str | os.PathLike[str] | None = None, timeout: float = 3.0
) -> MountReport:
    """Probe the mount of directory `path` from this host (and, with `peer`, a second mount of the
    same directory) and recommend a lock and a watch mode.

    Runs in `path/.doctor.<host>.<pid>.<random>/`, always removed afterwards. `timeout` caps each wait
    (a helper's answer, a size to show up; notifications get at most 2 s). Raises FileNotFoundError or
    NotADirectoryError for a missing `path` or `peer`, and the OSError of creating the scratch
    directory (PermissionError, EROFS) where it is not writable; a probe that fails is a result.
    """
    import secrets

    from .lock import host_tag

    root, peer_root = _directory(path), (_directory(peer) if peer is not None else None)
    scratch = root / f".doctor.{host_tag()}.{os.getpid()}.{secrets.token_hex(4)}"
    scratch.mkdir(mode=0o700)
    removed = False
    try:
        probes = _local_probes(scratch, timeout)
        if peer_root is not None:
            probes += _peer_probes(scratch, peer_root / scratch.name, timeout)
    finally:
        removed = _remove(scratch)
    mounts = [fstype_of(root), *([fstype_of(peer_root)] if peer_root is not None else [])]
    lock, watch, interval, warnings = _recommend(mounts, probes)
    if not removed:
        warnings.append(f"could not remove {scratch}: remove it by hand")
    return MountReport(
        path=str(root),
        peer=None if peer_root is None else str(peer_root),
        mount=mounts[0],
        peer_mount=mounts[1] if peer_root is not None else None,
        probes=tuple(probes),
        lock=lock,
        watch=watch,
        poll_interval=interval,
        warnings=tuple(dict.fromkeys(warnings)),
        cannot_prove=_cannot_prove(peer_root is not None),
    )


def _directory(path: str | os.PathLike[str]) -> Path:
    resolved = Path(path).resolve()
    if not resolved.exists():
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(path))
    if not resolved.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
    return resolved


def _remove(scratch: Path) -> bool:
    import shutil

    for _ in range(50):  # a FUSE mount may keep a .fuse_hidden file a moment after its last close
        try:
            shutil.rmtree(scratch)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.02)
    return False


def _why(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    return f"{name}: {exc.strerror}" if name and exc.strerror else str(exc)


def _run(name: str, check: Callable[[], Probe]) -> Probe:
    try:
        return check()
    except OSError as exc:  # the probe's own operation failed: that is its result
        return Probe(name, False, f"failed ({_why(exc)})")
    except RuntimeError as exc:  # watchfiles' own error (WatchfilesRustInternalError)
        return Probe(name, False, f"failed ({exc})")


def _local_probes(scratch: Path, timeout: float) -> list[Probe]:
    s = scratch
    return [
        _run("flock", lambda: _flock("flock", s / "flock", s / "flock", "a second open of the file")),
        _run("fcntl", lambda: _posix_lock("fcntl", s / "fcntl", s / "fcntl", timeout, "")),
        _run("o_excl", lambda: _o_excl("o_excl", s / "excl", s / "excl", "")),
        _run("rename_file", lambda: _rename_file(s)),
        _run("rename_dir_empty", lambda: _rename_dir_empty(s)),
        _run("rename_dir_nonempty", lambda: _rename_dir_nonempty(s)),
        _run("rename_missing", lambda: _rename_missing(s)),
        _run("hard_link", lambda: _hard_link(s)),
        _run("notify", lambda: _notify("notify", s, s / "notify", timeout, "")),
        _run("attr_lag", lambda: _lag("attr_lag", s / "lag", s / "lag", timeout, "")),
    ]


def _peer_probes(here: Path, there: Path, timeout: float) -> list[Probe]:
    same = _run("peer_same_file", lambda: _same_file(here, there, timeout))
    if not same.ok:
        return [same, *(Probe(n, False, _SKIPPED) for n in PEER_PROBES[1:])]
    via = " via PEER"
    return [
        same,
        _run("peer_flock", lambda: _flock("peer_flock", here / "p.flock", there / "p.flock", "an open via PEER")),
        _run("peer_fcntl", lambda: _posix_lock("peer_fcntl", here / "p.fcntl", there / "p.fcntl", timeout, via)),
        _run("peer_notify", lambda: _notify("peer_notify", there, here / "p.notify", timeout, " via DIR")),
        # Both ways: only the mount that caches attributes shows a lag, and it may be either.
        _run("peer_lag", lambda: _lag("peer_lag", here / "p.lag", there / "p.lag", timeout, " via DIR, seen via PEER")),
        _run(
            "peer_lag_reverse",
            lambda: _lag("peer_lag_reverse", there / "p.rlag", here / "p.rlag", timeout, " via PEER, seen via DIR"),
        ),
        _run("peer_o_excl", lambda: _o_excl("peer_o_excl", here / "p.excl", there / "p.excl", via)),
    ]


def _touch(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _fresh_size(path: Path) -> int:
    """The size a fresh open shows: what a writer that opens the log after taking the lock trusts."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _flock(name: str, a: Path, b: Path, second: str) -> Probe:
    """A flock belongs to an open file description: a second open, here or via PEER, must be refused."""
    import fcntl

    _touch(a)
    with contextlib.ExitStack() as stack:
        fd_a, fd_b = os.open(a, os.O_RDWR), os.open(b, os.O_RDWR)
        stack.callback(os.close, fd_a)
        stack.callback(os.close, fd_b)
        try:
            fcntl.flock(fd_a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                return Probe(name, False, f"unavailable ({_why(exc)})")
            raise
        try:
            fcntl.flock(fd_b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return Probe(name, True, f"excludes: {second} got EWOULDBLOCK")
        return Probe(name, False, f"excludes nothing: {second} took it too")


def _posix_lock(name: str, child_path: Path, here: Path, timeout: float, via: str) -> Probe:
    """POSIX record locks belong to a process: one taken by a helper process must block this one,
    and be released when the helper exits."""
    import fcntl

    def attempt() -> bool:
        fd = os.open(here, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        finally:
            os.close(fd)  # drops this process's lock, if it got one
        return True

    _touch(child_path)
    with _child("lockf", child_path) as answer:
        reply = answer(time.monotonic() + timeout)
        if reply[0] != "done":
            code = int(reply[1])
            return Probe(name, False, f"unavailable ({errno.errorcode.get(code, code)}: {os.strerror(code)})")
        if attempt():
            return Probe(name, False, f"excludes nothing: another process's lock did not block one{via}")
    if not attempt():
        return Probe(name, False, f"excludes{via}, but a lock outlived the process that held it")
    return Probe(name, True, f"excludes: another process's lock blocked one{via}; released when it exited")


def _o_excl(name: str, a: Path, b: Path, via: str) -> Probe:
    os.path.lexists(b)  # look it up first: a mount that caches "no such file" must still refuse
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    os.close(os.open(a, flags, 0o600))
    try:
        os.close(os.open(b, flags, 0o600))
    except FileExistsError:
        return Probe(name, True, f"a second exclusive create{via} got EEXIST")
    return Probe(name, False, f"a second exclusive create{via} succeeded too: O_EXCL excludes nothing")


def _rename_file(scratch: Path) -> Probe:
    """Replace a file again and again while a thread opens it: a reader must always find a whole file."""
    import threading

    target, new = scratch / "replaced", scratch / "replacement"
    target.write_bytes(b"0")
    stop = threading.Event()
    opens, problems = [0], []

    def read() -> None:
        while not stop.is_set():
            try:
                data = target.read_bytes()
            except OSError as exc:
                problems.append(_why(exc))
                continue
            opens[0] += 1
            if not data.isdigit():
                problems.append(f"read {data[:20]!r}")

    reader = threading.Thread(target=read, name="doctor-rename-reader", daemon=True)
    reader.start()
    i, cap = 0, time.monotonic() + 1.0
    try:
        # At least 100 renames and 100 reads: the reader thread may not run at all during the first.
        while i < 100 or (opens[0] < 100 and time.monotonic() < cap):
            i += 1
            new.write_bytes(str(i).encode())
            os.replace(new, target)
    finally:
        stop.set()
        reader.join()
    if target.read_bytes() != str(i).encode() or new.exists():
        return Probe("rename_file", False, "a rename over a file did not replace it")
    if problems:
        return Probe(
            "rename_file", False, f"not atomic: {len(problems)} of {len(problems) + opens[0]} reads found {problems[0]}"
        )
    return Probe("rename_file", True, f"replaces a file atomically ({i} renames, {opens[0]} reads, none missed)")


def _rename_dir_empty(scratch: Path) -> Probe:
    src, dst = scratch / "dir.src", scratch / "dir.empty"
    src.mkdir()
    (src / "mark").write_bytes(b"src")
    dst.mkdir()
    os.rename(src, dst)
    if (dst / "mark").read_bytes() != b"src" or src.exists():
        return Probe("rename_dir_empty", False, "a rename onto an empty directory did not replace it")
    return Probe("rename_dir_empty", True, "a directory renamed onto an empty one replaces it")


def _rename_dir_nonempty(scratch: Path) -> Probe:
    src, dst = scratch / "dir.src2", scratch / "dir.full"
    src.mkdir()
    (src / "mark").write_bytes(b"src")
    dst.mkdir()
    (dst / "other").write_bytes(b"dst")
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if not ((src / "mark").exists() and (dst / "other").exists()):
            return Probe("rename_dir_nonempty", False, f"refused ({_why(exc)}) but changed a directory")
        return Probe("rename_dir_nonempty", True, f"onto a non-empty directory fails ({errno.errorcode[exc.errno]})")
    return Probe("rename_dir_nonempty", False, "a rename replaced a non-empty directory")


def _rename_missing(scratch: Path) -> Probe:
    try:
        os.rename(scratch / "absent", scratch / "absent.to")
    except FileNotFoundError:
        return Probe("rename_missing", True, "a missing source fails with ENOENT")
    return Probe("rename_missing", False, "a rename of a missing file succeeded")


def _hard_link(scratch: Path) -> Probe:
    """Locks that publish a file by linking it (filelock's) need a link to be the same inode."""
    a, b = scratch / "link.a", scratch / "link.b"
    a.write_bytes(b"x")
    os.link(a, b)
    st_a, st_b = os.stat(a), os.stat(b)
    if st_a.st_nlink == 2 and st_a.st_ino == st_b.st_ino:
        return Probe("hard_link", True, "a link is the same inode, st_nlink 2")
    same = "the same inode" if st_a.st_ino == st_b.st_ino else "another inode"
    return Probe("hard_link", False, f"a link shows st_nlink {st_a.st_nlink} and {same} (as sshfs does)")


def _notify(name: str, watched: Path, written: Path, timeout: float, via: str) -> Probe:
    """Whether a watch on `watched` hears of a file another process writes (via DIR, for PEER)."""
    import watchfiles

    limit = min(timeout, 2.0)
    changes = watchfiles.watch(
        watched,
        watch_filter=None,
        debounce=0,
        step=1,
        rust_timeout=50,
        yield_on_timeout=True,
        debug=False,
        raise_interrupt=False,
        force_polling=False,
        # Were notify to fall back to polling on its own, it must not pass for notifications.
        poll_delay_ms=600_000,
        recursive=False,
        ignore_permission_denied=False,
    )
    try:
        next(changes)  # its first yield (a 50 ms timeout) comes after the watch exists
        deadline = time.monotonic() + limit
        with _child("append", written) as answer:
            at = _written_at(answer(deadline))
            for batch in changes:
                if any(os.path.basename(p) == written.name for _, p in batch):
                    seconds = max(0.0, time.monotonic() - at)
                    return Probe(name, True, f"a write by another process{via} woke it in {seconds:.3f} s", seconds)
                if time.monotonic() >= deadline:
                    break
    finally:
        changes.close()
    return Probe(name, False, f"a write by another process{via} woke nothing in {limit:g} s")


def _lag(name: str, written: Path, looked: Path, timeout: float, how: str) -> Probe:
    """How long a fresh open+fstat shows the old size after another process appended: a writer that
    trusts it appends at a stale end of the log (bindfs with its defaults: ~1 s)."""
    _touch(written)
    before = _fresh_size(looked)  # look first: a mount that caches attributes now holds this size
    deadline = time.monotonic() + timeout
    samples = 0
    with _child("append", written) as answer:
        at = _written_at(answer(deadline))
        while _fresh_size(looked) <= before:
            samples += 1
            if time.monotonic() >= deadline:
                detail = f"another process's append{how}: a fresh open still showed the old size after {timeout:g} s"
                return Probe(name, False, detail, None, samples)
            time.sleep(0.001)
    seconds = 0.0 if samples == 0 else max(0.0, time.monotonic() - at)
    detail = f"another process's append{how}: " + (
        "the first fresh open showed it"
        if samples == 0
        else f"a fresh open showed it after {seconds:.3f} s ({samples} stale looks)"
    )
    return Probe(name, seconds <= LAG_LIMIT, detail, seconds, samples)


def _same_file(here: Path, there: Path, timeout: float) -> Probe:
    import secrets

    token = secrets.token_hex(8)
    (here / f"same.{token}").write_text(token)
    deadline = time.monotonic() + timeout
    start, samples = time.monotonic(), 0
    while True:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if (there / f"same.{token}").read_text() == token:
                seconds = time.monotonic() - start
                return Probe(
                    "peer_same_file", True, f"PEER shows a file written via DIR ({samples} misses)", seconds, samples
                )
        if time.monotonic() >= deadline:
            return Probe("peer_same_file", False, f"PEER did not show a file written via DIR in {timeout:g} s")
        samples += 1
        time.sleep(0.001)


# A helper process: POSIX locks belong to a process, and watchers must hear of other processes' writes.
# It answers one line ("done MONOTONIC" or "error ERRNO"), then holds what it took until its stdin closes.
_CHILD = """\
import fcntl, os, sys, time
mode, path = sys.argv[1:]
try:
    if mode == "lockf":
        fd = os.open(path, os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(fd, b"written by another process\\n")
        os.close(fd)
except OSError as exc:
    print("error", exc.errno, flush=True)
else:
    print("done", time.monotonic(), flush=True)
sys.stdin.read()
"""


def _written_at(reply: list[str]) -> float:
    """The helper's "done MONOTONIC" as a time; its "error ERRNO" as the OSError it got."""
    if reply[0] != "done":
        code = int(reply[1])
        raise OSError(code, f"the helper process's write failed: {os.strerror(code)}")
    return float(reply[1])


@contextlib.contextmanager
def _child(mode: str, path: Path) -> Iterator[Callable[[float], list[str]]]:
    """Run the helper; yields a function that waits (until a monotonic deadline) for its answer."""
    import subprocess

    # -I: the standard library only, whatever PYTHONPATH or the current directory hold.
    argv = [sys.executable, "-I", "-c", _CHILD, mode, os.fspath(path)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None

    def answer(deadline: float) -> list[str]:
        import select

        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                raise TimeoutError(errno.ETIMEDOUT, "the helper process did not answer in time")
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                raise ChildProcessError(errno.ECHILD, "the helper process exited without an answer")
            line += chunk
        return line.decode().split()

    try:
        yield answer
    finally:
        proc.stdin.close()  # the helper lets go of its lock and exits
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # stuck on a hung mount
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _recommend(
    mounts: list[MountInfo], probes: list[Probe]
) -> tuple[Literal["flock", "soft"], Literal["notify", "poll"], float | None, list[str]]:
    by = {p.name: p for p in probes}  # a skipped probe proves nothing: never "ok", never warned about
    shared = [m for m in mounts if m.network]
    warnings = [
        f"{m.mount_point or '?'} is {m.fstype or 'of an unknown type'} ({m.kind}): other clients of this mount may not "
        "see its flocks or raise its change notifications; use soft locking and polling"
        for m in shared
    ]

    def ok(*names: str) -> bool:
        return all(by[n].ok for n in names if n in by)

    def failed(name: str) -> bool:
        return name in by and not by[name].ok and by[name].detail != _SKIPPED

    if failed("flock"):
        warnings.append(f"flock does not work here ({by['flock'].detail}): use soft locking")
    if failed("peer_same_file"):
        warnings.append("PEER does not show a file written via DIR: it is not a mount of the same directory")
    elif failed("peer_flock"):
        warnings.append(
            "a flock taken via DIR does not exclude one via PEER: a flock board written through both would "
            "corrupt; use soft locking"
        )
    if failed("o_excl") or failed("peer_o_excl"):
        warnings.append("exclusive creates (O_EXCL) do not exclude here: no lock mode can work (not supported)")
    if failed("rename_file") and by["rename_file"].detail.startswith("not atomic"):
        warnings.append(
            f"a file replaced by rename is not always there for a reader opening it ({by['rename_file'].detail}); "
            "the format assumes atomic rename: readers of entry files, and of the log across a compaction, "
            "can find them missing"
        )
    for name in ("rename_file", "rename_dir_empty", "rename_dir_nonempty", "rename_missing"):
        if failed(name) and not by[name].detail.startswith("not atomic"):
            warnings.append(f"{name}: {by[name].detail}; compaction and the soft lock rely on it (not supported)")
    if failed("hard_link"):
        warnings.append(f"hard links: {by['hard_link'].detail}; locks that publish a file by link fail here")
    if (failed("notify") or failed("peer_notify")) and not shared:
        warnings.append("change notifications are not delivered here: watchers must poll")
    for name in ("attr_lag", "peer_lag", "peer_lag_reverse"):
        if failed(name):
            warnings.append(
                f"the mount caches attributes: {by[name].detail}. Writers there see a stale end of the log and a "
                "board on it may corrupt (not supported); on FUSE, mount with attr_timeout=0,entry_timeout=0,"
                "negative_timeout=0"
            )
    lock: Literal["flock", "soft"] = "flock" if not shared and ok("flock", "peer_flock") else "soft"
    if not shared and ok("notify", "peer_notify"):
        return lock, "notify", None, warnings
    return lock, "poll", SHARED_POLL_INTERVAL if shared else _settings.DEFAULT_POLL_INTERVAL, warnings


def _cannot_prove(with_peer: bool) -> str:
    measured = (
        "Measured here: DIR against PEER only, from this one host."
        if with_peer
        else "With --peer DIR2 (a second mount of the same directory) the lock and the lag between the two are "
        "measured instead."
    )
    return (
        "A probe from one host cannot show that another client of this mount (another machine, or another mount "
        "of the same directory) shares these locks or sees writes promptly. On any mount shared between machines, "
        "a local directory exported to others included, choose soft locking (init --lock soft) and polling; on "
        "FUSE, mount with attribute caching off (e.g. bindfs -o attr_timeout=0,entry_timeout=0,negative_timeout=0). "
        + measured
    )

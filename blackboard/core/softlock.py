"""The soft lock: a token file moved by rename, for filesystems where flock is not shared (NFS, FUSE).

A soft lock on `P` is the directory `P.d/`, which holds exactly one token file at all times:
`free` while nobody holds the lock, `held.<owner>.<n>` while a process does (spec section 9.1).
Every transition is one rename of the token's current name, and renaming a name that is gone fails
(ENOENT) on every filesystem tried, NFS included, where the server decides and no client cache can
make two renames of one name both succeed. So exactly one contender wins each transition:

- acquire: rename(`free`, `held.<me>.0`); only one contender can move `free`;
- release: rename(`held.<me>.<n>`, `free`), by the holder, after writing its handover note into it;
- renew (a hold longer than RENEW_SECONDS): rename(`held.<me>.<n>`, `held.<me>.<n+1>`);
- break: rename(`held.<X>.<n>`, `free`). It names one hold exactly (<X> carries a random nonce per
  hold, <n> moves on every renewal), so a breaker acting on an old or cached listing hits nothing.
  A breaker may do it when X is of this host and provably gone (`claim_is_stale`), or when it has
  seen that same name for LEASE_SECONDS of its own monotonic clock: X renews every RENEW_SECONDS,
  so it is dead or stalled that long. No clock is compared across hosts.

No file of the lock is ever unlinked, or renamed over, while another process may have it open, so
no `.nfs*` or `.fuse_hidden*` silly renames appear: their absence from filelock's list of known names
is what made its strict soft lock raise "Invalid strict soft-lock state" on FUSE (issue 9). A
holder paused past the lease (SIGSTOP, a suspended VM) can be broken while it believes it holds:
every lease has that limit; its release then finds its token gone and says so.

The token's content is the handover note of the last release (`note`, fixed width): the log's last
seq and end as the releaser left them. The next holder's fresh view of the log must reach them; a
view that does not is a stale cache (spec section 8), not a log to append to.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import threading
import time
from pathlib import Path
from typing import ClassVar, NamedTuple

from xxhash import xxh3_64_hexdigest

from ..errors import ReadOnlyBoard
from .lock import LockPolicy, claim_is_stale, start_token, this_host
from .notice import warn

#: A contender breaks a hold whose token name it has seen unchanged this long (its own clock).
LEASE_SECONDS = 15.0
#: A holder renews this often while it holds: a fifth of the lease, so that a late renewal or two
#: (a busy machine, a slow server) never lets a live hold look dead.
RENEW_SECONDS = LEASE_SECONDS / 5
FREE = "free"
HELD = "held."
#: The note's width: a token never changes size, so a client with a cached size reads it whole.
NOTE_BYTES = 64


class Note(NamedTuple):
    """What the last release recorded: the log's last seq, its end offset, and its generation."""

    seq: int
    end: int
    generation: str


class Owner(NamedTuple):
    """Who holds a token, parsed from its name `held.<host>.<hosttag>.<pid>.<start>.<nonce>.<n>`."""

    host: str  # the host name, readable (escaped: see _name_part)
    tag: str  # 16 hex: this_host() hashed, which is what "this host" is compared by
    pid: int
    start: int | None
    nonce: str
    renewals: int

    def of_this_host(self) -> bool:
        return self.tag == _host_tag16()

    def gone(self) -> bool:
        """Whether this owner is provably gone: of this host, and its process is not running."""
        return self.of_this_host() and claim_is_stale(self.pid, this_host(), self.start)


def parse_owner(name: str) -> Owner | None:
    parts = name.split(".")
    if len(parts) != 7 or parts[0] != "held":
        return None
    _, host, tag, pid, start, nonce, renewals = parts
    try:
        return Owner(host, tag, int(pid), None if start == "x" else int(start, 16), nonce, int(renewals))
    except ValueError:
        return None


def format_note(note: Note) -> bytes:
    return f"{note.seq} {note.end} {note.generation}".encode("ascii").ljust(NOTE_BYTES - 1) + b"\n"


def parse_note(data: bytes) -> Note | None:
    """The note a token holds, or None (an empty token: a new lock, or one written by no release)."""
    fields = data.split()
    if len(fields) != 3:
        return None
    try:
        return Note(int(fields[0]), int(fields[1]), fields[2].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


class Claim(NamedTuple):
    """A soft lock's token, as `SoftLock.unlock` found (and maybe broke) it."""

    state: str  # "held", or "none": the lock directory holds no token (`broken`: one was put back)
    pid: int
    host: str
    age: float | None  # seconds since the token last moved (taken or renewed), if it could be read
    stale: bool  # its owner is provably gone (spec 9.1)
    broken: bool

    def as_dict(self) -> dict[str, object]:
        return self._asdict()


class SoftLock(LockPolicy):
    """The token lock on `path` (its directory is `path.d/`). See the module for the protocol."""

    # An attempt is one failing rename (~2 us here, a round trip on NFS) and holds are short: back
    # off only to 5 ms. At 50 ms a sleeping waiter lost to the writer that had just released and
    # took the lock again, and four local writers' p99 wait was 100 ms (bench sharedfs section).
    _first_poll = 0.0002
    _max_poll = 0.005
    #: A failed attempt lists the directory (to judge the holder) at most this often.
    _look_every: ClassVar[float] = 0.05

    def __init__(self, path: Path) -> None:
        self.directory = Path(f"{path}.d")
        self._free = f"{self.directory}/{FREE}"
        self._state = threading.Lock()  # the token's name against the renewer thread
        self._name = ""  # our token's path while we hold it
        self._base = ""  # our token's path without its renewal count
        self._renewals = 0
        self._renewed = 0.0
        self._next_look = 0.0
        self._seen: tuple[str, float] = ("", 0.0)  # a held name seen, and since when (monotonic)
        #: the note the last release left, read when we took the lock
        self.note: Note | None = None
        #: the note our release will leave (the engine sets it after an append)
        self.note_out: Note | None = None
        super().__init__(path)

    # -- the backend hooks ------------------------------------------------------------------------

    def _open(self) -> None:
        self._next_look = 0.0
        self._seen = ("", 0.0)
        if not os.path.isdir(self.directory):  # a board of an older release: the first attempt can win
            create_lock_dir(self.directory)

    def _close(self) -> None:
        pass  # nothing kept open between holds

    def _forget_parent(self) -> None:
        # The renewer thread may have held `_state` at fork(): in the child nobody would release it.
        self._state = threading.Lock()
        self._name = self._base = ""
        super()._forget_parent()

    def _acquire(self) -> bool:
        return self._attempt() or (self._wait_or_break() and self._attempt())

    def _attempt(self) -> bool:
        mine = self._new_base()
        try:
            os.rename(self._free, f"{mine}.0")
        except FileNotFoundError:
            return False
        except PermissionError:
            raise ReadOnlyBoard(str(self.directory.parent), "cannot move the lock's token") from None
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise ReadOnlyBoard(str(self.directory.parent), "read-only filesystem") from None
            raise
        with self._state:
            self._base, self._renewals, self._name = mine, 0, f"{mine}.0"
            self._renewed = time.monotonic()
        self.note = self._read_note()
        self.note_out = None
        _renewer.add(self)
        return True

    def _release(self) -> None:
        _renewer.remove(self)
        with self._state:
            name, self._name = self._name, ""
            if not name:
                return  # the renewer found our hold broken, and said so
            note = self.note_out
            try:
                if note is not None and note != self.note:
                    try:
                        _write_note(name, note)
                    except FileNotFoundError:
                        raise  # the token is gone: our hold was broken (below)
                    except (OSError, ValueError) as exc:
                        # The note is a lower bound for the next holder, not the write: release anyway
                        # (a stranded token would block every writer for a lease).
                        warn("%s: could not leave the handover note (%s); releasing without it", name, exc)
                os.rename(name, self._free)
            except FileNotFoundError:
                _lost(name)

    # -- holding ------------------------------------------------------------------------------------

    def _new_base(self) -> str:
        return f"{self.directory}/{HELD}{_identity()}.{os.urandom(4).hex()}"

    def _read_note(self) -> Note | None:
        try:
            return _note_of(self._name)
        except OSError:
            return None

    def renew_if_due(self, now: float) -> None:
        """Move our token to its next name if the last move is RENEW_SECONDS old (the renewer thread)."""
        with self._state:
            if not self._name or now - self._renewed < RENEW_SECONDS:
                return
            name = self._name
            try:
                if not self._move(now):
                    _lost(name)
            except OSError:
                pass  # a transient error (a server away): the next round tries again

    def renew_now(self) -> bool:
        """Right before a change to the log: whether we still hold the lock. Proven by a renewal
        unless the last one is recent (under half the lease: no contender can have broken it)."""
        with self._state:
            if not self._name:
                return False  # the renewer found it broken
            now = time.monotonic()
            return now - self._renewed < LEASE_SECONDS / 2 or self._move(now)

    def _move(self, now: float) -> bool:
        """Renew: our token to its next name (with `_state` held). False if it was gone: our hold was
        broken, and is forgotten (the caller says so; release has nothing left to do)."""
        new = f"{self._base}.{self._renewals + 1}"
        try:
            os.rename(self._name, new)
        except FileNotFoundError:
            self._name = ""
            return False
        self._name, self._renewals, self._renewed = new, self._renewals + 1, now
        return True

    # -- waiting ------------------------------------------------------------------------------------

    def _wait_or_break(self) -> bool:
        """After a failed attempt: look at the holder now and then, and break a dead or expired hold.
        Returns whether it broke one (the lock is then free for the next attempt)."""
        now = time.monotonic()
        if now < self._next_look:
            return False
        self._next_look = now + self._look_every
        token = self._token()
        if token is None or token == FREE:
            return False
        owner = parse_owner(token)
        if owner is None:
            return False  # not a name of ours: nothing we may touch
        if token != self._seen[0]:
            self._seen = (token, now)
        expired = now - self._seen[1] >= LEASE_SECONDS
        if owner.gone() or expired:
            try:
                os.rename(f"{self.directory}/{token}", self._free)
            except FileNotFoundError:
                return False  # it moved meanwhile: nothing was broken
            else:
                if expired and not owner.gone():
                    warn(
                        "%s: broke the writer lock of pid %d on host %s: it did not renew its hold for %.0f s",
                        self.directory,
                        owner.pid,
                        owner.host,
                        LEASE_SECONDS,
                    )
                return True
        return False

    def _token(self) -> str | None:
        """The token's name as a listing shows it (None: none, several, or no lock directory yet)."""
        tokens = self._tokens()
        return tokens[0] if len(tokens) == 1 else None

    def _tokens(self) -> list[str]:
        try:
            return tokens_in(self.directory)
        except FileNotFoundError:
            create_lock_dir(self.directory)
            return []

    def _holder(self) -> str | None:
        tokens = self._tokens()
        if not tokens:
            return f"nobody: {self.directory} holds no token (`unlock --force` puts one back)"
        if len(tokens) > 1:
            return (
                f"nobody: {self.directory} holds {len(tokens)} tokens ({', '.join(tokens)}): remove all but one by hand"
            )
        token = tokens[0]
        owner = parse_owner(token) if token != FREE else None
        if owner is None:
            return None
        age = _age(self.directory / token)
        since = f", {age:.0f} s since it last renewed" if age is not None else ""
        return f"pid {owner.pid} on host {owner.host} (token {self.directory}/{token}{since})"

    # -- the operator's runbook ----------------------------------------------------------------------

    def unlock(self, *, force: bool = False) -> list[Claim]:
        """The token, broken if its owner is provably gone (as waiters do) or, with `force`, whatever
        its owner (the operator's call once a crashed host's writer is known dead: a live holder would
        then overlap with the next one). With `force`, a directory left with no token gets one."""
        with self._thread_lock:  # not while this process's own writer holds or takes it
            tokens = self._tokens()
            if len(tokens) > 1:  # never made by the protocol: by hand, a restore; not ours to pick
                return [Claim("several", 0, ", ".join(tokens), None, False, False)]
            if not tokens:
                # No token (removed by hand, or by a bug): every writer waits until one is put back.
                # Only once listings over more than a renewal interval all show none: a listing that
                # raced a rename must not mint a second token.
                restored = force and self.directory.is_dir() and self._stays_empty()
                if restored:
                    _put_token(self.directory)
                return [Claim("none", 0, "", None, False, restored)]
            token = tokens[0]
            owner = parse_owner(token) if token != FREE else None
            if owner is None:
                return []
            stale = owner.gone()
            age = _age(self.directory / token)
            broken = False
            if stale or force:
                with contextlib.suppress(FileNotFoundError):  # released meanwhile
                    os.rename(self.directory / token, self._free)
                    broken = True
            return [Claim("held", owner.pid, owner.host, age, stale, broken)]

    def _stays_empty(self) -> bool:
        deadline = time.monotonic() + RENEW_SECONDS * 1.5
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if tokens_in(self.directory):
                return False
        return True


# -- the lock directory ---------------------------------------------------------------------------------


def tokens_in(directory: Path) -> list[str]:
    """The token names a listing of a lock directory shows (other names, such as `.nfs*`, are not)."""
    return [name for name in os.listdir(directory) if name == FREE or name.startswith(HELD)]


def create_lock_dir(directory: Path) -> None:
    """Make `directory` holding one `free` token, atomically: a directory prepared beside it is
    renamed into place, which fails if another process made one first (two creators must never
    leave two tokens)."""
    staging = directory.parent / "tmp" / f"lockdir.{_host_tag16()[:8]}.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        staging.mkdir(parents=True)
        _put_token(staging)
        os.rename(staging, directory)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            # A reader (check) on a read-only mount or another user's board: no lock to be had.
            raise ReadOnlyBoard(str(directory.parent), "cannot create the lock directory") from None
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        # Another process made it first: ours was never seen by anyone.
        with contextlib.suppress(OSError):
            os.unlink(staging / FREE)
            os.rmdir(staging)


def read_note(directory: Path) -> Note | None:
    """The note in the token of the lock directory, read without taking the lock (check): the token
    may move while we look, so a name that went away is looked up again (a few times)."""
    for _ in range(5):
        try:
            tokens = tokens_in(directory)
        except FileNotFoundError:
            return None
        if len(tokens) != 1:
            return None
        try:
            return _note_of(directory / tokens[0])
        except FileNotFoundError:
            continue
    return None


def _note_of(path: Path | str) -> Note | None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return parse_note(os.read(fd, NOTE_BYTES))
    finally:
        os.close(fd)


def _write_note(token: str, note: Note) -> None:
    fd = os.open(token, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, format_note(note), 0)
    finally:
        os.close(fd)  # close-to-open: on NFS the note reaches the server here


def _put_token(directory: Path) -> None:
    fd = os.open(directory / FREE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        os.write(fd, b" " * (NOTE_BYTES - 1) + b"\n")
    finally:
        os.close(fd)


def _age(path: Path) -> float | None:
    try:
        return max(0.0, time.time() - os.stat(path).st_ctime)  # a rename sets ctime
    except OSError:
        return None


def _lost(name: str) -> None:
    warn(
        "%s: this process's hold on the writer lock was broken while it held it (no renewal for %.0f s: "
        "the process was paused?); another writer may have written meanwhile: run `blackboard check`",
        name,
        LEASE_SECONDS,
    )


def _name_part(host: str) -> str:
    """`host` as one dot-free part of a file name: [A-Za-z0-9-] kept, other bytes as _xx, at most 64."""
    out = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "-") else f"_{ord(ch):02x}" for ch in host)
    return out[:64] or "_"


@functools.cache
def _host_tag16() -> str:
    return xxh3_64_hexdigest(this_host().encode())


_IDENTITY: dict[int, str] = {}


def _identity() -> str:
    """`<host>.<hosttag>.<pid>.<start>` of this process, once per process (the start is read from
    /proc: ~20 us, too much for every attempt)."""
    pid = os.getpid()
    found = _IDENTITY.get(pid)
    if found is None:
        start = start_token(pid)
        found = _IDENTITY[pid] = (
            f"{_name_part(this_host())}.{_host_tag16()}.{pid}.{'x' if start is None else format(start, 'x')}"
        )
    return found


# -- renewal ----------------------------------------------------------------------------------------------


class _Renewer:
    """One daemon thread per process that renews the soft locks held longer than RENEW_SECONDS.

    Started on the first hold; a forked child starts its own (threads do not survive fork)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[int, SoftLock] = {}
        self._pid = -1

    def add(self, lock: SoftLock) -> None:
        with self._mutex:
            self._held[id(lock)] = lock
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="blackboard-lock-renewer", daemon=True).start()

    def remove(self, lock: SoftLock) -> None:
        with self._mutex:
            self._held.pop(id(lock), None)

    def _run(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(RENEW_SECONDS / 3)
            with self._mutex:
                held = list(self._held.values())
            now = time.monotonic()
            for lock in held:
                try:
                    lock.renew_if_due(now)
                except Exception as exc:  # one lock's failure must not end renewal for every lock
                    warn("%s: could not renew the lock: %s", lock.directory, exc)

    def forget_parent(self) -> None:
        self._mutex = threading.Lock()
        self._held = {}
        self._pid = -1


_renewer = _Renewer()
os.register_at_fork(after_in_child=_renewer.forget_parent)

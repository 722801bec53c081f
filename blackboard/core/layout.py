"""The board directory: where each file lives, creating a board, and reading its settings.

board.json          format marker and shared settings (written once, at init)
log.jsonl           the append-only log: a header line, then one record per line (tail -F this)
lock                the writer lock (flock mode); never deleted or replaced
lock.d/             the writer lock's token (soft mode, for network filesystems): free or held.*
materialized        the watermark: last seq whose effect is in entries/
materialize.lock    serializes the processes that bring entries/ up to date
checkpoint          a snapshot of the index at a log offset, so that opening does not replay it all
entries/            one JSON file per live key: <encoded key>.json
cursors/            one file per named consumer position (watch --cursor)
tmp/                temporary files, renamed into place (never watched, never listed)
archive/            history removed by `compact --archive`, as gzip JSONL segments
deadletter.jsonl    subscription callbacks that raised, with the event
seen/               one empty file per agent: its mtime is the agent's last sign of life (spec/AGENTS.md)
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from ..errors import NO_ROOM, NotABoard, OutOfSpace, ReadOnlyBoard
from ..models import FORMAT_NAME, FORMAT_VERSION, READABLE_VERSIONS, BoardConfig
from . import codec as _codec
from .record import log_header


class Layout:
    """Paths of one board. Pure: computing them touches nothing.

    A plain slotted class, not a dataclass: the decorator's code generation runs at import, which a
    shell agent pays on every command.
    """

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def __eq__(self, other: object) -> bool:
        return self.root == other.root if type(other) is Layout else NotImplemented

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Layout(root={self.root!r})"

    @property
    def config(self) -> Path:
        return self.root / "board.json"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def soft_lock(self) -> Path:
        """The soft lock's path: its token is in `lock.d/` (softlock.py)."""
        return self.root / "lock"

    @property
    def soft_lock_dir(self) -> Path:
        return self.root / "lock.d"

    @property
    def watermark(self) -> Path:
        return self.root / "materialized"

    @property
    def materialize_lock(self) -> Path:
        return self.root / "materialize.lock"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    @property
    def entries(self) -> Path:
        return self.root / "entries"

    @property
    def cursors(self) -> Path:
        return self.root / "cursors"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def seen(self) -> Path:
        return self.root / "seen"

    @property
    def deadletter(self) -> Path:
        return self.root / "deadletter.jsonl"

    def tmp_file(self, stem: str) -> Path:
        """A unique temporary path on the board's filesystem, so that os.replace from it is atomic."""
        return self.tmp / f"{stem}.{os.getpid()}.{os.urandom(6).hex()}.tmp"


#: A temp file of another host (or an older release) untouched this long is a dead process's: a
#: live writer renames its own within milliseconds, and a compaction keeps writing to its own.
STALE_TMP_SECONDS = 600


def write_all(fd: int, data: bytes, path: str | os.PathLike[str], offset: int | None = None) -> None:
    """Write every byte of `data` to `fd` (at `offset` with pwrite, else at its position), or raise.

    write() may write less than asked and say nothing: on a full disk, or past RLIMIT_FSIZE (Python
    ignores SIGXFSZ). The rest is written again, which then fails with the real errno; for lack of
    room (ENOSPC, EDQUOT, EFBIG) that is `OutOfSpace` naming `path`. Undoing what was written is the
    caller's business (a temp file is removed, the log is truncated back).
    """
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset + len(data) - len(view))
            if n == 0:  # no progress and no error: never loop forever
                raise OSError(errno.EIO, "write() wrote nothing", os.fspath(path))
            view = view[n:]
    except OSError as exc:
        if exc.errno in NO_ROOM and not isinstance(exc, OutOfSpace):
            raise OutOfSpace(os.fspath(path), exc.errno) from exc
        raise


def fsync_path(path: os.PathLike[str] | str) -> None:
    """fsync a file or a directory by its path (a directory: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def overwrite_number(fd: int, data: bytes, path: str | os.PathLike[str]) -> None:
    """Overwrite a fixed-width number at the start of a file (the watermark, a cursor), or raise and
    leave a value that does not overstate: the old one, or none at all.

    A torn number can be larger than the truth ("19" overwritten by "20" and cut after one byte reads
    "29": a watermark would skip records 21-29, a cursor their events). So a write that comes back
    short and cannot be finished empties the file instead (shrinking needs no room): it then reads as
    no value, which makes its reader redo work, never skip it.
    """
    try:
        done = os.pwrite(fd, data, 0)  # raises having written nothing: the old value stands
    except OSError as exc:
        if exc.errno in NO_ROOM:
            raise OutOfSpace(os.fspath(path), exc.errno, "the old value stands") from exc
        raise
    if done < len(data):
        try:
            write_all(fd, data[done:], path, offset=done)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            raise


def write_new_file(layout: Layout, target: Path, data: bytes, *, fsync: bool = True) -> bool:
    """Create `target` holding `data`, atomically and only if it does not exist yet.

    Built in tmp/ then hard-linked into place: a reader sees no file or the whole file, and of two
    processes racing to create it exactly one wins. Returns whether this call created it. A write
    that fails (a full disk) leaves nothing behind: no target, no temp file.
    """
    tmp = layout.tmp_file(target.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            write_all(fd, data, target)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def init(root: Path, config: BoardConfig, *, gid: int | None = None) -> BoardConfig:
    """Create the board at `root` (idempotent: an existing board is left as it is and its settings win).

    `gid`: a board that group shares and nobody else can use (core/perms.py)."""
    from .notice import warn
    from .perms import share_directory, share_file

    layout = Layout(root)
    if layout.config.exists():
        return read_config(root)
    if root.exists() and not root.is_dir():
        raise NotABoard(str(root), "exists and is not a directory")
    try:
        for d in (root, layout.entries, layout.cursors, layout.tmp, layout.archive):
            d.mkdir(parents=True, exist_ok=True)
            if gid is not None and not share_directory(d, gid) and d == root:
                warn(
                    "%s: the filesystem keeps no POSIX ACLs: files made later get their creator's umask "
                    "(members should use umask 007)",
                    root,
                )
        made = [layout.lock, layout.materialize_lock, layout.log, layout.watermark]
        for empty in (layout.lock, layout.materialize_lock):
            with contextlib.suppress(FileExistsError):
                os.close(os.open(empty, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        write_new_file(layout, layout.log, log_header())
        write_new_file(layout, layout.watermark, format_watermark(0))
        if config.lock == "soft":  # before board.json: its side locks are soft from the first use
            from .softlock import create_lock_dir

            create_lock_dir(root / "lock.d")
        if gid is not None:  # what init made before the ACL could apply (and on a filesystem with none)
            for path in made:
                share_file(path, gid)
        # board.json last: its presence is what makes the directory a board, so a crash above leaves
        # a directory that init completes and open refuses.
        write_new_file(layout, layout.config, _codec.dumps_pretty(config.as_dict()))
        if gid is not None:
            share_file(layout.config, gid)
    except PermissionError as exc:
        raise ReadOnlyBoard(str(root), f"cannot create the board ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise ReadOnlyBoard(str(root), "read-only filesystem") from None
        raise
    return read_config(root)


def read_config(root: Path) -> BoardConfig:
    """Read and check `board.json`: a clear `NotABoard` for anything that is not a board we can read."""
    path = Layout(root).config
    if not root.is_dir():
        raise NotABoard(str(root), "no such directory (create a board with `blackboard init`)")
    try:
        raw = _codec.decode(path.read_bytes())
    except FileNotFoundError:
        raise NotABoard(str(root), "not a board: no board.json (create one with `blackboard init`)") from None
    except _codec.DecodeError as exc:
        raise NotABoard(str(root), f"board.json is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise NotABoard(str(root), "board.json does not describe a blackboard")
    version = raw.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        newest = max(READABLE_VERSIONS)
        raise NotABoard(str(root), f"board format {version!r} is newer than this blackboard reads ({newest}); upgrade")
    try:
        return BoardConfig.from_dict(raw)
    except (ValueError, TypeError) as exc:
        raise NotABoard(str(root), f"board.json has a bad setting ({exc})") from None


def upgrade_config(root: Path, config: BoardConfig, version: int = FORMAT_VERSION) -> BoardConfig:
    """Mark a board of an older format as `version` before writing what only it can read.

    Replaced atomically (a reader sees the old file or the new one), unknown fields kept. From then
    on, releases that read only the older format refuse the board instead of misreading it.
    """
    if config.version >= version:
        return config
    # From the file, not our copy: another process may have upgraded it further meanwhile (a
    # compaction to 3 while we held a board of 1), and a version must never go down. Callers hold
    # the writer lock, which every upgrade takes.
    on_disk = read_config(root)
    if on_disk.version >= version:
        return on_disk
    layout = Layout(root)
    upgraded = BoardConfig.from_dict({**on_disk.as_dict(), "version": version})
    layout.tmp.mkdir(exist_ok=True)
    tmp = layout.tmp_file("board.json")
    tmp.write_bytes(_codec.dumps_pretty(upgraded.as_dict()))
    os.replace(tmp, layout.config)
    return upgraded


WATERMARK_WIDTH = 21


def format_watermark(seq: int) -> bytes:
    """Fixed width, so that updating it is one small in-place write instead of a ~1.2 ms replace."""
    return str(seq).ljust(WATERMARK_WIDTH - 1).encode() + b"\n"


def parse_watermark(data: bytes) -> int:
    """The watermark's seq; 0 (rebuild everything, which is always safe) if it is unreadable."""
    try:
        return max(0, int(data.strip() or b"0"))
    except ValueError:
        return 0

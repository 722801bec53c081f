"""The append-only log file: follow it from a byte offset, append to it, repair a torn tail.

Mechanics only; what a record means is the board's business. Rules (../shared/PITFALLS.md):
- A reader consumes complete lines only. A final line without its newline is a write in progress
  (or a writer killed mid-append): the reader waits at its start and never truncates it, because the
  writer may still be writing it. Only the lock holder repairs (`truncate_torn_tail`).
- Compaction replaces the file by rename; a reader notices the new inode and starts over on it.
- On network filesystems (`reopen=True`) the file is reopened for every look, which is what makes
  NFS revalidate its cache (close-to-open consistency); `stat()` alone can be a minute stale.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import NO_ROOM, CorruptLog, LogGone, OutOfSpace, open_or_read_only
from .layout import write_all
from .record import Header, log_header, parse_header

_CHUNK = 1 << 22
_DIRECT_FIRST = 1 << 16
#: `LogFile.ino` of a view whose file went away under it (ESTALE): any file at the path is another
_STALE = -2


def complete_lines(
    fd: int, start: int, end: int, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of the complete lines in [start, end) of an open file, read in large chunks
    (`progress` is told the bytes of each); for whole-file passes: compaction, repair."""
    offset = start
    rest = b""
    while offset < end:
        chunk = os.pread(fd, min(_CHUNK, end - offset), offset)
        if not chunk:
            break
        base = offset - len(rest)
        data = rest + chunk if rest else chunk
        offset += len(chunk)
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            yield base + pos, data[pos:nl]
            pos = nl + 1
        rest = data[pos:]
        if progress is not None:
            progress(len(chunk))


def file_size(fd: int) -> int:
    """The size of an open file, past a cached one: what fstat says, and any bytes a read finds
    after it. Through an `O_DIRECT` fd (NFS, FUSE: `LogFile.uncached`) a read asks the server, so
    this is the file's true size even where the client's idea of it is stale; elsewhere one empty
    read more (~1 us)."""
    size = os.fstat(fd).st_size
    while chunk := os.pread(fd, _CHUNK, size):
        size += len(chunk)
    return size


def complete_end(fd: int) -> int:
    """Offset just after the last newline: a torn or in-progress tail is not ours to copy."""
    size = file_size(fd)
    span = 1 << 16
    while True:
        start = max(0, size - span)
        nl = os.pread(fd, size - start, start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        if start == 0:
            return 0
        span *= 4


def line_number(fd: int, offset: int) -> int:
    """The 1-based number of the line of an open file that the byte at `offset` is on (for error
    messages: reads the file up to there)."""
    return line_numbers(fd, [offset]).get(offset, 1)


def line_numbers(fd: int, offsets: list[int]) -> dict[int, int]:
    """offset -> the 1-based line the byte at that offset is on, for each offset the file reaches
    (one read up to the last)."""
    out: dict[int, int] = {}
    pos, line = 0, 1
    for target in sorted(set(offsets)):
        while pos < target:
            chunk = os.pread(fd, min(_CHUNK, target - pos), pos)
            if not chunk:
                return out
            line += chunk.count(b"\n")
            pos += len(chunk)
        out[target] = line
    return out


#: Waits between looks at a log path found missing: a rename over a file is atomic on local disks
#: and NFS, but FUSE (bindfs) lets a lookup racing it fail (measured: 8 % of fresh opens during
#: renames), so the path counts as gone only once it stays missing for ~0.13 s.
_MISSING_RETRIES = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064)


def _open_existing(path: Path, flags: int) -> int:
    for pause in (*_MISSING_RETRIES, None):
        try:
            return open_or_read_only(str(path), flags, "the log for writing")
        except FileNotFoundError:
            # Never created here (init makes it before board.json): it was deleted.
            if pause is None:
                raise LogGone(str(path), while_open=False) from None
            time.sleep(pause)
    raise AssertionError("unreachable")


def _stat_existing(path: Path) -> os.stat_result:
    for pause in _MISSING_RETRIES:
        try:
            return os.stat(path)
        except FileNotFoundError:
            time.sleep(pause)
    return os.stat(path)


def _pwrite_all(fd: int, data: bytes, offset: int, path: Path) -> None:
    """`data` at `offset`: a short write goes on with the rest; one that writes nothing is a full disk."""
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        if done == 0:
            raise OutOfSpace(str(path), errno.ENOSPC)
        view, offset = view[done:], offset + done


class LogFile:
    """One process's open view of `log.jsonl`: an fd, the offset up to which it has consumed lines."""

    def __init__(self, path: Path, *, reopen: bool = False, uncached: bool = False) -> None:
        self.path = path
        self.reopen = reopen
        #: read and write past the page cache (FUSE: see _open)
        self.uncached = uncached
        self.fd = -1
        self.ino = -1
        self.offset = 0
        self.size = 0  # the file's size when read_lines() last looked
        self.header: Header | None = None
        self._pid = -1
        self._writable = False
        #: whether an O_DIRECT read was served here (see _open_direct)
        self.direct_ok = False

    # -- opening ---------------------------------------------------------------------------------

    def _open(self, writable: bool) -> None:
        self.release_fd()
        # Uncached: no O_APPEND, whose offset is the client's idea of the size; append() writes at
        # the end our own read found (under the lock).
        flags = (os.O_RDWR | (0 if self.uncached else os.O_APPEND)) if writable else os.O_RDONLY
        # FUSE (bindfs): after another client renamed a new log over the path, this client keeps one
        # kernel inode for the path, so pages cached from the old file (read through an fd some
        # process still has on it) are served for the new one; dropping them at open is not enough
        # (that process reads them back in). O_DIRECT reads bypass the cache: each goes to the
        # filesystem through this fd (~8 us a read, no alignment needed on FUSE).
        self.fd = self._open_direct(flags) if self.uncached else _open_existing(self.path, flags)
        self._writable = writable
        self._pid = os.getpid()
        self.ino = os.fstat(self.fd).st_ino
        self.offset = 0
        self.header = None

    def _open_direct(self, flags: int) -> int:
        """An O_DIRECT fd, if this filesystem serves unaligned O_DIRECT reads (NFS and FUSE do; one
        of a type we did not know may refuse O_DIRECT or want aligned buffers: EINVAL). Else, once
        and for good, a cached fd like a local board's."""
        try:
            fd = _open_existing(self.path, flags | os.O_DIRECT)
            if not self.direct_ok:
                try:
                    os.pread(fd, 1, 1)
                except BaseException:
                    os.close(fd)
                    raise
                self.direct_ok = True
            return fd
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        self.uncached = False
        return _open_existing(self.path, flags | (os.O_APPEND if flags & os.O_RDWR else 0))

    def close(self) -> None:
        """Close the fd and forget our place."""
        self.release_fd()
        self.ino = -1

    def forget_file(self) -> None:
        """Our file went away under us (NFS ESTALE, a FUSE view's replaced file): the next look
        (`sync`, `replaced`) opens whatever file is at the path, as after a compaction's switch."""
        self.release_fd()
        self.ino = _STALE

    def release_fd(self) -> None:
        """Close the fd but keep our place: the next sync() reopens and goes on if the file is the same.

        On NFS the lock holder does this before releasing the lock, so that its appends reach the
        server before the next holder opens the file (close-to-open consistency).
        """
        fd, self.fd = self.fd, -1  # forgotten first: a close that raises (NFS) has freed the number anyway
        if fd >= 0 and self._pid == os.getpid():
            os.close(fd)

    def sync(self, writable: bool = False) -> bool:
        """Make sure our fd is the file at `path`. Returns True if we (re)opened it: start over at 0.

        Called before every look at the log. Costs one stat() locally.
        """
        for _ in range(3):
            try:
                return self._sync(writable)
            except OSError as exc:
                # NFS: the file we just opened was replaced and deleted by another client before we
                # read its header (ESTALE). The file at the path now is another: open that one.
                if exc.errno != errno.ESTALE:
                    raise
                self.forget_file()
        return self._sync(writable)

    def _sync(self, writable: bool) -> bool:
        if self._pid != os.getpid() or self.ino < 0:  # first look, or a forked child: never share an fd
            self._open(writable or self._writable)
            return True
        if self.fd < 0 or self.reopen or (writable and not self._writable):
            # Reopen, and keep our place if it is still the same file: after release_fd(), on NFS
            # (a fresh open is what revalidates the client's cache), or a reader that now writes.
            # On NFS a reader opens read-only even after it wrote: while a client has the file open
            # for writing, it keeps its cached pages after another client changed the file (issue 9).
            old_ino, offset, header = self.ino, self.offset, self.header
            self._open(writable or (self._writable and not self.reopen))
            # The same inode number is not the same file: once compactions have freed the old log,
            # the filesystem may give its number to a new one. Its header (a random generation per
            # file) tells them apart.
            if self.ino == old_ino and (header is None or self._header_line() == header.line):
                self.offset, self.header = offset, header
                return False
            return True
        try:
            ino = _stat_existing(self.path).st_ino
        except FileNotFoundError:
            # A writer must not acknowledge an append to the unlinked file it still holds.
            raise LogGone(str(self.path)) from None
        if ino != self.ino:
            self._open(self._writable)
            return True
        return False

    @property
    def sealed(self) -> bool:
        """Whether this log's lines carry checksums (its header's format; a log with no header yet gets
        the current one)."""
        return self.header is None or self.header.sealed

    def replaced(self) -> bool:
        """Whether another file is at the path now (compaction switched one in). One stat()."""
        try:
            return os.stat(self.path).st_ino != self.ino
        except FileNotFoundError:
            return False  # mid-switch on a filesystem without atomic rename: sync() decides

    # -- reading ---------------------------------------------------------------------------------

    def read_chunk(self) -> tuple[int, list[bytes]]:
        """The complete lines after our offset, from one read of up to 4 MiB: (offset of the first
        line, the lines without their newlines). Our offset does not move: the caller moves it past
        what it consumed. A final line without its newline is not returned: it is a write in
        progress (or, seen under the writer lock, a torn tail).
        """
        try:
            return self._read_chunk()
        except OSError as exc:
            if exc.errno != errno.ESTALE and not (exc.errno == errno.ENOENT and self.reopen):
                raise
            # NFS: the file our fd names was replaced (compaction's rename) and deleted on the server
            # by another client (ESTALE); FUSE (bindfs) answers fstat() on an fd by the path, which a
            # rename over it leaves missing for a moment (ENOENT). Nothing more will come from this
            # fd: forget it, so that the next look (sync, replaced) opens the file at the path.
            self.forget_file()
            return self.offset, []

    def _read_chunk(self) -> tuple[int, list[bytes]]:
        base = self.offset
        if self.uncached:
            # The client's size may be stale (NFS attribute caching, FUSE): read what the server has
            # after our offset instead (O_DIRECT). A log cut below us then reads as nothing new; the
            # traces (spec 5.3) catch that at the next open.
            # 64 KiB first: a read asks for its whole length (4 MiB cost ~0.18 ms at the end of a
            # file on FUSE, 64 KiB ~0.01 ms); the rest of a chunk only when there is more (catch-up).
            data = os.pread(self.fd, _DIRECT_FIRST, base)
            if len(data) == _DIRECT_FIRST:
                data += os.pread(self.fd, _CHUNK - _DIRECT_FIRST, base + _DIRECT_FIRST)
            self.size = base + len(data)
            if len(data) == _CHUNK and data.rfind(b"\n") < 0:
                data = os.pread(self.fd, file_size(self.fd) - base, base)
            return self._lines(base, data)
        size = self.size = os.fstat(self.fd).st_size
        if size <= base:
            if size < base:
                if self.reopen and self.replaced():
                    # FUSE (bindfs) answers fstat() on an fd with the attributes of the file now at
                    # the path: after another client's compaction that is the new, smaller log, not
                    # the file the fd reads. It was replaced: the next look opens the new one.
                    self.forget_file()
                    return base, []
                # Only complete lines are read, and only the torn bytes after them are ever cut (by
                # the lock holder): records we have read were removed from under us.
                raise CorruptLog(
                    str(self.path), size, f"the log was cut from {base} to {size} bytes while open (records removed)"
                )
            return base, []
        data = os.pread(self.fd, min(size - base, _CHUNK), base)
        if data.rfind(b"\n") < 0 and len(data) == _CHUNK:  # a line longer than a chunk: read it whole
            data = os.pread(self.fd, size - base, base)
        return self._lines(base, data)

    def _lines(self, base: int, data: bytes) -> tuple[int, list[bytes]]:
        end = data.rfind(b"\n")
        if end < 0:
            return base, []  # torn or in-progress tail: wait at its start
        lines = data[:end].split(b"\n")
        if base == 0 and self.header is None:
            self.header = parse_header(self.path, lines[0])
            self.offset = base = len(lines[0]) + 1
            del lines[0]
        return base, lines

    def read_lines(self) -> Iterator[tuple[int, bytes]]:
        """Complete lines after our offset: (offset of the line, line without newline).

        The offset advances as lines are yielded, so a consumer that stops early resumes exactly there.
        """
        while True:
            base, lines = self.read_chunk()
            if not lines:
                return
            offset = base
            for line in lines:
                start = offset
                offset += len(line) + 1
                self.offset = offset
                yield start, line

    def _header_line(self) -> bytes:
        data = os.pread(self.fd, 4096, 0)
        nl = data.find(b"\n")
        return data[:nl] if nl >= 0 else b""

    def line_number(self, offset: int) -> int:
        """The 1-based number of the line that starts at `offset` (for error messages)."""
        return line_number(self.fd, offset)

    def read_line_at(self, offset: int) -> bytes:
        """The complete line starting at `offset` (without its newline); b"" if there is none."""
        data = b""
        while True:
            chunk = os.pread(self.fd, 1 << 16, offset + len(data))
            if not chunk:
                return b""
            nl = chunk.find(b"\n")
            if nl >= 0:
                return data + chunk[:nl]
            data += chunk

    def read_header(self) -> Header:
        """Read the header line if not yet read (our offset moves past it). An empty log has none yet."""
        if self.header is None and self.offset == 0:
            data = os.pread(self.fd, 4096, 0)
            nl = data.find(b"\n")
            if nl < 0:
                return Header()
            self.header = parse_header(self.path, data[:nl])
            self.offset = nl + 1
        return self.header or Header()

    def seek_end(self) -> tuple[bytes | None, bytes | None]:
        """Move our offset past the last complete line and return (the line before it, that line):
        None for what is not there (no record yet, one record). The one before lets a reader that
        starts here check that the last line's seq follows it (a copied line must not set our start)."""
        self.read_header()
        size = os.fstat(self.fd).st_size
        floor = self.offset
        span = 1 << 16
        while True:
            start = max(floor, size - span)
            data = os.pread(self.fd, size - start, start)
            end = data.rfind(b"\n")
            if end < 0:
                if start == floor:
                    return None, None
                span *= 4
                continue
            begin = data.rfind(b"\n", 0, end) + 1
            before = data.rfind(b"\n", 0, max(begin - 1, 0)) + 1 if begin else 0
            if (begin == 0 or before == 0) and start > floor:  # a line starts before this window
                span *= 4
                continue
            self.offset = start + end + 1
            return (data[before : begin - 1] if begin else None), data[begin:end]

    def torn_bytes(self) -> int:
        """Bytes after the last complete line (meaningful once read_lines() was exhausted): a write in
        progress, or, seen under the writer lock, a torn tail."""
        return max(0, (file_size(self.fd) if self.uncached else os.fstat(self.fd).st_size) - self.offset)

    # -- writing (lock held) -----------------------------------------------------------------------

    def truncate_torn_tail(self) -> int:
        """Cut an incomplete final line left by a killed writer. Returns the bytes removed.

        Called by the lock holder right after read_lines(), so the size that saw is still the size.
        """
        size = self.size
        if size <= self.offset:
            return 0
        os.ftruncate(self.fd, self.offset)
        return size - self.offset

    def at_end(self) -> bool:
        """Whether our offset is the file's end, after a newline (or 0 of an empty file), as the
        server has it: under the lock, before an uncached append (a pwrite at our offset), this
        catches a view that another writer's append has passed (a holder whose lease ran out
        meanwhile) or a file now shorter than our view. One read; True for a cached view, whose
        O_APPEND write lands at the end anyway."""
        if not self.uncached:
            return True
        if self.offset == 0:
            return os.pread(self.fd, 1, 0) == b""
        return os.pread(self.fd, 2, self.offset - 1) == b"\n"

    def append(self, data: bytes) -> int:
        """Append whole lines with one write() at the end, where the lock holder found it.

        Returns the offset the data starts at; our offset moves past it (we wrote it, no need to read it).
        """
        old = start = self.offset
        new_header = start == 0 and self.header is None
        if new_header:  # an empty log (cut to nothing by a repair): the header goes first
            header_line = log_header()
            data = header_line + data
            start = len(header_line)
        try:
            # One write() of the whole data. It comes back short only on a full disk or past
            # RLIMIT_FSIZE: write_all then writes the rest, which fails with the real errno (ENOSPC
            # or EFBIG, as OutOfSpace). Only this process appends meanwhile: we hold the lock.
            if self.uncached:
                _pwrite_all(self.fd, data, old, self.path)
            else:
                written = os.write(self.fd, data)  # the whole line, but for a full disk (~0.3 us less
                if written != len(data):  # than write_all's loop on every write)
                    write_all(self.fd, data[written:], self.path)
        except OSError as exc:
            # The line is incomplete (its last write failed), so no reader has consumed it: cut back
            # to where this append started, leaving no torn line for the next lock holder, and raise.
            # Nothing is acknowledged that is not in the log. (A KeyboardInterrupt is left alone: the
            # line may be whole, and read by others; if torn, the next lock holder cuts it.)
            with contextlib.suppress(OSError):  # if even that fails, the next lock holder cuts it
                os.ftruncate(self.fd, old)
            if exc.errno in NO_ROOM and not isinstance(exc, OutOfSpace):  # the first write() failed
                raise OutOfSpace(str(self.path), exc.errno) from exc
            raise
        if new_header:
            self.header = parse_header(self.path, header_line[:-1])
        self.offset = old + len(data)
        return start

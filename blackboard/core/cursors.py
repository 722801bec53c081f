"""Named consumer positions: `cursors/<name>` holds the last seq a consumer finished with.

The file is fixed width and updated in place with one small write (~3 us; a replace costs ~1.2 ms
here), so a consumer can save its position after every event. A write to the page cache survives
SIGKILL; a torn or unreadable cursor is reported, never silently reset.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator

from ..errors import CorruptLog, InvalidKey, KeyNotFound, ReadOnlyBoard
from .layout import Layout, format_watermark, overwrite_number

#: compiled on first use (by `re`'s cache), not by every process that imports this module
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"


class NoSuchCursor(KeyNotFound):
    """`cursors --reset NAME` (a delete) of a cursor that does not exist (exit 3, like a missing key)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.args = (f"no such cursor: {name}",)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        raise InvalidKey(str(name), "a cursor name is 1-100 of A-Z a-z 0-9 _ . - and does not start with '.' or '-'")
    return name


def load(layout: Layout, name: str) -> int | None:
    """The saved seq, or None if the cursor does not exist (or was created and never saved)."""
    path = layout.cursors / validate_name(name)
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    if not data:
        return None
    if not data.isdigit():
        raise CorruptLog(str(path), 0, f"cursor {name!r} is unreadable; reset it: blackboard cursors --reset {name}")
    return int(data)


@contextlib.contextmanager
def _writing(layout: Layout, name: str) -> Iterator[None]:
    """A cursor this process cannot write is the board's read-only error (a read-only mount, another
    user's board), not a raw OS error naming cursors/<name>."""
    try:
        yield
    except PermissionError:
        raise ReadOnlyBoard(str(layout.root), f"cannot write cursor {name}") from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise ReadOnlyBoard(str(layout.root), "read-only filesystem") from None
        raise


class CursorFile:
    """An open cursor, saved in place as the consumer moves."""

    def __init__(self, layout: Layout, name: str) -> None:
        self.path = layout.cursors / validate_name(name)
        with _writing(layout, name):
            layout.cursors.mkdir(exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        self.saved = -1

    def save(self, seq: int) -> None:
        if seq != self.saved:
            # A short write (a full disk) must not leave a larger number: that would skip events.
            # Emptied instead, the cursor reads as never saved: the consumer starts again from its
            # `since` (events again, at least once, never lost).
            overwrite_number(self._fd, format_watermark(seq), self.path)
            self.saved = seq

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def list_all(layout: Layout) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(layout.cursors)):
            if re.fullmatch(_NAME, name):
                seq = load(layout, name)
                if seq is not None:
                    out[name] = seq
    return out


def reset(layout: Layout, name: str, seq: int | None) -> None:
    """Move a cursor to `seq`, or delete it (None): its consumer then starts from its `since`."""
    path = layout.cursors / validate_name(name)
    if seq is None:
        try:
            with _writing(layout, name):
                path.unlink()
        except FileNotFoundError:
            raise NoSuchCursor(name) from None
        return
    cursor = CursorFile(layout, name)
    try:
        cursor.save(seq)
    finally:
        cursor.close()

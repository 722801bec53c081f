"""Signs of life without log records: `seen/<name>` is an empty file whose mtime says when `name`
last showed it was alive (spec/AGENTS.md section 2).

A heartbeat every few seconds, or one per command of a shell agent, would otherwise be a log record
each: history to compact, events for every watcher of the board. `os.utime` costs one metadata write.
"""

from __future__ import annotations

import contextlib
import errno
import os

from ..errors import ReadOnlyBoard
from .cursors import validate_name
from .layout import Layout


def mark(layout: Layout, name: str) -> None:
    """Set `seen/<name>`'s mtime to now (creating it)."""
    path = layout.seen / validate_name(name)
    try:
        try:
            os.utime(path)
        except FileNotFoundError:
            layout.seen.mkdir(exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
            os.utime(path)  # a file another process created meanwhile: still ours to touch
    except PermissionError:
        raise ReadOnlyBoard(str(layout.root), f"cannot write seen/{name}") from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise ReadOnlyBoard(str(layout.root), "read-only filesystem") from None
        raise


def last_seen(layout: Layout) -> dict[str, float]:
    """name -> mtime (seconds since the epoch) of every `seen/` file."""
    out: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError), os.scandir(layout.seen) as it:
        for item in it:
            with contextlib.suppress(OSError):  # removed meanwhile
                out[item.name] = item.stat().st_mtime
    return out

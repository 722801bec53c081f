"""Human-readable lines for events and entries (CLI `tail`, `history`, `ls`, `watch`, the demo).

Machine output is JSON and does not come through here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..core import codec as _codec
from ..models import Entry, Event

_OP_COLOUR = {"put": "green", "delete": "red"}


def _terminal_width() -> int:
    import shutil  # ~1.5 ms (it imports bz2 and lzma): only the commands that print for people pay it

    return shutil.get_terminal_size((120, 24)).columns


def short_json(value: Any, width: int) -> str:
    text = _codec.dumps(value).decode()
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _ts(event: Event | Entry, *, date: bool = True) -> str:
    return event.ts.strftime("%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f")[:-3]


def event_line(
    event: Event,
    *,
    colour: bool = False,
    width: int | None = None,
    key_width: int = 0,
    author_width: int = 0,
    date: bool = True,
) -> str:
    """`    12 2026-11-21 13:35:40.123 put    research_results/q1 v3 agent-1  {"answer":42}`

    `key_width`/`author_width` pad those columns so that a stream of lines reads as a table.
    """
    import click

    width = width or _terminal_width()
    flag = " (compacted)" if event.compacted else ""
    version = f"v{event.version}" if event.op == "put" else ""
    plain = f"{event.seq:>6} {_ts(event, date=date)} {event.op:<6} {event.key:<{key_width}} {version:<4} "
    plain += f"{event.author:<{author_width}}{flag}"
    value = "" if event.op == "delete" else "  " + short_json(event.value, max(width - len(plain) - 2, 20))
    if not colour:
        return plain + value
    op = click.style(f"{event.op:<6}", fg=_OP_COLOUR.get(event.op), bold=True)
    key = click.style(f"{event.key:<{key_width}}", bold=True)
    author = click.style(f"{event.author:<{author_width}}", fg="cyan")
    return f"{event.seq:>6} {_ts(event, date=date)} {op} {key} {version:<4} {author}{flag}{value}"


def entry_line(entry: Entry, *, key_width: int, width: int | None = None) -> str:
    """`research_results/q1  v3  seq 12  2026-11-21 13:35:40.123  agent-1  {"answer":42}`"""
    width = width or _terminal_width()
    head = f"{entry.key:<{key_width}}  v{entry.version:<4} seq {entry.seq:<7} {_ts(entry)}  {entry.author}  "
    return head + short_json(entry.value, max(width - len(head), 20))


def age(seconds: float) -> str:
    """`42 s ago`, `5 min ago`, `3 h ago`, `12 d ago` (a clock behind the writer's shows `0 s ago`)."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def blame_lines(events: Iterable[Event], *, now: float | None = None) -> list[str]:
    """`research_results/q1  seq 12  put     v3  agent-1  2026-11-21 13:35:40.123  (5 min ago)`

    One line per event, every column padded to its widest cell: the columns do not shift between lines.
    """
    now = time.time() if now is None else now
    rows = [
        (
            event.key,
            str(event.seq),
            event.op,
            f"v{event.version}" if event.op == "put" else "-",
            event.author,
            f"{_ts(event)}  ({age(now - event.ts.timestamp())})",
        )
        for event in events
    ]
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    key_w, seq_w, op_w, version_w, author_w, _ = widths
    return [
        f"{key:<{key_w}}  seq {seq:>{seq_w}}  {op:<{op_w}}  {version:>{version_w}}  {author:<{author_w}}  {when}"
        for key, seq, op, version, author, when in rows
    ]

"""Human-readable lines for events and entries (CLI `tail`, `history`, `ls`, `watch`, the demo).

Machine output is JSON and does not come through here.

Columns have fixed minimum widths, so that a stream (`tail -f`, where later lines are not known yet)
reads as a table: a key or author longer than its column pushes only its own line. Values are cut to
the terminal's width only when stdout is a terminal: `blackboard tail | grep` and a file get every
value whole, and `--full` (`full=True`) prints them whole on a terminal too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..core import codec as _codec
from ..models import Entry, Event

_OP_COLOUR = {"put": "green", "delete": "red"}

#: Minimum column widths of an event line: `research_results/q12` and `user@host` fit.
SEQ_WIDTH = 6
KEY_WIDTH = 20
AUTHOR_WIDTH = 12
#: A value is never cut to fewer characters than this: it goes on a line of its own, INDENT in.
MIN_VALUE_WIDTH = 20
INDENT = 8


F = TypeVar("F", bound=Callable[..., Any])


def _terminal_width() -> int:
    import shutil  # ~1.5 ms (it imports bz2 and lzma): only the commands that print for people pay it

    return shutil.get_terminal_size((120, 24)).columns  # COLUMNS first, then the terminal's own


def line_width(full: bool = False) -> int | None:
    """The width to cut lines to: the terminal's when stdout is one, else None (values whole).

    Only a person at a terminal wants a value shortened; a pipe or a file gets it whole, so that
    `grep` finds what is there.
    """
    import sys

    if full or not sys.stdout.isatty():
        return None
    return _terminal_width()


def short_json(value: Any, width: int | None) -> str:
    """`value` as compact JSON, cut to `width` characters with '…' (None: whole)."""
    text = _codec.dumps(value).decode()
    return text if width is None or len(text) <= width else text[: max(width - 1, 0)] + "…"


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters that join back to `text` exactly (nothing dropped):
    each broken after its last ',' or ' ' when that is past its middle, else mid-word."""
    width = max(width, 1)
    lines = []
    while len(text) > width:
        cut = max(text.rfind(",", 0, width), text.rfind(" ", 0, width)) + 1
        if cut <= width // 2:
            cut = width
        lines.append(text[:cut])
        text = text[cut:]
    lines.append(text)
    return lines


def _ts(event: Event | Entry, *, date: bool = True) -> str:
    return event.ts.strftime("%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f")[:-3]


def _event_head(
    event: Event, *, colour: bool, seq_width: int, key_width: int, author_width: int, date: bool
) -> tuple[str, str]:
    """The line before the value: as printed (coloured or not), and plain (to measure)."""
    flag = " (compacted)" if event.compacted else ""
    version = f"v{event.version}" if event.op == "put" else ""
    seq_ts = f"{event.seq:>{seq_width}} {_ts(event, date=date)}"
    plain = f"{seq_ts} {event.op:<6} {event.key:<{key_width}} {version:<4} {event.author:<{author_width}}{flag}"
    if not colour:
        return plain, plain
    import click

    op = click.style(f"{event.op:<6}", fg=_OP_COLOUR.get(event.op), bold=True)
    key = click.style(f"{event.key:<{key_width}}", bold=True)
    author = click.style(f"{event.author:<{author_width}}", fg="cyan")
    return f"{seq_ts} {op} {key} {version:<4} {author}{flag}", plain


def event_line(
    event: Event,
    *,
    colour: bool = False,
    width: int | None = None,
    full: bool = False,
    wrap_value: bool = False,
    seq_width: int = SEQ_WIDTH,
    key_width: int = KEY_WIDTH,
    author_width: int = AUTHOR_WIDTH,
    date: bool = True,
) -> str:
    """`    12 2026-11-21 13:35:40.123 put    research_results/q1  v3   agent-1       {"answer":42}`

    The value is cut to `width` (None: the terminal's, on a terminal only; see `line_width`); `full`
    prints it whole. A value left fewer than MIN_VALUE_WIDTH columns (an 80-column terminal) goes on
    a second line, indented, rather than be cut to nothing; `wrap_value` wraps one too long for the
    line on lines below it instead of cutting it (the demo, whose point is the values).
    """
    line, plain = _event_head(
        event, colour=colour, seq_width=seq_width, key_width=key_width, author_width=author_width, date=date
    )
    if event.op == "delete":
        return line
    return _with_value(line, len(plain), event.value, None if full else width or line_width(), wrap_value)


def _with_value(line: str, used: int, value: Any, width: int | None, wrap_value: bool = False) -> str:
    """`line`, two spaces and the value: cut to `width`, on a line of its own if little room is left."""
    text = _codec.dumps(value).decode()
    if width is None or used + 2 + len(text) <= width:
        return f"{line}  {text}"
    if wrap_value:
        return "\n".join([line.rstrip(), *(" " * INDENT + part for part in wrap(text, width - INDENT))])
    if width - used - 2 >= MIN_VALUE_WIDTH:
        return f"{line}  {short_json(value, width - used - 2)}"
    return f"{line.rstrip()}\n{' ' * INDENT}{short_json(value, max(width - INDENT, MIN_VALUE_WIDTH))}"


def entry_line(
    entry: Entry, *, key_width: int, author_width: int = 0, width: int | None = None, full: bool = False
) -> str:
    """`research_results/q1  v3    seq 12      2026-11-21 13:35:40.123  agent-1  {"answer":42}`

    The value is cut as in `event_line`.
    """
    head = f"{entry.key:<{key_width}}  v{entry.version:<4} seq {entry.seq:<7} {_ts(entry)}  "
    head += f"{entry.author:<{author_width}}"
    return _with_value(head, len(head), entry.value, None if full else width or line_width())


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


def cell(value: Any) -> str:
    return value if isinstance(value, str) else _codec.dumps(value).decode()


def table(rows: Iterable[list[str]]) -> None:
    """Print rows with every column but the last padded to its widest cell."""
    import click

    rows = list(rows)
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join([*(text.ljust(w) for text, w in zip(row, widths, strict=False)), row[-1]]).rstrip())

"""Human-readable lines for events and entries (CLI `tail`, `history`, `ls`, `watch`, the demo).

Machine output is JSON and does not come through here.
"""

from __future__ import annotations

import shutil
from typing import Any

from ..core import codec as _codec
from ..models import Entry, Event

_OP_COLOUR = {"put": "green", "delete": "red"}


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

    width = width or shutil.get_terminal_size((120, 24)).columns
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
    width = width or shutil.get_terminal_size((120, 24)).columns
    head = f"{entry.key:<{key_width}}  v{entry.version:<4} seq {entry.seq:<7} {_ts(entry)}  {entry.author}  "
    return head + short_json(entry.value, max(width - len(head), 20))

"""Human-readable lines for events and entries (CLI `tail`, `history`, `ls`, `watch`, the demo).

Machine output is JSON and does not come through here.
"""

from __future__ import annotations

import shutil
from typing import Any

from . import _codec
from ._models import Entry, Event

_OP_COLOUR = {"put": "green", "delete": "red"}


def short_json(value: Any, width: int) -> str:
    text = _codec.dumps(value).decode()
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _ts(event: Event | Entry) -> str:
    return event.ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def event_line(event: Event, *, colour: bool = False, width: int | None = None) -> str:
    """`   12 13:35:40.123 put    research_results/q1 v3 agent-1  {"answer":42}`"""
    import click

    width = width or shutil.get_terminal_size((120, 24)).columns
    op = f"{event.op:<6}"
    if colour:
        op = click.style(op, fg=_OP_COLOUR.get(event.op), bold=True)
    flag = " (compacted)" if event.compacted else ""
    head = f"{event.seq:>6} {_ts(event)} "
    key = click.style(event.key, bold=True) if colour else event.key
    version = f"v{event.version}" if event.op == "put" else "   "
    middle = f" {key} {version} {event.author}{flag}"
    used = len(head) + 7 + len(event.key) + len(version) + len(event.author) + len(flag) + 4
    value = "" if event.op == "delete" else "  " + short_json(event.value, max(width - used, 20))
    return f"{head}{op}{middle}{value}"


def entry_line(entry: Entry, *, key_width: int, width: int | None = None) -> str:
    """`research_results/q1  v3  seq 12  2026-11-21 13:35:40.123  agent-1  {"answer":42}`"""
    width = width or shutil.get_terminal_size((120, 24)).columns
    head = f"{entry.key:<{key_width}}  v{entry.version:<4} seq {entry.seq:<7} {_ts(entry)}  {entry.author}  "
    return head + short_json(entry.value, max(width - len(head), 20))

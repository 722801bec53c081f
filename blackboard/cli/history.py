"""The past: history (every retained event of a key) and blame (the latest event of every key)."""

from __future__ import annotations

from pathlib import Path

import click

from .base import board_option, complete_keys, emit_json, full_option, open_board
from .render import SEQ_WIDTH, blame_lines, event_line


@click.command()
@board_option
@click.argument("key", shell_complete=complete_keys)
@click.option("--all", "include_archive", is_flag=True, help="Include the history `compact --archive` moved away.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@full_option
def history(board_dir: Path, key: str, include_archive: bool, as_json: bool, full: bool) -> None:
    """Every retained event of KEY, oldest first, deletes included."""
    with open_board(board_dir, read_only=True) as board:
        events = board.history(key, all=include_archive)
    if as_json:
        for event in events:
            emit_json(event.as_dict())
        return
    # All the lines are known: each column as wide as its widest cell, so that none shifts.
    seq_width = max([SEQ_WIDTH, *(len(str(e.seq)) for e in events)])
    author_width = max((len(e.author) for e in events), default=0)
    for event in events:
        click.echo(event_line(event, seq_width=seq_width, key_width=0, author_width=author_width, full=full))


@click.command()
@board_option
@click.argument("prefix", default="", shell_complete=complete_keys)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
def blame(board_dir: Path, prefix: str, as_json: bool) -> None:
    """Who last changed each key starting with PREFIX, when, at which seq.

    One line per key the log still knows, deletes included, in key order: key, seq, op, version,
    author, time (and how long ago).
    """
    with open_board(board_dir, read_only=True) as board:
        events = board.blame(prefix)
    if as_json:
        for event in events:
            emit_json(event.as_dict())
        return
    for line in blame_lines(events):
        click.echo(line)

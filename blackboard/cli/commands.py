"""The board's own verbs: init, write, read, ls, rm, history (the names of `Board`'s methods)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..board import Board
from ..core import codec as _codec
from ..errors import KeyNotFound
from .base import author_option, board_option, cli, emit_json, open_board
from .render import entry_line, event_line


@cli.command()
@board_option
@click.option(
    "--lock",
    type=click.Choice(["flock", "soft"]),
    default="flock",
    show_default=True,
    help="soft: for boards on NFS/SMB, where flock may exclude nothing.",
)
@click.option("--max-value-bytes", type=click.IntRange(min=1), default=1 << 20, show_default=True)
@click.option("--fsync", is_flag=True, help="fsync every write: survive power loss, not only crashes.")
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    default=24 * 3600,
    show_default=True,
    metavar="SECONDS",
    help="How long compaction keeps deletes.",
)
@click.option("--compact-at-bytes", type=click.IntRange(min=1), help="Let writers compact once the log is this big...")
@click.option(
    "--compact-at-dead-ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="...and at least this share of its records is superseded.",
)
def init(
    board_dir: Path,
    lock: str,
    max_value_bytes: int,
    fsync: bool,
    retention: float,
    compact_at_bytes: int | None,
    compact_at_dead_ratio: float,
) -> None:
    """Create a board (an existing board is left as it is). Prints its path and last seq as JSON."""
    with Board.init(
        board_dir,
        lock=lock,  # type: ignore[arg-type]  # click.Choice gives a str from the two allowed
        max_value_bytes=max_value_bytes,
        fsync=fsync,
        retention_seconds=retention,
        compact_at_bytes=compact_at_bytes,
        compact_at_dead_ratio=compact_at_dead_ratio,
    ) as board:
        # Machine-readable, so that a shell agent can start `watch --since SEQ` with no gap.
        emit_json({"board": str(board.path), "lock": board.config.lock, "last_seq": board.last_seq})


@cli.command(context_settings={"ignore_unknown_options": True})  # so that `write k -5` stores -5
@board_option
@author_option
@click.argument("key")
@click.argument("value")
@click.option("--text", is_flag=True, help="Store VALUE as a JSON string instead of parsing it.")
@click.option(
    "--expect-version", type=click.IntRange(min=0), help="Write only if the key is at this version (0: absent)."
)
def write(board_dir: Path, author: str | None, key: str, value: str, text: bool, expect_version: int | None) -> None:
    """Set KEY to VALUE (JSON; '-' reads it from stdin). Prints the new entry's key, version and seq."""
    raw = sys.stdin.read() if value == "-" else value
    if text:
        parsed: Any = raw[:-1] if value == "-" and raw.endswith("\n") else raw
    else:
        parsed = _codec.parse_user_json(raw)
    with open_board(board_dir, author=author) as board:
        entry = board.write(key, parsed, expect_version=expect_version)
    emit_json({"key": entry.key, "version": entry.version, "seq": entry.seq})


@cli.command()
@board_option
@click.argument("key")
@click.option("--entry", "whole", is_flag=True, help="Print the whole entry (key, value, version, seq, author, ts).")
@click.option("--raw", is_flag=True, help="Print a string value without JSON quotes.")
def read(board_dir: Path, key: str, whole: bool, raw: bool) -> None:
    """Print KEY's value as JSON (exit 3 if it has none)."""
    with open_board(board_dir, read_only=True) as board:
        entry = board.get(key)
    if entry is None:
        raise KeyNotFound(key)
    if whole:
        emit_json(entry.as_dict())
    elif raw and isinstance(entry.value, str):
        click.echo(entry.value)
    else:
        emit_json(entry.value)


@cli.command("ls")
@board_option
@click.argument("prefix", default="")
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per line.")
@click.option("--keys", "keys_only", is_flag=True, help="Only the keys, one per line.")
def ls_(board_dir: Path, prefix: str, as_json: bool, keys_only: bool) -> None:
    """List the live keys starting with PREFIX, in key order."""
    with open_board(board_dir, read_only=True) as board:
        if keys_only:
            for key in board.keys(prefix):
                click.echo(key)
            return
        entries = list(board.entries(prefix))
    if as_json:
        for entry in entries:
            emit_json(entry.as_dict())
        return
    width = min(max((len(e.key) for e in entries), default=0), 60)
    for entry in entries:
        click.echo(entry_line(entry, key_width=width))


@cli.command()
@board_option
@author_option
@click.argument("key")
@click.option("--expect-version", type=click.IntRange(min=1), help="Delete only if the key is at this version.")
def rm(board_dir: Path, author: str | None, key: str, expect_version: int | None) -> None:
    """Delete KEY (exit 3 if it has no value). Its next write starts again at version 1."""
    with open_board(board_dir, author=author) as board:
        entry = board.delete(key, expect_version=expect_version)
    emit_json({"key": entry.key, "version": entry.version, "seq": entry.seq})


@cli.command()
@board_option
@click.argument("key")
@click.option("--all", "include_archive", is_flag=True, help="Include the history `compact --archive` moved away.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
def history(board_dir: Path, key: str, include_archive: bool, as_json: bool) -> None:
    """Every retained event of KEY, oldest first, deletes included."""
    with open_board(board_dir, read_only=True) as board:
        events = board.history(key, all=include_archive)
    for event in events:
        if as_json:
            emit_json(event.as_dict())
        else:
            click.echo(event_line(event))

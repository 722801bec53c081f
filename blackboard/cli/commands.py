"""The board's verbs for keys: write, read, ls, rm (the names of `Board`'s methods).

A shell agent runs these once per step, each in a new process: this module holds nothing else, and
the lazy group (`base.COMMANDS`) imports no other command module to run them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..core import codec as _codec
from ..errors import KeyNotFound
from .base import (
    F,
    NumberCommand,
    author_option,
    board_option,
    complete_keys,
    emit_json,
    full_option,
    json_noop_option,
    open_board,
    verified_option,
)

IDEMPOTENCY_HELP = (
    "A retry with the same K (within the board's retention) writes nothing and prints what the first attempt wrote."
)


def idempotency_option(f: F) -> F:
    return click.option("--idempotency-key", metavar="K", help=IDEMPOTENCY_HELP)(f)


def fence_option(f: F) -> F:
    return click.option(
        "--fence",
        type=click.IntRange(min=1),
        metavar="TOKEN",
        help="Only while the lease `claim` granted with TOKEN is held: exit 11 (fenced) once it was granted again.",
    )(f)


def fence_of(board: Any, token: int | None) -> Any:
    if token is None:
        return None
    from ..work.lease import fence_of_token

    return fence_of_token(board, token)


@click.command(cls=NumberCommand)  # `write k -5` stores -5; `write k --foo` is a usage error
@board_option
@author_option
@click.argument("key", shell_complete=complete_keys)
@click.argument("value")
@click.option("--text", is_flag=True, help="Store VALUE as a JSON string instead of parsing it.")
@click.option(
    "--expect-version", type=click.IntRange(min=0), help="Write only if the key is at this version (0: absent)."
)
@idempotency_option
@fence_option
@json_noop_option
def write(
    board_dir: Path,
    author: str | None,
    key: str,
    value: str,
    text: bool,
    expect_version: int | None,
    idempotency_key: str | None,
    fence: int | None,
) -> None:
    """Set KEY to VALUE (JSON; '-' reads it from stdin). Prints the new entry's key, version and seq."""
    raw = sys.stdin.read() if value == "-" else value
    if text:
        parsed: Any = raw[:-1] if value == "-" and raw.endswith("\n") else raw
    else:
        parsed = _codec.parse_user_json(raw)
    with open_board(board_dir, author=author) as board:
        entry = board.write(
            key, parsed, expect_version=expect_version, idempotency_key=idempotency_key, fence=fence_of(board, fence)
        )
    emit_json({"key": entry.key, "version": entry.version, "seq": entry.seq})


@click.command()
@board_option
@click.argument("key", shell_complete=complete_keys)
@click.option("--entry", "whole", is_flag=True, help="Print the whole entry (key, value, version, seq, author, ts).")
@click.option("--json", "as_json", is_flag=True, help="The same as --entry: the whole entry as one JSON object.")
@click.option("--raw", is_flag=True, help="Print a string value without JSON quotes.")
@click.option(
    "--at",
    type=click.IntRange(min=0),
    metavar="SEQ",
    help="KEY as it was just after seq SEQ (from the retained history and the archive).",
)
@verified_option
def read(board_dir: Path, key: str, whole: bool, as_json: bool, raw: bool, at: int | None, verified: bool) -> None:
    """Print KEY's value as JSON (exit 3 if it has none).

    With --verified, only if its latest record's signature verifies (else exit 12)."""
    with open_board(board_dir, read_only=True) as board:
        entry = board.get(key, at=at)
        if entry is None:
            raise KeyNotFound(key, at=at)
        if verified:
            from ..trust.signatures import Verifier, check_seq

            check_seq(board, entry.seq, Verifier(board))
    if whole or as_json:
        emit_json(entry.as_dict())
    elif raw and isinstance(entry.value, str):
        click.echo(entry.value)
    else:
        emit_json(entry.value)


@click.command()
@board_option
@click.argument("prefix", default="", shell_complete=complete_keys)
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per line.")
@click.option("--keys", "keys_only", is_flag=True, help="Only the keys, one per line.")
@full_option
def ls(board_dir: Path, prefix: str, as_json: bool, keys_only: bool, full: bool) -> None:
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
    from .render import entry_line

    # Every column padded to its widest cell (a key past 60 characters pushes only its own line).
    key_width = min(max((len(e.key) for e in entries), default=0), 60)
    author_width = min(max((len(e.author) for e in entries), default=0), 40)
    for entry in entries:
        click.echo(entry_line(entry, key_width=key_width, author_width=author_width, full=full))


@click.command()
@board_option
@author_option
@click.argument("key", shell_complete=complete_keys)
@click.option("--expect-version", type=click.IntRange(min=1), help="Delete only if the key is at this version.")
@idempotency_option
@fence_option
@json_noop_option
def rm(
    board_dir: Path,
    author: str | None,
    key: str,
    expect_version: int | None,
    idempotency_key: str | None,
    fence: int | None,
) -> None:
    """Delete KEY (exit 3 if it has no value). Its next write starts again at version 1."""
    with open_board(board_dir, author=author) as board:
        entry = board.delete(
            key, expect_version=expect_version, idempotency_key=idempotency_key, fence=fence_of(board, fence)
        )
    emit_json({"key": entry.key, "version": entry.version, "seq": entry.seq})

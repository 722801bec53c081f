"""The `blackboard` command: a thin layer over `Board`, with the same names.

Errors are translated once, here at the boundary, to one line on stderr and a documented exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from . import _codec, _settings
from ._board import Board
from ._errors import BlackboardError, KeyNotFound
from ._format import entry_line, event_line

EXIT_CODES = """\b
Exit codes:
  0  success
  1  error (I/O, lock timeout, corrupt log, read-only board)
  2  bad input: usage, invalid key or value
  3  no such key
  4  version conflict (compare-and-set failed; nothing written)
  5  not a board, or a board of a newer format
  6  check found inconsistencies (run `check --repair`)
  130 interrupted"""

EXIT_CHECK_FAILED = 6
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    # One line, always: a path or key with a newline in it must not split the message.
    one_line = message.replace("\r", "\\r").replace("\n", "\\n")
    click.echo(f"blackboard: error: {one_line}", err=True)
    sys.exit(code)


class BoardGroup(click.Group):
    """Runs a command and turns library errors into one line and an exit code (never a traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BlackboardError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # `blackboard tail | head`: the reader left; that is not an error
            sys.stderr.close()
            sys.exit(0)
        except OSError as exc:
            fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 1)


BOARD_HELP = f"Board directory [default: ${_settings.ENV_DIR}, else {_settings.DEFAULT_DIR}]."


def _resolve_board(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path:
    # `blackboard --board X ls` and `blackboard ls --board X` both work; the command's own wins, then
    # the group's, then BLACKBOARD_DIR, then the default.
    if value is not None:
        return value
    root = ctx.find_root()
    group_value = root.params.get("board_dir") if root is not ctx else None
    return _settings.board_dir(group_value)


def board_option(f: F) -> F:
    # No envvar= here: the environment comes after a --board given before the command (_resolve_board).
    return click.option(
        "--board",
        "board_dir",
        type=click.Path(file_okay=False, path_type=Path),
        callback=_resolve_board,
        help=BOARD_HELP,
    )(f)


def open_board(board_dir: Path, *, author: str | None = None, read_only: bool = False) -> Board:
    return Board.open(board_dir, author=author, read_only=read_only)


def author_option(f: F) -> F:
    return click.option(
        "--author", envvar=_settings.ENV_AUTHOR, show_envvar=True, help="Who writes (default: user@host)."
    )(f)


def emit_json(obj: Any) -> None:
    click.echo(_codec.dumps(obj).decode())


@click.group(cls=BoardGroup, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="blackboard")
@click.option("--board", "board_dir", type=click.Path(file_okay=False, path_type=Path), help=BOARD_HELP)
def cli(board_dir: Path | None) -> None:
    """A file-based shared blackboard for agents, scripts and people.

    Every change is one JSON line appended to BOARD/log.jsonl; the latest value of every key
    is also in BOARD/entries/<key>.json. Values are JSON.
    """


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
        emit_json(entry.model_dump(mode="json"))
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
            emit_json(entry.model_dump(mode="json"))
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
            emit_json(event.model_dump(mode="json"))
        else:
            click.echo(event_line(event))


# The live and maintenance commands live in their own modules; importing them registers them on `cli`.
from . import _cli_admin, _cli_live  # noqa: E402

__all__ = ["_cli_admin", "_cli_live", "cli", "main"]


def main() -> None:
    """Entry point of the `blackboard` script: every error ends as one line and an exit code."""
    try:
        code = cli.main(prog_name="blackboard", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        fail(exc.format_message() + hint, 2)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:  # Ctrl-C while click itself was waiting
        sys.exit(EXIT_INTERRUPTED)
    except BlackboardError as exc:  # raised while click parses options, before a command runs
        fail(str(exc), exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)

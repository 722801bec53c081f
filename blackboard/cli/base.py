"""What every `blackboard` command shares: the group, the board and author options, errors and output.

Errors are translated once, here at the boundary, to one line on stderr and a documented exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ..board import Board
from ..core import codec as _codec
from ..core import settings as _settings
from ..errors import BlackboardError

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

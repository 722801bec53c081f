"""What every `blackboard` command shares: the group, the board and author options, errors and output.

Errors are translated once, here at the boundary, to one line on stderr and a documented exit code.

The group is lazy (click's documented `LazyGroup` pattern): a shell agent starts a new process per
command, so only the module of the command that runs is imported. `COMMANDS` names each command's
module and its short help, so that `blackboard --help` lists every command without importing any;
tests/test_cli_engine.py checks that table against the commands themselves.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ..board import Board
from ..core import codec as _codec
from ..core import settings as _settings
from ..errors import NO_ROOM, BlackboardError, ReadOnlyBoard

EXIT_CODES = """\b
Exit codes:
  0  success
  1  error (I/O, lock timeout, corrupt log, read-only board)
  2  bad input: usage, invalid key or value
  3  no such key
  4  version conflict (compare-and-set failed; nothing written)
  5  not a board, or a board of a newer format
  6  check found inconsistencies (run `repair`)
  7  timed out: watch --timeout ended before --count events came; no reply
     to request, call missed, inbox --wait, take, task next with nothing
  8  watch --exec stopped: CMD failed for good (--on-failure stop) or cannot run
  9  refused: a rejected call, a turn past the limit or in a closed conversation
  10 held: the lease is held by another (claim)
  11 fenced: a newer lease or delivery exists (--fence, renew, ack); nothing written
  12 refused by a contract (nothing written), or not verified (read --verified,
     verify found a bad or missing signature)
  130 interrupted
  143 stopped by SIGTERM (watch, tail -f, serve)"""

EXIT_CHECK_FAILED = 6
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    # One line, always: a path or key with a newline in it must not split the message.
    one_line = message.replace("\r", "\\r").replace("\n", "\\n")
    click.echo(f"blackboard: error: {one_line}", err=True)
    sys.exit(code)


#: The variable `--as` defaults to. It is `blackboard.agents.ENV_AGENT` (a test checks): not imported
#: from there, which would load the whole agents layer (asyncio included) into every command.
ENV_AGENT = "BLACKBOARD_AGENT"

#: command -> (its module in blackboard.cli, the short help `blackboard --help` shows). The command
#: object is the module's attribute of the command's name ('-' as '_').
COMMANDS: dict[str, tuple[str, str]] = {
    "claim": ("work", "Take the exclusive lease KEY for --ttl seconds (exit 10: held)."),
    "renew": ("work", "Extend lease KEY by its ttl (exit 11: it was lost)."),
    "release": ("work", "Free lease KEY (exit 11: not held with TOKEN any more)."),
    "push": ("work", "Add an item under PREFIX, named in push order."),
    "take": ("work", "Take one item of PREFIX for group G (exit 7: none)."),
    "nack": ("work", "Give a delivery back: redelivered after --delay."),
    "extend": ("work", "Keep a delivery in progress for --lease more seconds."),
    "pending": ("work", "The deliveries of group G in flight."),
    "dead": ("work", "The items of group G that ran out of attempts."),
    "task": ("work", "Tasks that block one another: add, list, next, done, fail."),
    "accept": ("agents", "Accept a ringing call ID: a conversation with the caller starts."),
    "ack": ("agents", "Ack messages ID... of your inbox, or a queue delivery."),
    "call": ("agents", "Ring agent NAME: exit 0 accepted, 9 rejected, 7 missed."),
    "conv": ("conv", "Conversations, turn by turn: new, say, show, watch, close."),
    "digest": ("agents", "What needs your attention now, most urgent first."),
    "inbox": ("agents", "The messages waiting for you, oldest first."),
    "join": ("agents", "Register as an agent, with capabilities and a description."),
    "leave": ("agents", "Mark yourself gone: offline at once (messages still queue)."),
    "reject": ("agents", "Reject a ringing call ID (the caller exits 9)."),
    "reply": ("agents", "Answer message ID with BODY and ack it, in one record."),
    "request": ("agents", "Send a request to TO and wait for its reply (exit 7: none)."),
    "say": ("conv", "Add TEXT as your turn in conversation CONV."),
    "send": ("agents", "Send BODY to an agent, to '*' or to '@capability'."),
    "status": ("agents", "Set your declared status (available, busy, in-call, ...)."),
    "who": ("agents", "The registered agents and their state (available, stale, ...)."),
    "contract": ("trust", "The board's contracts per key prefix: set, show, rm."),
    "keygen": ("trust", "Create agent NAME's signing key and register its public half in the board."),
    "verify": ("trust", "Check the signature of every record under PREFIX; name each bad one (exit 12)."),
    "blame": ("history", "Who last changed each key starting with PREFIX, when, at which seq."),
    "check": ("admin", "Compare entry files with the log (the source of truth)."),
    "unlock": ("admin", "List the soft writer lock's claims; break those of dead writers (--force: any)."),
    "repair": (
        "admin",
        "Take a damaged board back to a consistent, usable state; on a healthy one, only check.",
    ),
    "compact": ("admin", "Rewrite the log to the latest state of every key, safely while others write and watch."),
    "cursors": ("live", "List the named consumers (watch --cursor) with their position and lag, or reset one."),
    "demo": ("live", "Agents coordinating through a board, live: a research -> analysis pipeline of processes."),
    "doctor": ("doctor", "Probe the mount a board directory is on and recommend a lock and a watch mode."),
    "history": ("history", "Every retained event of KEY, oldest first, deletes included."),
    "init": ("admin", "Create a board (an existing board is left as it is)."),
    "mcp": ("mcp", "An MCP server on stdio: the board as tools for Claude Code and other MCP clients."),
    "serve": ("web", "A live web view of the board, in a browser (loopback only)."),
    "ls": ("commands", "List the live keys starting with PREFIX, in key order."),
    "read": ("commands", "Print KEY's value as JSON (exit 3 if it has none)."),
    "rm": ("commands", "Delete KEY (exit 3 if it has no value)."),
    "seq": ("admin", "Print the board's last seq: a bare integer (0 for an empty board)."),
    "stats": ("admin", "Keys, events, log bytes, dead-record ratio, last and oldest seq, archive size."),
    "tail": ("live", "The last events of the log, one readable line each (colour on a terminal)."),
    "txn": ("txn", "Apply several puts and deletes as ONE record with one seq: all of them or none."),
    "watch": ("live", "Print every event whose key starts with PREFIX, one JSON line each, as it happens."),
    "write": ("commands", "Set KEY to VALUE (JSON; '-' reads it from stdin)."),
}


def _shorten(text: str, limit: int) -> str:
    """What click does to a short help that does not fit (`textwrap.shorten` at word boundaries)."""
    if len(text) <= limit:
        return text
    if limit < len("..."):
        return "..."
    import textwrap

    return textwrap.shorten(text, limit, placeholder="...", break_on_hyphens=False)


class BoardGroup(click.Group):
    """Runs a command and turns library errors into one line and an exit code (never a traceback).

    Lazy: a command's module is imported when that command is looked up (to run it, or for its own
    --help), never to list the commands.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)  # one added with add_command() wins
        if command is not None or cmd_name not in COMMANDS:
            return command
        attr = cmd_name.replace("-", "_")
        # __import__ rather than importlib.import_module: `python -X importtime` then shows the module.
        module = __import__(f"{__package__}.{COMMANDS[cmd_name][0]}", fromlist=[attr])
        command = getattr(module, attr)
        if not isinstance(command, click.Command) or command.name != cmd_name:
            raise TypeError(f"{module.__name__}.{cmd_name} is not the click command {cmd_name!r}")
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            # click >= 8.4 suggests close names ("Did you mean...") from `self.commands`, which holds
            # only the eager commands: suggest from all of them. (Older clicks suggest nothing.)
            no_such_command = getattr(click.exceptions, "NoSuchCommand", None)
            if no_such_command is None or not isinstance(exc, no_such_command):
                raise
            raise no_such_command(args[0], possibilities=self.list_commands(ctx), ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own would import every command's module to ask for its short help: the table has it.
        eager = {name: cmd for name, cmd in self.commands.items() if not cmd.hidden}
        rows = {name: help for name, (_, help) in COMMANDS.items()}
        rows.update((name, cmd.get_short_help_str()) for name, cmd in eager.items())
        if rows:
            limit = formatter.width - 6 - max(map(len, rows))
            with formatter.section("Commands"):
                formatter.write_dl([(name, _shorten(rows[name], limit)) for name in sorted(rows)])

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
            # A full disk or RLIMIT_FSIZE from a write the library did not name (OutOfSpace is the
            # BlackboardError above): the same words, not Python's "[Errno 28] ...".
            reason = NO_ROOM.get(exc.errno) if exc.errno is not None else None
            fail(f"{exc.filename or ''}: {reason or exc.strerror or exc}".lstrip(": "), 1)


#: An argument that starts like a negative number: -5, -1.5e3, -.5
_NUMBER = r"-(?:\d|\.\d)"


class NumberParser(click.parser._OptionParser):
    """click's parser, but an argument that starts like a negative number (-5, -1.5e3) is a value."""

    def _process_opts(self, arg: str, state: Any) -> None:
        if re.match(_NUMBER, arg):
            state.largs.append(arg)
            return
        super()._process_opts(arg, state)


class NumberCommand(click.Command):
    """A command whose VALUE may be a negative number while an unknown option stays a usage error."""

    def make_parser(self, ctx: click.Context) -> click.parser._OptionParser:
        parser = NumberParser(ctx)
        for param in self.get_params(ctx):
            param.add_to_parser(parser, ctx)
        return parser


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


def _resolve_agent(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # As --board: the command's --as wins, then the group's (which click filled from BLACKBOARD_AGENT).
    if value is not None:
        return value
    root = ctx.find_root()
    group_value = root.params.get("agent") if root is not ctx else None
    return group_value if isinstance(group_value, str) else None


AGENT_HELP = f"Act as agent NAME: sign life, and write as NAME [default: ${ENV_AGENT}]."


def agent_option(f: F) -> F:
    """`--as NAME` on an agent command; `blackboard --as NAME CMD` and BLACKBOARD_AGENT work too."""
    return click.option("--as", "agent", metavar="NAME", callback=_resolve_agent, help=AGENT_HELP)(f)


def identity(explicit: str | None = None) -> str | None:
    """The agent this process acts as: `explicit`, else the group's `--as` (or BLACKBOARD_AGENT),
    else None; validated (InvalidKey, exit 2)."""
    name = explicit
    if name is None:
        ctx = click.get_current_context(silent=True)
        group_value = None if ctx is None else ctx.find_root().params.get("agent")
        name = group_value if isinstance(group_value, str) else None
    if name is None:
        return None
    from ..agents.names import validate_agent  # only when there is a name: the layer imports asyncio

    return validate_agent(name)


def require_agent(explicit: str | None) -> str:
    """The identity of an agent command, which has no meaning without one (a usage error, exit 2)."""
    name = identity(explicit)
    if name is None:
        raise click.UsageError(f"who are you? give --as NAME or set {ENV_AGENT}")
    return name


def open_board(
    board_dir: Path, *, author: str | None = None, read_only: bool = False, agent: str | None = None
) -> Board:
    """Open the board; a process acting as an agent (`agent`, else `--as`/BLACKBOARD_AGENT) writes
    as it unless --author says otherwise, and signs life once: an mtime, no log record (spec/AGENTS.md 3)."""
    name = identity(agent)
    who = author or name
    board = Board.open(board_dir, author=who, read_only=read_only, signer=None if read_only else _signer(who))
    if name is not None:
        try:
            board.mark_seen(name)
        except ReadOnlyBoard:
            if not read_only:  # a reader of a read-only mount still reads; a writer would fail anyway
                board.close()
                raise
        except BaseException:
            board.close()
            raise
    return board


def _signer(author: str | None) -> Any:
    """The signer of a writer whose author holds a key (`blackboard keygen`): its writes are signed."""
    from ..trust.files import signer_for

    return signer_for(_settings.author(author))


VERIFIED_HELP = "Only records whose signature verifies (spec/TRUST.md 4)."


def verified_option(f: F) -> F:
    """`--verified` on a reader: the same option, with the same words, on read and watch."""
    return click.option("--verified", is_flag=True, help=VERIFIED_HELP)(f)


def only_verified(board: Board, events: Any) -> Any:
    """The events whose records verify; each other one is named on stderr and left out."""
    from ..trust.signatures import verified

    return verified(board, events)


def author_option(f: F) -> F:
    return click.option(
        "--author", envvar=_settings.ENV_AUTHOR, show_envvar=True, help="Who writes (default: user@host)."
    )(f)


def json_noop_option(f: F) -> F:
    """`--json` on a command whose output is JSON already: a script may pass it to every data command."""
    return click.option("--json", "_json", is_flag=True, expose_value=False, help="Output is JSON already.")(f)


def complete_keys(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Key-name completion (cli/complete.py), imported only when the shell asks: not by every run."""
    from .complete import complete_keys as complete

    return complete(ctx, param, incomplete)


FULL_HELP = "Print values whole (by default a value is cut to the terminal's width, on a terminal only)."


def full_option(f: F) -> F:
    """`--full`: the same option, with the same words, on every command that prints values for people."""
    return click.option("--full", is_flag=True, help=FULL_HELP)(f)


def subcommand(group: click.Group, name: str, make: Callable[[str], Any] = click.command) -> Callable[[F], F]:
    """Add a subcommand `name` to `group` (built by `make`, default `click.command`). The module keeps
    the plain function, so that the lazy group's table (COMMANDS) lists only top-level commands."""

    def register(f: F) -> F:
        group.add_command(make(name)(f))
        return f

    return register


def group_json(group: click.Group, as_json: bool) -> bool:
    """A subcommand's `--json`, or its group's: `task --json list` as `task list --json`."""
    parent = click.get_current_context().parent
    return as_json or bool(parent is not None and parent.command is group and parent.params.get("as_json"))


def emit_json(obj: Any) -> None:
    click.echo(_codec.dumps(obj).decode())


@click.group(cls=BoardGroup, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="blackboard")
@click.option("--board", "board_dir", type=click.Path(file_okay=False, path_type=Path), help=BOARD_HELP)
@click.option("--as", "agent", metavar="NAME", envvar=ENV_AGENT, help=AGENT_HELP)
def cli(board_dir: Path | None, agent: str | None) -> None:
    """A file-based shared blackboard for agents, scripts and people.

    Every change is one JSON line appended to BOARD/log.jsonl; the latest value of every key
    is also in BOARD/entries/<key>.json. Values are JSON.
    """

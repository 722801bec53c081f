"""Live commands of the `blackboard` CLI: tail -f, watch, cursors, and the demo."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from ..core import codec as _codec
from ..core import settings as _settings
from ..models import Event
from .base import (
    board_option,
    complete_keys,
    emit_json,
    fail,
    full_option,
    json_noop_option,
    only_verified,
    open_board,
    verified_option,
)
from .execute import EXIT_EXEC_FAILED, ExecPolicy, ExecStopped
from .render import event_line

F = TypeVar("F", bound=Callable[..., Any])


def poll_options(f: F) -> F:
    f = click.option(
        "--poll-interval",
        type=click.FloatRange(min=0.0005),
        envvar=_settings.ENV_POLL_INTERVAL,
        show_envvar=True,
        help="Seconds between polls [default: 0.01].",
    )(f)
    return click.option(
        "--poll/--notify",
        default=None,
        envvar=_settings.ENV_POLL,
        show_envvar=True,
        help="Poll the log instead of waiting for change notifications (NFS, SMB).",
    )(f)


#: `watch --count N --timeout S` that timed out before N events (base.py's EXIT_CODES: 0-6 and 130 are taken)
EXIT_TIMED_OUT = 7


class _Terminated(Exception):
    pass


#: The exit status of a watch or `tail -f` that SIGTERM ended (128 + 15).
EXIT_TERMINATED = 143


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM ends a watch as cleanly as Ctrl-C: no traceback, after flushing what was printed and
    saving the cursor (the watcher's own context exits first); exit 143 (128+15, as a shell reports
    a process SIGTERM ended), so that a script can tell it from a watch that ran to its end."""

    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    terminated = False
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        terminated = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        sys.stdout.flush()
        sys.exit(EXIT_TERMINATED)


@click.command()
@board_option
@click.option("-n", "count", type=click.IntRange(min=0), default=10, show_default=True, help="How many events.")
@click.option("-f", "--follow", is_flag=True, help="Then follow the log: print each new event as it happens.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@full_option
@click.option(
    "--color/--no-color",
    "color",
    default=None,
    help="Colour the lines or not [default: colour on a terminal, unless NO_COLOR is set].",
)
@poll_options
def tail(
    board_dir: Path,
    count: int,
    follow: bool,
    as_json: bool,
    full: bool,
    color: bool | None,
    poll: bool | None,
    poll_interval: float | None,
) -> None:
    """The last events of the log, one readable line each (colour on a terminal)."""
    if color is None:  # https://no-color.org: NO_COLOR set to any non-empty value turns colour off
        color = not os.environ.get("NO_COLOR") and sys.stdout.isatty()
    colour = color and not as_json

    def show(event: Event) -> None:
        # color=: click.echo strips the codes when stdout is not a terminal; --color keeps them
        click.echo(
            _codec.dumps(event.as_dict()).decode() if as_json else event_line(event, colour=colour, full=full),
            color=colour,
        )

    with open_board(board_dir, read_only=True) as board:
        events = board.tail(count)
        for event in events:
            show(event)
        if not follow:
            return
        since = events[-1].seq if events else board.last_seq
        with stop_on_sigterm(), board.watch(since=since, poll=poll, poll_interval=poll_interval) as watcher:
            for event in watcher:
                show(event)
                sys.stdout.flush()


@click.command()
@board_option
@click.argument("prefix", default="", shell_complete=complete_keys)
@json_noop_option
@click.option(
    "--since",
    default="now",
    show_default=True,
    metavar="SEQ|now|start",
    help="Replay the events after seq SEQ first ('start': all of them), then go on live.",
)
@click.option("--cursor", help="Resume after the last event the consumer of this name finished with.")
@click.option(
    "--key",
    "key",
    metavar="KEY",
    shell_complete=complete_keys,
    help="Watch this one key only (PREFIX matches responses/r10 too when waiting for responses/r1).",
)
@click.option(
    "--exec",
    "command",
    metavar="CMD",
    help="Run CMD (with sh) for each event: the event JSON on stdin, its fields in BLACKBOARD_SEQ, "
    "_OP, _KEY, _VALUE, _VERSION, _TS, _EVENT_AUTHOR. The next event waits until CMD succeeds or "
    "fails for good (see --retries, --on-failure).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="With --exec: run a failing CMD again up to N times, --retry-delay apart (doubling).",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="With --exec: the wait before the first retry.",
)
@click.option(
    "--on-failure",
    type=click.Choice(["deadletter", "stop"]),
    default="deadletter",
    show_default=True,
    help="With --exec, once the retries are spent: record the event in deadletter.jsonl (exit status, "
    "stderr tail) and go on, or stop (exit 8) with the cursor before it. A CMD the shell cannot run "
    "(exit 126, 127) always stops.",
)
@click.option("--count", type=click.IntRange(min=1), help="Stop after N events.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="Stop after S seconds without an event (with --count: exit 7 if fewer than N came).",
)
@verified_option
@poll_options
def watch(
    board_dir: Path,
    prefix: str,
    since: str,
    cursor: str | None,
    key: str | None,
    command: str | None,
    retries: int,
    retry_delay: float,
    on_failure: str,
    count: int | None,
    timeout: float | None,
    verified: bool,
    poll: bool | None,
    poll_interval: float | None,
) -> None:
    """Print every event whose key starts with PREFIX, one JSON line each, as it happens.

    Exit 7 if --timeout ended the watch before --count events came; exit 8 if --exec stopped it.
    """
    if key is not None and prefix:
        raise click.UsageError("give a PREFIX or --key KEY, not both")
    start = parse_since(since)
    delivered = 0
    timed_out = False
    policy = None if command is None else ExecPolicy(command, retries, retry_delay, on_failure)
    with (
        open_board(board_dir, read_only=cursor is None) as board,
        stop_on_sigterm(),
        board.watch(
            prefix, key=key, since=start, cursor=cursor, timeout=timeout, poll=poll, poll_interval=poll_interval
        ) as watcher,
    ):
        for event in only_verified(board, watcher) if verified else watcher:
            line = _codec.dumps(event.as_dict()).decode()
            if policy is None:
                click.echo(line)
                sys.stdout.flush()  # so that `| jq` works live
            else:
                try:
                    policy.handle(board, prefix, event, line)
                except ExecStopped as stop:  # leaving now, uncommitted: the cursor stays before it
                    fail(stop.message, EXIT_EXEC_FAILED)
            delivered += 1
            if count is not None and delivered >= count:
                watcher.commit()
                break
        else:
            timed_out = count is not None  # the watcher ended by --timeout, before --count events
    if timed_out:
        sys.exit(EXIT_TIMED_OUT)


def parse_since(text: str) -> int | None:
    if text == "now":
        return None
    if text == "start":
        return 0
    try:
        seq = int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a seq, 'now' or 'start'", param_hint="--since") from None
    if seq < 0:
        raise click.BadParameter("a seq is >= 0", param_hint="--since")
    return seq


@click.command()
@board_option
@click.option("--reset", "name", help="Move the cursor NAME (to --to SEQ), or delete it.")
@click.option("--to", "seq", type=click.IntRange(min=0), help="With --reset: the seq to move it to.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def cursors(board_dir: Path, name: str | None, seq: int | None, as_json: bool) -> None:
    """List the named consumers (watch --cursor) with their position and lag, or reset one."""
    with open_board(board_dir, read_only=name is None) as board:
        if name is not None:
            board.reset_cursor(name, seq)
            click.echo(f"cursor {name} " + ("deleted" if seq is None else f"moved to seq {seq}"))
            return
        last = board.last_seq
        for cursor, position in board.cursors().items():
            if as_json:
                emit_json({"name": cursor, "seq": position, "lag": last - position})
            else:
                click.echo(f"{cursor:<24} seq {position:<8} lag {last - position}")


@click.command()
@click.option(
    "--board",
    "board_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Board directory [default: a fresh temporary directory].",
)
@click.option("--requests", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option(
    "--interval", type=click.FloatRange(0, 2), default=0.3, show_default=True, help="Seconds between requests."
)
def demo(board_dir: Path | None, requests: int, interval: float) -> None:
    """Agents coordinating through a board, live: a research -> analysis pipeline of processes."""
    from .demo import demo as run_demo

    run_demo(board_dir, requests, interval)

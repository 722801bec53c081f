"""The board as a whole: init, and the maintenance commands check, compact, stats."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..board import Board
from ..core import codec as _codec
from ..models import DEFAULT_COMPACT_AT_BYTES, BoardConfig
from .base import EXIT_CHECK_FAILED, board_option, emit_json, fail, json_noop_option, open_board


@click.command()
@board_option
@click.option(
    "--lock",
    type=click.Choice(["flock", "soft"]),
    default=None,
    help="flock: local disks; soft: NFS, SMB, FUSE, where flock may exclude nothing "
    "[default: by the filesystem's type; `blackboard doctor` probes it].",
)
@click.option(
    "--force",
    is_flag=True,
    help="Allow --lock flock on a FUSE or network filesystem (only if every writer runs on this host).",
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
@click.option(
    "--compact-at-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_COMPACT_AT_BYTES,
    show_default=True,
    metavar="N",
    help=f"Writers compact in the background once the log is this big ({DEFAULT_COMPACT_AT_BYTES >> 20} MiB)...",
)
@click.option(
    "--compact-at-dead-ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="...and at least this share of its records is superseded.",
)
@click.option("--no-auto-compact", is_flag=True, help="Writers never compact on their own (run `compact` yourself).")
@click.option(
    "--group",
    metavar="NAME",
    help="A board group NAME can use and others cannot: setgid, group-writable, no world access.",
)
@json_noop_option
def init(
    board_dir: Path,
    lock: str | None,
    force: bool,
    max_value_bytes: int,
    fsync: bool,
    retention: float,
    compact_at_bytes: int,
    compact_at_dead_ratio: float,
    no_auto_compact: bool,
    group: str | None,
) -> None:
    """Create a board (an existing board is left as it is). Prints its path, lock, compact_at_bytes
    and last seq as JSON.

    Settings are fixed at init (spec 3). On an existing board a plain `init` changes nothing and
    prints the same JSON (exit 0); one given a setting (--lock, --fsync, --max-value-bytes,
    --retention, --compact-at-bytes, --compact-at-dead-ratio, --no-auto-compact, --group) that differs from
    the board's is an error, exit 2, that names each of them, and it too changes nothing.
    """
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("compact_at_bytes")
    if no_auto_compact and given is not click.core.ParameterSource.DEFAULT:
        raise click.BadParameter(
            "give --compact-at-bytes or --no-auto-compact, not both", param_hint="--no-auto-compact"
        )
    with Board.init(
        board_dir,
        lock=lock,  # type: ignore[arg-type]  # click.Choice gives a str from the two allowed
        force_lock=force,
        max_value_bytes=max_value_bytes,
        fsync=fsync,
        retention_seconds=retention,
        compact_at_bytes=None if no_auto_compact else compact_at_bytes,
        compact_at_dead_ratio=compact_at_dead_ratio,
        group=group,
    ) as board:
        config = board.config
        differ = _differing_settings(ctx, config)
        if group is not None and config.extra.get("group") != group:
            differ.append(("group", f"--group {group}"))
        if differ:
            # A board created just now has the settings given: only an existing board can differ.
            fields = [field for field, _ in differ]
            fields += [] if "lock" in fields else ["lock"]  # which kind of board it is, always
            fail(
                f"{board.path} exists with "
                + ", ".join(f"{field} {_setting(config.as_dict().get(field))}" for field in fields)
                + "; init was given "
                + ", ".join(given for _, given in differ)
                + ": settings are fixed at init (spec 3)",
                2,
            )
        # Machine-readable, so that a shell agent can start `watch --since SEQ` with no gap.
        emit_json(
            {
                "board": str(board.path),
                "lock": config.lock,
                "compact_at_bytes": config.compact_at_bytes,
                "last_seq": board.last_seq,
                **({"group": config.extra["group"]} if "group" in config.extra else {}),
            }
        )


#: init's setting options: (parameter, board.json field, how the given value becomes the field's)
_SETTINGS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("lock", "lock", str),
    ("fsync", "fsync", bool),
    ("max_value_bytes", "max_value_bytes", int),
    ("retention", "retention_seconds", float),
    ("compact_at_bytes", "compact_at_bytes", int),
    ("compact_at_dead_ratio", "compact_at_dead_ratio", float),
    ("no_auto_compact", "compact_at_bytes", lambda _flag: None),
)


def _differing_settings(ctx: click.Context, config: BoardConfig) -> list[tuple[str, str]]:
    """(board.json field, "--option (value)") of each setting given explicitly (on the command line or
    from the environment) whose value is not the board's."""
    explicit = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    options = {param.name: param for param in ctx.command.params}
    differ = []
    for name, field, convert in _SETTINGS:
        if ctx.get_parameter_source(name) not in explicit:
            continue
        value = convert(ctx.params[name])
        if value != getattr(config, field):
            option = max(options[name].opts, key=len)
            if name == "no_auto_compact":
                shown = f"({field} null)"
            else:
                shown = f"({_setting(value)})" if name == "fsync" else _setting(value)
            differ.append((field, f"{option} {shown}"))
    return differ


def _setting(value: Any) -> str:
    """A setting as board.json spells it: true, null, 86400, 0.5, flock."""
    return value if isinstance(value, str) else _codec.dumps(value).decode()


@click.command()
@board_option
@click.option("--repair", is_flag=True, help="Repair what check finds: the same as `blackboard repair`.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object: last_seq, keys, watermark, ok, repaired, problems."
)
def check(board_dir: Path, repair: bool, as_json: bool) -> None:
    """Compare entry files with the log (the source of truth). Exit 6 if they differ.

    Each problem comes with what the log says of it: the key, the seq of its latest record (and its
    line in the log when known). Keys changed after the watermark are pending, not problems. Without
    --repair this only reads: it works on a board you cannot write (read-only mount, another user's).
    """
    # Not read-only: the writer lock tells a torn tail from a write in progress. check writes nothing,
    # and where it cannot take the lock (a board it may not write) it looks as a reader does.
    if repair:
        _repair(board_dir, as_json)
        return
    with open_board(board_dir) as board:
        report = board.check()
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(f"last seq {report.last_seq}, {report.keys} keys, entry files at seq {report.watermark}")
        for problem in report.details():
            click.echo(_one_line(("repaired: " if report.repaired else "") + problem.summary))
            click.echo(_one_line(f"  {problem.detail}"))
        if report.ok or report.repaired:
            click.echo("repaired" if report.repaired and not report.ok else "consistent")
    if not (report.ok or report.repaired):
        sys.exit(EXIT_CHECK_FAILED)


@click.command("repair")
@board_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def repair(board_dir: Path, as_json: bool) -> None:
    """Take a damaged board back to a consistent, usable state; on a healthy one, only check.

    Damaged records (bad JSON, a checksum that does not match, a seq out of order) are moved to
    quarantine/ with their offsets (nothing is deleted); the log goes on after the highest seq any
    trace shows (the log, entry files, the watermark, the checkpoint, the quarantine), never reusing
    one; records that entry files newer than the log still hold are put back; a torn tail is cut;
    entry files are rebuilt. The report says which keys may have lost which versions.
    """
    _repair(board_dir, as_json)


def _repair(board_dir: Path, as_json: bool) -> None:
    with open_board(board_dir) as board:
        report = board.repair()
    if as_json:
        emit_json(report.as_dict())
        return
    click.echo(f"last seq {report.last_seq}, {report.keys} keys, entry files at seq {report.watermark}")
    for line in report.problems():
        click.echo(_one_line(f"repaired: {line}"))
    if report.quarantine_file:
        click.echo(_one_line(f"the damaged lines are in {board_dir / report.quarantine_file}"))
    click.echo("consistent" if report.ok else "repaired")


@click.command()
@board_option
@click.option(
    "--force", is_flag=True, help="Break every claim, live or not: only once the holder's host is known dead."
)
@click.option("--json", "as_json", is_flag=True, help="Print the claims as one JSON array.")
def unlock(board_dir: Path, force: bool, as_json: bool) -> None:
    """List the soft writer lock's claims; break those of dead writers (--force: any).

    A writer killed on this host is found dead by its pid and start time, and its claim is broken
    (writers waiting for the lock do the same). One on another host cannot be proven dead from here:
    check that host first, then run `blackboard unlock --force`. A flock board has no claims: the
    kernel drops a flock when its holder exits.
    """
    with open_board(board_dir) as board:
        claims = board.unlock(force=force)
    if as_json:
        emit_json([c.as_dict() for c in claims])
        return
    if not claims:
        click.echo("no claims: the writer lock is free" if board.config.lock == "soft" else "a flock board: no claims")
    for c in claims:
        if c.state == "several":
            click.echo(f"lock.d/ holds several tokens ({c.host}): remove all but one by hand; nothing was changed")
            continue
        if c.state == "none":
            click.echo(
                "put a free token back into lock.d/: writers can go on"
                if c.broken
                else "lock.d/ holds no token: every writer waits; --force puts a free one back"
            )
            continue
        age = f", {c.age:.0f} s old" if c.age is not None else ""
        what = f"{c.state} claim of pid {c.pid} on host {c.host}{age}"
        if c.broken:
            click.echo(f"broke the {what}" + (": its process is gone" if c.stale else " (--force)"))
        else:
            click.echo(f"kept the {what}: its writer may be alive (another host, or running); --force breaks it")


def _one_line(text: str) -> str:
    # A file name under entries/ may hold a newline: it must not split a problem in two.
    return text.replace("\r", "\\r").replace("\n", "\\n")


@click.command()
@board_option
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Keep deletes younger than this [default: the board's retention_seconds, 86400].",
)
@click.option("--archive", is_flag=True, help="Move the removed history to archive/ (see `history --all`).")
@click.option("--if-needed", is_flag=True, help="Only if the log is past --min-bytes and --min-dead-ratio (cron).")
@click.option(
    "--min-bytes",
    type=click.IntRange(min=0),
    help="With --if-needed [default: the board's compact_at_bytes, else 16 MiB].",
)
@click.option(
    "--min-dead-ratio",
    type=click.FloatRange(0, 1),
    help="With --if-needed [default: the board's compact_at_dead_ratio, 0.5].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compact(
    board_dir: Path,
    retention: float | None,
    archive: bool,
    if_needed: bool,
    min_bytes: int | None,
    min_dead_ratio: float | None,
    as_json: bool,
) -> None:
    """Rewrite the log to the latest state of every key, safely while others write and watch."""
    from ..core.compact import CompactReport, needs_compaction, require_writable

    with open_board(board_dir) as board:
        require_writable(board.engine.layout)  # --if-needed too: a cron job must learn it can never compact
        if if_needed and not needs_compaction(board.engine, min_bytes, min_dead_ratio):
            report = CompactReport(skipped="not needed")
        elif sys.stderr.isatty() and not as_json:
            with click.progressbar(length=board.stats()["log_bytes"], label="compacting", file=sys.stderr) as bar:
                report = board.compact(retention=retention, archive=archive, progress=bar.update)
        else:
            report = board.compact(retention=retention, archive=archive)
    if as_json:
        emit_json(report.as_dict())
    elif report.skipped:
        click.echo(f"skipped: {report.skipped}")
    else:
        click.echo(
            f"{report.events_before} -> {report.events_after} events, {_size(report.bytes_before)} -> "
            f"{_size(report.bytes_after)} in {report.seconds:.2f} s; deletes kept {report.deletes_kept}, "
            f"purged {report.deletes_purged}" + (f"; {report.archived} events archived" if archive else "")
        )


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


@click.command()
@board_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def stats(board_dir: Path, as_json: bool) -> None:
    """Keys, events, log bytes, dead-record ratio, last and oldest seq, archive size."""
    with open_board(board_dir, read_only=True) as board:
        figures = board.stats()
    if as_json:
        emit_json(figures)
        return
    for name, value in figures.items():
        click.echo(f"{name.replace('_', ' '):<18} {_size(value) if name.endswith('_bytes') else value}")


@click.command()
@board_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object: last_seq, compacted_through, oldest_seq, board."
)
def seq(board_dir: Path, as_json: bool) -> None:
    """Print the board's last seq: a bare integer (0 for an empty board).

    `watch --since SEQ` then starts right after it. With --json also compacted_through (seqs up to
    it were compacted away) and oldest_seq (the oldest still in the log; 0 if none, as in `stats`).
    Only reads: it works on a board you cannot write (read-only mount, another user's).
    """
    with open_board(board_dir, read_only=True) as board:
        if not as_json:
            click.echo(board.last_seq)
            return
        figures = board.stats()
    emit_json(
        {
            "last_seq": figures["last_seq"],
            "compacted_through": figures["compacted_through"],
            "oldest_seq": figures["oldest_seq"],
            "board": str(board.path),
        }
    )

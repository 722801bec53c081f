"""Maintenance commands of the `blackboard` CLI: check, compact, stats."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .base import EXIT_CHECK_FAILED, board_option, cli, emit_json, open_board


@cli.command()
@board_option
@click.option("--repair", is_flag=True, help="Cut a torn log tail and rebuild entry files that differ from the log.")
def check(board_dir: Path, repair: bool) -> None:
    """Compare entry files with the log (the source of truth). Exit 6 if they differ."""
    # Not read-only: only the writer lock tells a torn tail from a write in progress (check writes nothing).
    with open_board(board_dir) as board:
        report = board.repair() if repair else board.check()
    click.echo(f"last seq {report.last_seq}, {report.keys} keys, entry files at seq {report.watermark}")
    for problem in report.problems():
        click.echo(("repaired: " if report.repaired else "") + problem)
    if report.ok or report.repaired:
        click.echo("repaired" if report.repaired and not report.ok else "consistent")
        return
    sys.exit(EXIT_CHECK_FAILED)


@cli.command()
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
    from ..core.compact import CompactReport, needs_compaction

    with open_board(board_dir) as board:
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


@cli.command()
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

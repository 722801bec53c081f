"""`blackboard doctor`: what the mount under a board does, and which strategy fits it (issue 9)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..core import mount as _mount
from ..core import probe as _probe
from ..core import settings as _settings
from .base import emit_json, fail


def _describe(label: str, info: _mount.MountInfo) -> str:
    if not info.fstype:
        return f"{label}: mount unknown (no /proc/self/mountinfo here)"
    return f"{label}: {info.fstype} on {info.mount_point} ({info.source}), {info.kind}"


@click.command()
@click.argument("directory", metavar="[DIR]", required=False, type=click.Path(path_type=Path))
@click.option(
    "--peer",
    metavar="DIR2",
    type=click.Path(path_type=Path),
    help="A second mount of the same directory: measure whether locks, notifications and sizes cross.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def doctor(directory: Path | None, peer: Path | None, as_json: bool) -> None:
    """Probe the mount a board directory is on and recommend a lock and a watch mode.

    DIR defaults to the board given by `blackboard --board` or BLACKBOARD_DIR, else the current
    directory (probe the directory a board will be made in before `init`). Runs each
    probe (flock, POSIX locks, O_EXCL, renames, hard links, notifications, attribute lag) in a scratch
    directory inside DIR, removed afterwards, and prints one line per probe, the recommendation
    (`init --lock`, polling or notifications) and what no probe from one host can prove.
    """
    if directory is None:
        given = click.get_current_context().find_root().params.get("board_dir")
        directory = Path(given or os.environ.get(_settings.ENV_DIR) or ".")
    for given in (directory, peer):
        if given is None:
            continue
        if not given.exists():
            fail(f"{given}: no such directory", 2)
        if not given.is_dir():
            fail(f"{given}: not a directory", 2)
    try:
        report = _probe.probe(directory, peer=peer)
    except OSError as exc:  # creating the scratch directory: only DIR is written to
        fail(f"{directory}: not writable ({exc.strerror or exc}): doctor probes in a scratch directory there", 1)
    if as_json:
        emit_json(report.as_dict())
        return
    click.echo(_describe(report.path, report.mount))
    if report.peer is not None and report.peer_mount is not None:
        click.echo(_describe(f"peer {report.peer}", report.peer_mount))
    width = max(len(p.name) for p in report.probes)
    for p in report.probes:
        click.echo(f"  {p.name:<{width}}  {'ok' if p.ok else 'no':<2}  {p.detail}")
    watch = "notify" if report.poll_interval is None else f"poll every {report.poll_interval:g} s"
    click.echo(f"recommended: lock {report.lock}, watch {watch}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
    click.echo(f"note: {report.cannot_prove}")

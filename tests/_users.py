"""Another user's view of a board, for the tests of commands that must work (or fail cleanly) on a
board this process may not write: the user to run as, a directory that user can enter, and a board
made read-only for everyone."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def nobody() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user 'nobody' to run as")


def can_switch_user() -> bool:
    proc = subprocess.run(
        [sys.executable, "-c", f"import os; os.setgid({nobody()}); os.setuid({nobody()})"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode == 0


def other_user() -> int | None:
    """The uid to run a command as so that the board's permissions apply: None when not root (we
    are already another user), `nobody` when root (root ignores permission bits)."""
    if os.geteuid() != 0:
        return None
    if not can_switch_user():
        pytest.skip("running as root, and cannot switch to another user here (no CAP_SETUID)")
    return nobody()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="bb-shared-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for p in [path, *path.rglob("*")]:
            with contextlib.suppress(OSError):
                if not p.is_symlink():
                    p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(path)


def read_only_everywhere(board: Path, *, lock_mode: int = 0o444) -> None:
    for p in [board, *board.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    (board / "lock").chmod(lock_mode)


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a directory, a read-only bind mount of it): a board made in the first is read-only in the second."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    source, view = tmp_path / "board", tmp_path / "ro"
    source.mkdir()
    view.mkdir()
    proc = subprocess.run(["mount", "--bind", str(source), str(view)], capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {proc.stderr.decode().strip()}")
    try:
        proc = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(view)], capture_output=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {proc.stderr.decode().strip()}")
        yield source, view
    finally:
        subprocess.run(["umount", str(view)], check=True, timeout=60)

"""Fixtures shared by the tests: a fresh board on the real filesystem, closed afterwards, and child
processes that never outlive their test; and `sealed`, the checksum a hand-made log line needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import pytest
from _workers import CTX, Spawn

from blackboard import Board
from blackboard.core.record import is_sealed, reseal

#: `shared_dir` (and the other-user helpers) for every test module that needs them.
pytest_plugins = ["_users"]


def sealed(line: bytes) -> bytes:
    """A hand-made log line (a JSON object, with or without its newline) ending with a valid checksum
    member, as a version-3 log needs on every line (spec 5.6): added, or recomputed if the line (an
    edited copy of a sealed line) already ends with one. The newline is kept if it had one."""
    newline = b"\n" if line.endswith(b"\n") else b""
    body = line.rstrip(b"\n")
    if is_sealed(body):
        body = body[: -len(b',"xxh3":"0123456789abcdef"}')] + b"}"
    return reseal(body) + newline


@pytest.fixture(autouse=True)
def keys_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test (and every process it starts) keeps its signing keys in a directory of its own,
    never in the user's: a key left by one test must not sign another's writes."""
    path = tmp_path_factory.mktemp("keys")
    monkeypatch.setenv("BLACKBOARD_KEYS", str(path))
    return path


@pytest.fixture
def board_path(tmp_path: Path) -> Path:
    """Where the `board` fixture's board lives (a path inside `tmp_path`, not created yet)."""
    return tmp_path / "board"


@pytest.fixture
def board(board_path: Path) -> Iterator[Board]:
    """A new, empty board with a fixed author, closed (entry files brought up to date) at teardown."""
    handle = Board.init(board_path, author="tester")
    yield handle
    handle.close()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start `target(*args, **kwargs)` in a spawned child; every child is killed if need be and reaped."""
    children: list[SpawnProcess] = []

    def start(target: Callable[..., Any], *args: Any, **kwargs: Any) -> SpawnProcess:
        proc = CTX.Process(target=target, args=args, kwargs=kwargs, daemon=True)
        proc.start()
        children.append(proc)
        return proc

    yield start
    for proc in children:
        if proc.is_alive():
            proc.kill()
    for proc in children:
        proc.join(10)
        proc.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stress variants run only when asked for (`-m stress`); a fast version of each always runs."""
    if config.getoption("markexpr", ""):
        return
    stress = [item for item in items if item.get_closest_marker("stress")]
    if stress:
        config.hook.pytest_deselected(items=stress)
        items[:] = [item for item in items if not item.get_closest_marker("stress")]

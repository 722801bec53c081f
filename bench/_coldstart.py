"""coldstart: what a NEW PROCESS pays to open a board and read one key, as a shell agent pays it.

Every figure is the wall time of one `subprocess.run` of a fresh interpreter, from the call to its
return (fork/exec, interpreter start, imports, the command, exit; stdout and stderr captured), taken
`coldstart_runs` times per command (default 15) after one untimed warm-up run of each, the commands
taken in turns in a rotating order so that the machine's noise falls on all of them alike. The
median and the p90 (nearest rank) are reported. Every run's exit status and output are checked.

Commands, on the big filesystem (the disk unless only tmpfs is under test), from a neutral cwd:

- floors: `python -c pass` and `python -c "import blackboard.cli"`;
- ours: `python -m blackboard --board DIR read KEY`, and the console script `blackboard` beside
  sys.executable (if present) with the same arguments;
- the peer: a new python process doing `sqlite3.connect(db).execute("select value from kv where
  key=?", (key,)).fetchone()` and printing the value, on a db of the same number of keys
  (the writes section's schema: a log table and a kv table).

Boards: a tiny one (10 keys, each written once) and a big one of `--events` events (default
1,000,000) over 10,000 keys, WRITTEN through the library by a helper process (`Board.init`, then
`board.write` round-robin over the keys with the writes section's ~120-byte values, then
`board.close()`), so that it holds whatever a real writer leaves behind (entry files, the watermark,
the index checkpoint `BOARD/checkpoint` if this build writes one). Writers' own background
compaction is off for it (`compact_at_bytes=None`): the log keeps all its events, as the figure
says. The big board is built once per run and shared. Run as a script, this module is that helper:

    python bench/_coldstart.py build BOARD EVENTS KEYS

and prints one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench import Bench, Filesystem
from _biglog import KEYS, key_name
from _peers import init_board_whole_log, make_value, open_store
from _procs import percentile
from _report import Row, Target
from _sections import median, rotated, section

TINY_KEYS = 10
FLOOR = "python -c pass"
SQLITE = "sqlite3"
_SQLITE_READ = (
    "import sqlite3, sys\n"
    "row = sqlite3.connect(sys.argv[1]).execute('select value from kv where key=?', (sys.argv[2],)).fetchone()\n"
    "sys.stdout.write(row[0].decode() + '\\n')\n"
)


@dataclass(frozen=True)
class BigBoard:
    path: Path  # the board directory
    events: int
    keys: int
    build_s: float
    log_bytes: int
    log_records: int  # records in the log after the build (less the header line)
    checkpoint_bytes: int | None  # None: the build wrote no BOARD/checkpoint


@dataclass(frozen=True)
class Command:
    label: str
    argv: list[str]
    expect: Any = None  # the JSON value the command prints, or None to check the exit status only


def last_value(events: int, keys: int, k: int) -> dict[str, Any]:
    """The value the big board's build last wrote to key number k (write i goes to key i % keys)."""
    return make_value(k + ((events - 1 - k) // keys) * keys)


def big_board(bench: Bench) -> BigBoard:
    """The board of `sizes.events` writes over 10,000 keys, written by a helper process, once per run."""
    events = bench.sizes.events
    name = f"coldstart-{events}"
    if name not in bench.cache:
        fs = bench.big_fs()
        path = bench.fresh_dir(fs, "coldstart-big") / "board"
        keys = min(KEYS, events)
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "build", str(path), str(events), str(keys)],
            capture_output=True,
            text=True,
            timeout=600 + events / 2_000,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"_coldstart.py build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        board = BigBoard(
            path, events, keys, out["seconds"], out["log_bytes"], out["log_records"], out["checkpoint_bytes"]
        )
        bench.log(
            f"built   {fs.label:5} a board of {events:,} board.write calls over {keys:,} keys in {board.build_s:.1f} s"
            f" ({events / board.build_s:,.0f} writes/s, close() included); log {board.log_records:,} records,"
            f" {board.log_bytes / 1e6:,.0f} MB,"
            f" {_checkpoint_text(board)}"
        )
        bench.cache[name] = board
    cached: BigBoard = bench.cache[name]
    return cached


def _checkpoint_text(board: BigBoard) -> str:
    if board.checkpoint_bytes is None:
        return "no checkpoint"
    return f"checkpoint {board.checkpoint_bytes / 1e3:,.0f} kB"


def _tiny_board(path: Path) -> None:
    from blackboard import Board

    with Board.init(path) as board:
        for i in range(TINY_KEYS):
            board.write(key_name(i), make_value(i))


def _sqlite_db(path: Path, keys: int) -> Path:
    store = open_store(SQLITE, path, durable=False, create=True)
    try:
        store.load((key_name(k), make_value(k)) for k in range(keys))
    finally:
        store.close()
    return path / "db.sqlite"


def _read_commands(tag: str, board: Path, key: str, expect: Any) -> list[Command]:
    args = ["--board", str(board), "read", key]
    commands = [Command(f"python -m blackboard read, {tag}", [sys.executable, "-m", "blackboard", *args], expect)]
    script = Path(sys.executable).parent / "blackboard"
    if script.is_file():
        commands.append(Command(f"blackboard read (console script), {tag}", [str(script), *args], expect))
    return commands


#: As a user's shell runs them: with bytecode caching on. Some sandboxes export
#: PYTHONDONTWRITEBYTECODE=1, which makes every start recompile the package (~40 ms here).
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _run_once(command: Command, cwd: Path) -> tuple[float, str]:
    """Wall seconds of one run, and '' or what was wrong with it."""
    t0 = time.perf_counter()
    proc = subprocess.run(command.argv, capture_output=True, cwd=cwd, timeout=300, check=False, env=_ENV)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return seconds, f"exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}"
    if command.expect is not None:
        try:
            got = json.loads(proc.stdout)
        except ValueError:
            got = proc.stdout[:200]
        if got != command.expect:
            return seconds, f"printed {got!r:.200}, expected {command.expect!r:.200}"
    return seconds, ""


def _time_all(bench: Bench, fs: Filesystem, commands: list[Command], cwd: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {c.label: [] for c in commands}
    failed: set[str] = set()
    by_label = {c.label: c for c in commands}
    warmup: dict[str, float] = {}
    for command in commands:  # warm-up: the page cache, .pyc files
        seconds, problem = _run_once(command, cwd)
        warmup[command.label] = seconds * 1e3
        if problem:
            failed.add(command.label)
            bench.problems.append(f"coldstart, {command.label}: {problem}")
            bench.log(f"cold    {fs.label:5} {command.label} FAILED: {problem}")
    labels = tuple(label for label in by_label if label not in failed)
    width = max(len(label) for label in by_label)
    for i in range(bench.sizes.coldstart_runs if labels else 0):
        for label in rotated(labels, i):
            seconds, problem = _run_once(by_label[label], cwd)
            if problem:
                bench.problems.append(f"coldstart, {label}, run {i}: {problem}")
            times[label].append(seconds * 1e3)
    for label, ms in times.items():
        if ms:
            ordered = sorted(ms)
            bench.log(
                f"cold    {fs.label:5} {label:{width}} median {median(ms):7.1f} p90 {percentile(ordered, 0.9):7.1f}"
                f" min {ordered[0]:7.1f} max {ordered[-1]:7.1f} ms over {len(ms)} runs (warm-up {warmup[label]:.1f} ms)"
            )
    return times


@section("coldstart", "a new process opening a board and reading one key: python -m blackboard read, vs sqlite3")
def coldstart(bench: Bench) -> list[Row]:
    fs = bench.big_fs()
    big = big_board(bench)
    root = bench.fresh_dir(fs, "coldstart")
    _tiny_board(root / "tiny")
    tiny_db = _sqlite_db(root / "sqlite-tiny", TINY_KEYS)
    big_db = _sqlite_db(root / "sqlite-big", big.keys)
    tiny_k, big_k = TINY_KEYS // 2, big.keys // 2 + 7
    tiny_key, big_key = key_name(tiny_k), key_name(big_k)
    tiny_tag, big_tag = f"{TINY_KEYS} keys", f"{big.events:,} events over {big.keys:,} keys"
    ours_tiny = _read_commands(tiny_tag, root / "tiny", tiny_key, make_value(tiny_k))
    ours_big = _read_commands(big_tag, big.path, big_key, last_value(big.events, big.keys, big_k))
    sqlite_tiny = Command(
        f"sqlite3 select, {TINY_KEYS} keys",
        [sys.executable, "-c", _SQLITE_READ, str(tiny_db), tiny_key],
        make_value(tiny_k),
    )
    sqlite_big = Command(
        f"sqlite3 select, {big.keys:,} keys",
        [sys.executable, "-c", _SQLITE_READ, str(big_db), big_key],
        make_value(big_k),
    )
    floor = Command(FLOOR, [sys.executable, "-c", "pass"])
    imports = Command("import blackboard.cli", [sys.executable, "-c", "import blackboard.cli"])
    commands = [floor, imports, *ours_tiny, sqlite_tiny, *ours_big, sqlite_big]
    times = _time_all(bench, fs, commands, root)

    def q(label: str, quantile: float) -> float:
        ms = sorted(times.get(label, []))
        return percentile(ms, quantile) if ms else float("nan")

    runs = bench.sizes.coldstart_runs
    rows = []
    for quantile, name in ((0.5, "median"), (0.9, "p90")):
        row = Row(
            "coldstart",
            f"new process: import blackboard.cli, {name}",
            fs.label,
            "ms",
            False,
            q(imports.label, quantile),
        )
        row.peers = {FLOOR: q(FLOOR, quantile)}
        if quantile == 0.5:
            row.note = f"{runs} runs per command after a warm-up; the floor: interpreter start, exit"
        rows.append(row)
    for ours, peer, bound, note in (
        (ours_tiny, sqlite_tiny, 80.0, f"{TINY_KEYS} keys each written once; sqlite3: a db of {TINY_KEYS} keys"),
        (
            ours_big,
            sqlite_big,
            120.0,
            f"written by {big.events:,} board.write calls in a helper process ({big.build_s:.0f} s);"
            f" log {big.log_records:,} records, {big.log_bytes / 1e6:,.0f} MB, {_checkpoint_text(big)};"
            f" sqlite3: a db of {big.keys:,} keys",
        ),
    ):
        for command in ours:
            for quantile, name in ((0.5, "median"), (0.9, "p90")):
                row = Row("coldstart", f"{command.label}, {name}", fs.label, "ms", False, q(command.label, quantile))
                row.peers = {SQLITE: q(peer.label, quantile), FLOOR: q(FLOOR, quantile)}
                if quantile == 0.5:
                    row.target, row.note = Target(bound, inclusive=True), note
                rows.append(row)
    return rows


# -- the helper process ------------------------------------------------------------------------------------


def _main_build(path: str, events: int, keys: int) -> dict[str, Any]:
    names = [key_name(k) for k in range(keys)]
    t0 = time.perf_counter()
    board = init_board_whole_log(Path(path))
    write = board.write
    for i in range(events):
        write(names[i % keys], make_value(i))
    board.close()
    seconds = time.perf_counter() - t0
    checkpoint = Path(path) / "checkpoint"
    if checkpoint.is_dir():  # a file by the brief; count a directory's files if it is one
        size: int | None = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
    else:
        size = checkpoint.stat().st_size if checkpoint.exists() else None
    log = Path(path) / "log.jsonl"
    with open(log, "rb") as f:
        records = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b"")) - 1  # less the header
    return {"seconds": seconds, "log_bytes": log.stat().st_size, "log_records": records, "checkpoint_bytes": size}


if __name__ == "__main__":
    if sys.argv[1] != "build":
        sys.exit(f"unknown command {sys.argv[1]!r}")
    print(json.dumps(_main_build(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))

"""What every section gets: the settings, the filesystems under test, writer pools, and a run log."""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _peers import SYSTEMS
from _procs import WriterPool


@dataclass(frozen=True)
class Sizes:
    """Everything that sets how long the benchmark takes. `quick()` is the ~1 min smoke version."""

    duration: float = 1.0  # seconds of writing per write run
    reps: int = 3  # runs per figure; the median is reported
    procs: tuple[int, ...] = (1, 4)
    keys_per_proc: int = 1000
    read_keys: int = 1000
    read_duration: float = 0.5  # seconds of reading per system per repetition
    list_keys: int = 10_000  # keys under the listed prefix
    other_keys: int = 10_000  # keys outside it, half sorting before and half after
    list_repeats: int = 10  # listings per system per repetition
    latency_events: int = 500  # measured change notifications per system and filesystem (all repetitions)
    idle_seconds: float = 2.0  # of watching with no writes, per system and filesystem, for its CPU share
    events: int = 1_000_000  # events in the log that catchup replays and compaction compacts, and on coldstart's board
    coldstart_runs: int = 15  # new processes timed per command in coldstart (after one untimed warm-up each)
    stall_keys: int = 20_000  # live keys on compaction_stall's board
    stall_writes: int = 100_000  # writes the writer makes, with and without a compactor
    checksum_writes: int = 20_000  # writes timed per board in checksum (format 3 vs 2)
    checksum_rounds: int = 5  # rounds of checksum's runs, each kind once per round; the median is reported

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            duration=0.25,
            reps=1,
            read_duration=0.2,
            other_keys=2000,
            list_repeats=5,
            latency_events=200,
            idle_seconds=0.5,
            events=100_000,
            coldstart_runs=5,
            stall_writes=30_000,
            checksum_writes=5_000,
            checksum_rounds=2,
        )


@dataclass(frozen=True)
class Filesystem:
    name: str  # "disk" or "tmpfs"
    fstype: str  # from /proc/mounts, e.g. "ext4"
    root: Path  # this run's scratch directory on it

    @property
    def label(self) -> str:
        return self.fstype if self.name == "disk" else self.name


def fstype(path: Path) -> str:
    """The filesystem type of the mount holding `path` (longest matching mount point)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1].replace("\\040", " ")
                inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, parts[2]
    except OSError:
        pass
    return kind


@dataclass
class Bench:
    sizes: Sizes
    filesystems: list[Filesystem]
    systems: tuple[str, ...] = SYSTEMS
    runs: list[str] = field(default_factory=list)  # one line per measured run, for RESULTS.md
    problems: list[str] = field(default_factory=list)  # what verifying the stores after a run found
    cache: dict[str, Any] = field(default_factory=dict)  # set-ups sections share (the big log), under a root
    _pools: dict[int, WriterPool] = field(default_factory=dict)
    _counter: int = 0

    @classmethod
    def create(cls, sizes: Sizes, bases: dict[str, Path]) -> Bench:
        filesystems = []
        for name, base in bases.items():
            root = Path(tempfile.mkdtemp(prefix="blackboard-bench-", dir=base))
            filesystems.append(Filesystem(name, fstype(root), root))
        return cls(sizes, filesystems)

    def pool(self, procs: int) -> WriterPool:
        if procs not in self._pools:
            self._pools[procs] = WriterPool(procs)
        return self._pools[procs]

    def fresh_dir(self, fs: Filesystem, name: str) -> Path:
        self._counter += 1
        path = fs.root / f"{self._counter:04d}-{name}"
        path.mkdir()
        return path

    def big_fs(self) -> Filesystem:
        """Where the large logs go: the disk (not RAM), unless only tmpfs is under test."""
        return next((fs for fs in self.filesystems if fs.name == "disk"), self.filesystems[0])

    def log(self, line: str) -> None:
        self.runs.append(line)
        print(f"  {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
        for fs in self.filesystems:
            shutil.rmtree(fs.root, ignore_errors=True)

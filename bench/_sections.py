"""The benchmark sections, registered by name (`run.py --only writes,reads`).

A section is a function `(bench) -> list[Row]`. To add one (watch latency, compaction, ...), write it
here or in its own module and decorate it with `@section("name", "what it measures")`; the order of
registration is the order of the report. Within a section the systems are measured in turns, in a
rotating order, repetition after repetition, so that the machine's noise falls on all of them alike.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from _bench import Bench, Filesystem
from _peers import OURS, Store, make_value, open_store
from _procs import WriteJob, WriteRun
from _report import Row, Target


@dataclass(frozen=True)
class Section:
    name: str
    help: str
    run: Callable[[Bench], list[Row]]


SECTIONS: dict[str, Section] = {}


def section(name: str, help: str) -> Callable[[Callable[[Bench], list[Row]]], Callable[[Bench], list[Row]]]:
    def register(fn: Callable[[Bench], list[Row]]) -> Callable[[Bench], list[Row]]:
        SECTIONS[name] = Section(name, help, fn)
        return fn

    return register


def rotated(systems: tuple[str, ...], rep: int) -> list[str]:
    k = rep % len(systems)
    return [*systems[k:], *systems[:k]]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- writes --------------------------------------------------------------------------------------


def write_run(bench: Bench, fs: Filesystem, system: str, procs: int, *, durable: bool) -> WriteRun:
    """One run on a fresh store: `procs` writers for `duration` seconds, then check what the store holds."""
    sizes = bench.sizes
    path = bench.fresh_dir(fs, system)
    try:
        open_store(system, path, durable=durable, create=True).close()
        run = bench.pool(procs).run(WriteJob(system, str(path), durable, sizes.duration, sizes.keys_per_proc))
        # Each writer wrote one warm-up record to its first key, then `count` records round its keys.
        keys = sum(min(sizes.keys_per_proc, max(count, 1)) for count in run.counts)
        store = open_store(system, path, durable=durable)
        try:
            problem = store.verify(run.writes + procs, keys)
        finally:
            store.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    label = "durable" if durable else "default"
    if problem:
        bench.problems.append(f"{system}, {fs.label}, {procs} proc, {label}: {problem}")
    bench.log(
        f"{label:7} {fs.label:5} {procs} proc {system:10} {run.per_s:9,.0f} writes/s"
        f"  p50 {run.p50_ms:.3f} p99 {run.p99_ms:.3f} max {run.max_ms:.1f} ms"
        f"  close {run.close_ms:.1f} ms  per-proc writes {run.counts}"
    )
    return run


def _write_rows(bench: Bench, *, durable: bool) -> list[Row]:
    name = "durable" if durable else "writes"
    # Targets (same run, same filesystem): default >= 1.0x sqlite NORMAL; durable >= 0.8x sqlite FULL.
    target = Target(0.8 if durable else 1.0, "sqlite3")
    rows = []
    for fs in bench.filesystems:
        for procs in bench.sizes.procs:
            runs: dict[str, list[WriteRun]] = {s: [] for s in bench.systems}
            for rep in range(bench.sizes.reps):
                for system in rotated(bench.systems, rep):
                    runs[system].append(write_run(bench, fs, system, procs, durable=durable))

            def figure(system: str, attr: str, runs: dict[str, list[WriteRun]] = runs) -> float:
                return median([float(getattr(r, attr)) for r in runs[system]])

            def peers(attr: str) -> dict[str, float]:
                return {s: figure(s, attr) for s in bench.systems if s != OURS}

            note = (
                f"ours: close (entry-file flush) {figure(OURS, 'close_ms'):.0f} ms,"
                f" {figure(OURS, 'per_s_with_close'):,.0f} writes/s counting it;"
                f" p99 {figure(OURS, 'p99_ms'):.3f} ms"
            )
            rows.append(
                Row(name, f"writes/s, {procs} proc", fs.label, "writes/s", True, figure(OURS, "per_s"), peers("per_s"))
            )
            rows[-1].target, rows[-1].note = target, note
            if procs > 1:
                p99_target = None if durable else Target(10.0)
                for q, tgt in (("p50", None), ("p99", p99_target), ("max", None)):
                    attr = f"{q}_ms"
                    metric = f"{q} write wait, {procs} proc"
                    rows.append(Row(name, metric, fs.label, "ms", False, figure(OURS, attr), peers(attr), tgt))
                # Pooled percentiles weigh each process by its writes: a starved writer barely shows in
                # them. Fairness (fewest writes of a process / most) and the max wait show it.
                metric = f"fairness, {procs} proc"
                fair = Row(name, metric, fs.label, "min/max", True, figure(OURS, "fairness"), peers("fairness"))
                fair.show_ratios = False
                rows.append(fair)
    return rows


@section("writes", "writes/s with 1 and N processes at default durability; p50/p99 wait of each write call")
def writes(bench: Bench) -> list[Row]:
    return _write_rows(bench, durable=False)


@section("durable", "writes/s with every write fsynced: fsync=True vs sqlite FULL vs diskcache synchronous=2")
def durable(bench: Bench) -> list[Row]:
    return _write_rows(bench, durable=True)


# -- reads and listing -----------------------------------------------------------------------------


@contextlib.contextmanager
def loaded_stores(bench: Bench, fs: Filesystem, items: list[tuple[str, object]]) -> Iterator[dict[str, Store]]:
    """A store per system holding `items`, loaded through one handle and reopened through a fresh one."""
    stores: dict[str, Store] = {}
    paths = []
    try:
        for system in bench.systems:
            path = bench.fresh_dir(fs, system)
            paths.append(path)
            loader = open_store(system, path, durable=False, create=True)
            try:
                loader.load(items)
            finally:
                loader.close()
            stores[system] = open_store(system, path, durable=False)
        yield stores
    finally:
        for store in stores.values():
            store.close()
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)


def _reads_per_s(store: Store, keys: list[str], duration: float) -> float:
    read = store.read
    clock = time.perf_counter
    done = 0
    start = now = clock()
    deadline = start + duration
    while now < deadline:
        for key in keys:
            read(key)
        done += len(keys)
        now = clock()
    return done / (now - start)


@section("reads", "single-key reads/s in one process: board.read vs diskcache get vs sqlite SELECT")
def reads(bench: Bench) -> list[Row]:
    sizes = bench.sizes
    keys = [f"bench/read/{i}" for i in range(sizes.read_keys)]
    rows = []
    for fs in bench.filesystems:
        with loaded_stores(bench, fs, [(k, make_value(i)) for i, k in enumerate(keys)]) as stores:
            order = random.Random(7).sample(keys, len(keys))
            for system, store in stores.items():  # warm up, and check every key reads back
                misses = sum(store.read(k) is None for k in order)
                if misses:
                    bench.problems.append(f"{system}, {fs.label}: {misses} of {len(keys)} keys read back as None")
            rates: dict[str, list[float]] = {s: [] for s in stores}
            for rep in range(sizes.reps):
                for system in rotated(bench.systems, rep):
                    rates[system].append(_reads_per_s(stores[system], order, sizes.read_duration))
                    bench.log(f"reads   {fs.label:5} {system:10} {rates[system][-1]:11,.0f} reads/s")
        figures = {s: median(v) for s, v in rates.items()}
        ours = figures.pop(OURS)
        rows.append(Row("reads", "reads/s", fs.label, "reads/s", True, ours, figures, Target(1.0, "diskcache")))
    return rows


@section("listing", "read every key under a prefix holding 10,000 keys (sqlite range query, diskcache iterkeys)")
def listing(bench: Bench) -> list[Row]:
    sizes = bench.sizes
    prefix = "bench/list/"
    half = sizes.other_keys // 2
    keys = [f"bench/a/{i:06d}" for i in range(half)]  # sort before the prefix
    keys += [f"{prefix}{i:06d}" for i in range(sizes.list_keys)]
    keys += [f"bench/z/{i:06d}" for i in range(sizes.other_keys - half)]  # and after it
    rows = []
    for fs in bench.filesystems:
        cold: dict[str, float] = {}
        warm: dict[str, list[float]] = {s: [] for s in bench.systems}
        with loaded_stores(bench, fs, [(k, make_value(i)) for i, k in enumerate(keys)]) as stores:
            for system, store in stores.items():  # the first listing on a fresh handle
                t0 = time.perf_counter()
                got = store.read_prefix(prefix)
                cold[system] = (time.perf_counter() - t0) * 1e3
                if len(got) != sizes.list_keys:
                    bench.problems.append(f"{system}, {fs.label}: listed {len(got)} keys, expected {sizes.list_keys}")
            for rep in range(sizes.reps):
                for system in rotated(bench.systems, rep):
                    for _ in range(sizes.list_repeats):
                        t0 = time.perf_counter()
                        stores[system].read_prefix(prefix)
                        warm[system].append((time.perf_counter() - t0) * 1e3)
                    latest = warm[system][-sizes.list_repeats :]
                    bench.log(
                        f"listing {fs.label:5} {system:10} median {median(latest):8.2f} ms"
                        f"  min {min(latest):.2f} max {max(latest):.2f} ms (cold {cold[system]:.1f} ms)"
                    )
        n = f"{sizes.list_keys:,}"
        figures = {s: median(v) for s, v in warm.items()}
        ours = figures.pop(OURS)
        rows.append(Row("listing", f"list {n} keys", fs.label, "ms", False, ours, figures, Target(10.0)))
        cold_ours = cold.pop(OURS)
        metric = f"list {n} keys, first call on a fresh handle"
        rows.append(Row("listing", metric, fs.label, "ms", False, cold_ours, cold))
    return rows

"""The benchmark sections, registered by name (`run.py --only writes,reads`).

A section is a function `(bench) -> list[Row]`. To add one (watch latency, compaction, ...), write it
here or in its own module and decorate it with `@section("name", "what it measures")`; the order of
registration is the order of the report. Within a section the systems are measured in turns, in a
rotating order, repetition after repetition, so that the machine's noise falls on all of them alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from _bench import Bench, Filesystem
from _biglog import KEYS, NARROW, BigLog, build, compact_copy, replay
from _live import (
    LIVE_PEERS,
    STARTERS,
    WARMUP,
    BoardWriter,
    EtcdWriter,
    Job,
    LatencyRun,
    Listener,
    RedisWriter,
    Server,
    SqliteWriter,
    Unavailable,
    Writer,
)
from _peers import OURS, Store, make_value, open_store
from _procs import WriteJob, WriteRun, percentile
from _report import Row, Target


@dataclass(frozen=True)
class Section:
    name: str
    help: str
    run: Callable[[Bench], list[Row]]


SECTIONS: dict[str, Section] = {}
T = TypeVar("T")


def section(name: str, help: str) -> Callable[[Callable[[Bench], list[Row]]], Callable[[Bench], list[Row]]]:
    def register(fn: Callable[[Bench], list[Row]]) -> Callable[[Bench], list[Row]]:
        SECTIONS[name] = Section(name, help, fn)
        return fn

    return register


def rotated(systems: tuple[T, ...], rep: int) -> list[T]:
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


# -- change-notification latency ---------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One way of learning about changes: a blackboard watch mode, or a peer."""

    label: str
    system: str
    poll: bool = False
    interval: float | None = None


MODES = (
    Variant("watchfiles", OURS),
    Variant("poll 1 ms", OURS, poll=True, interval=0.001),
    Variant("poll 10 ms", OURS, poll=True, interval=0.01),
)


def _writer(variant: Variant, path: Path, servers: dict[str, Server]) -> tuple[str, Writer, Server | None]:
    """(what the listener watches, the writer, the server) of one run, on a fresh store under `path`."""
    if variant.system == OURS:
        from blackboard import Board

        Board.init(path / "board").close()
        return str(path / "board"), BoardWriter(path / "board"), None
    if variant.system in servers:
        server = servers[variant.system]
        writer: Writer = RedisWriter(server.address) if server.name == "redis" else EtcdWriter(server.address)
        return server.address, writer, server
    writer = SqliteWriter(path / "db.sqlite")  # created before the listener opens it
    return str(path / "db.sqlite"), writer, None


def _latency_run(
    bench: Bench, fs: Filesystem, listener: Listener, variant: Variant, servers: dict[str, Server], rng: random.Random
) -> LatencyRun:
    sizes = bench.sizes
    count = -(-sizes.latency_events // sizes.reps)  # this repetition's share of the measured changes
    path = bench.fresh_dir(fs, variant.label.replace(" ", "-"))
    try:
        target, writer, server = _writer(variant, path, servers)
        try:
            job = Job(variant.system, target, 1, WARMUP + count, sizes.idle_seconds / sizes.reps)
            job = dataclasses.replace(job, poll=variant.poll, poll_interval=variant.interval)
            return listener.run(job, writer, server, rng)
        finally:
            writer.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Pooled:
    """Every repetition of one variant, pooled: percentiles over all its changes, CPU over all its idle time."""

    runs: list[LatencyRun]

    def after(self, q: float) -> float:
        return percentile(sorted(x for r in self.runs for x in r.after_ms), q)

    def before(self, q: float) -> float:
        return percentile(sorted(x for r in self.runs for x in r.before_ms), q)

    @property
    def cpu_pct(self) -> float:
        idle = sum(r.idle_s for r in self.runs)
        return 100 * sum(r.cpu_s for r in self.runs) / idle if idle else float("nan")

    @property
    def measured(self) -> int:
        return sum(len(r.after_ms) for r in self.runs)

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.runs)


def _log_latency(bench: Bench, fs: Filesystem, label: str, run: LatencyRun) -> None:
    one = Pooled([run])
    bench.log(
        f"latency {fs.label:5} {label:11} after return p50 {one.after(0.5):7.3f} p99 {one.after(0.99):7.3f} ms;"
        f" from call start p50 {one.before(0.5):7.3f} p99 {one.before(0.99):7.3f} ms;"
        f" idle CPU {one.cpu_pct:5.1f}% over {run.idle_s:.1f} s; {len(run.after_ms)} changes, {run.lost} lost"
    )


def _latency_rows(bench: Bench, fs: Filesystem, listener: Listener) -> list[Row]:
    servers: dict[str, Server] = {}
    skipped: dict[str, str] = {}
    pooled: dict[str, Pooled] = {}
    try:
        for name, start in STARTERS.items():
            try:
                servers[name] = start(bench.fresh_dir(fs, name))
            except Unavailable as exc:
                skipped[name] = str(exc)
                bench.log(f"latency {fs.label:5} {name:11} skipped: {exc}")
        variants = {v.label: v for v in (*MODES, *(Variant(p, p) for p in LIVE_PEERS if p not in skipped))}
        rng = random.Random(11)
        for rep in range(bench.sizes.reps):
            for label in rotated(tuple(variants), rep):
                try:
                    run = _latency_run(bench, fs, listener, variants[label], servers, rng)
                except Exception as exc:
                    bench.problems.append(f"latency, {fs.label}, {label}: {exc}")
                    bench.log(f"latency {fs.label:5} {label:11} FAILED: {exc}")
                    continue
                pooled.setdefault(label, Pooled([])).runs.append(run)
                _log_latency(bench, fs, label, run)
    finally:
        for server in servers.values():
            server.stop()
    for label, pool in pooled.items():
        if pool.lost:
            bench.problems.append(f"latency, {fs.label}, {label}: {pool.lost} changes never reached the listener")

    def peers(figure: Callable[[Pooled], float]) -> dict[str, float]:
        # Every peer, in one order (a skipped or failed one as NaN), so that the columns keep their order.
        return {p: figure(pooled[p]) if p in pooled else float("nan") for p in LIVE_PEERS}

    def row(metric: str, unit: str, ours: Pooled | None, figure: Callable[[Pooled], float]) -> Row:
        value = figure(ours) if ours is not None else float("nan")
        return Row("latency", metric, fs.label, unit, False, value, peers(figure), skipped=skipped)

    rows = []
    for mode in MODES:
        ours = pooled.get(mode.label)
        after50 = row(f"p50, write returned -> event, {mode.label}", "ms", ours, lambda p: p.after(0.5))
        after99 = row(f"p99, write returned -> event, {mode.label}", "ms", ours, lambda p: p.after(0.99))
        if mode.interval is None:
            after50.target, after99.target = Target(2.0), Target(5.0)
        else:
            after50.target = Target(mode.interval * 1e3)  # within one polling interval
        if ours is not None:
            after50.note = f"{ours.measured} changes, 2-4 ms apart, {bench.sizes.reps} run(s); {ours.lost} lost"
        rows += [after50, after99]
        if mode.interval is None:
            for q in (0.5, 0.99):
                metric = f"p{q * 100:.0f}, write call started -> event, {mode.label}"
                end_to_end = row(metric, "ms", ours, functools.partial(Pooled.before, q=q))
                end_to_end.target = Target(1.0, "etcd")
                rows.append(end_to_end)
        cpu = row(f"watcher's CPU while idle, {mode.label}", "%", ours, lambda p: p.cpu_pct)
        cpu.note = "% of one core; redis, etcd: subscriber + server process; sqlite: its 1 ms polling loop"
        rows.append(cpu)
    return rows


@section("latency", "change notification: write returns in one process -> event in another; idle CPU of watching")
def latency(bench: Bench) -> list[Row]:
    listener = Listener()
    try:
        return [row for fs in bench.filesystems for row in _latency_rows(bench, fs, listener)]
    finally:
        listener.close()


# -- the big log: catch-up replay and compaction -------------------------------------------------------


def big_log(bench: Bench, *, sealed: bool = True) -> BigLog:
    """The log of `sizes.events` events over 10,000 keys, built once per run on the disk: of format 3
    (a checksum on every line), or with `sealed=False` the same records in a format-2 board."""
    name = f"biglog-{bench.sizes.events}" + ("" if sealed else "-unsealed")
    if name not in bench.cache:
        fs = bench.big_fs()
        log = build(bench.fresh_dir(fs, "biglog") / "board", bench.sizes.events, sealed=sealed)
        bench.log(
            f"built   {fs.label:5} a log of {log.events:,} events over {KEYS:,} keys, {log.bytes / 1e6:,.0f} MB,"
            f" format {3 if sealed else 2}, in {log.build_s:.1f} s"
        )
        bench.cache[name] = log
    cached: BigLog = bench.cache[name]
    return cached


@section("catchup", "events/s a new watcher replays from seq 0 of a 1,000,000-event log; and with a 1% prefix")
def catchup(bench: Bench) -> list[Row]:
    log = big_log(bench)
    fs = bench.big_fs()
    expect = {"all": ("", log.events, log.events), "narrow": (NARROW, log.narrow_last, log.narrow_events)}
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in expect}
    for rep in range(bench.sizes.reps):
        for which in rotated(tuple(expect), rep):
            prefix, last, count = expect[which]
            result = replay(log, prefix, last)
            if (result["count"], result["last"]) != (count, last):
                bench.problems.append(
                    f"catchup {prefix!r}: {result['count']} events up to seq {result['last']},"
                    f" expected {count} up to seq {last}"
                )
            results[which].append(result)
            bench.log(
                f"catchup {fs.label:5} prefix {prefix or '(all)':11} {result['count']:9,} events in"
                f" {result['seconds']:6.2f} s: {log.events / result['seconds']:9,.0f} log events/s,"
                f" peak RSS {result['peak_rss_mb']:.0f} MB"
            )
    n = f"{log.events:,}"
    seconds = {k: median([r["seconds"] for r in v]) for k, v in results.items()}
    rss = median([r["peak_rss_mb"] for r in results["all"]])
    full = Row("catchup", f"replay {n} events from seq 0", fs.label, "events/s", True, log.events / seconds["all"])
    full.target = Target(500_000)  # issue 7 (was 300,000)
    full.note = f"{seconds['all']:.2f} s; a fresh process (peak RSS {rss:.0f} MB), the log in the page cache"
    metric = f"replay {n} events from seq 0, prefix {NARROW} (1% of keys)"
    narrow = Row("catchup", metric, fs.label, "log events/s", True, log.events / seconds["narrow"])
    narrow.note = f"{seconds['narrow']:.2f} s to deliver its {log.narrow_events:,} events (every log event is read)"
    return [full, narrow]


@section("compaction", "compact a 1,000,000-event log over 10,000 keys (--events N): seconds, peak RSS")
def compaction(bench: Bench) -> list[Row]:
    log = big_log(bench)
    fs = bench.big_fs()
    results: list[dict[str, Any]] = []
    for _ in range(bench.sizes.reps):
        copy = bench.fresh_dir(fs, "compact")
        try:
            shutil.copytree(log.path, copy / "board")  # compaction replaces the log: work on a copy
            result = compact_copy(copy / "board")
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        report = result["report"]
        if report["skipped"] or report["events_after"] != min(KEYS, log.events):
            bench.problems.append(f"compaction: {report['events_after']} events kept, skipped: {report['skipped']}")
        results.append(result)
        bench.log(
            f"compact {fs.label:5} {report['events_before']:,} -> {report['events_after']:,} events,"
            f" {report['bytes_before'] / 1e6:,.0f} -> {report['bytes_after'] / 1e6:,.1f} MB"
            f" in {report['seconds']:.2f} s"
            f" (index {result['before_plan_s']:.2f} s, plan {result['plan_s']:.2f} s,"
            f" write+switch {result['write_switch_s']:.2f} s); RSS {result['baseline_mb']:.0f} MB before,"
            f" peak {result['peak_mb']:.0f} MB (ru_maxrss {result['ru_maxrss_before_mb']:.0f} ->"
            f" {result['ru_maxrss_after_mb']:.0f} MB, inherited from the bench process)"
        )

    def figure(name: str) -> float:
        return median([float(r[name]) for r in results])

    n = f"{log.events:,}"
    seconds = median([float(r["report"]["seconds"]) for r in results])
    baseline, peak = figure("baseline_mb"), figure("peak_mb")
    after_mb = median([r["report"]["bytes_after"] / 1e6 for r in results])
    time_row = Row("compaction", f"compact {n} events over {KEYS:,} keys", fs.label, "s", False, seconds)
    time_row.target = Target(5.0)
    time_row.note = (
        f"board.compact() in a fresh process: ~{figure('before_plan_s'):.1f} s bringing its index up to the log"
        f" (the flush before planning), ~{figure('plan_s'):.1f} s planning pass, ~{figure('write_switch_s'):.1f} s"
        f" writing the new log and switching; {log.bytes / 1e6:,.0f} MB -> {after_mb:,.1f} MB"
    )
    peak_row = Row("compaction", "peak RSS of the compacting process", fs.label, "MB", False, peak, target=Target(200))
    peak_row.note = (
        f"the process's peak RSS (VmHWM) after compact(); {baseline:.0f} MB before it (Python, blackboard, an"
        " open board). Not ru_maxrss: Linux hands a child its parent's through fork and exec (in the run log)"
    )
    growth = median([r["peak_mb"] - r["baseline_mb"] for r in results])
    delta = Row("compaction", "peak RSS above the baseline", fs.label, "MB", False, growth)
    return [time_row, peak_row, delta]

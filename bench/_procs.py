"""Writer processes: N spawned workers that open one store, start together and write for a set time.

Workers live for the whole benchmark (spawning and importing costs ~0.5 s a process on 2 cores, more
than a run), one pool per process count, each pool with its own Barrier so that every run starts with
all its writers ready. Every write call is timed on its own (time.perf_counter, which is
CLOCK_MONOTONIC on Linux: one clock for all processes, so their start and end times compare).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import traceback
from array import array
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from pathlib import Path

from _peers import Store, make_value, open_store

_BARRIER_TIMEOUT = 120.0


@dataclass(frozen=True)
class WriteJob:
    system: str
    path: str
    durable: bool
    duration: float
    keys_per_proc: int


@dataclass
class WriteResult:
    worker: int
    count: int = 0
    start: float = 0.0
    end: float = 0.0
    close_s: float = 0.0
    latencies: bytes = b""  # array("d") of seconds, one per write
    error: str = ""


@dataclass
class WriteRun:
    """One run of N writers, summed up."""

    system: str
    procs: int
    writes: int
    per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    close_ms: float  # the slowest writer's close() (blackboard: bringing entry files up to date)
    fairness: float  # fewest writes of a process / most
    per_s_with_close: float
    counts: list[int] = field(default_factory=list)


def percentile(sorted_values: list[float] | array[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values) + 0.999999) - 1))
    return sorted_values[rank]


def _write_loop(store: Store, worker: int, job: WriteJob, barrier: threading.Barrier, result: WriteResult) -> None:
    keys = [f"bench/{worker}/{i}" for i in range(job.keys_per_proc)]
    n_keys = len(keys)
    store.write(keys[0], make_value(-1))  # warm up: first-use costs (threads, statements) are not a write's
    lat: array[float] = array("d")
    write = store.write
    clock = time.perf_counter
    barrier.wait(_BARRIER_TIMEOUT)
    start = clock()
    deadline = start + job.duration
    i = 0
    while True:
        key = keys[i % n_keys]
        value = make_value(i)
        t0 = clock()
        if t0 >= deadline:
            break
        write(key, value)
        lat.append(clock() - t0)
        i += 1
    result.end = clock()
    result.start, result.count, result.latencies = start, i, lat.tobytes()


def _run_job(worker: int, barrier: threading.Barrier, job: WriteJob) -> WriteResult:
    result = WriteResult(worker)
    store: Store | None = None
    try:
        store = open_store(job.system, Path(job.path), durable=job.durable)
        _write_loop(store, worker, job, barrier, result)
        opened, store = store, None  # closed here: the error path must not close it twice
        t0 = time.perf_counter()
        opened.close()
        result.close_s = time.perf_counter() - t0
    except BaseException as exc:
        barrier.abort()  # the other writers must not wait for us at the barrier
        result.error = "".join(traceback.format_exception_only(exc)).strip()
        if not isinstance(exc, threading.BrokenBarrierError):
            result.error += "\n" + traceback.format_exc()
        if store is not None:
            try:
                store.close()
            except Exception as close_exc:
                result.error += f"\n(and close() failed: {close_exc!r})"
        if not isinstance(exc, Exception):
            raise
    return result


def _worker_main(
    worker: int, barrier: threading.Barrier, jobs: Queue[WriteJob | None], results: Queue[WriteResult]
) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        results.put(_run_job(worker, barrier, job))


class WriterPool:
    """`procs` spawned writer processes, reused run after run; always `close()` it (joins them)."""

    def __init__(self, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs = procs
        self._barrier = ctx.Barrier(procs)
        self._results: Queue[WriteResult] = ctx.Queue()
        self._jobs: list[Queue[WriteJob | None]] = [ctx.Queue() for _ in range(procs)]
        self._processes: list[SpawnProcess] = [
            ctx.Process(
                target=_worker_main,
                args=(i, self._barrier, self._jobs[i], self._results),
                name=f"bench-writer-{i}",
                daemon=True,
            )
            for i in range(procs)
        ]
        for p in self._processes:
            p.start()

    def run(self, job: WriteJob) -> WriteRun:
        for q in self._jobs:
            q.put(job)
        return summarize(job.system, self.gather(job.system, job.duration + 2 * _BARRIER_TIMEOUT))

    def gather(self, label: str, within: float) -> list[WriteResult]:
        """Every worker's result of the jobs just queued, within `within` seconds; raises if a
        worker died, the time ran out, or a worker reported an error."""
        results: list[WriteResult] = []
        deadline = time.monotonic() + within
        while len(results) < self.procs:
            try:
                results.append(self._results.get(timeout=1.0))
            except queue.Empty:
                dead = [p.name for p in self._processes if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"writer process(es) died: {dead}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: writers did not finish in time") from None
        errors = [r.error for r in results if r.error]
        if errors:
            self._barrier.reset()
            raise RuntimeError(f"{label} writers failed:\n" + "\n".join(errors))
        return results

    def close(self) -> None:
        for q in self._jobs:
            q.put(None)
        for p in self._processes:
            p.join(timeout=30)
        for p in self._processes:
            if p.is_alive():  # a stuck worker of ours: end it by its handle, then reap it
                p.terminate()
                p.join()
        for q in self._jobs:
            q.close()
            q.join_thread()
        self._results.close()
        self._results.join_thread()


def summarize(system: str, results: list[WriteResult]) -> WriteRun:
    lat: array[float] = array("d")
    for r in results:
        lat.frombytes(r.latencies)
    ordered = sorted(lat)
    counts = [r.count for r in sorted(results, key=lambda r: r.worker)]
    writes = sum(counts)
    start = min(r.start for r in results)
    window = max(r.end for r in results) - start
    with_close = max(r.end + r.close_s for r in results) - start
    return WriteRun(
        system=system,
        procs=len(results),
        writes=writes,
        per_s=writes / window,
        p50_ms=percentile(ordered, 0.50) * 1e3,
        p99_ms=percentile(ordered, 0.99) * 1e3,
        max_ms=(ordered[-1] if ordered else float("nan")) * 1e3,
        close_ms=max(r.close_s for r in results) * 1e3,
        fairness=min(counts) / max(counts) if max(counts) else 0.0,
        per_s_with_close=writes / with_close,
        counts=counts,
    )

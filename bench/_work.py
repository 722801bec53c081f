"""work: what the work layer (spec/WORK.md) costs: a queue's take + ack, a lease's acquire + release.

- **take + ack**: `items` items are pushed (`queue.push(board, "jobs/", {"i": i})`) before any
  consumer starts; then `consumers` spawned processes, each with its own `queue.Consumer(board,
  "jobs/", "g", f"c{k}", lease=60)`, are released together by a Barrier and loop `take()` then
  `queue.ack(board, d.delivery_id, result_key=f"results/{d.item}", result={"i": i, "by": k})` until
  `take()` finds nothing. items/s = items / (release -> the last consumer's last ack). Checked after
  each run: `items` result keys, each at version 1 (written once), no pending delivery left, and the
  consumers' counts add up to `items`. Peer: Redis Streams, `XADD` of `items` entries and `XGROUP
  CREATE` before the consumers start; each consumer loops `XREADGROUP GROUP g cK COUNT 1 STREAMS
  jobs >` then one MULTI/EXEC of `XACK` + `SET results:<id>` (ack and result in one step, as ours);
  checked: every `XACK` returned 1 (acked once), `items` result keys, `XPENDING` empty.
- **lease vs write**: in the bench process on one fresh board, `pairs` times `lease.claim(board,
  "bench", "h", ttl=30)` then `lease.release(board, "bench", token)`, against `pairs` times
  `board.write("w/k", {"i": i})`, in turns; microseconds per pair and per write. Target: a pair costs
  at most 3x a write.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from _bench import Bench, Filesystem
from _live import REDIS, Server, Unavailable, start_redis
from _report import Row, Target
from _sections import median, rotated, section

OURS = "blackboard"
WRITE = "board.write"
PREFIX, GROUP = "jobs/", "g"
SPAWN = mp.get_context("spawn")


@dataclass(frozen=True)
class WorkSizes:
    items: int = 10_000  # items on the queue per take + ack run
    consumers: int = 4  # consumer processes of the many-consumer run (the other run has one)
    pairs: int = 2_000  # lease claim + release pairs (and as many writes) per repetition

    @classmethod
    def quick(cls) -> WorkSizes:
        return cls(items=2_000, pairs=500)


#: Set by run.py from --quick and the --work-* options.
SIZES = WorkSizes()


# -- consumer processes ----------------------------------------------------------------------------------


def _consumer(system: str, where: str, k: int, barrier: Barrier, out: Queue[tuple[int, int, float, str]]) -> None:
    """Take and ack until the queue is empty; put (k, items acked, when the last ack returned, error)."""
    count, end, error = 0, float("nan"), ""
    try:
        count, end = (_consume_ours if system == OURS else _consume_redis)(where, k, barrier)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        out.put((k, count, end, error))


def _consume_ours(where: str, k: int, barrier: Barrier) -> tuple[int, float]:
    from blackboard import Board
    from blackboard.work import queue

    board = Board.open(where)
    try:
        with queue.Consumer(board, PREFIX, GROUP, f"c{k}", lease=60) as consumer:
            board.get("results/none")  # warm up: the index is loaded before the start
            barrier.wait(120)
            count, end = 0, time.perf_counter()
            while (delivery := consumer.take()) is not None:
                queue.ack(
                    board,
                    delivery.delivery_id,
                    result_key=f"results/{delivery.item}",
                    result={"i": delivery.value["i"], "by": k},
                )
                count += 1
                end = time.perf_counter()
            return count, end
    finally:
        board.close()


def _consume_redis(where: str, k: int, barrier: Barrier) -> tuple[int, float]:
    import redis

    client: Any = redis.Redis(host="127.0.0.1", port=int(where))
    client.ping()
    barrier.wait(120)
    count, end = 0, time.perf_counter()
    while True:
        got = client.xreadgroup(GROUP, f"c{k}", {"jobs": ">"}, count=1)
        if not got or not got[0][1]:  # nothing new (redis-py gives [] or an empty stream)
            break
        entry_id, fields = got[0][1][0]
        pipe = client.pipeline(transaction=True)
        pipe.xack("jobs", GROUP, entry_id)
        pipe.set(f"results:{entry_id.decode()}", f'{{"i": {int(fields[b"i"])}, "by": {k}}}')
        acked, _ = pipe.execute()
        if acked != 1:
            raise RuntimeError(f"XACK of {entry_id!r} returned {acked}: acked twice")
        count += 1
        end = time.perf_counter()
    client.close()
    return count, end


def _run_consumers(system: str, where: str, consumers: int) -> tuple[float, list[int]]:
    """Start `consumers` processes, release them together; (seconds to the last ack, counts)."""
    barrier = SPAWN.Barrier(consumers + 1)
    out: Queue[tuple[int, int, float, str]] = SPAWN.Queue()
    procs = [SPAWN.Process(target=_consumer, args=(system, where, k, barrier, out)) for k in range(consumers)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(120)
        t0 = time.perf_counter()
        results = [out.get(timeout=300) for _ in procs]
    finally:
        for proc in procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
                proc.join()
    errors = [f"consumer {k}: {error}" for k, _, _, error in results if error]
    if errors:
        raise RuntimeError("; ".join(errors))
    return max(end for _, _, end, _ in results) - t0, [count for _, count, _, _ in sorted(results)]


def _takeack_ours(root: Path, items: int, consumers: int) -> tuple[float, list[int]]:
    from blackboard import Board
    from blackboard.work import queue

    where = str(root / "board")
    board = Board.init(where)
    try:
        for i in range(items):
            queue.push(board, PREFIX, {"i": i})
        seconds, counts = _run_consumers(OURS, where, consumers)
        problems = []
        results = list(board.entries("results/"))
        if len(results) != items:
            problems.append(f"{len(results)} result keys of {items}")
        twice = [e.key for e in results if e.version != 1]
        if twice:
            problems.append(f"{len(twice)} results written more than once (e.g. {twice[0]})")
        left = queue.pending(board, GROUP)
        if left:
            problems.append(f"{len(left)} deliveries still pending")
        if sum(counts) != items:
            problems.append(f"the consumers acked {sum(counts)} items of {items}")
        if problems:
            raise RuntimeError("; ".join(problems))
        return items / seconds, counts
    finally:
        board.close()


def _takeack_redis(server: Server, items: int, consumers: int) -> tuple[float, list[int]]:
    import redis

    client: Any = redis.Redis(host=server.host, port=server.port)
    client.flushall()
    pipe = client.pipeline(transaction=False)
    for i in range(items):
        pipe.xadd("jobs", {"i": i})
    pipe.execute()
    client.xgroup_create("jobs", GROUP, id="0")
    try:
        seconds, counts = _run_consumers(REDIS, str(server.port), consumers)
        problems = []
        results = sum(1 for _ in client.scan_iter("results:*", count=1000))
        if results != items:
            problems.append(f"{results} result keys of {items}")
        left = client.xpending("jobs", GROUP)["pending"]
        if left:
            problems.append(f"{left} entries still pending")
        if sum(counts) != items:
            problems.append(f"the consumers acked {sum(counts)} items of {items}")
        if problems:
            raise RuntimeError("; ".join(problems))
        return items / seconds, counts
    finally:
        client.close()


# -- lease vs write --------------------------------------------------------------------------------------


def _lease_vs_write(root: Path, pairs: int, reps: int) -> tuple[list[float], list[float]]:
    """(us per claim + release pair, us per write), one figure per repetition, in turns."""
    from blackboard import Board
    from blackboard.work import lease

    board = Board.init(root / "board")
    per_pair, per_write = [], []

    def pair_run() -> float:
        t0 = time.perf_counter()
        for _ in range(pairs):
            granted = lease.claim(board, "bench", "h", ttl=30)
            lease.release(board, "bench", granted.token)
        return (time.perf_counter() - t0) / pairs * 1e6

    def write_run() -> float:
        t0 = time.perf_counter()
        for i in range(pairs):
            board.write("w/k", {"i": i})
        return (time.perf_counter() - t0) / pairs * 1e6

    try:
        pair_run(), write_run()  # warm up, untimed
        for rep in range(reps):
            for name in rotated(("pair", "write"), rep):
                if name == "pair":
                    per_pair.append(pair_run())
                else:
                    per_write.append(write_run())
        if lease.state(board, "bench") is not None:
            raise RuntimeError("the lease is still held after its release")
        return per_pair, per_write
    finally:
        board.close()


# -- the section -----------------------------------------------------------------------------------------


def _attempt(bench: Bench, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        bench.problems.append(f"work, {what}: {exc}")
        bench.log(f"work  {what}: FAILED: {exc}")
        return None


def _rows_fs(bench: Bench, fs: Filesystem) -> list[Row]:
    sizes, reps = SIZES, bench.sizes.reps
    try:
        server: Server | None = start_redis(bench.fresh_dir(fs, "redis"))
        skipped: dict[str, str] = {}
    except Unavailable as exc:
        server, skipped = None, {REDIS: str(exc)}
    systems = (OURS, REDIS) if server is not None else (OURS,)
    counts = (sizes.consumers, 1) if sizes.consumers != 1 else (1,)
    rates: dict[tuple[str, int], list[float]] = {(s, n): [] for s in systems for n in counts}

    def run(system: str, n: int, root: Path) -> tuple[float, list[int]]:
        if system == OURS:
            return _takeack_ours(root, sizes.items, n)
        assert server is not None
        return _takeack_redis(server, sizes.items, n)

    try:
        for rep in range(reps):
            for n in counts:
                for system in rotated(systems, rep):
                    root = bench.fresh_dir(fs, f"work-{system}")
                    got = _attempt(bench, f"{fs.label} {system} take+ack x{n}", functools.partial(run, system, n, root))
                    shutil.rmtree(root, ignore_errors=True)
                    if got is not None:
                        rates[(system, n)].append(got[0])
                        bench.log(
                            f"work  {fs.label:5} take+ack {system:10} {n} consumer(s) x {sizes.items:,} items:"
                            f" {got[0]:,.0f} items/s; per consumer {got[1]}; all acked once, none pending"
                        )
    finally:
        if server is not None:
            server.stop()

    rows = []
    for n in counts:
        metric = f"take + ack, {n} consumer{'s' if n > 1 else ''}, {sizes.items:,} items"
        row = Row("work", metric, fs.label, "items/s", True, median(rates[(OURS, n)]))
        row.peers = {s: median(rates[(s, n)]) for s in systems if s != OURS}
        row.skipped = dict(skipped)
        row.note = (
            "spawned consumers: take() + ack(result_key=) each; redis: XREADGROUP COUNT 1 + MULTI XACK, SET;"
            " checked: each result written once, none pending"
        )
        rows.append(row)

    root = bench.fresh_dir(fs, "work-lease")
    got = _attempt(bench, f"{fs.label} lease vs write", functools.partial(_lease_vs_write, root, sizes.pairs, reps))
    shutil.rmtree(root, ignore_errors=True)
    per_pair, per_write = got if got is not None else ([], [])
    for a, b in zip(per_pair, per_write, strict=True):
        bench.log(f"work  {fs.label:5} lease claim+release {a:,.1f} us/pair, board.write {b:,.1f} us ({a / b:.2f}x)")
    row = Row("work", "lease claim + release, one pair", fs.label, "us", False, median(per_pair))
    row.peers = {WRITE: median(per_write)}
    row.target = Target(3.0, peer=WRITE, inclusive=True)
    row.note = f"{sizes.pairs:,} pairs and {sizes.pairs:,} writes per repetition, in turns, one process, one board"
    rows.append(row)
    return rows


@section("work", "work layer: queue take + ack (1 and 4 consumers) vs redis streams, lease pair vs write")
def work(bench: Bench) -> list[Row]:
    rows = []
    for fs in bench.filesystems:
        rows += _rows_fs(bench, fs)
    for row in rows:
        if row.target is not None:
            verdict = {"PASS": "PASS", "MISS": "FAIL"}.get(row.result, row.result)
            ratio = row.ratio(WRITE)
            shown = "-" if ratio is None else f"{ratio:.2f}x"
            print(f"work: {row.metric} on {row.fs}: {row.ours:.1f} us, {shown} a write ({row.target_text}): {verdict}")
    return rows

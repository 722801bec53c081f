"""compaction_stall: compaction must not stall writers.

A fresh board per run, loaded with `stall_keys` live keys (default 20,000, each written once, by the
bench process), with writers' own background compaction off (`compact_at_bytes=None`). Then one
writer process makes `stall_writes` writes (default 100,000) round-robin over those keys with the
writes section's ~120-byte values, and reports the seconds from its first write call to the return
of its last (its open and close are not counted), and each call's wait. "With compactions": a second
process opened the board first and runs `board.compact()` back to back, one call after the other,
until the writer has finished (the bench then drops a stop file; the compaction under way
completes); the writer starts once the compactor has opened the board. "No compactor": the same
writes on a fresh board with nothing else running. The two take turns, `--reps` times each, in a
rotating order; medians. The ratio with / without is the figure (target at most 1.5x). Compactions
done (not skipped) are counted. Afterwards the board must hold every seq (keys + writes), every key,
each key's last value, and pass `board.check()`.

Run as a script, this module is those two processes:

    python bench/_stall.py write BOARD WRITES KEYS      # prints one JSON object
    python bench/_stall.py compact BOARD STOPFILE       # prints "ready", later one JSON object
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from _bench import Bench, Filesystem
from _peers import init_board_whole_log, make_value
from _procs import percentile
from _report import Row, Target
from _sections import median, rotated, section

WITH, WITHOUT = "with compactions", "no compactor"
_SCRIPT = str(Path(__file__).resolve())


def key_for(i: int) -> str:
    return f"stall/{i:05d}"


def _populate(path: Path, keys: int) -> None:
    with init_board_whole_log(path) as board:  # no writer compacts on its own: "no compactor" has none
        for k in range(keys):
            board.write(key_for(k), make_value(-1 - k))


def _result(proc: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    if proc.returncode != 0:
        raise RuntimeError(f"_stall.py {what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _write(path: Path, writes: int, keys: int) -> dict[str, Any]:
    cmd = [sys.executable, _SCRIPT, "write", str(path), str(writes), str(keys)]
    return _result(subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False), "write")


def _with_compactor(path: Path, writes: int, keys: int) -> tuple[dict[str, Any], dict[str, Any]]:
    stop = path.parent / "stop"
    cmd = [sys.executable, _SCRIPT, "compact", str(path), str(stop)]
    compactor = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert compactor.stdout is not None
        ready = compactor.stdout.readline().strip()
        if ready != "ready":
            _, err = compactor.communicate(timeout=60)
            raise RuntimeError(f"_stall.py compact did not start ({compactor.returncode}):\n{err[-3000:]}")
        writer = _write(path, writes, keys)
        stop.touch()
        out, err = compactor.communicate(timeout=600)
    except BaseException:
        stop.touch()
        if compactor.poll() is None:  # ours, by its handle
            compactor.kill()
        compactor.wait()
        raise
    done = _result(subprocess.CompletedProcess(cmd, compactor.returncode, out, err), "compact")
    return writer, done


def _verify(bench: Bench, path: Path, keys: int, writes: int, label: str) -> None:
    from blackboard import Board

    problems = []
    with Board.open(path, read_only=True) as board:
        if board.last_seq != keys + writes:
            problems.append(f"last seq {board.last_seq}, expected {keys + writes}")
        held = len(board.keys())
        if held != keys:
            problems.append(f"{held} live keys, expected {keys}")
        for k in (0, keys // 2, keys - 1):
            last = k + ((writes - 1 - k) // keys) * keys if writes > k else -1 - k
            if board.read(key_for(k)) != make_value(last):
                problems.append(f"{key_for(k)} reads {board.read(key_for(k))!r:.80}, expected i={last}")
        report = board.check()
        if not report.ok:
            problems.append(f"check(): {report.problems()[:3]}")
    if problems:
        bench.problems.append(f"compaction_stall, {label}: {'; '.join(problems)}")


def _run(bench: Bench, fs: Filesystem, variant: str) -> dict[str, Any]:
    sizes = bench.sizes
    root = bench.fresh_dir(fs, "stall")
    path = root / "board"
    try:
        _populate(path, sizes.stall_keys)
        if variant == WITH:
            writer, compactor = _with_compactor(path, sizes.stall_writes, sizes.stall_keys)
        else:
            writer, compactor = _write(path, sizes.stall_writes, sizes.stall_keys), {}
        _verify(bench, path, sizes.stall_keys, sizes.stall_writes, f"{fs.label}, {variant}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    extra = ""
    if compactor:
        extra = (
            f"; {compactor['done']} compactions ({compactor['skipped']} skipped), each median"
            f" {compactor['median_s'] * 1e3:.0f} ms, max {compactor['max_s'] * 1e3:.0f} ms"
        )
        if compactor["reasons"]:
            extra += f"; skipped because: {', '.join(compactor['reasons'])}"
    bench.log(
        f"stall   {fs.label:5} {variant:16} {writer['writes']:,} writes in {writer['seconds']:6.2f} s"
        f" ({writer['writes'] / writer['seconds']:8,.0f} writes/s) p50 {writer['p50_ms']:.3f}"
        f" p99 {writer['p99_ms']:.3f} max {writer['max_ms']:.1f} ms{extra}"
    )
    return {"writer": writer, "compactor": compactor}


@section("compaction_stall", "100,000 writes while another process compacts back to back, vs no compactor")
def compaction_stall(bench: Bench) -> list[Row]:
    sizes = bench.sizes
    rows = []
    for fs in bench.filesystems:
        runs: dict[str, list[dict[str, Any]]] = {WITH: [], WITHOUT: []}
        for rep in range(sizes.reps):
            for variant in rotated((WITH, WITHOUT), rep):
                try:
                    runs[variant].append(_run(bench, fs, variant))
                except Exception as exc:
                    bench.problems.append(f"compaction_stall, {fs.label}, {variant}: {exc}")
                    bench.log(f"stall   {fs.label:5} {variant:16} FAILED: {exc}")

        def figure(variant: str, name: str, runs: dict[str, list[dict[str, Any]]] = runs) -> float:
            return median([float(r["writer"][name]) for r in runs[variant]])

        def compactions(name: str, runs: dict[str, list[dict[str, Any]]] = runs) -> float:
            return median([float(r["compactor"][name]) for r in runs[WITH]])

        n = f"{sizes.stall_writes:,}"
        metric = f"{n} writes over {sizes.stall_keys:,} keys, total"
        total = Row("compaction_stall", metric, fs.label, "s", False, figure(WITH, "seconds"))
        total.peers, total.target = {WITHOUT: figure(WITHOUT, "seconds")}, Target(1.5, WITHOUT, inclusive=True)
        total.note = (
            f"the writer's first write call to its last return; {WITH}: another process runs board.compact()"
            f" back to back meanwhile, {compactions('done'):.0f} compactions done"
            f" ({compactions('skipped'):.0f} skipped), each ~{compactions('median_s') * 1e3:.0f} ms"
        )
        rate = Row("compaction_stall", "writes/s", fs.label, "writes/s", True, figure(WITH, "per_s"))
        rate.peers = {WITHOUT: figure(WITHOUT, "per_s")}
        rows += [total, rate]
        for q in ("p50", "p99", "max"):
            wait = Row("compaction_stall", f"{q} write wait", fs.label, "ms", False, figure(WITH, f"{q}_ms"))
            wait.peers = {WITHOUT: figure(WITHOUT, f"{q}_ms")}
            rows.append(wait)
        metric = "compactions done during the writes"
        done = Row("compaction_stall", metric, fs.label, "compactions", True, compactions("done"), show_ratios=False)
        rows.append(done)
    return rows


# -- the two processes -------------------------------------------------------------------------------------


def _main_write(path: str, writes: int, keys: int) -> dict[str, Any]:
    from blackboard import Board

    board = Board.open(path)
    names = [key_for(k) for k in range(keys)]
    lat: array[float] = array("d")
    write = board.write
    clock = time.perf_counter
    start = clock()
    for i in range(writes):
        t0 = clock()
        write(names[i % keys], make_value(i))
        lat.append(clock() - t0)
    seconds = clock() - start
    board.close()
    ordered = sorted(lat)
    return {
        "writes": writes,
        "seconds": seconds,
        "per_s": writes / seconds,
        "p50_ms": percentile(ordered, 0.5) * 1e3,
        "p99_ms": percentile(ordered, 0.99) * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }


def _main_compact(path: str, stop: str) -> dict[str, Any]:
    from blackboard import Board

    board = Board.open(path)
    print("ready", flush=True)
    done = skipped = 0
    took: list[float] = []
    reasons: set[str] = set()
    stop_file = Path(stop)
    while not stop_file.exists():
        t0 = time.perf_counter()
        report = board.compact()
        took.append(time.perf_counter() - t0)
        if report.skipped:
            skipped += 1
            reasons.add(report.skipped)
        else:
            done += 1
    board.close()
    return {
        "done": done,
        "skipped": skipped,
        "reasons": sorted(reasons),
        "median_s": median(took),
        "max_s": max(took, default=float("nan")),
        "total_s": sum(took),
    }


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "write":
        out = _main_write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif command == "compact":
        out = _main_compact(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {command!r}")
    print(json.dumps(out))

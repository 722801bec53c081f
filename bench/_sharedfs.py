"""sharedfs: a `--lock soft` board through two FUSE views of one directory (issue 9), beside local boards.

One backing directory on the bench's disk is mounted twice with Debian's bindfs, attribute and entry
caching off (`-o attr_timeout=0,entry_timeout=0,negative_timeout=0`, what a close-to-open filesystem
gives a fresh open): each view is a separate "client", with its own kernel caches and no flock shared
with the other. bindfs runs in the foreground (`-f`) as a child of the bench, so that its CPU can be
read and its process ended by its handle; both views are unmounted in a `finally`.

- Writes: the writes section's method (spawned writer processes released together by a Barrier, one
  handle each, `duration` seconds, every write call timed alone; a fresh board per run, checked
  afterwards through the backing directory: record and key counts and `board.check()`). On a soft
  board (`Board.init(path, lock="soft")`) through the views: 1 writer through view A; 4 writers, 2
  through A and 2 through B at once. Beside it, the same writers on a local soft board and on a local
  flock board on the plain disk, in turns in a rotating order; ratios views / local.
- Watch latency: `_live`'s machinery (a writer in the bench process, one change every 2-4 ms; a
  listener process; matched by seq; CLOCK_MONOTONIC): writes through view A, a watcher on view B,
  polling (a soft board's default: checked) every 10 ms and every 1 ms, and in notify mode
  (`poll=False`: watchfiles on B, which sees nothing of A's writes, so only its 250 ms safety re-check
  wakes it). Beside it, the same watcher and writer on a local soft board. Idle CPU: the watcher's,
  plus on the views the bindfs process serving B over the same window (polling through FUSE is work
  for the daemon too).

Where FUSE is unavailable (not root, no /dev/fuse, no bindfs, a mount that fails) the local figures
are still measured and the views' cells are empty, the rows' notes saying "skipped: <why>".
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Literal

from _bench import Bench, Filesystem
from _live import PREFIX, WARMUP, BoardWriter, Job, LatencyRun, Listener, Server, Unavailable
from _peers import OURS, open_store
from _procs import WriteJob, WriterPool, WriteRun, summarize
from _report import Row, Target
from _sections import Pooled, Variant, median, rotated, section

#: bindfs options of a view without attribute or entry caching (as tests/test_sharedfs.py mounts them)
NO_CACHE = ("-o", "attr_timeout=0,entry_timeout=0,negative_timeout=0")
SECTION = "sharedfs"
VIEWS = "views"  # the ours column: the soft board through the two views
LOCAL_SOFT = "local soft"
LOCAL_FLOCK = "local flock"
#: (figures measured for a write row, in the order of its columns)
WRITE_KINDS = (VIEWS, LOCAL_SOFT, LOCAL_FLOCK)
LATENCY_KINDS = (VIEWS, LOCAL_SOFT)
WRITER_PROCS = (1, 4)  # 1 through A; 2 through A + 2 through B
MODES = (
    Variant("poll 10 ms", OURS, poll=True, interval=0.01),
    Variant("poll 1 ms", OURS, poll=True, interval=0.001),
    Variant("notify", OURS, poll=False),
)
_MOUNT_TIMEOUT = 15.0


# -- two FUSE views of one directory --------------------------------------------------------------------


def fuse_unavailable() -> str | None:
    """Why this machine cannot mount bindfs views, or None if it should be able to."""
    if os.geteuid() != 0:
        return "not root (mounting the FUSE views needs root)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("bindfs") is None:
        return "no bindfs (Debian: apt-get install bindfs)"
    return None


@dataclass
class Views:
    """One directory as the server has it (`back`), through two clients' mounts (`a`, `b`), and the
    bindfs process serving each view."""

    back: Path
    a: Path
    b: Path
    daemons: dict[Path, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)
    _counter: int = 0

    def fresh(self, name: str) -> str:
        """A new directory in the backing dir: its name, the same under `a`, `b` and `back`."""
        self._counter += 1
        rel = f"{self._counter:04d}-{name}"
        (self.back / rel).mkdir()
        return rel


def _unmount(view: Path, daemon: subprocess.Popen[bytes] | None) -> None:
    """fusermount3 -u, else fusermount -u, else a lazy umount; then reap the view's bindfs (ours)."""
    for cmd in (["fusermount3", "-u"], ["fusermount", "-u"], ["umount", "-l"]):
        if not os.path.ismount(view):
            break
        if shutil.which(cmd[0]) is not None:
            subprocess.run([*cmd, str(view)], capture_output=True, timeout=30, check=False)
    if daemon is not None:
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:  # unmounted but still running: end it by its handle
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def _mount(back: Path, view: Path, errors: Path) -> subprocess.Popen[bytes]:
    cmd = ["bindfs", "-f", *NO_CACHE, str(back), str(view)]
    with errors.open("wb") as err:
        daemon = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + _MOUNT_TIMEOUT
    while not os.path.ismount(view):
        if daemon.poll() is not None:
            text = errors.read_text(errors="replace").strip()[-300:]
            raise Unavailable(f"`{' '.join(cmd)}` exited {daemon.returncode}: {text or 'no message'}")
        if time.monotonic() > deadline:
            _unmount(view, daemon)
            raise Unavailable(f"`{' '.join(cmd)}`: nothing mounted after {_MOUNT_TIMEOUT:g} s")
        time.sleep(0.02)
    return daemon


@contextlib.contextmanager
def mounted_views(bench: Bench, fs: Filesystem) -> Iterator[Views]:
    """Two bindfs views of a fresh directory on `fs`, unmounted on the way out whatever happened;
    `Unavailable` (with the reason) where they cannot be mounted."""
    reason = fuse_unavailable()
    if reason is not None:
        raise Unavailable(reason)
    root = bench.fresh_dir(fs, "sharedfs")
    views = Views(root / "back", root / "A", root / "B")
    for path in (views.back, views.a, views.b):
        path.mkdir()
    try:
        for view in (views.a, views.b):
            views.daemons[view] = _mount(views.back, view, root / f"bindfs-{view.name}.err")
        yield views
    finally:
        for view in (views.b, views.a):
            _unmount(view, views.daemons.get(view))
        still = [str(v) for v in (views.a, views.b) if os.path.ismount(v)]
        if still:  # never delete through a view: what is left goes with the bench's scratch dir
            bench.problems.append(f"sharedfs: could not unmount {', '.join(still)}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# -- writes -----------------------------------------------------------------------------------------------


class PathPool(WriterPool):
    """A WriterPool whose workers each get a job of their own (their own view of the board)."""

    def run_each(self, jobs: list[WriteJob]) -> WriteRun:
        if len(jobs) != self.procs:
            raise ValueError(f"{len(jobs)} jobs for {self.procs} writers")
        for q, job in zip(self._jobs, jobs, strict=True):
            q.put(job)
        return summarize(OURS, self.gather("sharedfs", max(job.duration for job in jobs) + 240))


def _board_lock(path: Path) -> str:
    from blackboard import Board

    board = Board.open(path, read_only=True)
    try:
        return board.config.lock
    finally:
        board.close()


def _write_run(bench: Bench, disk: Filesystem, views: Views | None, kind: str, pool: PathPool) -> WriteRun:
    """One run on a fresh board: `pool.procs` writers for `duration` seconds, then check the board."""
    from blackboard import Board

    sizes = bench.sizes
    procs = pool.procs
    lock: Literal["flock", "soft"] = "flock" if kind == LOCAL_FLOCK else "soft"
    if kind == VIEWS:
        assert views is not None
        rel = views.fresh("views")
        top, check_at = views.back / rel, views.back / rel
        Board.init(views.a / rel / "board", lock="soft").close()
        # 1 writer: through A; more: the first half through A, the rest through B
        paths = [views.a / rel if i < max(1, procs // 2) else views.b / rel for i in range(procs)]
    else:
        top = check_at = bench.fresh_dir(disk, kind.replace(" ", "-"))
        Board.init(top / "board", lock=lock).close()
        paths = [top] * procs
    try:
        jobs = [WriteJob(OURS, str(p), False, sizes.duration, sizes.keys_per_proc) for p in paths]
        run = pool.run_each(jobs)
        # Each writer wrote one warm-up record to its first key, then `count` records round its keys.
        keys = sum(min(sizes.keys_per_proc, max(count, 1)) for count in run.counts)
        store = open_store(OURS, check_at, durable=False)  # as the server has it: the backing dir
        try:
            problem = store.verify(run.writes + procs, keys)
        finally:
            store.close()
        if _board_lock(check_at / "board") != lock:
            problem = f"{problem}; not a {lock} board".lstrip("; ")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    if problem:
        bench.problems.append(f"sharedfs, writes, {kind}, {procs} proc: {problem}")
    bench.log(
        f"sharedfs {kind:11} {procs} proc {run.per_s:9,.0f} writes/s  p50 {run.p50_ms:.3f} p99 {run.p99_ms:.3f}"
        f" max {run.max_ms:.1f} ms  close {run.close_ms:.1f} ms  per-proc writes {run.counts}"
    )
    return run


def _where(procs: int) -> str:
    if procs == 1:
        return "1 proc through view A"
    return f"{procs} proc, {procs // 2} through A + {procs - procs // 2} through B"


def _write_rows(bench: Bench, disk: Filesystem, views: Views | None, label: str, skipped: str) -> list[Row]:
    kinds = WRITE_KINDS if views is not None else WRITE_KINDS[1:]
    rows = []
    for procs in WRITER_PROCS:
        pool = PathPool(procs)
        try:
            runs: dict[str, list[WriteRun]] = {k: [] for k in kinds}
            for rep in range(bench.sizes.reps):
                for kind in rotated(kinds, rep):
                    try:
                        runs[kind].append(_write_run(bench, disk, views, kind, pool))
                    except Exception as exc:
                        bench.problems.append(f"sharedfs, writes, {kind}, {procs} proc: {exc}")
                        bench.log(f"sharedfs {kind:11} {procs} proc FAILED: {exc}")
        finally:
            pool.close()

        def figure(kind: str, attr: str, runs: dict[str, list[WriteRun]] = runs) -> float:
            return median([float(getattr(r, attr)) for r in runs.get(kind, [])])

        def row(metric: str, unit: str, higher: bool, attr: str) -> Row:
            peers = {k: figure(k, attr) for k in (LOCAL_SOFT, LOCAL_FLOCK)}
            return Row(SECTION, metric, label, unit, higher, figure(VIEWS, attr), peers)

        per_s = row(f"writes/s, soft board, {_where(procs)}", "writes/s", True, "per_s")
        if views is None:
            per_s.note = skipped
        else:
            note = (
                f"fresh board per run, {len(runs[VIEWS])} run(s) of {bench.sizes.duration:g} s; close (entry-file"
                f" flush) {figure(VIEWS, 'close_ms'):.0f} ms, {figure(VIEWS, 'per_s_with_close'):,.0f} writes/s"
                " counting it"
            )
            if procs > 1:
                half = procs // 2
                shares = [sum(r.counts[:half]) / max(1, r.writes) for r in runs[VIEWS]]
                note += f"; view A's share of the writes {median(shares):.0%}"
            per_s.note = note
        rows.append(per_s)
        for q in ("p50", "p99"):
            rows.append(row(f"{q} write wait, {_where(procs)}", "ms", False, f"{q}_ms"))
        if procs > 1:
            fair = row(f"fairness, {_where(procs)}", "min/max", True, "fairness")
            fair.show_ratios = False
            rows.append(fair)
    return rows


# -- watch latency -------------------------------------------------------------------------------------------


def _default_watch(board: Path) -> str:
    """How a watcher on `board` watches when not told: 'poll every N ms' or 'notify'."""
    from blackboard import Board

    handle = Board.open(board, read_only=True)
    try:
        watcher = handle.watch(PREFIX, timeout=0)
        try:
            return f"poll every {watcher.poll_interval * 1e3:g} ms" if watcher.polling else "notify"
        finally:
            watcher.close()
    finally:
        handle.close()


@dataclass
class Place:
    """Where a latency run writes and watches: a board through A and B, or one local board."""

    kind: str
    write_at: Path
    watch_at: Path
    top: Path  # removed after the run
    server: Server | None = None  # the bindfs process serving the watcher's view, for its idle CPU


def _place(bench: Bench, disk: Filesystem, views: Views | None, kind: str, label: str) -> Place:
    from blackboard import Board

    if kind == VIEWS:
        assert views is not None
        rel = views.fresh(label.replace(" ", "-"))
        place = Place(kind, views.a / rel / "board", views.b / rel / "board", views.back / rel)
        daemon = views.daemons[views.b]
        # _live's listener adds a "server" process's CPU over its idle window: here, view B's bindfs
        place.server = Server("bindfs", "", 0, daemon, views.b)
    else:
        top = bench.fresh_dir(disk, f"sharedfs-{label.replace(' ', '-')}")
        place = Place(kind, top / "board", top / "board", top)
    Board.init(place.write_at, lock="soft").close()
    return place


def _latency_run(
    bench: Bench, disk: Filesystem, views: Views | None, kind: str, mode: Variant, listener: Listener, rng: Random
) -> tuple[LatencyRun, str]:
    sizes = bench.sizes
    count = -(-sizes.latency_events // sizes.reps)  # this repetition's share of the measured changes
    place = _place(bench, disk, views, kind, mode.label)
    try:
        default = _default_watch(place.watch_at)
        writer = BoardWriter(place.write_at)
        try:
            job = Job(OURS, str(place.watch_at), 1, WARMUP + count, sizes.idle_seconds / sizes.reps)
            job = dataclasses.replace(job, poll=mode.poll, poll_interval=mode.interval)
            return listener.run(job, writer, place.server, rng), default
        finally:
            writer.close()
    finally:
        shutil.rmtree(place.top, ignore_errors=True)


def _latency_rows(bench: Bench, disk: Filesystem, views: Views | None, label: str, skipped: str) -> list[Row]:
    kinds = LATENCY_KINDS if views is not None else LATENCY_KINDS[1:]
    cases = [(kind, mode) for mode in MODES for kind in kinds]
    pooled: dict[tuple[str, str], Pooled] = {}
    defaults: dict[str, set[str]] = {k: set() for k in kinds}
    listener = Listener()
    rng = Random(13)
    try:
        for rep in range(bench.sizes.reps):
            for kind, mode in rotated(tuple(cases), rep):
                try:
                    run, default = _latency_run(bench, disk, views, kind, mode, listener, rng)
                except Exception as exc:
                    bench.problems.append(f"sharedfs, latency, {kind}, {mode.label}: {exc}")
                    bench.log(f"sharedfs {kind:11} {mode.label:10} FAILED: {exc}")
                    continue
                defaults[kind].add(default)
                pooled.setdefault((kind, mode.label), Pooled([])).runs.append(run)
                one = Pooled([run])
                bench.log(
                    f"sharedfs {kind:11} {mode.label:10} after return p50 {one.after(0.5):8.3f}"
                    f" p90 {one.after(0.9):8.3f} ms; idle CPU {one.cpu_pct:5.1f}% over {run.idle_s:.1f} s;"
                    f" {len(run.after_ms)} changes, {run.lost} lost (default watch here: {default})"
                )
    finally:
        listener.close()
    for (kind, mode_label), pool in pooled.items():
        if pool.lost:
            bench.problems.append(f"sharedfs, latency, {kind}, {mode_label}: {pool.lost} changes never arrived")
    for kind, seen in defaults.items():
        if seen and seen != {"poll every 10 ms"}:
            bench.problems.append(f"sharedfs, latency, {kind}: a soft board's default watch was {sorted(seen)}")

    def figure(kind: str, mode: Variant, fn: str, q: float = 0.0) -> float:
        pool = pooled.get((kind, mode.label))
        if pool is None:
            return float("nan")
        return pool.cpu_pct if fn == "cpu" else pool.after(q)

    rows = []
    for mode in MODES:
        what = "watcher on B, writes through A" if mode.poll else "watcher on B (watchfiles), writes through A"
        for q in (0.5, 0.9):
            metric = f"p{q * 100:.0f}, write returned -> event, {mode.label}, {what}"
            row = Row(SECTION, metric, label, "ms", False, figure(VIEWS, mode, "after", q))
            row.peers = {LOCAL_SOFT: figure(LOCAL_SOFT, mode, "after", q)}
            if q == 0.5 and mode.interval is not None and views is not None:
                row.target = Target(mode.interval * 1e3)  # issue 9: p50 within one poll interval
            if q == 0.5:
                measured = pooled.get((VIEWS, mode.label))
                if views is None:
                    row.note = skipped
                elif measured is not None:
                    row.note = (
                        f"{measured.measured} changes, 2-4 ms apart, {len(measured.runs)} run(s); {measured.lost} lost"
                    )
                    if mode.label == MODES[0].label:
                        row.note += f"; a soft board's default watch: {', '.join(sorted(defaults[VIEWS]))} (checked)"
                    if not mode.poll:
                        row.note += "; B's inotify never hears A's writes: only the 250 ms safety re-check wakes it"
            rows.append(row)
        cpu = Row(SECTION, f"watcher's CPU while idle, {mode.label}", label, "%", False, figure(VIEWS, mode, "cpu"))
        cpu.peers = {LOCAL_SOFT: figure(LOCAL_SOFT, mode, "cpu")}
        cpu.note = skipped if views is None else "% of one core; on the views: the watcher + view B's bindfs process"
        rows.append(cpu)
    return rows


@section(SECTION, "a --lock soft board through two bindfs views: writes/s, watch latency A -> B; vs local boards")
def sharedfs(bench: Bench) -> list[Row]:
    disk = bench.big_fs()  # the views' backing dir and the local boards: the disk, unless only tmpfs is tested
    label = f"bindfs/{disk.label}"
    views: Views | None = None
    skipped = ""
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        try:
            views = stack.enter_context(mounted_views(bench, disk))
        except Unavailable as exc:
            skipped = f"skipped: {exc}"
            print(skipped, flush=True)
            bench.log(f"sharedfs views {skipped}")
        rows += _write_rows(bench, disk, views, label, skipped)
        rows += _latency_rows(bench, disk, views, label, skipped)
    return rows

"""Benchmark blackboard against sqlite3 (WAL) and diskcache, side by side in one run.

    python bench/run.py                    # everything, ~4-5 minutes; writes bench/RESULTS.md
    python bench/run.py --quick            # ~1 min smoke run (prints; writes a file only with --out)
    python bench/run.py --only compaction --events 10000000   # the 10M-event compaction
    python bench/run.py --only writes,reads --reps 5
    python bench/run.py --only coldstart --events 100000 --coldstart-runs 5   # a smaller written board
    python bench/run.py --only compaction_stall,txn --fs disk
    python bench/run.py --only checksum --checksum-rounds 9   # format 3's checksums vs none
    python bench/run.py --only sharedfs   # a soft board through two bindfs views (root, /dev/fuse, bindfs)
    python bench/run.py --only agents      # the agents layer: request/reply, fan-in, CLI request, who
    python bench/run.py --only agents --agents-roundtrips 1000 --agents-messages 2000
    python bench/run.py --only work        # the work layer: queue take + ack vs redis streams, lease vs write
    python bench/run.py --only work --work-items 2000 --work-consumers 2
    python bench/run.py --only mcp         # blackboard mcp: tool-call round trip over stdio, idle server CPU
    python bench/run.py --only trust       # the trust layer: schema-checked and signed writes vs plain, verify
    python bench/run.py --list             # the sections

Each figure is the median of --reps runs, measured on the machine's disk (a temp dir under /tmp
by default) and on tmpfs (/dev/shm). The machine is shared and noisy: compare figures from one run
only, and treat differences under ~1.5x as noise (../shared/MEASURED.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import _agents
import _checksum  # noqa: F401  (each registers its section, after those of _sections)
import _coldstart  # noqa: F401
import _mcp
import _sharedfs  # noqa: F401
import _stall  # noqa: F401
import _trust
import _txn  # noqa: F401
import _work
from _bench import Bench, Sizes
from _report import Row, console_table, markdown_table, summary
from _sections import SECTIONS

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "RESULTS.md"
PACKAGES = ("blackboard", "diskcache", "orjson", "pydantic", "xxhash")

WHAT = """\
- **blackboard**: `board.write(key, value)`: one JSON line appended to the log under flock; the
  entry files follow in a background thread, and `close()` brings them up to date (timed apart, in
  the note column). Reads: `board.read(key)`; listing: `board.read_prefix(prefix)`.
- **sqlite3** (WAL): one transaction per write, `BEGIN IMMEDIATE; INSERT` a log row; `UPSERT` the key's
  row (version + 1); `COMMIT`. Values as orjson. Reads: `SELECT value FROM kv WHERE key = ?`;
  listing: `WHERE key >= ? AND key < ?`.
- **diskcache** (`Cache`): `cache.set(key, value)` (no log row: diskcache has none). Reads:
  `cache.get(key)`; listing: `iterkeys()` from the start of the prefix's range to its end, `get` each.
- Default durability: blackboard as is (the write is in the page cache: it survives SIGKILL, not power
  loss), sqlite `synchronous=NORMAL`, diskcache as shipped (NORMAL). Durable: blackboard
  `Board.init(path, fsync=True)`, sqlite `synchronous=FULL`, diskcache `sqlite_synchronous=2`.
- Writers: separate processes (spawn), one handle each, released together by a Barrier; each writes
  values like `{"i": i, "payload": "x" * 100}` round its own keys `bench/{proc}/{i % keys_per_proc}`.
  writes/s = all writes / (last writer's end - first writer's start); every write call is timed alone
  (`time.perf_counter`) for p50/p99. Each run uses a fresh store, checked afterwards (record and key
  counts; for blackboard also `board.check()`).
- **latency** (change notification, one table per filesystem): a writer in the bench process makes
  one change every 2-4 ms (never a burst); a listener in another process notes when each arrives.
  Both read `time.monotonic()` (CLOCK_MONOTONIC, one clock for the whole host) and changes are
  matched by seq. "write returned -> event" counts from just after the write call returns (the
  brief's figure); "write call started -> event" from just before it is made, end to end. Ours:
  `board.watch(prefix, poll=False)` (watchfiles) and `poll=True` with `poll_interval` 0.001 and the
  default 0.01; the writer `board.write`. **redis**: `SET` then `PUBLISH` of the value, a pub/sub
  subscriber (redis-py). **etcd**: `POST /v3/kv/put` on the HTTP/JSON gateway, a streaming `POST
  /v3/watch` on the prefix. **sqlite poll**: an `INSERT` per change (WAL, synchronous=NORMAL), a
  reader running `SELECT max(seq)` every 1 ms. redis-server and etcd are started for the run on
  127.0.0.1 (free port, temp data dir on the filesystem under test; redis without persistence) and
  stopped after; a cell says "skipped" if one is not installed. Servers deliver a change to their
  watchers as they acknowledge it, so their "write returned" figures are ~0 or negative (no ratio
  is shown for those); the end-to-end rows compare like with like, and carry the target against
  etcd. The first 20 changes of each run are not counted. Idle CPU: the listening process's own
  CPU time (getrusage, all threads) over ~2 s of watching with nothing written, as % of one core;
  for redis and etcd the server process's CPU over the same window is added (from /proc).
- **catchup**: a log of `--events` puts (default 1,000,000) over 10,000 keys, written straight in the
  spec's format 3 on the disk (every line with its checksum), ~281 bytes a line; a fresh process
  opens the board and counts `board.watch(prefix, since=0)` events up to the last seq (it is in the
  page cache: just written). The prefix row watches `bench/g07/`, 1% of the keys and of the events;
  its figure is log events read per second.
- **compaction**: `board.compact()` on a copy of that log, in a fresh process: the report's seconds,
  and the process's peak RSS after it, with the peak before it (imports and an open board) as the
  baseline. Peak RSS is VmHWM from /proc/self/status: `ru_maxrss` would do, but Linux carries it
  from parent to child through fork and exec, so a child of the bench starts at the bench's RSS.
  `--events 10000000` runs the 10,000,000-event version. The watermark is set to the last seq, as
  a writer's background flush leaves it, so compaction's flush has no entry file to write.
- **coldstart**: what a new process pays to open a board and read one key, as a shell agent pays it:
  the wall time of one `subprocess.run` (fork/exec to exit, output captured) of `python -m blackboard
  --board DIR read KEY`, and of the console script `blackboard` beside the interpreter with the same
  arguments; `--coldstart-runs` runs each (default 15) after one untimed warm-up, all commands in
  turns in a rotating order; median and p90; every run's exit status and printed value checked. On a
  tiny board (10 keys) and on a board of `--events` writes (default 1,000,000) over 10,000 keys,
  WRITTEN through the library by a helper process (`Board.init`, `board.write` round-robin over the
  keys, `board.close()`: whatever a writer leaves, the index checkpoint included, whose size is in
  the note; writers' own compaction off, `compact_at_bytes=None`, so the log keeps every event),
  built once per run on the disk. Floors in the same run: `python -c pass` and
  `python -c "import blackboard.cli"`. Peer: a new python process doing `sqlite3.connect(db).execute(
  "select value from kv where key=?")` and printing the value, on a db of as many keys.
- **compaction_stall**: a fresh board of 20,000 live keys (`--stall-keys`;
  `compact_at_bytes=None`: no writer compacts on its own); a writer process makes 100,000 writes
  (`--stall-writes`) round-robin over them while a second process runs `board.compact()` back to
  back until the writer is done; against the same writes on a fresh board with no compactor.
  Figures: the writer's seconds from its first write call to its last return, writes/s, each call's
  wait (p50/p99/max), and the compactions done. Afterwards the board must hold every seq, every
  key's last value, and pass `board.check()`.
- **txn**: in one process on a fresh store, for `--duration` seconds each: one `board.write` vs one
  `with board.transaction() as tx:` of 10 `tx.write(f"t/{j}", value)`; sqlite3: one transaction of
  one INSERT (log row) + UPSERT vs one of 10 pairs. The mean time per call (seconds / calls), and
  transaction / single write for each system on its own. Skipped if this build has no transactions.
- **checksum**: what format 3's checksums cost (the issue's bound: at most 10% of write throughput
  and of replay speed), against the same work on a log of format 2, which has none and which this
  release still appends to in its own format. Writes: one helper process makes, `--checksum-rounds`
  times (default 5), a fresh board of each kind in a rotating order and times `--checksum-writes`
  (default 20,000) `board.write` calls on it after one warm-up write, 1,000 keys round-robin, the
  writes section's values (`close()` timed apart); the format-2 board is `Board.init` with board.json
  set to version 2 and a version-2 log header before any write. Replay: catchup's log and the same
  records in a format-2 board, on the disk, in the page cache; a fresh process each run, in turns:
  `Board.open(read_only=True).last_seq` with no checkpoint (deleted before each run: the index is
  replayed from the first line), and `board.watch(prefix, since=0)` up to the last seq with the
  empty prefix and with `bench/g07/` (1%: the other lines are verified but not parsed). Medians; the
  peer column is format 2, the ratio format 3 / format 2, the target >= 0.9x. The notes add each
  round's own ratio (median), which the round-to-round noise does not move.
- **sharedfs**: a `--lock soft` board (`Board.init(path, lock="soft")`) through two FUSE views of one
  directory on the disk (`bindfs -f -o attr_timeout=0,entry_timeout=0,negative_timeout=0 BACK A`, and
  B: two "clients" sharing no cache and no flock), unmounted after. Writes: the writes section's
  method (spawned writers, a Barrier, a fresh board per run, checked through the backing directory:
  record and key counts, `board.check()`), 1 writer through A, and 2 through A + 2 through B at once;
  the columns are the same writers on a local soft board and a local flock board on the plain disk.
  Latency: the latency section's method, writes through A and a watcher on B, polling (a soft board's
  default, checked) every 10 ms and 1 ms, and `poll=False` (watchfiles on B hears nothing of A's
  writes: only the 250 ms safety re-check wakes it); the column is the same on a local soft board;
  idle CPU on the views adds view B's bindfs process. Without root, /dev/fuse or bindfs the views'
  cells are empty and the notes say "skipped" and why; the local columns are still measured.
- **agents** (spec/AGENTS.md): request -> reply round trips between two processes, both waiting on
  notifications (`me.request` against a responder in `me.messages()` + `me.reply`; redis-py: `LPUSH`
  + `BRPOP` each way, a responder process), 50 warm-up trips per run, p50/p99 over
  `--agents-roundtrips` (default 500); the column "ours, notifier held" is the same with a
  `board.subscribe` to an unused prefix open in both processes, which keeps each one's notifier
  thread running between two waits (a diagnostic: what restarting it per wait costs); the breakdown
  rows split one trip into the client's send, the responder's wake-up, its reply transaction, the
  client's wake-up and its ack (`messages.send`/`wait_for` wrapped in the client to note when each
  returns). Fan-in: `--agents-senders` processes (8) each `me.send` `--agents-messages` (1,000) to
  one agent consuming with `me.inbox(wait=)` + `me.ack` each, every message checked (delivered,
  never listed again after its ack, in order per sender); consumed/s to the last ack, sent/s to the
  last send; peer `LPUSH`, and `BRPOP` + `RPOP sink 1000`. All nine processes share the machine's
  cores. `blackboard --as c request srv BODY --timeout 10` by subprocess against the Python
  responder (column: `blackboard read k`, in turns); `me.who()` with `--agents-registered` (1,000)
  agents registered, each with the bench's pid (median of 20 calls).
- **work** (spec/WORK.md): `--work-items` (10,000) items pushed with `queue.push` before any
  consumer starts; then `--work-consumers` (4) spawned processes, and in another run one, released
  by a Barrier, each loop `Consumer.take()` + `queue.ack(..., result_key=, result=)` until the queue
  is empty; items/s = items / (release -> the last ack); checked after each run: every result key at
  version 1, `items` of them, `queue.pending` empty. Peer: Redis Streams, `XADD` of the items and a
  consumer group before the consumers start, each consumer `XREADGROUP ... COUNT 1` + one MULTI/EXEC
  of `XACK` and `SET` of the result (checked: each XACK returned 1, all results, XPENDING empty).
  Lease: `--work-pairs` (2,000) `lease.claim` + `lease.release` pairs against as many `board.write`
  calls on the same board, in turns, in the bench process; us per pair and per write; target <= 3x.
- **mcp**: `python -m blackboard mcp` driven by the official SDK's stdio client, one `read` or
  `write` tool call at a time (1,000 of each after 50 warm-up, over the runs), p50/p99; column: the
  same `board.read`/`board.write` in the bench process. Idle CPU: the server process's utime + stime
  from /proc over 2 s with no call, 0.5 s after its last answer, in % of one core (target < 1 %).
- **trust** (spec/TRUST.md): in the bench process, a fresh board per variant, 5 rounds in a rotating
  order, 20,000 timed `board.write(f"results/{i % 1000}", {"answer": i, "note": ...})` each by author
  atlas after 200 warm-up: plain; under a schema contract on `results/`; signed with a registered
  Ed25519 key (no contract); signed + the schema contract with `signed=True`; the same with an HMAC
  group key. us per write, column the plain write; target: signed + validated <= 2x plain. Then
  `trust.verify(board, "results/")` on the board, timed (records/s) and checked (every record
  verified, or unsigned on the plain board). Rows "alone": `signer.sign()` of one record's message,
  and the contract check's `codec.decode` + `is_valid` of one value.
- Ratios are ours / peer. "better" says which way is good for the figure and for its ratios.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~1 min smoke run: shorter runs, one repetition")
    p.add_argument("--only", default="", help="comma-separated sections to run (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the sections and exit")
    p.add_argument("--fs", default="disk,tmpfs", help="filesystems: disk, tmpfs or both (default: both)")
    p.add_argument("--disk-dir", type=Path, default=Path(tempfile.gettempdir()), help="where 'disk' runs")
    p.add_argument("--tmpfs-dir", type=Path, default=Path("/dev/shm"), help="where 'tmpfs' runs")
    p.add_argument("--out", type=Path, help=f"markdown report (default: {DEFAULT_OUT} on a full run)")
    sizes = p.add_argument_group("sizes (defaults: full run; --quick lowers some)")
    for f in dataclasses.fields(Sizes):
        flag = "--" + f.name.replace("_", "-")
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        sizes.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=f"default {shown}")
    agents = p.add_argument_group("agents section (defaults: full run; --quick lowers some)")
    for f in dataclasses.fields(_agents.AgentSizes):
        flag, dest = f"--agents-{f.name.replace('_', '-')}", f"agents_{f.name}"
        agents.add_argument(flag, dest=dest, type=int, default=None, metavar="N", help=f"default {f.default}")
    work = p.add_argument_group("work section (defaults: full run; --quick lowers some)")
    for f in dataclasses.fields(_work.WorkSizes):
        flag, dest = f"--work-{f.name.replace('_', '-')}", f"work_{f.name}"
        work.add_argument(flag, dest=dest, type=int, default=None, metavar="N", help=f"default {f.default}")
    return p.parse_args(argv)


def resolve_work_sizes(args: argparse.Namespace) -> _work.WorkSizes:
    sizes = _work.WorkSizes.quick() if args.quick else _work.WorkSizes()
    given = {f.name: getattr(args, f"work_{f.name}") for f in dataclasses.fields(_work.WorkSizes)}
    return dataclasses.replace(sizes, **{k: v for k, v in given.items() if v is not None})


def resolve_agent_sizes(args: argparse.Namespace) -> _agents.AgentSizes:
    sizes = _agents.AgentSizes.quick() if args.quick else _agents.AgentSizes()
    given = {f.name: getattr(args, f"agents_{f.name}") for f in dataclasses.fields(_agents.AgentSizes)}
    return dataclasses.replace(sizes, **{k: v for k, v in given.items() if v is not None})


def resolve_sizes(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    changes: dict[str, object] = {}
    for f in dataclasses.fields(Sizes):
        text = getattr(args, f.name)
        if text is None:
            continue
        current = getattr(sizes, f.name)
        if isinstance(current, tuple):
            changes[f.name] = tuple(int(x) for x in text.split(",") if x.strip())
        else:
            changes[f.name] = type(current)(text)
    return dataclasses.replace(sizes, **changes)  # type: ignore[arg-type]


def machine_line(bench: Bench) -> str:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    fss = ", ".join(f"{fs.name} = {fs.fstype} at {fs.root.parent}" for fs in bench.filesystems)
    return (
        f"nproc {usable} (cpu_count {cpus}), Python {platform.python_version()}, {platform.platform()},"
        f" SQLite {sqlite3.sqlite_version}; {', '.join(versions)}; filesystems: {fss}"
    )


def render_markdown(
    bench: Bench, rows: list[Row], argv: list[str], started: datetime, elapsed: float, load: str
) -> str:
    s = bench.sizes
    settings = (
        f"{s.reps} repetition(s) per figure (median shown); write runs of {s.duration:g} s, processes"
        f" {', '.join(map(str, s.procs))}, {s.keys_per_proc} keys per process; reads of {s.read_duration:g} s"
        f" over {s.read_keys} keys; listing {s.list_keys:,} keys under the prefix + {s.other_keys:,} others,"
        f" {s.list_repeats} listings per repetition; latency: {s.latency_events} changes per system and"
        f" filesystem over all repetitions, {s.idle_seconds:g} s idle; catchup and compaction: a log of"
        f" {s.events:,} events on {bench.big_fs().label}; coldstart: {s.coldstart_runs} runs per command, a"
        f" board of {s.events:,} writes; compaction_stall: {s.stall_writes:,} writes over {s.stall_keys:,} keys;"
        f" checksum: {s.checksum_rounds} rounds, {s.checksum_writes:,} writes per board"
    )
    parts = [
        "# Benchmark results",
        "",
        f"Generated by `python bench/run.py{' ' if argv else ''}{' '.join(argv)}` on"
        f" {started.strftime('%Y-%m-%d %H:%M UTC')}, in {elapsed:.0f} s.",
        "",
        f"**Machine:** {machine_line(bench)}.",
        "",
        f"**Settings:** {settings}.",
        "",
        f"**Load average** (1 min; other work on this shared machine): {load}.",
        "",
        "## What is compared",
        "",
        WHAT,
        "## Results",
        "",
        markdown_table(rows),
        "",
        summary(rows),
        "",
    ]
    if bench.problems:
        parts += ["## Problems found verifying the stores after a run", ""]
        parts += [f"- {p}" for p in bench.problems] + [""]
    parts += ["## Every run", "", "```", *bench.runs, "```", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    if args.list:
        for sec in SECTIONS.values():
            print(f"{sec.name:16} {sec.help}")
        return 0
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in chosen if n not in SECTIONS]
    if unknown:
        print(f"unknown section(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    bases = {"disk": args.disk_dir, "tmpfs": args.tmpfs_dir}
    names = [n.strip() for n in args.fs.split(",") if n.strip()]
    if not names or any(n not in bases for n in names):
        print(f"--fs takes disk, tmpfs or both, not {args.fs!r}", file=sys.stderr)
        return 2
    missing = [n for n in names if not bases[n].is_dir()]
    for n in missing:
        print(f"skipping {n}: {bases[n]} is not a directory", file=sys.stderr)
    names = [n for n in names if n not in missing]
    out = args.out if args.out is not None else (None if args.quick or args.only else DEFAULT_OUT)

    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    bench = Bench.create(resolve_sizes(args), {n: bases[n] for n in names})
    _agents.SIZES = resolve_agent_sizes(args)
    _work.SIZES = resolve_work_sizes(args)
    _mcp.SIZES = _mcp.McpSizes.quick() if args.quick else _mcp.McpSizes()
    _trust.SIZES = _trust.TrustSizes.quick() if args.quick else _trust.TrustSizes()
    rows: list[Row] = []
    try:
        print(f"machine: {machine_line(bench)}", file=sys.stderr)
        for name in chosen:
            print(f"[{name}] {SECTIONS[name].help}", file=sys.stderr, flush=True)
            rows += SECTIONS[name].run(bench)
    finally:
        bench.close()
    elapsed = time.perf_counter() - t0
    load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"

    print()
    print(console_table(rows))
    print()
    print(summary(rows))
    for problem in bench.problems:
        print(f"PROBLEM: {problem}")
    print(f"({elapsed:.0f} s; load average {load})")
    if out is not None:
        out.write_text(render_markdown(bench, rows, raw, started, elapsed, load), encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

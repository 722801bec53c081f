"""mcp: what `blackboard mcp` costs a client: a tool call's round trip over stdio, and the idle server.

- **round trip**: the official SDK's stdio client (`mcp.ClientSession` over `stdio_client`) starts
  `python -m blackboard mcp --board B --as bench` (profile minimal) and times `call_tool("read",
  {"key": ...})` and `call_tool("write", {"key": ..., "value": {"i": i}})` to their return, one at a
  time, after `WARMUP` untimed calls of each; p50 and p99 over all runs' calls. Column: the same
  `board.read` / `board.write` in this process (what the protocol, the pipes and the SDK add).
- **idle CPU**: after the calls, the server (the client's child process, found in /proc) left alone
  for `IDLE_S` seconds: (utime + stime) from /proc/PID/stat over wall time, in % of one core.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench import Bench, Filesystem
from _procs import percentile
from _report import Row, Target
from _sections import section

WARMUP = 50
IDLE_S = 2.0
IN_PROCESS = "in-process call"


@dataclass(frozen=True)
class McpSizes:
    calls: int = 1000  # timed calls of each tool, over all runs

    @classmethod
    def quick(cls) -> McpSizes:
        return cls(calls=200)


SIZES = McpSizes()


def _children() -> list[int]:
    pids: list[int] = []
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return pids


def _server_pid() -> int:
    for pid in _children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"mcp" in f.read().split(b"\0"):
                    return pid
        except OSError:
            continue
    raise RuntimeError("the MCP server process was not found among this process's children")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _run(root: Path, calls: int) -> tuple[list[float], list[float], float]:
    """(read seconds, write seconds, idle % of a core) of one server on a fresh board at `root`."""
    import anyio
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from blackboard import Board

    Board.init(root).close()
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "blackboard", "mcp", "--board", str(root), "--as", "bench"]
    )
    reads: list[float] = []
    writes: list[float] = []
    idle: list[float] = []

    async def main() -> None:
        with open(root.parent / "mcp-server.stderr", "a") as errlog:
            async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as session:
                await session.initialize()

                async def timed(tool: str, arguments: dict[str, Any], into: list[float] | None) -> None:
                    started = time.perf_counter()
                    result = await session.call_tool(tool, arguments)
                    if into is not None:
                        into.append(time.perf_counter() - started)
                    if getattr(result, "is_error", False):
                        raise RuntimeError(f"{tool} failed: {result}")

                for i in range(WARMUP + calls):
                    into = None if i < WARMUP else writes
                    await timed("write", {"key": f"bench/{i % 100}", "value": {"i": i}}, into)
                for i in range(WARMUP + calls):
                    await timed("read", {"key": f"bench/{i % 100}"}, None if i < WARMUP else reads)
                pid = _server_pid()
                await anyio.sleep(0.5)  # past the answer of the last call
                cpu, wall = _cpu_seconds(pid), time.monotonic()
                await anyio.sleep(IDLE_S)
                idle.append((_cpu_seconds(pid) - cpu) / (time.monotonic() - wall) * 100)

    anyio.run(main)
    return reads, writes, idle[0]


def _in_process(root: Path, calls: int) -> tuple[list[float], list[float]]:
    from blackboard import Board

    reads: list[float] = []
    writes: list[float] = []
    with Board.init(root, author="bench") as board:
        for i in range(WARMUP + calls):
            started = time.perf_counter()
            board.write(f"bench/{i % 100}", {"i": i})
            if i >= WARMUP:
                writes.append(time.perf_counter() - started)
        for i in range(WARMUP + calls):
            started = time.perf_counter()
            board.read(f"bench/{i % 100}")
            if i >= WARMUP:
                reads.append(time.perf_counter() - started)
    return reads, writes


def _ms(values: list[float], q: float) -> float:
    return percentile(sorted(values), q) * 1e3 if values else float("nan")


def _rows_fs(bench: Bench, fs: Filesystem) -> list[Row]:
    reps = bench.sizes.reps
    per_run = max(1, -(-SIZES.calls // reps))
    got: dict[str, list[float]] = {"read": [], "write": [], "idle": [], "read0": [], "write0": []}
    for _ in range(reps):
        root = bench.fresh_dir(fs, "mcp")
        try:
            reads, writes, idle = _run(root, per_run)
        except Exception as exc:
            bench.problems.append(f"mcp, {fs.label}: {exc}")
            bench.log(f"mcp  {fs.label}: FAILED: {exc}")
            shutil.rmtree(root, ignore_errors=True)
            continue
        shutil.rmtree(root, ignore_errors=True)
        got["read"] += reads
        got["write"] += writes
        got["idle"].append(idle)
        bench.log(
            f"mcp  {fs.label:5} read p50 {_ms(reads, 0.5):.3f} p99 {_ms(reads, 0.99):.3f} ms, write p50"
            f" {_ms(writes, 0.5):.3f} p99 {_ms(writes, 0.99):.3f} ms, idle {idle:.2f} % of a core"
        )
        root = bench.fresh_dir(fs, "mcp-inproc")
        reads, writes = _in_process(root, per_run)
        shutil.rmtree(root, ignore_errors=True)
        got["read0"] += reads
        got["write0"] += writes
    rows = []
    for tool in ("read", "write"):
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            row = Row("mcp", f"tool call `{tool}` over stdio, {label}", fs.label, "ms", False, _ms(got[tool], q))
            row.peers = {IN_PROCESS: _ms(got[f"{tool}0"], q)}
            row.show_ratios = False  # the column is what the call costs without the protocol, not a peer
            if tool == "read" and label == "p50":
                row.note = (
                    f"the SDK's stdio client, one call at a time, {len(got[tool])} calls after {WARMUP} warm-up"
                    f" per run; {IN_PROCESS}: board.{tool} in the bench process"
                )
            rows.append(row)
    quiet = Row("mcp", f"server idle CPU over {IDLE_S:g} s", fs.label, "% of a core", False, max(got["idle"] or [0.0]))
    quiet.target = Target(1.0)
    quiet.note = (
        "the worst run: (utime + stime) / wall of the server process, 0.5 s after its last answer;"
        f" /proc counts clock ticks: resolution {100 / os.sysconf('SC_CLK_TCK') / IDLE_S:g} %"
    )
    rows.append(quiet)
    return rows


@section("mcp", "blackboard mcp: tool-call round trip over stdio (read, write) and the idle server's CPU")
def run_mcp(bench: Bench) -> list[Row]:
    try:
        import mcp  # noqa: F401
    except ImportError:
        bench.log("mcp  skipped: the [mcp] extra is not installed")
        return []
    rows: list[Row] = []
    for fs in bench.filesystems:
        rows += _rows_fs(bench, fs)
    return rows

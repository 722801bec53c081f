"""agents: what the agents layer (spec/AGENTS.md) costs between processes, beside Redis in one run.

- **round trip**: a responder process runs `for m in me.messages(wait=...): me.reply(m, m.body)`; the
  client (the bench process) times `me.request("srv", i, timeout=10)` to its return, one at a time,
  both sides waiting on notifications (no polling). Peer: redis-py, the client `LPUSH req` + `BRPOP
  rep`, the server `BRPOP req` + `LPUSH rep`. Each run has `WARMUP` untimed trips; p50 and p99 over
  all runs' trips. Targets: p50 <= 5 ms, p99 <= 15 ms.
- **fan-in**: `senders` processes, released by a Barrier, each `me.send("sink", {"s": k, "i": i})`
  `messages` times while the sink (the bench process) consumes: `me.inbox(wait=5)`, then `me.ack(m)`
  each. Checked: every message delivered, no id listed again after its ack, each sender's `i` in
  order. messages/s = messages / (release -> last ack); sent/s = messages / (release -> the last
  sender's last send returned). Peer: the senders `LPUSH sink`, the consumer `BRPOP sink` then
  `RPOP sink 1000` (all waiting; no ack: Redis pops at most once), checked the same way. All of it
  (9 Python processes and redis-server) shares the machine's cores.
- **cli request**: `blackboard --board B --as c request srv BODY --timeout 10` run by subprocess (the
  console script beside the interpreter) against the same Python responder; p50 of the wall times.
  Column: `blackboard --board B read KEY` run the same way, in turns: the cost of starting the CLI.
- **breakdown** (first filesystem): where one round trip's time goes, p50 of each phase: the
  client's send, the responder's wake-up, its reply (+ ack) transaction, the client's wake-up, its
  ack of the reply (see `_breakdown`); beside the same with the notifier held (`_hold`).
- **who**: `me.who()` on a board where `registered` agents joined (each with this process's pid: the
  worst case, every one checked against /proc); the median of `WHO_CALLS` calls. Target < 50 ms.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _bench import Bench, Filesystem
from _live import REDIS, Server, Unavailable, start_redis
from _procs import percentile
from _report import Row, Target
from _sections import median, rotated, section

if TYPE_CHECKING:
    from blackboard import Board
    from blackboard.core.watch import Subscription

OURS = "blackboard"
HELD = "ours, notifier held"  # a diagnostic variant of ours (see _hold), not a peer
CLI_READ = "cli read"
WARMUP = 50
WHO_CALLS = 20
STOP = "stop"
SPAWN = mp.get_context("spawn")


@dataclass(frozen=True)
class AgentSizes:
    roundtrips: int = 500  # timed request -> reply trips per system and filesystem, over all repetitions
    senders: int = 8
    messages: int = 1000  # per sender
    cli_runs: int = 15
    registered: int = 1000

    @classmethod
    def quick(cls) -> AgentSizes:
        return cls(roundtrips=200, messages=250, cli_runs=5)


#: Set by run.py from --quick and the --agents-* options.
SIZES = AgentSizes()


# -- processes -----------------------------------------------------------------------------------------


def _hold(board: Board) -> Subscription:
    """A subscription to a prefix nobody writes: it keeps this process's notifier thread running
    between two waits (the HELD variant), where each wait would otherwise start it afresh."""
    return board.subscribe("bench-hold/", lambda event: None)


def _responder(board_dir: str, hold: bool, marks: Queue[list[tuple[Any, float, float]]] | None, ready: Event) -> None:
    """The agent `srv`: reply to every request with its body, until a request whose body is STOP.
    With `marks`: put [(body, when the loop got it, when its reply returned)] there at the end."""
    from blackboard import Board

    noted: list[tuple[Any, float, float]] = []

    board = Board.open(board_dir)
    try:
        with (
            _hold(board) if hold else contextlib.nullcontext(),
            board.agent("srv", capabilities=["echo"], ttl=30) as me,
        ):
            ready.set()
            for message in me.messages(wait=60):
                got = time.perf_counter()
                if message.kind != "request":
                    me.ack(message)
                    continue
                me.reply(message, message.body)
                noted.append((message.body, got, time.perf_counter()))
                if message.body == STOP:
                    return
    finally:
        board.close()
        if marks is not None:
            marks.put(noted)


def _redis_responder(port: int, ready: Event) -> None:
    import redis

    client: Any = redis.Redis(host="127.0.0.1", port=port)
    ready.set()
    while True:
        popped = client.brpop("req", timeout=60)
        if popped is None:
            return
        client.lpush("rep", popped[1])
        if popped[1] == STOP.encode():
            return


def _sender(system: str, where: str, k: int, count: int, barrier: Barrier, ends: Queue[float]) -> None:
    """Send `count` messages to the sink; put the time of the last one's return (CLOCK_MONOTONIC: one
    clock for every process of the host), or nan if it failed."""
    end = float("nan")
    try:
        end = _send_all(system, where, k, count, barrier)
    finally:
        ends.put(end)


def _send_all(system: str, where: str, k: int, count: int, barrier: Barrier) -> float:
    if system == OURS:
        from blackboard import Board

        board = Board.open(where)
        try:
            me = board.agent(f"s{k}", join=False)
            me.send("sink", {"s": -1, "i": k})  # warm up: first-use costs are not a send's
            barrier.wait(120)
            for i in range(count):
                me.send("sink", {"s": k, "i": i})
            return time.perf_counter()  # before close(), which brings the entry files up to date
        finally:
            board.close()
    import orjson
    import redis

    client: Any = redis.Redis(host="127.0.0.1", port=int(where))
    client.ping()
    barrier.wait(120)
    for i in range(count):
        client.lpush("sink", orjson.dumps({"s": k, "i": i}))
    return time.perf_counter()


@contextlib.contextmanager
def _process(target: Callable[..., None], *args: Any) -> Iterator[Event]:
    ready = SPAWN.Event()
    proc = SPAWN.Process(target=target, args=(*args, ready))
    proc.start()
    try:
        if not ready.wait(60):
            raise RuntimeError(f"{target.__name__} not ready after 60 s")
        yield ready
    finally:
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join()


# -- round trip ----------------------------------------------------------------------------------------


def _roundtrip_ours(root: Path, trips: int, *, hold: bool = False) -> list[float]:
    from blackboard import Board

    board = Board.init(root / "board")
    try:
        with (
            _process(_responder, str(root / "board"), hold, None),
            _hold(board) if hold else contextlib.nullcontext(),
            board.agent("client", ttl=30) as me,
        ):
            out = []
            try:
                for i in range(WARMUP + trips):
                    t0 = time.perf_counter()
                    reply = me.request("srv", i, timeout=10)
                    elapsed = time.perf_counter() - t0
                    if reply.body != i:
                        raise RuntimeError(f"request {i} got the reply {reply.body!r}")
                    if i >= WARMUP:
                        out.append(elapsed)
            finally:
                me.request("srv", STOP, timeout=10)
            return out
    finally:
        board.close()


#: The phases of one round trip, in order (the breakdown's rows).
PHASES = ("client send", "responder wakes", "reply + ack txn", "client wakes", "client acks reply")


def _breakdown(root: Path, trips: int, *, hold: bool) -> dict[str, list[float]]:
    """Where a round trip's time goes: `messages.send` and `messages.wait_for`, which `request`
    calls, are wrapped in this process to note when each returns; the responder notes when its loop
    gets each request and when its reply returns. One clock (CLOCK_MONOTONIC) for both processes."""
    from blackboard import Board
    from blackboard.agents import messages

    marks: Queue[list[tuple[Any, float, float]]] = SPAWN.Queue()
    board = Board.init(root / "board")
    send, wait_for = messages.send, messages.wait_for
    now: dict[str, float] = {}

    def timed_send(*args: Any, **options: Any) -> Any:
        sent = send(*args, **options)
        now["sent"] = time.perf_counter()
        return sent

    def timed_wait(*args: Any, **options: Any) -> Any:
        got = wait_for(*args, **options)
        now["got"] = time.perf_counter()
        return got

    client: list[tuple[int, float, float, float, float]] = []
    messages.send, messages.wait_for = timed_send, timed_wait
    try:
        with (
            _process(_responder, str(root / "board"), hold, marks),
            _hold(board) if hold else contextlib.nullcontext(),
            board.agent("client", ttl=30) as me,
        ):
            try:
                for i in range(WARMUP + trips):
                    t0 = time.perf_counter()
                    me.request("srv", i, timeout=10)
                    client.append((i, t0, now["sent"], now["got"], time.perf_counter()))
            finally:
                me.request("srv", STOP, timeout=10)
            served = {body: (got, replied) for body, got, replied in marks.get(timeout=30)}
    finally:
        messages.send, messages.wait_for = send, wait_for
        board.close()
    phases: dict[str, list[float]] = {p: [] for p in (*PHASES, "total")}
    for i, t0, sent, got, end in client[WARMUP:]:
        woken, replied = served[i]
        for phase, seconds in zip(
            (*PHASES, "total"),
            (sent - t0, woken - sent, replied - woken, got - replied, end - got, end - t0),
            strict=True,
        ):
            phases[phase].append(seconds)
    return phases


def _roundtrip_redis(server: Server, trips: int) -> list[float]:
    import redis

    client: Any = redis.Redis(host=server.host, port=server.port)
    client.delete("req", "rep")
    out = []
    with _process(_redis_responder, server.port):
        try:
            for i in range(WARMUP + trips):
                t0 = time.perf_counter()
                client.lpush("req", str(i))
                popped = client.brpop("rep", timeout=10)
                elapsed = time.perf_counter() - t0
                if popped is None or popped[1] != str(i).encode():
                    raise RuntimeError(f"request {i} got the reply {popped!r}")
                if i >= WARMUP:
                    out.append(elapsed)
        finally:
            client.lpush("req", STOP)
            client.brpop("rep", timeout=10)
    client.close()
    return out


# -- fan-in --------------------------------------------------------------------------------------------


class Tally:
    """What the consumer got: checks count, no duplicate, and each sender's order."""

    def __init__(self, senders: int) -> None:
        self.last = [-1] * senders
        self.got = 0
        self.problems: list[str] = []

    def take(self, body: Any) -> None:
        s, i = body["s"], body["i"]
        if s < 0:  # a sender's warm-up message
            return
        if i <= self.last[s]:
            self.problems.append(f"sender {s}: message {i} after {self.last[s]} (duplicate or out of order)")
        self.last[s] = i
        self.got += 1


def _fanin(
    system: str, where: str, senders: int, count: int, consume: Callable[[Tally, int], None]
) -> tuple[float, float]:
    """(messages consumed per second, messages sent per second), from the senders' release."""
    barrier = SPAWN.Barrier(senders + 1)
    ends: Queue[float] = SPAWN.Queue()
    procs = [SPAWN.Process(target=_sender, args=(system, where, k, count, barrier, ends)) for k in range(senders)]
    for proc in procs:
        proc.start()
    tally = Tally(senders)
    try:
        barrier.wait(120)
        t0 = time.perf_counter()
        consume(tally, senders * count)
        elapsed = time.perf_counter() - t0
        sent = max(ends.get(timeout=60) for _ in procs) - t0
    finally:
        for proc in procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if tally.got != senders * count:
        tally.problems.append(f"{tally.got} of {senders * count} messages delivered")
    if tally.problems:
        raise RuntimeError("; ".join(tally.problems[:3]))
    return senders * count / elapsed, senders * count / sent


def _fanin_ours(root: Path, senders: int, count: int) -> tuple[float, float]:
    from blackboard import Board

    board = Board.init(root / "board")
    acked: set[str] = set()

    def consume(tally: Tally, total: int) -> None:
        while tally.got < total:
            batch = me.inbox(wait=10)
            if not batch:
                raise RuntimeError(f"no message for 10 s after {tally.got}")
            for message in batch:
                if message.id in acked:
                    tally.problems.append(f"message {message.id} listed again after its ack")
                    continue
                tally.take(message.body)
                me.ack(message)
                acked.add(message.id)

    try:
        with board.agent("sink", ttl=30) as me:
            return _fanin(OURS, str(root / "board"), senders, count, consume)
    finally:
        board.close()


def _fanin_redis(server: Server, senders: int, count: int) -> tuple[float, float]:
    import orjson
    import redis

    client: Any = redis.Redis(host=server.host, port=server.port)
    client.delete("sink")

    def consume(tally: Tally, total: int) -> None:
        while tally.got < total:
            # Like inbox(wait=): wait for one, then take every one waiting (RPOP with a count, oldest first).
            popped = client.brpop("sink", timeout=10)
            if popped is None:
                raise RuntimeError(f"no message for 10 s after {tally.got}")
            for data in [popped[1], *(client.rpop("sink", 1000) or [])]:
                tally.take(orjson.loads(data))

    try:
        return _fanin(REDIS, str(server.port), senders, count, consume)
    finally:
        client.close()


# -- the CLI and who -----------------------------------------------------------------------------------


def cli() -> list[str]:
    script = Path(sys.executable).parent / "blackboard"
    return [str(script)] if script.exists() else [sys.executable, "-m", "blackboard"]


def cli_has_request() -> bool:
    done = subprocess.run([*cli(), "request", "--help"], capture_output=True, check=False)
    return done.returncode == 0


def _cli_request(root: Path, runs: int) -> tuple[list[float], list[float]]:
    """(request wall times, read wall times), in turns, after one untimed warm-up of each."""
    from blackboard import Board

    board_dir = str(root / "board")
    board = Board.init(board_dir)
    board.write("k", 1)
    request = [*cli(), "--board", board_dir, "--as", "c", "request", "srv", '{"n": 1}', "--timeout", "10"]
    read = [*cli(), "--board", board_dir, "read", "k"]
    times: dict[str, list[float]] = {"request": [], "read": []}
    try:
        with _process(_responder, board_dir, False, None):
            try:
                for i in range(runs + 1):
                    for name in rotated(("request", "read"), i):
                        command = request if name == "request" else read
                        t0 = time.perf_counter()
                        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
                        elapsed = time.perf_counter() - t0
                        if done.returncode != 0 or (
                            name == "request" and '"n": 1' not in done.stdout.replace('"n":1', '"n": 1')
                        ):
                            raise RuntimeError(
                                f"{' '.join(command[-6:])}: exit {done.returncode}: "
                                f"{(done.stdout + done.stderr).strip()[:200]}"
                            )
                        if i:
                            times[name].append(elapsed)
            finally:
                with board.agent("stopper", join=False) as me:
                    me.request("srv", STOP, timeout=10)
    finally:
        board.close()
    return times["request"], times["read"]


def _who(root: Path, registered: int) -> tuple[float, int]:
    import os

    from blackboard import Board
    from blackboard.agents import presence

    board = Board.init(root / "board")
    try:
        for n in range(registered):
            presence.register(board, f"agent-{n:04d}", capabilities=[f"c{n % 10}"], ttl=600, pid=os.getpid())
        me = board.agent("agent-0000", join=False)
        me.who()  # warm up
        times = []
        for _ in range(WHO_CALLS):
            t0 = time.perf_counter()
            found = me.who()
            times.append(time.perf_counter() - t0)
        online = sum(a.online for a in found)
        return median(times), online
    finally:
        board.close()


# -- the section -----------------------------------------------------------------------------------------


def _attempt(bench: Bench, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        bench.problems.append(f"agents, {what}: {exc}")
        bench.log(f"agents  {what}: FAILED: {exc}")
        return None


def _ms(values: list[float], q: float) -> float:
    return percentile(sorted(values), q) * 1e3 if values else float("nan")


def _start(bench: Bench, fs: Filesystem) -> tuple[Server | None, str]:
    try:
        return start_redis(bench.fresh_dir(fs, "redis")), ""
    except Unavailable as exc:
        return None, str(exc)


def _rows_fs(bench: Bench, fs: Filesystem) -> list[Row]:
    sizes, reps = SIZES, bench.sizes.reps
    server, why = _start(bench, fs)
    systems = (OURS, REDIS) if server is not None else (OURS,)
    skipped = {} if server is not None else {REDIS: why}
    trip_systems = (*systems, HELD)
    trips: dict[str, list[float]] = {s: [] for s in trip_systems}
    rates: dict[str, list[float]] = {s: [] for s in systems}
    sends: dict[str, list[float]] = {s: [] for s in systems}
    per_run = max(1, -(-sizes.roundtrips // reps))  # rounded up: at least `roundtrips` in all

    def trip_run(system: str, root: Path) -> list[float]:
        if system in (OURS, HELD):
            return _roundtrip_ours(root, per_run, hold=system == HELD)
        assert server is not None
        return _roundtrip_redis(server, per_run)

    def fanin_run(system: str, root: Path) -> tuple[float, float]:
        if system == OURS:
            return _fanin_ours(root, sizes.senders, sizes.messages)
        assert server is not None
        return _fanin_redis(server, sizes.senders, sizes.messages)

    try:
        for rep in range(reps):
            for system in rotated(trip_systems, rep):
                root = bench.fresh_dir(fs, "agents-roundtrip")
                got = _attempt(bench, f"{fs.label} {system} round trip", functools.partial(trip_run, system, root))
                shutil.rmtree(root, ignore_errors=True)
                if got:
                    trips[system] += got
                    bench.log(
                        f"agents  {fs.label:5} round trip {system:20} {len(got)} trips"
                        f"  p50 {_ms(got, 0.5):.3f} p99 {_ms(got, 0.99):.3f} max {_ms(got, 1.0):.3f} ms"
                    )
            for system in rotated(systems, rep):
                root = bench.fresh_dir(fs, f"agents-fanin-{system}")
                got_rates = _attempt(bench, f"{fs.label} {system} fan-in", functools.partial(fanin_run, system, root))
                shutil.rmtree(root, ignore_errors=True)
                if got_rates is not None:
                    rates[system].append(got_rates[0])
                    sends[system].append(got_rates[1])
                    bench.log(
                        f"agents  {fs.label:5} fan-in {system:10} {sizes.senders} x {sizes.messages} messages:"
                        f" {got_rates[0]:,.0f} consumed/s, {got_rates[1]:,.0f} sent/s; all delivered once, in order"
                    )
    finally:
        if server is not None:
            server.stop()

    others = [s for s in systems if s != OURS]

    rows = []
    for q, bound, label in ((0.5, 5.0, "p50"), (0.99, 15.0, "p99")):
        row = Row("agents", f"request -> reply round trip, {label}", fs.label, "ms", False, _ms(trips[OURS], q))
        row.peers = {s: _ms(trips[s], q) for s in (*others, HELD)}
        row.skipped = dict(skipped)
        row.target = Target(bound, inclusive=True)
        row.note = (
            f"{len(trips[OURS])} trips after {WARMUP} warm-up per run; redis: LPUSH + BRPOP each way;"
            f" {HELD}: the same with a subscription held open in both processes"
        )
        rows.append(row)
    fan = Row(
        "agents",
        f"fan-in, {sizes.senders} senders x {sizes.messages:,}, consumed",
        fs.label,
        "msg/s",
        True,
        median(rates[OURS]),
    )
    fan.peers, fan.skipped = {s: median(rates[s]) for s in others}, dict(skipped)
    fan.note = "ours: send / inbox + ack each; redis: LPUSH / BRPOP + RPOP 1000; checked: all delivered, once, in order"
    sent = Row("agents", "fan-in, sent (the senders alone)", fs.label, "msg/s", True, median(sends[OURS]))
    sent.peers, sent.skipped = {s: median(sends[s]) for s in others}, dict(skipped)
    sent.note = "messages / (release -> the last sender's last send), while the sink consumes"
    rows += [fan, sent]
    return rows


def _rows_once(bench: Bench) -> list[Row]:
    """The round trip's breakdown, the CLI and `who`, on the first filesystem only."""
    fs, sizes = bench.filesystems[0], SIZES
    rows = []
    phases: dict[str, dict[str, list[float]]] = {OURS: {}, HELD: {}}
    for rep in range(bench.sizes.reps):
        for variant in rotated((OURS, HELD), rep):
            root = bench.fresh_dir(fs, "agents-breakdown")
            run = functools.partial(
                _breakdown, root, max(1, -(-sizes.roundtrips // bench.sizes.reps)), hold=variant == HELD
            )
            got = _attempt(bench, f"{fs.label} {variant} breakdown", run)
            shutil.rmtree(root, ignore_errors=True)
            for phase, seconds in (got or {}).items():
                phases[variant].setdefault(phase, []).extend(seconds)
            if got:
                shown = ", ".join(f"{phase} {_ms(seconds, 0.5):.3f}" for phase, seconds in got.items())
                bench.log(f"agents  {fs.label:5} breakdown {variant:20} p50 ms: {shown}")
    for phase in (*PHASES, "total"):
        row = Row(
            "agents",
            f"round trip breakdown: {phase}, p50",
            fs.label,
            "ms",
            False,
            _ms(phases[OURS].get(phase, []), 0.5),
        )
        row.peers = {HELD: _ms(phases[HELD].get(phase, []), 0.5)}
        if phase == PHASES[0]:
            row.note = "each phase's own p50 (they need not add up to the total's); one clock for both processes"
        rows.append(row)
    root = bench.fresh_dir(fs, "agents-cli")
    try:
        cli_row = Row("agents", "`blackboard request` from the shell, p50", fs.label, "ms", False, float("nan"))
        if not cli_has_request():
            cli_row.note = "skipped: this build's CLI has no `request` command"
            bench.log(f"agents  {cli_row.note}")
        else:
            got = _attempt(bench, "cli request", functools.partial(_cli_request, root, sizes.cli_runs))
            if got is not None:
                requests, reads = got
                cli_row.ours, cli_row.peers = _ms(requests, 0.5), {CLI_READ: _ms(reads, 0.5)}
                cli_row.note = (
                    f"{len(requests)} runs, subprocess wall time (fork/exec to exit); p90 {_ms(requests, 0.9):.0f} ms;"
                    f" column: `blackboard read k` in turns (the CLI's start-up)"
                )
                bench.log(
                    f"agents  {fs.label:5} cli request p50 {cli_row.ours:.1f} ms p90 {_ms(requests, 0.9):.1f} ms;"
                    f" cli read p50 {_ms(reads, 0.5):.1f} ms"
                )
        rows.append(cli_row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    root = bench.fresh_dir(fs, "agents-who")
    try:
        got = _attempt(bench, "who", functools.partial(_who, root, sizes.registered))
        seconds, online = got if got is not None else (float("nan"), 0)
        metric = f"who at {sizes.registered:,} registered agents, median"
        row = Row("agents", metric, fs.label, "ms", False, seconds * 1e3)
        row.target = Target(50.0)
        row.note = f"in-process me.who(); {online} listed online; each agent's pid checked against /proc"
        bench.log(f"agents  {fs.label:5} who at {sizes.registered} agents: {seconds * 1e3:.2f} ms, {online} online")
        rows.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


@section("agents", "agents layer: request/reply round trip and fan-in vs redis, `blackboard request`, who at 1k")
def agents(bench: Bench) -> list[Row]:
    rows = []
    for fs in bench.filesystems:
        rows += _rows_fs(bench, fs)
    rows += _rows_once(bench)
    for row in rows:
        if row.target is not None:
            verdict = {"PASS": "PASS", "MISS": "FAIL"}.get(row.result, row.result)
            print(f"agents: {row.metric} on {row.fs}: {row.ours:.2f} {row.unit} ({row.target_text}): {verdict}")
    return rows

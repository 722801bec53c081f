"""Change-notification latency: a writer in the bench process, a listener in another, matched by seq.

The writer writes one change every 2-4 ms (never a burst) and notes the time just before the write
call and just after it returns; the listener notes the time each change reaches it. Both use
time.monotonic(), which is CLOCK_MONOTONIC: one clock for every process on the host, so the two
processes' times compare directly. Before the writes, the listener watches for `idle` seconds with
nothing happening, and measures its own CPU time over that window (resource.getrusage: all its
threads); for a server-based peer the server's CPU over the same window is added (from /proc).

Listeners: blackboard `board.watch(prefix, poll=...)`; Redis pub/sub (the writer SETs the key, then
PUBLISHes the value); an etcd watch over the v3 HTTP/JSON gateway (a streaming POST /v3/watch; puts
with POST /v3/kv/put); a sqlite loop polling `SELECT max(seq)` every 1 ms while the writer INSERTs a
row per change. Redis and etcd run on 127.0.0.1, on a free port, with a temp data dir, started here
and stopped after; absent ones are skipped and say so.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import random
import resource
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import traceback
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import orjson
from _peers import PAYLOAD, prefix_end

clock = time.monotonic  # CLOCK_MONOTONIC on Linux: system-wide, so it compares across processes

OURS = "blackboard"
REDIS = "redis"
ETCD = "etcd"
SQLITE_POLL = "sqlite poll"
LIVE_PEERS = (REDIS, ETCD, SQLITE_POLL)

PREFIX = "lat/"
CHANNEL = "lat"
KEYS = 10  # the writer cycles through this many keys under PREFIX
SPACING = (0.002, 0.004)  # seconds between the end of one write and the start of the next
WARMUP = 20  # changes written and delivered first, not counted (first-use costs: threads, statements)
SQLITE_POLL_INTERVAL = 0.001
READY = "ready"


def key_for(seq: int) -> str:
    return f"{PREFIX}{seq % KEYS}"


def value_for(seq: int) -> bytes:
    return orjson.dumps({"seq": seq, "payload": PAYLOAD})


@dataclass(frozen=True)
class Job:
    """What a listener watches, and for which seqs (first..last, 1-based: a fresh store's first write is 1)."""

    system: str
    target: str  # the board directory, the sqlite file, or "host:port" of a server
    first: int
    last: int
    idle: float  # seconds of idle watching measured before the writes start (0: none)
    poll: bool = False
    poll_interval: float | None = None

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    @property
    def patience(self) -> float:
        """How long the listener waits for the writes in all (they take ~3 ms each)."""
        return self.idle + self.count * 0.01 + 15.0


@dataclass
class Heard:
    received: bytes = b""  # array("d"): when seq first + k arrived, NaN if it never did
    idle_cpu_s: float = 0.0
    idle_wall_s: float = 0.0
    error: str = ""


@dataclass
class LatencyRun:
    system: str
    after_ms: list[float] = field(default_factory=list)  # arrival - the write call's return, per change
    before_ms: list[float] = field(default_factory=list)  # arrival - the write call's start
    lost: int = 0  # counted changes that never arrived
    cpu_s: float = 0.0  # the listener's CPU (+ the server's) while idle
    idle_s: float = 0.0


# -- the listener process -----------------------------------------------------------------------------


class IdleMeter:
    """The process's CPU time (every thread) over `seconds` from start(), measured by a sleeping thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self._thread = threading.Thread(target=self._run, name="bench-idle-meter", daemon=True)

    @staticmethod
    def _cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def _run(self) -> None:
        cpu0, t0 = self._cpu(), clock()
        time.sleep(self.seconds)
        self.cpu_s, self.wall_s = self._cpu() - cpu0, clock() - t0

    def start(self) -> None:
        if self.seconds > 0:
            self._thread.start()

    def finish(self, heard: Heard) -> None:
        if self.seconds > 0:
            self._thread.join()
        heard.idle_cpu_s, heard.idle_wall_s = self.cpu_s, self.wall_s


class Arrivals:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.times = array("d", [math.nan]) * job.count
        self.done = False

    def note(self, seq: int, t: float) -> None:
        k = seq - self.job.first
        if 0 <= k < len(self.times) and math.isnan(self.times[k]):
            self.times[k] = t
        if seq >= self.job.last:
            self.done = True


def _ready(job: Job, conn: Connection) -> tuple[Arrivals, IdleMeter]:
    """Start counting arrivals and idle CPU, and tell the driver this listener is listening."""
    arrivals = Arrivals(job)
    meter = IdleMeter(job.idle)
    meter.start()
    conn.send(READY)
    return arrivals, meter


def _listen_board(job: Job, conn: Connection, heard: Heard) -> None:
    from blackboard import Board

    board = Board.open(job.target, read_only=True)
    try:
        with board.watch(PREFIX, poll=job.poll, poll_interval=job.poll_interval, timeout=job.patience) as watcher:
            arrivals, meter = _ready(job, conn)
            for event in watcher:
                arrivals.note(event.seq, clock())
                if arrivals.done:
                    break
        meter.finish(heard)
        heard.received = arrivals.times.tobytes()
    finally:
        board.close()


def _host_port(target: str) -> tuple[str, int]:
    host, port = target.rsplit(":", 1)
    return host, int(port)


def _listen_redis(job: Job, conn: Connection, heard: Heard) -> None:
    import redis

    host, port = _host_port(job.target)
    client: Any = redis.Redis(host=host, port=port)  # redis-py's pubsub() has no type hints
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(CHANNEL)
        deadline = clock() + 10
        while clock() < deadline:  # the confirmation: from here on, every PUBLISH reaches us
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "subscribe":
                break
        else:
            raise TimeoutError("redis: no subscribe confirmation")
        arrivals, meter = _ready(job, conn)
        deadline = clock() + job.patience
        while not arrivals.done and clock() < deadline:
            message = pubsub.get_message(timeout=1.0)
            t = clock()
            if message is not None and message["type"] == "message":
                arrivals.note(orjson.loads(message["data"])["seq"], t)
        meter.finish(heard)
        heard.received = arrivals.times.tobytes()
    finally:
        pubsub.close()
        client.close()


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _listen_etcd(job: Job, conn: Connection, heard: Heard) -> None:
    host, port = _host_port(job.target)
    session = http.client.HTTPConnection(host, port, timeout=job.patience)
    try:
        body = {"create_request": {"key": b64(PREFIX), "range_end": b64(prefix_end(PREFIX))}}
        session.request("POST", "/v3/watch", body=json.dumps(body), headers={"Content-Type": "application/json"})
        stream = session.getresponse()
        if stream.status != 200:
            raise RuntimeError(f"etcd watch: HTTP {stream.status} {stream.read()[:200]!r}")
        created = json.loads(stream.readline())
        if not created.get("result", {}).get("created"):
            raise RuntimeError(f"etcd watch not created: {created}")
        arrivals, meter = _ready(job, conn)
        while not arrivals.done:
            line = stream.readline()  # one JSON message per line, flushed as each event happens
            t = clock()
            if not line:
                break
            for event in json.loads(line).get("result", {}).get("events", []):
                arrivals.note(orjson.loads(base64.b64decode(event["kv"]["value"]))["seq"], t)
        meter.finish(heard)
        heard.received = arrivals.times.tobytes()
    finally:
        session.close()


def _listen_sqlite(job: Job, conn: Connection, heard: Heard) -> None:
    con = sqlite3.connect(job.target, isolation_level=None)
    try:
        query = "SELECT max(seq) FROM log"
        seen = con.execute(query).fetchone()[0] or 0
        arrivals, meter = _ready(job, conn)
        deadline = clock() + job.patience
        while not arrivals.done and clock() < deadline:
            top = con.execute(query).fetchone()[0]
            if top is not None and top > seen:
                t = clock()
                for seq in range(seen + 1, top + 1):
                    arrivals.note(seq, t)
                seen = top
            time.sleep(SQLITE_POLL_INTERVAL)
        meter.finish(heard)
        heard.received = arrivals.times.tobytes()
    finally:
        con.close()


_LISTENERS: dict[str, Callable[[Job, Connection, Heard], None]] = {
    OURS: _listen_board,
    REDIS: _listen_redis,
    ETCD: _listen_etcd,
    SQLITE_POLL: _listen_sqlite,
}


def _listener_main(conn: Connection) -> None:
    while True:
        job = conn.recv()
        if job is None:
            return
        heard = Heard()
        try:
            _LISTENERS[job.system](job, conn, heard)
        except Exception:
            heard.error = traceback.format_exc()
        conn.send(heard)


# -- writers (in the bench process) ---------------------------------------------------------------------


class Writer:
    """One store's write of change `seq`; `close()` releases it."""

    def write(self, seq: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class BoardWriter(Writer):
    def __init__(self, path: Path) -> None:
        from blackboard import Board

        self.board = Board.open(path)

    def write(self, seq: int) -> None:
        entry = self.board.write(key_for(seq), {"seq": seq, "payload": PAYLOAD})
        if entry.seq != seq:
            raise RuntimeError(f"blackboard: the write of change {seq} got seq {entry.seq}")

    def close(self) -> None:
        self.board.close()


class RedisWriter(Writer):
    def __init__(self, target: str) -> None:
        import redis

        host, port = _host_port(target)
        self.client = redis.Redis(host=host, port=port)
        self.client.ping()

    def write(self, seq: int) -> None:
        value = value_for(seq)
        self.client.set(key_for(seq), value)
        self.client.publish(CHANNEL, value)

    def close(self) -> None:
        self.client.close()


class EtcdWriter(Writer):
    def __init__(self, target: str) -> None:
        host, port = _host_port(target)
        self.http = http.client.HTTPConnection(host, port, timeout=30)  # one keep-alive connection

    def write(self, seq: int) -> None:
        body = json.dumps({"key": b64(key_for(seq)), "value": b64(value_for(seq))})
        self.http.request("POST", "/v3/kv/put", body=body, headers={"Content-Type": "application/json"})
        response = self.http.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"etcd put: HTTP {response.status} {data[:200]!r}")

    def close(self) -> None:
        self.http.close()


class SqliteWriter(Writer):
    """A log row per change, one transaction each, WAL, synchronous=NORMAL (the writes section's default)."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB)")

    def write(self, seq: int) -> None:
        self.con.execute("INSERT INTO log (seq, key, value) VALUES (?, ?, ?)", (seq, key_for(seq), value_for(seq)))

    def close(self) -> None:
        self.con.close()


def drive(writer: Writer, first: int, last: int, rng: random.Random) -> tuple[array[float], array[float]]:
    """Write changes first..last, 2-4 ms apart; (start, return) time of each write call."""
    starts: array[float] = array("d")
    ends: array[float] = array("d")
    due = clock()
    for seq in range(first, last + 1):
        pause = due - clock()
        if pause > 0:
            time.sleep(pause)
        t0 = clock()
        writer.write(seq)
        t1 = clock()
        starts.append(t0)
        ends.append(t1)
        due = t1 + rng.uniform(*SPACING)
    return starts, ends


# -- servers --------------------------------------------------------------------------------------------


class Unavailable(Exception):
    """A peer that cannot be measured here; the message says why (shown in its table cell)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    data_dir: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far (clock ticks: 10 ms resolution)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _wait_until(server: Server, ready: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = clock() + timeout
    while clock() < deadline:
        if server.proc.poll() is not None:
            raise Unavailable(f"exited at start (status {server.proc.returncode})")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.05)
    server.stop()
    raise Unavailable(f"not ready after {timeout:g} s")


def start_redis(data_dir: Path) -> Server:
    exe = shutil.which("redis-server")
    if exe is None:
        raise Unavailable("not installed")
    try:
        import redis
    except ImportError:
        raise Unavailable("no redis Python client (pip install redis)") from None
    port = free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", ""]
    args += ["--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", "--logfile", ""]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(REDIS, "127.0.0.1", port, proc, data_dir)

    def ready() -> bool:
        client = redis.Redis(host=server.host, port=port, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    _wait_until(server, ready)
    return server


def start_etcd(data_dir: Path) -> Server:
    exe = shutil.which("etcd")
    if exe is None:
        raise Unavailable("not installed")
    client, peer = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    args = [exe, "--name", "bench", "--data-dir", str(data_dir / "etcd"), "--log-level", "error"]
    args += ["--listen-client-urls", client_url, "--advertise-client-urls", client_url]
    args += ["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url]
    args += ["--initial-cluster", f"bench={peer_url}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(ETCD, "127.0.0.1", client, proc, data_dir)

    def ready() -> bool:
        session = http.client.HTTPConnection(server.host, client, timeout=1)
        try:
            session.request("GET", "/health")
            return bool(json.loads(session.getresponse().read()).get("health") == "true")
        finally:
            session.close()

    _wait_until(server, ready)
    return server


STARTERS: dict[str, Callable[[Path], Server]] = {REDIS: start_redis, ETCD: start_etcd}


# -- the listener, from the bench process ---------------------------------------------------------------


class Listener:
    """A spawned listener process, reused job after job (spawning one costs ~0.5 s); always close() it."""

    def __init__(self) -> None:
        self._proc: SpawnProcess | None = None
        self._conn: Connection | None = None

    def _start(self) -> Connection:
        if self._conn is None:
            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            self._proc = ctx.Process(target=_listener_main, args=(theirs,), name="bench-listener", daemon=True)
            self._proc.start()
            theirs.close()
            self._conn = ours
        return self._conn

    def _recv(self, conn: Connection, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise TimeoutError(f"the listener did not answer within {timeout:g} s")
        return conn.recv()

    def run(self, job: Job, writer: Writer, server: Server | None, rng: random.Random) -> LatencyRun:
        conn = self._start()
        try:
            conn.send(job)
            first = self._recv(conn, 60)
            if isinstance(first, Heard):
                raise RuntimeError(f"{job.system} listener failed:\n{first.error}")
            server_cpu = server.cpu_seconds() if server is not None else 0.0
            if job.idle:
                time.sleep(job.idle + 0.05)  # the listener's idle window, then a margin
            server_cpu = server.cpu_seconds() - server_cpu if server is not None else 0.0
            starts, ends = drive(writer, job.first, job.last, rng)
            heard = self._recv(conn, job.patience + 30)
        except BaseException:
            self.close(force=True)  # out of step with the protocol: the next run starts a fresh one
            raise
        if heard.error:
            raise RuntimeError(f"{job.system} listener failed:\n{heard.error}")
        arrived: array[float] = array("d")
        arrived.frombytes(heard.received)
        run = LatencyRun(job.system, cpu_s=heard.idle_cpu_s + server_cpu, idle_s=heard.idle_wall_s)
        for k in range(WARMUP, job.count):
            if math.isnan(arrived[k]):
                run.lost += 1
                continue
            run.after_ms.append((arrived[k] - ends[k]) * 1e3)
            run.before_ms.append((arrived[k] - starts[k]) * 1e3)
        return run

    def close(self, *, force: bool = False) -> None:
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            with contextlib.suppress(OSError):
                if not force:
                    conn.send(None)
            conn.close()
        if proc is not None:
            proc.join(timeout=0 if force else 10)
            if proc.is_alive():  # ours, by its handle
                proc.terminate()
                proc.join()

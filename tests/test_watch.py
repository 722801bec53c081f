"""Live subscriptions: `watch`, `awatch`, `subscribe`, cursors and dead letters, across real processes.

The contract under test (Board.watch): every event whose key starts with the prefix, in seq order,
each once; `since=N` replays from after N and goes on live with no seam; a cursor resumes a killed
consumer at least once (only the event in progress at the kill may come twice). What a watcher got
is always judged against the log read back with `json` afterwards, never against the library itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import cast

import pytest
from _watch_workers import (
    assert_events_are_records,
    log_records,
    matching,
    stop_key,
    timed_writer,
    writer_main,
)
from _workers import CTX, Spawn, join_ok, read_docs, wait_until, watch_and_record

from blackboard import Board, Event
from blackboard.core import watch as watch_module

pytestmark = pytest.mark.timeout(60)
#: The stress variants: heavier, and slower still on a loaded 2-core machine.
STRESS = (pytest.mark.stress, pytest.mark.timeout(300))

WRITER_PREFIXES = ("a/", "b/", "c/")
#: Stop keys are written longest prefix first: the "" watcher's own ("stop") must come last.
WATCHED_PREFIXES = ("a/", "b/", "")


# -- fixtures and helpers ---------------------------------------------------------------------------------


@pytest.fixture
def wboard(tmp_path: Path) -> Iterator[Board]:
    """A new board on the real filesystem, closed at teardown."""
    board = Board.init(tmp_path / "board", author="tester")
    yield board
    board.close()


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


# -- many writers, many watchers --------------------------------------------------------------------------


@pytest.mark.parametrize("per_writer", [200, pytest.param(10_000, marks=STRESS)])
@pytest.mark.parametrize("poll", [False, True], ids=["notify", "poll"])
@pytest.mark.parametrize("start", ["ready", "since0"])
def test_watchers_on_prefixes_get_exactly_their_events(
    wboard: Board, spawn: Spawn, tmp_path: Path, start: str, poll: bool, per_writer: int
) -> None:
    """4 writer processes, 3 watcher processes ("a/", "b/", ""): each watcher gets exactly the log's
    matching records, in order, once. `ready`: watchers with since=None, and writers start only once
    every watcher is ready; `since0`: watchers replay from seq 0, started alongside the writers."""
    before = [wboard.write(f"{p}pre", "before the watchers").seq for p in WRITER_PREFIXES]
    path = str(wboard.path)
    go = CTX.Event()
    outs: dict[str, Path] = {}
    readies = []
    watchers = []
    for n, prefix in enumerate(WATCHED_PREFIXES):
        outs[prefix] = tmp_path / f"watcher{n}.jsonl"
        ready = CTX.Event() if start == "ready" else None
        since = None if start == "ready" else 0
        watchers.append(
            spawn(
                watch_and_record,
                path,
                prefix,
                str(outs[prefix]),
                stop_key=stop_key(prefix),
                since=since,
                poll=poll,
                ready=ready,
            )
        )
        if ready is not None:
            readies.append(ready)
    writers = [spawn(writer_main, path, wid, per_writer, WRITER_PREFIXES, go) for wid in range(4)]
    for ready in readies:
        assert ready.wait(30), "a watcher did not get ready"
    go.set()
    for proc in writers:
        join_ok(proc, 60)
    for prefix in sorted(WATCHED_PREFIXES, key=len, reverse=True):
        wboard.write(stop_key(prefix), "stop")
    for proc in watchers:
        join_ok(proc, 30)

    records = log_records(wboard.path)
    assert len(records) == len(before) + 4 * per_writer + len(WATCHED_PREFIXES)
    after = before[-1] if start == "ready" else 0
    for prefix, out in outs.items():
        got = read_docs(out)
        expected = matching(records, prefix, after)
        assert_events_are_records(got, expected)
        assert len({e["seq"] for e in got}) == len(got), "a duplicate"
    # The "" watcher saw everything after its start: the log itself.
    assert [e["seq"] for e in read_docs(outs[""])] == list(range(after + 1, len(records) + 1))


# -- resuming: cursors and since ----------------------------------------------------------------------------


def assert_resumed_runs(runs: list[list[int]], expected: list[int]) -> None:
    """Runs of one cursor consumer, killed between them, together deliver `expected` in order: each
    run goes on where the previous stopped, or one event earlier (the event in progress at the kill)."""
    position = 0
    for n, run in enumerate(runs):
        assert run, f"run {n} received nothing"
        assert run[0] in expected, f"run {n} starts with seq {run[0]}, which it should never get"
        start = expected.index(run[0])
        allowed = (0,) if n == 0 else (position, position - 1)
        assert start in allowed, f"run {n} starts at seq {run[0]} after run {n - 1} ended at {runs[n - 1][-1]}"
        assert run == expected[start : start + len(run)], f"run {n} has a gap, a duplicate or a reordering"
        position = start + len(run)
    assert position == len(expected), f"the runs stop at {runs[-1][-1]}, before the last event {expected[-1]}"


@pytest.mark.parametrize("kills", [2, pytest.param(8, marks=STRESS)])
def test_cursor_consumer_killed_mid_stream_resumes(wboard: Board, spawn: Spawn, tmp_path: Path, kills: int) -> None:
    """A cursor consumer SIGKILLed while writers are busy, restarted each time: every "a/" event
    arrives, in order, with at most one duplicate per kill.

    Nothing here depends on relative speeds: the writers write until told to stop, each kill point
    is chosen by the number of events the run has recorded, and the consumer is frozen (SIGSTOP)
    there while one more "a/" event is written, so it is behind the log when the SIGKILL lands.
    """
    path = str(wboard.path)
    stop = CTX.Event()
    writers = [spawn(writer_main, path, wid, 10**9, ("a/", "b/"), None, stop, 0.002) for wid in range(2)]
    outs: list[Path] = []
    written_at_kill: list[int] = []
    for run in range(kills + 1):
        outs.append(tmp_path / f"run{run}.jsonl")
        out = outs[-1]
        consumer = spawn(
            watch_and_record, path, "a/", str(out), stop_key=stop_key("a/"), since=0, cursor="c", slow=0.003
        )
        if run == kills:
            break

        def got_going(out: Path = out, enough: int = 20 + 5 * run) -> bool:
            return len(read_docs(out)) >= enough

        wait_until(got_going, 30, "the consumer to get going")
        assert consumer.pid is not None
        os.kill(consumer.pid, signal.SIGSTOP)  # the kill point: wherever this run is now
        assert all(w.is_alive() for w in writers), "a writer died"  # they write until `stop`
        written_at_kill.append(wboard.write(f"a/while-frozen-{run}", run).seq)
        os.kill(consumer.pid, signal.SIGKILL)
        consumer.join(10)
        assert consumer.exitcode == -signal.SIGKILL
    stop.set()
    for proc in writers:
        join_ok(proc, 30)
    last = wboard.write(stop_key("a/"), "stop")
    join_ok(consumer, 30)

    runs = [[e["seq"] for e in read_docs(out)] for out in outs]
    expected = [r["seq"] for r in matching(log_records(wboard.path), "a/")]
    assert expected[-1] == last.seq
    for seqs, written in zip(runs, written_at_kill, strict=False):
        assert seqs[-1] < written, "a frozen consumer recorded an event written after it was frozen"
    assert_resumed_runs(runs, expected)
    assert wboard.cursors() == {"c": last.seq}


@pytest.mark.parametrize("poll", [False, True], ids=["notify", "poll"])
@pytest.mark.parametrize("prefix", ["", "a/"])
def test_since_seam_while_writers_busy(wboard: Board, spawn: Spawn, prefix: str, poll: bool) -> None:
    """since=N while writers are busy: the replayed part and the live part meet with no gap and no
    duplicate."""
    stop = CTX.Event()
    writers = [spawn(writer_main, str(wboard.path), wid, 100_000, ("a/", "b/"), None, stop, 0.001) for wid in range(2)]
    wait_until(lambda: wboard.last_seq >= 80, 30, "the writers to get going")
    since = wboard.last_seq - 40
    got: list[Event] = []
    with wboard.watch(prefix, since=since, poll=poll, timeout=20) as watcher:
        assert all(w.is_alive() for w in writers)
        created_at = wboard.last_seq
        for event in watcher:
            got.append(event)
            if event.seq >= created_at + 60 and not stop.is_set():
                stop.set()
                for proc in writers:
                    join_ok(proc, 30)
                wboard.write(stop_key(prefix), "stop")
            if event.key == stop_key(prefix):
                break
    seqs = [e.seq for e in got]
    assert seqs[0] <= created_at < seqs[-2], "no seam: the watch must start in the replay and go on live"
    expected = matching(log_records(wboard.path), prefix, since)
    assert_events_are_records([e.as_dict() for e in got], expected)


@pytest.mark.parametrize("since", [None, 2])
def test_new_cursor_starts_where_since_says(wboard: Board, since: int | None) -> None:
    """A cursor that does not exist yet starts where `since` says (None: at the board's end), and is
    saved there; it does not replay the board from seq 0."""
    for i in range(3):
        wboard.write(f"k/{i}", i)
    with wboard.watch("k/", cursor="fresh", since=since, timeout=0.2) as watcher:
        got = [e.seq for e in watcher]
    assert got == ([] if since is None else [3])
    assert wboard.cursors() == {"fresh": 3}


def test_existing_cursor_wins_over_since_and_can_be_reset(wboard: Board) -> None:
    seqs = [wboard.write(f"k/{i}", i).seq for i in range(3)]
    wboard.write("other", 0)
    wboard.reset_cursor("c", seqs[0])
    assert wboard.cursors() == {"c": seqs[0]}
    with wboard.watch("k/", cursor="c", since=0, timeout=0.2) as watcher:  # the cursor wins over since
        assert [e.seq for e in watcher] == seqs[1:]
    assert wboard.cursors() == {"c": 4}, "an idle watch moves its cursor past non-matching events"
    with wboard.watch("k/", cursor="c", timeout=0.2) as watcher:
        assert list(watcher) == []
    wboard.reset_cursor("c", 0)
    with wboard.watch("k/", cursor="c", timeout=0.2) as watcher:
        assert [e.seq for e in watcher] == seqs
    wboard.reset_cursor("c")
    assert wboard.cursors() == {}


def test_cursor_commits_only_handled_events(wboard: Board) -> None:
    """The cursor records the last event whose handling finished (the next `next`, or `commit()`)."""
    seqs = [wboard.write(f"k/{i}", i).seq for i in range(3)]
    wboard.reset_cursor("c", 0)
    with wboard.watch("k/", cursor="c") as watcher:
        assert next(watcher).seq == seqs[0]
        assert wboard.cursors() == {"c": 0}, "saved before the event was handled"
        assert next(watcher).seq == seqs[1]
        assert wboard.cursors() == {"c": seqs[0]}
        watcher.commit()
        assert wboard.cursors() == {"c": seqs[1]}
    with wboard.watch("k/", cursor="c", timeout=0.2) as watcher:
        assert [e.seq for e in watcher] == seqs[2:]


# -- callbacks: subscribe and dead letters -------------------------------------------------------------------


def test_callback_errors_go_to_dead_letters_and_delivery_continues(wboard: Board) -> None:
    handled: list[int] = []

    def callback(event: Event) -> None:
        if event.key.endswith("bad"):
            raise ValueError(f"cannot handle {event.key}")
        handled.append(event.seq)

    with wboard.subscribe("t/", callback) as sub:
        good1 = wboard.write("t/1", 1)
        bad = wboard.write("t/bad", {"payload": [1, 2]})
        wboard.write("u/ignored", 0)
        good2 = wboard.write("t/2", 2)
        wait_until(lambda: sub.delivered + sub.errors == 3, 10, "delivery")
    assert handled == [good1.seq, good2.seq]
    assert (sub.delivered, sub.errors, sub.error) == (2, 1, None)
    letters = wboard.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert letter["event"]["seq"] == bad.seq
    assert letter["event"]["key"] == "t/bad"
    assert letter["event"]["value"] == {"payload": [1, 2]}
    assert "ValueError" in letter["error"] and "cannot handle t/bad" in letter["error"]
    assert "ValueError: cannot handle t/bad" in letter["traceback"]
    assert letter["prefix"] == "t/"
    with Board.open(wboard.path, read_only=True) as other:  # it is on disk, for every process to see
        assert other.dead_letters() == letters


def test_coroutine_callback_without_running_loop(wboard: Board) -> None:
    got: list[int] = []

    async def callback(event: Event) -> None:
        await asyncio.sleep(0)
        if event.key == "t/bad":
            raise RuntimeError("async failure")
        got.append(event.seq)

    with wboard.subscribe("t/", callback, since=0) as sub:
        seqs = [wboard.write(k, 1).seq for k in ("t/1", "t/bad", "t/2")]
        wait_until(lambda: sub.delivered + sub.errors == 3, 10, "delivery")
    assert got == [seqs[0], seqs[2]]
    assert [letter["event"]["seq"] for letter in wboard.dead_letters()] == [seqs[1]]
    assert "RuntimeError: async failure" in wboard.dead_letters()[0]["error"]


def test_coroutine_callback_runs_on_the_running_loop(wboard: Board) -> None:
    async def main() -> list[tuple[int, bool]]:
        loop = asyncio.get_running_loop()
        got: list[tuple[int, bool]] = []

        async def callback(event: Event) -> None:
            await asyncio.sleep(0)
            got.append((event.seq, asyncio.get_running_loop() is loop))

        sub = wboard.subscribe("t/", callback)
        try:
            for i in range(3):
                wboard.write(f"t/{i}", i)
            deadline = loop.time() + 10
            while len(got) < 3 and loop.time() < deadline:
                await asyncio.sleep(0.01)  # the loop must keep running for the callbacks to run
        finally:
            await asyncio.to_thread(sub.close)
        return got

    got = asyncio.run(main())
    assert got == [(1, True), (2, True), (3, True)]


def test_closing_a_subscription_on_its_loop_does_not_stall_the_loop(wboard: Board) -> None:
    """`with board.subscribe(prefix, async_callback):` inside a coroutine: leaving the block while a
    callback is awaiting something must not block the event loop (the callback needs that loop)."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        async def callback(event: Event) -> None:
            started.set()
            await asyncio.sleep(0.2)  # a callback doing some asynchronous I/O

        with wboard.subscribe("t/", callback):
            wboard.write("t/1", 1)
            await asyncio.wait_for(started.wait(), 10)
            leaving = loop.time()
        return loop.time() - leaving

    assert asyncio.run(main()) < 1.0, "close() blocked the event loop its callback runs on"


def test_awatch_replays_then_goes_live(wboard: Board, spawn: Spawn) -> None:
    """awatch under asyncio.run: since=0 replays, then events written by another process arrive
    while the event loop stays free for other tasks."""
    old = [wboard.write(k, 0).seq for k in ("t/a", "u/x", "t/b")]
    go = CTX.Event()
    spawn(timed_writer, str(wboard.path), ["t/c", "u/y", "t/d"], 0.05, go)

    async def main() -> tuple[list[Event], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        got: list[Event] = []
        events = cast(AsyncGenerator[Event, None], wboard.awatch("t/", since=0, timeout=10))
        async with contextlib.aclosing(events):
            async for event in events:
                got.append(event)
                if len(got) == 2:
                    go.set()  # only now does the other process write: these arrive live
                if len(got) == 4:
                    break
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return got, ticks

    got, ticks = asyncio.run(main())
    assert [e.key for e in got] == ["t/a", "t/b", "t/c", "t/d"]
    assert [e.seq for e in got[:2]] == [old[0], old[2]]
    assert all(e.author == "timed" for e in got[2:])
    assert ticks > 5, "awatch blocked the event loop"


def test_awatch_starts_at_the_call_like_watch(wboard: Board) -> None:
    """awatch(since=None) starts where `awatch()` was called, as watch() does: a reply written
    between the call and the first iteration (ask, then listen) is not lost."""

    async def main() -> list[str]:
        replies = wboard.awatch("reply/", timeout=0.5)
        wboard.write("reply/1", "a fast answer")
        return [event.key async for event in replies]

    assert asyncio.run(main()) == ["reply/1"]


def test_awatch_timeout_ends_iteration(wboard: Board) -> None:
    async def main() -> list[Event]:
        return [event async for event in wboard.awatch("t/", timeout=0.3)]

    started = time.monotonic()
    assert asyncio.run(main()) == []
    assert 0.25 <= time.monotonic() - started < 3


# -- ending a watch ---------------------------------------------------------------------------------------


def test_watch_timeout_ends_iteration(wboard: Board) -> None:
    wboard.write("t/1", 1)
    wboard.write("t/2", 2)
    started = time.monotonic()
    assert [e.key for e in wboard.watch("t/", since=0, timeout=0.3)] == ["t/1", "t/2"]
    assert 0.25 <= time.monotonic() - started < 3
    started = time.monotonic()
    assert list(wboard.watch(timeout=0.2)) == []
    assert 0.15 <= time.monotonic() - started < 3


def test_watch_timeout_counts_idle_time_only(wboard: Board) -> None:
    """`timeout` is seconds without an event: a steady trickle keeps the watch going past it."""

    def trickle() -> None:
        for i in range(6):
            time.sleep(0.05)
            wboard.write(f"t/{i}", i)

    with wboard.watch("t/", timeout=0.6) as watcher:
        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            got = [e.key for e in watcher]
        finally:
            thread.join()
    assert got == [f"t/{i}" for i in range(6)]


@pytest.mark.parametrize("poll", [False, True], ids=["notify", "poll"])
def test_close_from_another_thread_ends_blocked_iteration(wboard: Board, poll: bool) -> None:
    # A long poll interval: if close() did not wake the waiting thread, it would sleep for 5 s.
    watcher = wboard.watch("t/", poll=poll, poll_interval=5.0)
    got: list[Event] = []
    ended = threading.Event()

    def consume() -> None:
        for event in watcher:
            got.append(event)
        ended.set()

    wboard.write("t/1", 1)  # already there at the first look: no wait for a 5 s poll
    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_until(lambda: len(got) == 1, 10, "the first event")
    time.sleep(0.3)  # now blocked, waiting for the next event
    assert thread.is_alive()
    started = time.monotonic()
    watcher.close()
    assert ended.wait(1.0), "close() did not end the iteration within 1 s"
    assert time.monotonic() - started < 1.0
    thread.join(1.0)
    assert not thread.is_alive()
    assert list(watcher) == []  # a closed watcher stays ended


def test_no_threads_left_behind(wboard: Board) -> None:
    """After every kind of subscription is closed (and the board), no thread we started is left,
    and none of ours ever was non-daemon (a non-daemon one would keep the interpreter alive)."""
    before = set(threading.enumerate())
    seen: set[threading.Thread] = set()

    async def async_callback(event: Event) -> None:
        seen.update(new_threads(before))

    with (
        wboard.subscribe("s/", lambda e: seen.update(new_threads(before))) as sub,
        wboard.subscribe("s/", async_callback) as async_sub,
        wboard.watch("s/", poll=False) as watcher,
        wboard.watch("s/", poll=True) as poller,
    ):
        wboard.write("s/1", 1)
        assert next(watcher).key == "s/1"
        assert next(poller).key == "s/1"
        wait_until(lambda: sub.delivered == 1 and async_sub.delivered == 1, 10, "delivery")
        seen.update(new_threads(before))

    async def main() -> None:
        async for _event in wboard.awatch("s/", since=0, timeout=0.1):
            seen.update(new_threads(before))

    asyncio.run(main())
    wboard.close()
    assert seen, "expected subscription, notification and flush threads"
    non_daemon = [t.name for t in seen if not t.daemon]
    assert non_daemon == []
    wait_until(lambda: not new_threads(before), 2, "the threads started here to end")
    assert [t.name for t in threading.enumerate() if t not in before] == []


# -- latency ----------------------------------------------------------------------------------------------


def test_notification_latency_across_processes(wboard: Board, spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    """With notifications, an event written by another process arrives within 1 s (a sanity bound,
    not a benchmark). The watcher's safety re-read is pushed to 30 s: only a notification is in time."""
    monkeypatch.setattr(watch_module, "SAFETY_INTERVAL", 30.0)
    keys = [f"lat/{i}" for i in range(5)]
    go = CTX.Event()
    latencies: list[float] = []
    with wboard.watch("lat/", poll=False, timeout=20) as watcher:
        assert not watcher.polling
        writer = spawn(timed_writer, str(wboard.path), keys, 0.2, go)
        go.set()
        for event in watcher:
            latencies.append(time.time() - event.ts.timestamp())
            if len(latencies) == len(keys):
                break
    join_ok(writer, 10)
    assert len(latencies) == len(keys)
    assert max(latencies) < 1.0, latencies


def test_a_bad_record_stops_a_watcher_every_time_never_skipped(tmp_path: Path) -> None:
    """A record whose ts is not a time: the watcher reports it at its offset, and again on retry."""
    from blackboard import CorruptLog

    with Board.init(tmp_path / "b") as board:
        board.write("a/1", 1)
    with (tmp_path / "b" / "log.jsonl").open("ab") as log:
        log.write(b'{"seq":2,"op":"put","key":"a/2","value":2,"version":1,"author":"x","ts":"yesterday"}\n')
    with Board.open(tmp_path / "b", read_only=True) as board, board.watch("a/", since=0, timeout=0.2) as watcher:
        assert next(watcher).seq == 1
        for _ in range(2):
            with pytest.raises(CorruptLog, match="byte"):
                next(watcher)


def test_close_ends_an_iteration_that_has_events_pending(tmp_path: Path) -> None:
    """Found in review: close() must end the iteration at its next step even mid-batch."""
    with Board.init(tmp_path / "b") as board:
        for i in range(50):
            board.write(f"k/{i}", i)
        watcher = board.watch(since=0)
        assert next(watcher).seq == 1  # the other 49 are pending now
        watcher.close()
        assert list(watcher) == []

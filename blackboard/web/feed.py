"""One page's live feed: a snapshot, then the board's own watch from the snapshot's seq.

The snapshot's key tree is exact at seq S (`Board.snapshot`), and the watch starts after S: no
event is missed or repeated between the two. The log the page shows also gets the last
`BACKLOG` events before S (the watch replays them first; the page adds them to its log only).
Events go out in batches, as fast as they come; the derived sections (agents, leases, ...) are
rebuilt through the library when an event made them stale, at most every `SETTLE` seconds, and
the ones that change with the clock alone every `TICK` seconds. The browser never polls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..board import Board
from ..core import codec as _codec
from ..errors import Compacted
from ..models import Event
from . import views

#: Events before the snapshot that the page's log starts with.
BACKLOG = 200
#: Seconds between two rebuilds of a stale section: 100 events/s cost a few rebuilds a second.
SETTLE = 0.25
#: Seconds between two rebuilds of the sections that change with the clock (stale, expired, idle).
TICK = 2.0
#: Events sent in one message at most (a page that fell behind catches up in big steps).
BATCH = 1000
#: Events held for a slow page at most; past that the watch waits (the board holds the rest).
QUEUE = 10_000


def _message(name: str, data: Any) -> dict[str, str]:
    return {"event": name, "data": _codec.dumps(data).decode()}


async def _pump(board: Board, since: int, backlog: int, out: asyncio.Queue[Event | BaseException]) -> None:
    """Feed `out` from the board's watch; an error (a log gone, a damaged line) is put last, for
    the stream to report: the page then reconnects, from a new snapshot."""
    start = max(0, since - backlog)
    try:
        try:
            async for ev in board.awatch("", since=start):
                await out.put(ev)
        except Compacted:
            if start == since:
                raise
            # The backlog's history was compacted away: the log starts at the snapshot instead.
            async for ev in board.awatch("", since=since):
                await out.put(ev)
    except Exception as exc:  # whatever ends the watch, the page must hear of it
        await out.put(exc)


class _Stale:
    """What one page shows that a change made stale: derived sections, and chats, by id."""

    def __init__(self, board: Board, agent: str | None, sent: dict[str, Any]) -> None:
        self.board = board
        self.agent = agent
        self.sent = sent  # section -> the data the page has
        self.sections: set[str] = set()
        self.chats: set[str] = set()

    def note(self, ev: Event) -> None:
        self.sections |= views.stale_sections(ev.key, self.agent)
        cid = views.conversation_of(ev.key)
        if cid is not None:
            self.chats.add(cid)

    def __bool__(self) -> bool:
        return bool(self.sections or self.chats)

    async def rebuild(self) -> AsyncIterator[dict[str, str]]:
        """Each stale section and chat again, through the library (in a thread: the loop serves on)."""
        for name in sorted(self.sections):
            data = await asyncio.to_thread(views.section, self.board, name, self.agent)
            if self.sent.get(name) != data:  # a tick that changed nothing sends nothing
                self.sent[name] = data
                yield _message("section", {"name": name, "data": data})
        for cid in sorted(self.chats):
            chat = await asyncio.to_thread(views.conversation, self.board, cid)
            if chat is not None:
                yield _message("conversation", chat)
        self.sections.clear()
        self.chats.clear()


async def _batch(queue: asyncio.Queue[Event | BaseException], timeout: float) -> list[Event]:
    """The events waiting, at most BATCH; waits up to `timeout` for the first."""
    batch: list[Event] = []
    with contextlib.suppress(TimeoutError):
        batch.append(await asyncio.wait_for(_get(queue), max(0.0, timeout)))
        while len(batch) < BATCH and not queue.empty():
            batch.append(_get_nowait(queue))
    return batch


async def stream(board: Board, *, agent: str | None, read_only: bool) -> AsyncIterator[dict[str, str]]:
    """The server-sent events of one page: `snapshot`, then `events` (lists of events), `section`
    ({name, data}), `conversation` (one chat, whole) and, if the watch fails, `failed` (the page
    reconnects and starts again from a new snapshot)."""
    snap = await asyncio.to_thread(views.snapshot, board, agent=agent, read_only=read_only)
    yield _message("snapshot", snap)
    seq: int = snap["seq"]
    stale = _Stale(board, agent, {name: snap[name] for name in views.SECTION_NAMES})
    del snap  # a 10,000-key tree need not stay in memory while the page is open
    queue: asyncio.Queue[Event | BaseException] = asyncio.Queue(QUEUE)
    pump = asyncio.create_task(_pump(board, seq, BACKLOG, queue))
    loop = asyncio.get_running_loop()
    next_tick = loop.time() + TICK
    settle_at: float | None = None
    try:
        while True:
            batch = await _batch(queue, (next_tick if settle_at is None else min(next_tick, settle_at)) - loop.time())
            if batch:
                for ev in batch:
                    if ev.seq > seq:  # the backlog is history, in the snapshot already
                        stale.note(ev)
                yield _message("events", [views.event(ev) for ev in batch])
                if stale and settle_at is None:
                    settle_at = loop.time() + SETTLE
            now = loop.time()
            if now >= next_tick:
                stale.sections.update(views.TIMED)
                next_tick = now + TICK
                settle_at = settle_at or now
            if settle_at is not None and now >= settle_at:
                async for message in stale.rebuild():
                    yield message
                settle_at = None
    except _Failed as failed:
        yield _message("failed", {"error": type(failed.error).__name__, "message": str(failed.error)})
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


class _Failed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def _get(queue: asyncio.Queue[Event | BaseException]) -> Event:
    item = await queue.get()
    if isinstance(item, BaseException):
        raise _Failed(item)
    return item


def _get_nowait(queue: asyncio.Queue[Event | BaseException]) -> Event:
    item = queue.get_nowait()
    if isinstance(item, BaseException):
        raise _Failed(item)
    return item

"""Work queues with consumer groups (spec/WORK.md section 2), after Redis Streams and SQS.

Items are the keys under a prefix, taken in the seq order of their puts. A group keeps, as board
keys, its cursor (the seq of the last item it delivered a first time) and one pending record per
item in flight, whose `delivery_id` is fresh at every delivery: an ack quoting an older one is
refused, and the ack, its result and the removal from the pending list are one transaction record,
so an item's effects on the board happen once. Deliveries whose lease ran out are redelivered
(attempt + 1); past `max_deliver` attempts an item moves to the group's dead letters.
"""

from __future__ import annotations

import collections
import contextlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .. import Board, Compacted, Entry, Event, Fenced, InvalidKey, InvalidValue, KeyNotFound, VersionConflict, Watcher
from ..agents import format_ts, off_loop, validate_agent
from .checks import check_seconds

GROUPS = "groups/"
DEFAULT_LEASE = 30.0
DEFAULT_MAX_DELIVER = 5
_DELIVERY = re.compile(r"(?P<group>[A-Za-z0-9][A-Za-z0-9_.-]{0,63}):(?P<item>.+):(?P<tag>[0-9a-f]{8})")


def _keys(group: str) -> tuple[str, str, str, str]:
    base = GROUPS + validate_agent(group)
    return f"{base}/meta", f"{base}/cursor", f"{base}/pending/", f"{base}/dead/"


@dataclass(frozen=True)
class Delivery:
    """One item given to one consumer: `delivery_id` names this delivery only."""

    delivery_id: str
    group: str
    item: str
    value: Any
    item_seq: int
    attempt: int
    consumer: str
    lease: float
    delivered_at: float

    @property
    def idle(self) -> float:
        return time.time() - self.delivered_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "group": self.group,
            "key": self.item,
            "value": self.value,
            "item_seq": self.item_seq,
            "attempt": self.attempt,
            "consumer": self.consumer,
            "lease": self.lease,
            "delivered_at": format_ts(self.delivered_at),
            "idle": round(self.idle, 3),
        }


def _delivery(group: str, entry: Entry, value: Any = None) -> Delivery:
    rec = entry.value
    return Delivery(
        rec["delivery_id"],
        group,
        rec["item"],
        value,
        rec["item_seq"],
        rec["attempt"],
        str(rec.get("consumer")),
        float(rec["lease"]),
        entry.ts.timestamp(),
    )


def group_meta(
    board: Board, group: str, prefix: str, *, max_deliver: int = DEFAULT_MAX_DELIVER, author: str | None = None
) -> dict[str, Any]:
    """The group's settings, creating the group on `prefix` if it does not exist. A group reads one
    prefix: naming another is an error."""
    meta_key = _keys(group)[0]
    board.keys(prefix)  # InvalidKey for a bad prefix
    if type(max_deliver) is not int or max_deliver < 1:
        raise InvalidValue(f"max_deliver is an int >= 1, not {max_deliver!r}")
    entry = board.get(meta_key)
    if entry is None:
        with contextlib.suppress(VersionConflict):  # created by another consumer meanwhile: theirs
            board.write(meta_key, {"prefix": prefix, "max_deliver": max_deliver}, author=author, expect_version=0)
        entry = board.get(meta_key)
        assert entry is not None
    meta: dict[str, Any] = entry.value
    if meta["prefix"] != prefix:
        raise InvalidValue(f"group {group!r} reads {meta['prefix']!r}, not {prefix!r}: one prefix per group")
    return meta


def push(board: Board, prefix: str, value: Any, *, author: str | None = None) -> Entry:
    """Put a new item under `prefix`, named so that key order is push order (`<prefix>000000000042`)."""
    while True:
        name = f"{prefix}{board.last_seq + 1:012d}"
        try:
            return board.write(name, value, author=author, expect_version=0)
        except VersionConflict:
            continue  # another producer took this name: the next seq is free


def _new_id(group: str, item: str) -> str:
    return f"{group}:{item}:{secrets.token_hex(4)}"


def parse_delivery_id(delivery_id: str) -> tuple[str, str]:
    """(group, item key) of a delivery id `<group>:<item key>:<8 hex>`."""
    found = _DELIVERY.fullmatch(delivery_id) if isinstance(delivery_id, str) else None
    if found is None:
        raise InvalidKey(str(delivery_id), "not a delivery id (<group>:<item key>:<8 hex digits>)")
    return found["group"], found["item"]


class Consumer:
    """A consumer of a group: `take()` gives the next delivery. A long-lived consumer keeps one
    reader of the log across takes, so finding new items costs each event once, not once per take."""

    def __init__(
        self,
        board: Board,
        prefix: str,
        group: str,
        consumer: str,
        *,
        lease: float = DEFAULT_LEASE,
        max_deliver: int = DEFAULT_MAX_DELIVER,
    ) -> None:
        self.board = board
        self.prefix = prefix
        self.group = validate_agent(group)
        self.consumer = validate_agent(consumer)
        self.lease = check_seconds("a lease", lease, 0.01)
        self.meta = group_meta(board, group, prefix, max_deliver=max_deliver, author=consumer)
        self._meta_key, self._cursor_key, self._pending, self._dead = _keys(group)
        self._watcher: Watcher | _Backlog | None = None
        #: the position (seq, index in that seq) of the last event our reader passed
        self._at: tuple[int, int] = (-1, -1)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- taking ----------------------------------------------------------------------------------

    def take(self, *, wait: float = 0.0) -> Delivery | None:
        """The next delivery for this consumer (a redelivery of expired work first), waiting up to
        `wait` seconds for one; None if none came."""
        deadline = time.monotonic() + wait
        while True:
            since = self.board.last_seq  # before looking: what comes after is seen by the wait below
            found = self._redeliver() or self._next_new()
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # Wake for a new item, or in time for the earliest pending lease to run out.
            soonest = self._soonest_expiry()
            nap = remaining if soonest is None else max(min(remaining, soonest - time.time()), 0.01)
            with self.board.watch(self.prefix, since=since, timeout=nap) as watcher:
                next(iter(watcher), None)

    async def atake(self, *, wait: float = 0.0) -> Delivery | None:
        """`take` for asyncio: the wait runs off the event loop."""
        return await off_loop(self.take, wait=wait)

    def _soonest_expiry(self) -> float | None:
        times = [e.ts.timestamp() + float(e.value["lease"]) for e in self.board.entries(self._pending)]
        return min(times, default=None)

    def _redeliver(self) -> Delivery | None:
        """Take over a delivery whose lease ran out (or that was nacked and whose delay passed)."""
        now = time.time()
        for entry in self.board.entries(self._pending):
            rec = entry.value
            if entry.ts.timestamp() + float(rec["lease"]) > now:
                continue
            item = self.board.get(rec["item"])
            key = entry.key
            try:
                if rec["attempt"] >= self.meta["max_deliver"] or item is None:
                    with self.board.transaction(author=self.consumer) as tx:
                        tx.expect(key, entry.version)
                        tx.delete(key)
                        reason = "max_deliver" if item is not None else "item deleted"
                        tx.write(self._dead + rec["item"], {**rec, "reason": reason, "value": _value(item)})
                    continue
                new = {**rec, "delivery_id": _new_id(self.group, rec["item"]), "attempt": rec["attempt"] + 1}
                new.update(consumer=self.consumer, lease=self.lease)
                written = self.board.write(key, new, author=self.consumer, expect_version=entry.version)
            except VersionConflict:
                continue  # another consumer took it over (or it was acked) first
            return _delivery(self.group, written, item.value)
        return None

    def _next_new(self) -> Delivery | None:
        """Deliver the first item put after the group's cursor, moving the cursor past it."""
        while True:
            cursor = self.board.get(self._cursor_key)
            found = self._next_event(_position(cursor))
            if found is None:
                return None
            event, (seq, index) = found
            item = self.board.get(event.key)
            pending_key = self._pending + event.key
            rec = {
                "delivery_id": _new_id(self.group, event.key),
                "item": event.key,
                "item_seq": event.seq,
                "attempt": 1,
                "consumer": self.consumer,
                "lease": self.lease,
            }
            try:
                with self.board.transaction(author=self.consumer) as tx:
                    tx.expect(self._cursor_key, 0 if cursor is None else cursor.version)
                    tx.write(self._cursor_key, {"seq": seq, "index": index, "key": event.key})
                    if item is not None and item.seq == event.seq and self.board.get(pending_key) is None:
                        tx.expect(pending_key, 0)
                        tx.write(pending_key, rec)
                    # else: deleted or put again since (a later event covers it), or in flight now:
                    # the cursor moves past this event and nothing is delivered for it
            except VersionConflict:
                continue  # another consumer moved the cursor first: look again from there
            written = [e for e in tx.entries if e.key == pending_key]
            if written:
                assert item is not None
                return _delivery(self.group, written[0], item.value)

    def _next_event(self, position: tuple[int, int]) -> tuple[Event, tuple[int, int]] | None:
        """The first put under the prefix after `position`, if the log has one now, and its position.
        A position is a seq and the index, among that seq's events of the prefix, of the one the
        cursor stopped at (a transaction puts many items under one seq); -1 for all of that seq."""
        if self._watcher is None or self._at > position:
            # Our reader is past the cursor (a conflict made us read ahead): (re)start it there,
            # since a reader may not skip what is after the cursor.
            self.close()
            seq = position[0]
            self._watcher = self._reader(seq - 1 if seq > 0 else 0)
            self._at = (seq - 1, -1) if seq > 0 else (0, -1)
        while (event := self._watcher.next_nowait()) is not None:
            self._at = (event.seq, self._at[1] + 1 if event.seq == self._at[0] else 0)
            if self._at > position and event.op == "put":
                return event, self._at
        return None

    def _reader(self, since: int) -> Watcher | _Backlog:
        try:
            return self.board.watch(self.prefix, since=since)
        except Compacted as exc:
            # Deletes after the cursor were compacted away. A queue needs only the puts, and every
            # live item's latest put is still on the board: those up to the purge, by seq, then the
            # log after it.
            through = exc.purged_through
            backlog = sorted(
                (e for e in self.board.entries(self.prefix) if since < e.seq <= through), key=lambda e: e.seq
            )
            events = [Event(e.seq, "put", e.key, e.value, e.version, e.author, e.ts, compacted=True) for e in backlog]
            return _Backlog(events, self.board.watch(self.prefix, since=through))


class _Backlog:
    """Events read from the board's state, then a watcher's (what `_reader` gives after a purge)."""

    def __init__(self, events: list[Event], watcher: Watcher) -> None:
        self.events = collections.deque(events)
        self.watcher = watcher

    def next_nowait(self) -> Event | None:
        return self.events.popleft() if self.events else self.watcher.next_nowait()

    def close(self) -> None:
        self.watcher.close()


def _position(cursor: Entry | None) -> tuple[int, int]:
    if cursor is None:
        return 0, -1
    return int(cursor.value["seq"]), int(cursor.value.get("index", -1))


def _value(entry: Entry | None) -> Any:
    return None if entry is None else entry.value


def _current(board: Board, delivery_id: str) -> tuple[str, Entry]:
    """The pending record of a delivery that is still current, else `Fenced`."""
    group, item = parse_delivery_id(delivery_id)
    key = _keys(group)[2] + item
    entry = board.get(key)
    if entry is None or entry.value.get("delivery_id") != delivery_id:
        now = "acked or dead" if entry is None else f"redelivered as {entry.value.get('delivery_id')}"
        raise Fenced(
            key,
            0,
            0 if entry is None else entry.seq,
            f"fenced: delivery {delivery_id} is no longer current ({now}): refused, nothing was written",
        )
    return group, entry


def ack(
    board: Board,
    delivery_id: str,
    *,
    result_key: str | None = None,
    result: Any = None,
    author: str | None = None,
) -> int:
    """Finish a delivery: its removal from the pending list and the result write, one record.
    Refused (`Fenced`) if the delivery is not the current one of its item. Returns the seq."""
    _, entry = _current(board, delivery_id)
    with board.transaction(author=author) as tx:
        tx.expect(entry.key, entry.version)  # still this delivery: a redelivery changes it
        tx.delete(entry.key)
        if result_key is not None:
            tx.write(result_key, result)
    return tx.seq


def nack(board: Board, delivery_id: str, *, delay: float = 0.0, author: str | None = None) -> None:
    """Give a delivery back: it is redelivered (attempt + 1) once `delay` seconds pass."""
    delay = check_seconds("a nack's delay", delay)
    _, entry = _current(board, delivery_id)
    rec = {**entry.value, "lease": delay, "consumer": None}
    try:
        board.write(entry.key, rec, author=author, expect_version=entry.version)
    except VersionConflict:
        _current(board, delivery_id)  # Fenced, saying what became of it
        raise


def extend(board: Board, delivery_id: str, *, lease: float, author: str | None = None) -> Delivery:
    """Keep a delivery in progress: its lease runs `lease` seconds from now."""
    lease = check_seconds("a lease", lease, 0.01)
    group, entry = _current(board, delivery_id)
    try:
        written = board.write(entry.key, {**entry.value, "lease": lease}, author=author, expect_version=entry.version)
    except VersionConflict:
        _current(board, delivery_id)
        raise
    item = board.get(entry.value["item"])
    return _delivery(group, written, _value(item))


def pending(board: Board, group: str) -> list[Delivery]:
    """The deliveries in flight, oldest first (consumer, attempt, idle time)."""
    out = [_delivery(group, e, _value(board.get(e.value["item"]))) for e in board.entries(_keys(group)[2])]
    return sorted(out, key=lambda d: d.delivered_at)


def dead(board: Board, group: str) -> list[dict[str, Any]]:
    """The items that ran out of attempts (or were deleted while in flight), with their last delivery."""
    return [{**e.value, "dead_at": e.as_dict()["ts"]} for e in board.entries(_keys(group)[3])]


def groups(board: Board) -> list[str]:
    """The names of the consumer groups, in name order (each has its `groups/G/meta`)."""
    return [k.split("/")[1] for k in board.keys(GROUPS) if k.count("/") == 2 and k.endswith("/meta")]


def meta(board: Board, group: str) -> dict[str, Any]:
    entry = board.get(_keys(group)[0])
    if entry is None:
        raise KeyNotFound(_keys(group)[0])
    value: dict[str, Any] = entry.value
    return value

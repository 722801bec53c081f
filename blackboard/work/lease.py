"""Leases with fencing tokens (spec/WORK.md section 1), like etcd's: the seq of the grant is the token.

A grant is a put of `leases/<name>` conditioned on the lease being free (absent, or expired by the
claimant's clock); its seq is the token. Renewals are puts of `lease-renewals/<name>` fenced on the
grant, so only the current holder renews; a release deletes the grant, fenced the same way. A write
fenced on the grant (`board.write(k, v, fence=lease)`) is refused once a newer grant exists: safety
comes from the fence, never from the clocks, which only decide when a lease may be taken over.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .. import Board, Entry, Fence, Fenced, Held, InvalidValue, VersionConflict
from ..agents import format_ts, off_loop, validate_agent
from .checks import check_seconds

GRANTS = "leases/"
RENEWALS = "lease-renewals/"


def _check_ttl(ttl: float) -> float:
    return check_seconds("a lease's ttl", ttl, 0.1)


@dataclass(frozen=True)
class State:
    """A lease as a reader sees it now."""

    name: str
    holder: str
    token: int
    ttl: float
    expires: float  # seconds since the epoch, by the writers' clocks

    @property
    def expired(self) -> bool:
        return time.time() > self.expires

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.name,
            "holder": self.holder,
            "token": self.token,
            "ttl": self.ttl,
            "expires": format_ts(self.expires),
            "expired": self.expired,
        }


def state(board: Board, name: str) -> State | None:
    """The current grant of lease `name`, or None if it is free (never granted, or released)."""
    return _state(board, name, board.get(GRANTS + name))


def all_leases(board: Board) -> list[State]:
    """Every granted lease (expired ones too, flagged: a claimant takes those over), by name."""
    found = (_state(board, grant.key.removeprefix(GRANTS), grant) for grant in board.entries(GRANTS))
    return [s for s in found if s is not None]


def _state(board: Board, name: str, grant: Entry | None) -> State | None:
    if grant is None or not isinstance(grant.value, dict):
        return None
    ttl = float(grant.value.get("ttl") or 0)
    last = grant.ts.timestamp()
    renewal = board.get(RENEWALS + name)
    if renewal is not None and isinstance(renewal.value, dict) and renewal.value.get("token") == grant.seq:
        last = max(last, renewal.ts.timestamp())
    return State(name, str(grant.value.get("holder")), grant.seq, ttl, last + ttl)


def claim(board: Board, name: str, holder: str, *, ttl: float, wait: float = 0.0) -> State:
    """Grant lease `name` to `holder`, waiting up to `wait` seconds for it to be free; else `Held`."""
    validate_agent(holder)
    ttl = _check_ttl(ttl)
    deadline = time.monotonic() + wait
    since, grant = 0, None  # first, as if free and absent (a released lease is): one write, no read
    while True:
        current = _state(board, name, grant)
        if current is None or current.expired:
            try:
                granted = board.write(
                    GRANTS + name,
                    {"holder": holder, "ttl": ttl},
                    author=holder,
                    expect_version=0 if grant is None else grant.version,  # free as we saw it
                )
                return State(name, holder, granted.seq, ttl, granted.ts.timestamp() + ttl)
            except VersionConflict:
                # Granted (or renewed) since we looked: look again. `since` before looking, so
                # that a release after the look wakes the wait below.
                since = board.last_seq if wait > 0 else 0
                grant = board.get(GRANTS + name)
                continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Held(name, current.holder, format_ts(current.expires), current.token)
        # Wake when it changes (a release, a renewal) or when it would expire, whichever is first.
        nap = max(min(remaining, current.expires - time.time()), 0.01)
        with board.watch(key=GRANTS + name, since=since, timeout=nap) as watcher:
            next(iter(watcher), None)
        since = board.last_seq
        grant = board.get(GRANTS + name)


def renew(board: Board, name: str, token: int) -> State:
    """Extend the lease granted with `token` by its ttl (`Fenced` if it was granted again since)."""
    current = state(board, name)
    if current is None or current.token != token:
        raise Fenced(GRANTS + name, token, 0 if current is None else current.token, _lost(name, token, current))
    try:
        entry = board.write(RENEWALS + name, {"token": token}, author=current.holder, fence=Fence(GRANTS + name, token))
    except Fenced as exc:
        raise Fenced(exc.key, token, exc.actual_seq, _lost(name, token, state(board, name))) from None
    return State(name, current.holder, token, current.ttl, entry.ts.timestamp() + current.ttl)


def release(board: Board, name: str, token: int) -> None:
    """Free the lease granted with `token` (`Fenced` if it is not that grant any more)."""
    try:
        board.delete(GRANTS + name, fence=Fence(GRANTS + name, token))
    except Fenced as exc:
        raise Fenced(exc.key, token, exc.actual_seq, _lost(name, token, state(board, name))) from None


def fence_of_token(board: Board, token: int) -> Fence:
    """The fence of the lease granted with `token` (what `write --fence TOKEN` carries), if that
    grant is current; else `Fenced`. The commit checks the fence again, under the writer lock."""
    if type(token) is not int or token < 1:
        raise InvalidValue(f"a token is a seq >= 1, not {token!r}")
    for entry in board.entries(GRANTS):
        if entry.seq == token:
            return Fence(entry.key, token)
    raise Fenced(
        GRANTS,
        token,
        0,
        f"fenced: no lease is held with token {token} now (released, or granted again): nothing was written",
    )


def _lost(name: str, token: int, current: State | None) -> str:
    now_held = "it is free" if current is None else f"it is held by {current.holder} with token {current.token}"
    return f"fenced: the lease {name!r} of token {token} was lost ({now_held}): nothing was written"


class Lease:
    """A held lease: `with board.lease(name, ttl=30) as lease:` claims it, renews it from a thread
    every ttl/3, and releases it at the end. `lease.lost` turns True (and `check()` raises `Fenced`)
    once a renewal finds it granted to someone else; writes fenced on it (`fence=lease`) are refused
    from then on whatever the flag says."""

    def __init__(self, board: Board, name: str, holder: str, *, ttl: float, wait: float = 0.0) -> None:
        self.board = board
        self.name = name
        self.holder = validate_agent(holder)
        self.ttl = _check_ttl(ttl)
        self.wait = wait
        self.token = 0
        self.expires = 0.0
        self.lost = False
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fence(self) -> Fence:
        """The condition a write guarded by this lease carries."""
        if not self.token:
            raise InvalidValue(f"lease {self.name!r} is not held")
        return Fence(GRANTS + self.name, self.token)

    def acquire(self) -> Lease:
        granted = claim(self.board, self.name, self.holder, ttl=self.ttl, wait=self.wait)
        self.token, self.expires, self.lost = granted.token, granted.expires, False
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"blackboard-lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.expires = renew(self.board, self.name, self.token).expires
            except Fenced as exc:
                self.lost, self.error = True, exc
                return
            except Exception as exc:  # I/O: keep trying; the lease expires on its own if this persists
                self.error = exc

    def check(self) -> None:
        """Raise `Fenced` if the lease is known to be lost (a renewal found a newer grant)."""
        if self.lost:
            assert isinstance(self.error, Fenced)
            raise self.error

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.token and not self.lost:
            try:
                release(self.board, self.name, self.token)
            except Fenced:
                self.lost = True

    def __enter__(self) -> Lease:
        return self.acquire()

    async def __aenter__(self) -> Lease:
        """`async with board.lease(...)`: the claim (which may wait) runs off the event loop."""
        return await off_loop(self.acquire)

    async def __aexit__(self, *exc: object) -> None:
        await off_loop(self.release)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

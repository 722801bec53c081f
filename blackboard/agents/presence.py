"""Presence and the registry: who joined, what they can do, and whether they are alive
(spec/AGENTS.md section 3). Registrations are keys `agents/<name>`; signs of life are `seen/` mtimes,
so a heartbeat writes no log record."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any

from .. import Board, Entry, InvalidValue, UnknownAgent, VersionConflict
from .names import now, validate_agent, validate_status

PREFIX = "agents/"
DEFAULT_TTL = 60.0
#: An agent whose last sign of life is older than this many ttls is offline (younger: stale).
OFFLINE_TTLS = 3
STATES = ("available", "busy", "in-call", "stale", "offline")


def key_of(name: str) -> str:
    return PREFIX + validate_agent(name)


@dataclass(frozen=True)
class AgentInfo:
    """One registered agent as a reader sees it now: `status` is what it declared, `state` what the
    registry derives (its status, or `stale`/`offline`)."""

    name: str
    capabilities: tuple[str, ...]
    description: str
    status: str
    state: str
    ttl: float
    last_seen: float
    host: str
    pid: int | None
    seq: int

    @property
    def online(self) -> bool:
        return self.state not in ("stale", "offline")

    def as_dict(self) -> dict[str, Any]:
        from .names import format_ts

        return {
            "name": self.name,
            "capabilities": list(self.capabilities),
            "description": self.description,
            "status": self.status,
            "state": self.state,
            "online": self.online,
            "ttl": self.ttl,
            "last_seen": format_ts(self.last_seen),
            "host": self.host,
            "pid": self.pid,
            "seq": self.seq,
        }


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/PID/stat, clock ticks since boot), or None
    where /proc does not say: with the pid it names one process, not a later one given the same pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def _gone(pid: int, start: str | None) -> bool:
    """True only if process `pid` (started at `start`) provably no longer runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, as another user
    if start is None:
        return False
    now_start = process_start(pid)
    return now_start is not None and now_start != start


def register(
    board: Board,
    name: str,
    *,
    capabilities: list[str] | tuple[str, ...] = (),
    description: str = "",
    status: str = "available",
    ttl: float = DEFAULT_TTL,
    pid: int | None = None,
) -> Entry:
    """Write `agents/<name>` (join, or change what it says) and sign life. `pid`: the process whose
    death makes the agent offline at once (this one by default; None for a shell agent's commands)."""
    caps = sorted(set(capabilities))
    for cap in caps:
        validate_agent(cap)  # a capability is a word of the same alphabet: `@cap` must parse
    if not isinstance(description, str) or len(description) > 1000:
        raise InvalidValue("a description is a string of at most 1000 characters")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= 86400:
        raise InvalidValue(f"ttl must be 1 to 86400 seconds, not {ttl!r}")
    value = {
        "name": validate_agent(name),
        "capabilities": caps,
        "description": description,
        "status": validate_status(status),
        "ttl": float(ttl),
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": None if pid is None else process_start(pid),
        "left": False,
    }
    entry = board.write(key_of(name), value, author=name)
    board.mark_seen(name)
    return entry


def set_status(board: Board, name: str, status: str) -> Entry:
    """Change the declared status, keeping the rest of the registration (compare-and-set, retried)."""
    validate_status(status)
    while True:
        entry = board.get(key_of(name))
        if entry is None:
            raise UnknownAgent(name)
        value = dict(entry.value)
        value["status"] = status
        with contextlib.suppress(VersionConflict):  # it re-registered meanwhile: keep what it wrote
            return board.write(key_of(name), value, author=name, expect_version=entry.version)


def leave(board: Board, name: str) -> Entry | None:
    """Mark the agent as gone (kept in the registry, so that messages to it still queue)."""
    entry = board.get(key_of(name))
    if entry is None:
        return None
    value = dict(entry.value)
    value["left"] = True
    return board.write(key_of(name), value, author=name)


def _info(entry: Entry, seen: dict[str, float], at: float, host: str) -> AgentInfo | None:
    value = entry.value
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None  # not a registration: ignored (spec/AGENTS.md section 2)
    name = value["name"]
    last = max(entry.ts.timestamp(), seen.get(name, 0.0))
    ttl = float(value.get("ttl") or DEFAULT_TTL)
    pid = value.get("pid")
    if (
        value.get("left")
        or (value.get("host") == host and isinstance(pid, int) and _gone(pid, value.get("pid_start")))
        or at - last > OFFLINE_TTLS * ttl
    ):
        state = "offline"
    elif at - last > ttl:
        state = "stale"
    else:
        state = str(value.get("status") or "available")
    return AgentInfo(
        name,
        tuple(value.get("capabilities") or ()),
        str(value.get("description") or ""),
        str(value.get("status") or "available"),
        state,
        ttl,
        last,
        str(value.get("host") or ""),
        pid if isinstance(pid, int) else None,
        entry.seq,
    )


def who(board: Board, *, capability: str | None = None) -> list[AgentInfo]:
    """Every registered agent (with `capability`, if given), by name, with its derived state."""
    seen = board.last_seen()
    at, host = now(), socket.gethostname()
    out = []
    for entry in board.entries(PREFIX):
        info = _info(entry, seen, at, host)
        if info is not None and (capability is None or capability in info.capabilities):
            out.append(info)
    return out


def lookup(board: Board, name: str) -> AgentInfo | None:
    entry = board.get(key_of(name))
    if entry is None:
        return None
    return _info(entry, board.last_seen(), now(), socket.gethostname())


def registered(board: Board) -> list[str]:
    return [key[len(PREFIX) :] for key in board.keys(PREFIX)]

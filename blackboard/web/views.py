"""What the page shows, as JSON: each section is one call of the library, translated for the browser.

No logic of the board lives here: presence states come from `presence.who`, lease expiry from
`lease.all_leases`, and so on. What this module adds is only the page's economy: values are cut to
a preview (the page asks for a whole entry when a person opens it), lists are capped, and the key
tree goes out as compact rows, so that a board of 10,000 keys loads as one small document.
"""

from __future__ import annotations

from typing import Any

from ..agents import conversations as _conversations
from ..agents import messages as _messages
from ..agents import presence as _presence
from ..board import Board
from ..core import codec as _codec
from ..models import Entry, Event
from ..work import lease as _lease
from ..work import queue as _queue
from ..work import tasks as _tasks

#: Characters of a value's JSON the page gets in the tree and the log; the rest on request.
PREVIEW = 200
#: The latest turns of each conversation the page gets (a chat longer than that scrolls from there).
TURNS = 200
#: Conversations the page gets: the most recently active.
CONVERSATIONS = 100
#: Rows of any one list (pending deliveries, dead letters, tasks) the page gets.
ROWS = 500

#: The sections, and the key prefixes whose changes make each one stale (the layers' own names).
SECTIONS: dict[str, tuple[str, ...]] = {
    "agents": (_presence.PREFIX,),
    "leases": (_lease.GRANTS, _lease.RENEWALS),
    "queues": (_queue.GROUPS,),
    "tasks": (_tasks.PREFIX,),
}
#: Sections whose state also changes with the clock alone (stale agents, expired leases, idle times).
TIMED = ("agents", "leases", "queues")
#: Every section `section()` builds (the snapshot has each).
SECTION_NAMES = ("agents", "leases", "queues", "tasks", "inbox", "stats")


def preview(value: Any) -> tuple[str, bool]:
    """The value's compact JSON, cut to PREVIEW characters; and whether it was cut."""
    text = _codec.dumps(value).decode()
    return (text, False) if len(text) <= PREVIEW else (text[:PREVIEW], True)


def row(entry: Entry) -> list[Any]:
    """One key of the tree: [key, value preview, cut, version, author, ts, seq]."""
    text, cut = preview(entry.value)
    return [entry.key, text, cut, entry.version, entry.author, entry.ts_text, entry.seq]


def event(ev: Event) -> dict[str, Any]:
    text, cut = preview(ev.value)
    return {
        "seq": ev.seq,
        "op": ev.op,
        "key": ev.key,
        "value": text,
        "cut": cut,
        "version": ev.version,
        "author": ev.author,
        "ts": ev.ts_text,
        "txn": ev.txn,
    }


def entry(board: Board, key: str) -> dict[str, Any] | None:
    """One entry whole, for a person who opened it."""
    found = board.get(key)
    return None if found is None else found.as_dict()


def agents(board: Board) -> list[dict[str, Any]]:
    return [a.as_dict() for a in _presence.who(board)]


def conversation(board: Board, cid: str) -> dict[str, Any] | None:
    """A conversation's meta and its latest TURNS turns, in order; None if it has no meta."""
    found = board.get(_conversations.meta_key(cid))
    if found is None or not isinstance(found.value, dict):
        return None
    turns = _conversations.turns(board, cid)
    return {**found.value, "turns": [t.as_dict() for t in turns[-TURNS:]]}


def conversations(board: Board) -> list[dict[str, Any]]:
    """The CONVERSATIONS most recently active (each turn rewrites the meta), oldest first."""
    metas = [board.get(_conversations.meta_key(str(m.get("id")))) for m in _conversations.all_conversations(board)]
    latest = sorted((e for e in metas if e is not None), key=lambda e: e.seq)[-CONVERSATIONS:]
    return [chat for e in latest if (chat := conversation(board, e.value["id"])) is not None]


def conversation_of(key: str) -> str | None:
    """The conversation a changed key belongs to (`conv/<cid>/...`), or None."""
    if not key.startswith(_conversations.PREFIX):
        return None
    return key.split("/")[1] or None


def leases(board: Board) -> list[dict[str, Any]]:
    return [s.as_dict() for s in _lease.all_leases(board)]


def _delivery(d: _queue.Delivery) -> dict[str, Any]:
    out = d.as_dict()
    out["value"] = preview(out["value"])[0]
    return out


def queues(board: Board) -> list[dict[str, Any]]:
    out = []
    for group in _queue.groups(board):
        pending = _queue.pending(board, group)
        dead = _queue.dead(board, group)
        out.append(
            {
                "group": group,
                **_queue.meta(board, group),
                "pending_count": len(pending),
                "dead_count": len(dead),
                "pending": [_delivery(d) for d in pending[:ROWS]],
                "dead": [{**d, "value": preview(d.get("value"))[0]} for d in dead[:ROWS]],
            }
        )
    return out


def tasks(board: Board) -> list[dict[str, Any]]:
    found = _tasks.all_tasks(board)
    return [t.as_dict() for t in found[-ROWS:]]


def inbox(board: Board, agent: str | None) -> list[dict[str, Any]]:
    """What waits in the serving agent's inbox (requests a person may answer), oldest first."""
    if agent is None:
        return []
    return [m.as_dict() for m in _messages.pending(board, agent, limit=ROWS)]


def stats(board: Board) -> dict[str, Any]:
    return board.stats()


def section(board: Board, name: str, agent: str | None) -> Any:
    """One section by name (what the stream re-sends when it is stale)."""
    if name == "inbox":
        return inbox(board, agent)
    builders = {"agents": agents, "leases": leases, "queues": queues, "tasks": tasks, "stats": stats}
    return builders[name](board)


def stale_sections(key: str, agent: str | None) -> set[str]:
    """The sections a change of `key` makes stale (stats: every change)."""
    out = {name for name, prefixes in SECTIONS.items() if key.startswith(prefixes)}
    if agent is not None and key.startswith(_messages.inbox_prefix(agent)):
        out.add("inbox")
    return out | {"stats"}


def snapshot(board: Board, *, agent: str | None, read_only: bool) -> dict[str, Any]:
    """Everything the page shows, with the seq the key tree is exact at: the stream goes on from it."""
    seq, entries = board.snapshot()
    return {
        "seq": seq,
        "board": str(board.path),
        "read_only": read_only,
        "agent": agent,
        "keys": [row(e) for e in entries],
        "stats": stats(board),
        "agents": agents(board),
        "conversations": conversations(board),
        "leases": leases(board),
        "queues": queues(board),
        "tasks": tasks(board),
        "inbox": inbox(board, agent),
    }

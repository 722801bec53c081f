"""Conversations of 2 to 6 agents, turn by turn, with an optional turn limit (spec/AGENTS.md 6).

Turn n is the key `conv/<cid>/msg/<n:06d>`, written in one transaction with the meta's `turns` = n
and conditioned on the meta's version: two participants speaking at once get consecutive turns,
never the same one, and a turn past the limit is refused with nothing written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import Board, InvalidValue, KeyNotFound, Refused, Transaction, UnknownAgent, VersionConflict
from . import presence
from .names import new_id, validate_agent, validate_id

PREFIX = "conv/"
MAX_PARTICIPANTS = 6
TURN_KINDS = ("message", "join", "leave", "system")
#: Compare-and-set attempts of one turn before giving up (each loser retries at once).
_ATTEMPTS = 1000


def meta_key(cid: str) -> str:
    return f"{PREFIX}{validate_id(cid, 'c')}/meta"


def turns_prefix(cid: str) -> str:
    return f"{PREFIX}{validate_id(cid, 'c')}/msg/"


@dataclass(frozen=True)
class Turn:
    conversation: str
    n: int
    sender: str
    kind: str
    text: Any
    seq: int
    ts: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "conversation": self.conversation,
            "n": self.n,
            "from": self.sender,
            "kind": self.kind,
            "text": self.text,
            "seq": self.seq,
            "ts": self.ts,
        }


def _turn(cid: str, value: Any, seq: int, ts: str) -> Turn | None:
    if not isinstance(value, dict) or not isinstance(value.get("n"), int):
        return None
    return Turn(cid, value["n"], str(value.get("from")), str(value.get("kind")), value.get("text"), seq, ts)


def plan(
    board: Board, creator: str, others: list[str], *, topic: str, turn_limit: int | None = None
) -> tuple[str, dict[str, Any]]:
    """Validate a new conversation of `creator` and `others` (registered agents): (cid, its meta)."""
    people = [validate_agent(creator)]
    for name in others:
        if validate_agent(name) not in people:
            people.append(name)
    if not 2 <= len(people) <= MAX_PARTICIPANTS:
        raise InvalidValue(f"a conversation has 2 to {MAX_PARTICIPANTS} participants, not {len(people)}")
    known = set(presence.registered(board))
    for name in people:
        if name not in known:
            raise UnknownAgent(name)
    if turn_limit is not None and (type(turn_limit) is not int or turn_limit < 1):
        raise InvalidValue(f"turn_limit must be an int >= 1, not {turn_limit!r}")
    if not isinstance(topic, str) or not topic or len(topic) > 200:
        raise InvalidValue("a topic is a string of 1 to 200 characters")
    cid = new_id("c")
    meta = {
        "id": cid,
        "topic": topic,
        "participants": people,
        "turn_limit": turn_limit,
        "turns": 1,
        "messages": 0,
        "state": "open",
        "created_by": creator,
    }
    return cid, meta


def write_new(tx: Transaction, cid: str, meta: dict[str, Any], opener: str) -> None:
    """Add a planned conversation to transaction `tx`: its meta and turn 1, a `join` by `opener`."""
    tx.expect(meta_key(cid), 0)
    tx.write(meta_key(cid), meta)
    tx.write(f"{turns_prefix(cid)}{1:06d}", {"n": 1, "from": opener, "kind": "join", "text": meta["topic"]})


def create(
    board: Board, creator: str, others: list[str], *, topic: str, turn_limit: int | None = None
) -> tuple[str, dict[str, Any]]:
    """A new open conversation of `creator` and `others`, its first turn a `join` by the creator."""
    cid, meta = plan(board, creator, others, topic=topic, turn_limit=turn_limit)
    with board.transaction(author=creator) as tx:
        write_new(tx, cid, meta, creator)
    return cid, meta


def meta(board: Board, cid: str) -> Any:
    entry = board.get(meta_key(cid))
    if entry is None:
        raise KeyNotFound(meta_key(cid))
    return entry.value


def say(board: Board, me: str, cid: str, text: Any, *, kind: str = "message") -> Turn:
    """Add a turn by `me`. `Refused` (nothing written) if `me` is not a participant, the conversation
    is closed, or a `message` would pass the turn limit."""
    if kind not in TURN_KINDS:
        raise InvalidValue(f"a turn's kind is one of {', '.join(TURN_KINDS)}, not {kind!r}")
    key = meta_key(cid)
    for _ in range(_ATTEMPTS):
        entry = board.get(key)
        if entry is None:
            raise KeyNotFound(key)
        value = dict(entry.value)
        if me not in value["participants"]:
            raise Refused(f"{me} is not a participant of conversation {cid} ({', '.join(value['participants'])})")
        if value["state"] != "open":
            raise Refused(f"conversation {cid} is closed")
        limit = value.get("turn_limit")
        if kind == "message" and limit is not None and value["messages"] >= limit:
            raise Refused(f"conversation {cid} reached its turn limit of {limit} messages: nothing was said")
        n = value["turns"] + 1
        value["turns"] = n
        value["messages"] += kind == "message"
        turn = {"n": n, "from": me, "kind": kind, "text": text}
        try:
            with board.transaction(author=me) as tx:
                tx.expect(key, entry.version)  # nobody spoke since we read: our n is the next one
                tx.write(key, value)
                tx.write(f"{turns_prefix(cid)}{n:06d}", turn)
        except VersionConflict:
            continue
        (written,) = [e for e in tx.entries if e.key != key]
        return Turn(cid, n, me, kind, text, tx.seq, written.as_dict()["ts"])
    raise Refused(f"conversation {cid}: gave up after {_ATTEMPTS} concurrent turns won over this one")


def close(board: Board, me: str, cid: str) -> Turn:
    """Close the conversation with a `system` turn; later turns are refused."""
    turn = say(board, me, cid, f"{me} closed the conversation", kind="system")
    key = meta_key(cid)
    while True:
        entry = board.get(key)
        assert entry is not None
        value = dict(entry.value)
        value["state"] = "closed"
        try:
            board.write(key, value, author=me, expect_version=entry.version)
            return turn
        except VersionConflict:
            continue


def turns(board: Board, cid: str) -> list[Turn]:
    """Every turn, in order."""
    out = []
    for entry in board.entries(turns_prefix(cid)):
        turn = _turn(cid, entry.value, entry.seq, entry.as_dict()["ts"])
        if turn is not None:
            out.append(turn)
    out.sort(key=lambda t: t.n)
    return out


def follow(board: Board, cid: str, *, since: int = 0, timeout: float | None = None) -> Iterator[Turn]:
    """Each turn after seq `since` as it is added (replay, then live), until the conversation closes
    or `timeout` idle seconds pass."""
    closing = board.get(meta_key(cid))
    if closing is None:
        raise KeyNotFound(meta_key(cid))
    if closing.value.get("state") == "closed" and since >= closing.seq:
        return  # closed at or before `since`: a watch from there would wait for a close it cannot see
    with board.watch(f"{PREFIX}{cid}/", since=since, timeout=timeout) as watcher:
        for event in watcher:
            if event.op != "put":
                continue
            if event.key.endswith("/meta"):
                if isinstance(event.value, dict) and event.value.get("state") == "closed":
                    return
                continue
            turn = _turn(cid, event.value, event.seq, event.as_dict()["ts"])
            if turn is not None:
                yield turn


def all_conversations(board: Board) -> list[Any]:
    """The meta of every conversation, open and closed, in id order."""
    out = []
    for key in board.keys(PREFIX):
        if key.endswith("/meta") and key.count("/") == 2:  # conv/<cid>/meta, not a turn
            value = board.read(key)
            if isinstance(value, dict):
                out.append(value)
    return out


def of_agent(board: Board, name: str) -> list[Any]:
    """The meta of every open conversation `name` takes part in."""
    return [m for m in all_conversations(board) if name in m.get("participants", ()) and m.get("state") == "open"]

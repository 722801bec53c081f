"""What needs an agent's attention since it last looked, ranked (spec/AGENTS.md 7).

Cheap enough for every turn of an agent: its inbox and the conversations' meta keys come from the
in-memory index; only conversations with turns since the last digest are read further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import Board, KeyNotFound
from . import conversations, messages
from .names import validate_agent

#: Ranks, most urgent first.
RANKS = ("call", "request", "conversation", "message")


@dataclass(frozen=True)
class Item:
    rank: int
    what: str
    id: str
    sender: str
    summary: Any
    seq: int
    deadline: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "type": self.what,
            "id": self.id,
            "from": self.sender,
            "summary": self.summary,
            "seq": self.seq,
            "deadline": self.deadline,
        }


def cursor_name(name: str) -> str:
    return f"digest.{validate_agent(name)}"


def digest(board: Board, name: str, *, mark: bool = True) -> list[Item]:
    """The items for `name`, ranked; `mark` saves the board's last seq as seen by this digest."""
    last = board.last_seq
    since = board.cursors().get(cursor_name(name), 0)
    items: list[Item] = []
    for message in messages.pending(board, name):
        if message.kind == "call" and message.extra.get("state") == "ringing" and not message.expired:
            items.append(
                Item(1, "call", message.id, message.sender, message.extra.get("topic"), message.seq, message.deadline)
            )
        elif message.kind == "request":
            items.append(Item(2, "request", message.id, message.sender, message.body, message.seq, message.deadline))
        else:
            items.append(Item(4, message.kind, message.id, message.sender, message.body, message.seq))
    for meta in conversations.of_agent(board, name):
        try:
            new = [t for t in conversations.turns(board, meta["id"]) if t.seq > since and t.sender != name]
        except KeyNotFound:
            continue
        if new:
            summary = {"topic": meta["topic"], "new_turns": len(new), "last": new[-1].text}
            items.append(Item(3, "conversation", meta["id"], new[-1].sender, summary, new[-1].seq))
    # Requests by deadline (soonest first), the rest oldest first.
    items.sort(key=lambda i: (i.rank, i.deadline or "", i.seq))
    if mark:
        board.reset_cursor(cursor_name(name), last)
    return items

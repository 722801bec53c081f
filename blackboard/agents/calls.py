"""Calls: ring an agent that is online, which accepts (a conversation starts) or rejects; no answer
in time, or nobody there, and the call stays in its inbox as a missed call (spec/AGENTS.md 6).

Exactly one of accept, reject and missed wins: each is a transaction conditioned on the call's key
being still at version 1 (ringing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import Board, Refused, VersionConflict
from . import conversations, messages, presence
from .messages import Message
from .names import new_id, now, validate_agent

RINGING, MISSED = "ringing", "missed"


@dataclass(frozen=True)
class CallResult:
    """How a call ended: `accepted` (with its conversation), `rejected`, or `missed`."""

    id: str
    state: str
    callee: str
    conversation: str | None = None
    reason: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "to": self.callee,
            "conversation": self.conversation,
            "reason": self.reason,
        }


def call(board: Board, caller: str, callee: str, *, topic: str, timeout: float = 30.0) -> CallResult:
    """Ring `callee` and wait up to `timeout` seconds for its answer."""
    validate_agent(caller)
    info = presence.lookup(board, validate_agent(callee))
    ringing = info is not None and info.online
    if info is None:
        messages.recipients(board, caller, callee)  # UnknownAgent with a did-you-mean
    sent = messages.send(
        board,
        caller,
        callee,
        {"topic": topic},
        kind="call",
        deadline=now() + timeout,
        extra={"topic": topic, "state": RINGING if ringing else MISSED},
    )
    if not ringing:
        return CallResult(sent.id, MISSED, callee, reason=f"{callee} is not online")
    answer = messages.wait_for(board, caller, since=sent.seq, timeout=timeout, match=lambda m: m.reply_to == sent.id)
    if answer is None:
        try:
            _mark_missed(board, caller, callee, sent.id)
            return CallResult(sent.id, MISSED, callee, reason=f"no answer within {timeout:g} s")
        except VersionConflict:  # answered meanwhile: the answer is in our inbox
            answer = messages.wait_for(
                board, caller, since=sent.seq, timeout=5.0, match=lambda m: m.reply_to == sent.id
            )
            if answer is None:
                return CallResult(sent.id, MISSED, callee, reason="the call changed, but no answer came")
    messages.ack(board, caller, answer.id)
    if answer.kind == "accept":
        body = answer.body if isinstance(answer.body, dict) else {}
        return CallResult(sent.id, "accepted", callee, conversation=body.get("conversation"))
    return CallResult(sent.id, "rejected", callee, reason=answer.body)


def _mark_missed(board: Board, caller: str, callee: str, call_id: str) -> None:
    key = f"{messages.inbox_prefix(callee)}{call_id}"
    entry = board.get(key)
    if entry is None or entry.version != 1:
        raise VersionConflict(key, 1, 0 if entry is None else entry.version)
    value = dict(entry.value)
    value["state"] = MISSED
    board.write(key, value, author=caller, expect_version=1)


def _ringing(board: Board, me: str, call_id: str) -> Message:
    message = messages.get(board, me, call_id)
    if message.kind != "call":
        raise Refused(f"message {call_id} is a {message.kind}, not a call")
    if message.extra.get("state") != RINGING or message.version != 1:
        raise Refused(f"call {call_id} from {message.sender} is no longer ringing (missed): call back instead")
    return message


def accept(board: Board, me: str, call_id: str, *, turn_limit: int | None = None) -> str:
    """Answer a ringing call: a conversation of the caller and `me` starts. Returns its id."""
    ring = _ringing(board, me, call_id)
    topic = str(ring.extra.get("topic") or "call")
    cid, meta = conversations.plan(board, ring.sender, [me], topic=topic, turn_limit=turn_limit)
    answer_id = new_id("m")
    answer = messages.envelope(answer_id, me, ring.sender, "accept", {"conversation": cid}, reply_to=call_id)
    try:
        with board.transaction(author=me) as tx:
            tx.expect(ring.key, 1)  # still ringing: the caller has not marked it missed
            tx.delete(ring.key)
            conversations.write_new(tx, cid, meta, me)
            tx.write(f"{messages.inbox_prefix(ring.sender)}{answer_id}", answer)
    except VersionConflict:
        raise Refused(f"call {call_id} from {ring.sender} was missed before it was accepted: call back") from None
    return cid


def reject(board: Board, me: str, call_id: str, reason: Any = None) -> None:
    ring = _ringing(board, me, call_id)
    answer_id = new_id("m")
    answer = messages.envelope(answer_id, me, ring.sender, "reject", reason, reply_to=call_id)
    try:
        with board.transaction(author=me) as tx:
            tx.expect(ring.key, 1)
            tx.delete(ring.key)
            tx.write(f"{messages.inbox_prefix(ring.sender)}{answer_id}", answer)
    except VersionConflict:
        raise Refused(f"call {call_id} from {ring.sender} was missed before it was rejected") from None

"""Messages, inboxes, request and reply (spec/AGENTS.md sections 4, 5).

Every message is its own key `inbox/<recipient>/<id>`, written by one locked append: concurrent
senders never overwrite each other, which is how file inboxes rewritten in place lose messages.
Handling is a delete of that key (ack); until then the message is listed again (at least once).
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import Board, Entry, Event, InvalidValue, NoSuchMessage, TimedOut, UnknownAgent, VersionConflict
from . import presence
from .names import format_ts, new_id, now, parse_ts, validate_agent, validate_id

PREFIX = "inbox/"
#: The envelope's fields besides the body, in the order they are written (spec/AGENTS.md 4).
KINDS = ("message", "request", "reply", "call", "accept", "reject", "system")


def inbox_prefix(name: str) -> str:
    return f"{PREFIX}{validate_agent(name)}/"


@dataclass(frozen=True)
class Message:
    """A message in `recipient`'s inbox: its envelope, and the seq and time of the record that
    delivered it. `ack()` marks it handled."""

    id: str
    sender: str
    to: str
    recipient: str
    kind: str
    body: Any
    thread: str | None
    reply_to: str | None
    deadline: str | None
    late: bool
    seq: int
    ts: str
    version: int
    extra: dict[str, Any] = field(default_factory=dict)
    board: Board | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, entry: Entry, board: Board | None = None) -> Message | None:
        """The message an inbox entry holds, or None for a value that is not an envelope."""
        value = entry.value
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            return None
        known = {"id", "from", "to", "kind", "body", "thread", "reply_to", "deadline", "late"}
        return cls(
            value["id"],
            str(value.get("from")),
            str(value.get("to")),
            entry.key.split("/")[1],
            str(value.get("kind") or "message"),
            value.get("body"),
            value.get("thread"),
            value.get("reply_to"),
            value.get("deadline"),
            bool(value.get("late")),
            entry.seq,
            entry.as_dict()["ts"],
            entry.version,
            {k: v for k, v in value.items() if k not in known},
            board,
        )

    @property
    def key(self) -> str:
        return f"{PREFIX}{self.recipient}/{self.id}"

    @property
    def expired(self) -> bool:
        """A request or call whose sender has stopped waiting."""
        return self.deadline is not None and now() > parse_ts(self.deadline)

    def ack(self) -> None:
        """Mark it handled: it is not listed again. Acking twice is an error (`NoSuchMessage`)."""
        if self.board is None:
            raise InvalidValue("this message is not bound to a board")
        ack(self.board, self.recipient, self.id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.to,
            "recipient": self.recipient,
            "kind": self.kind,
            "body": self.body,
            "thread": self.thread,
            "reply_to": self.reply_to,
            "deadline": self.deadline,
            "late": self.late,
            "seq": self.seq,
            "ts": self.ts,
            **self.extra,
        }


@dataclass(frozen=True)
class Sent:
    """What `send` wrote: the message id, the record's seq, and who it went to."""

    id: str
    seq: int
    recipients: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "recipients": list(self.recipients)}


#: The envelope's contract (spec/AGENTS.md 4): `blackboard contract set inbox/ --schema builtin:envelope`
#: makes every writer check it, so that what lands in an inbox is a message its reader can parse.
ENVELOPE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "blackboard message envelope (spec/AGENTS.md 4)",
    "type": "object",
    "required": ["id", "from", "to", "kind", "body"],
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z]-[0-9a-f]{12}$"},
        "from": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
        "to": {"type": "string", "minLength": 1},
        "kind": {"type": "string", "minLength": 1},
        "thread": {"type": ["string", "null"]},
        "reply_to": {"type": ["string", "null"]},
        "deadline": {"type": ["string", "null"]},
        "late": {"type": "boolean"},
    },
}


def envelope(
    message_id: str,
    sender: str,
    to: str,
    kind: str,
    body: Any,
    *,
    thread: str | None = None,
    reply_to: str | None = None,
    deadline: float | None = None,
    late: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "from": sender,
        "to": to,
        "kind": kind,
        "body": body,
        "thread": thread,
        "reply_to": reply_to,
        "deadline": None if deadline is None else format_ts(deadline),
        "late": late,
        **(extra or {}),
    }


def recipients(board: Board, sender: str, to: str, *, queue: bool = False) -> list[str]:
    """The agents an address names: `*` every agent online but the sender, `@C` those online with
    capability C, else the one name (registered, unless `queue`)."""
    if to == "*" or to.startswith("@"):
        capability = None if to == "*" else validate_agent(to[1:])
        names = [a.name for a in presence.who(board, capability=capability) if a.online and a.name != sender]
        if not names:
            what = "no agent is online" if capability is None else f"no agent online has capability {capability!r}"
            raise UnknownAgent(to, reason=f"{what}: the message to {to} would reach nobody")
        return names
    name = validate_agent(to)
    if not queue and board.get(presence.key_of(name)) is None:
        known = presence.registered(board)
        raise UnknownAgent(name, difflib.get_close_matches(name, known, n=3, cutoff=0.6))
    return [name]


def send(
    board: Board,
    sender: str,
    to: str,
    body: Any,
    *,
    kind: str = "message",
    thread: str | None = None,
    reply_to: str | None = None,
    deadline: float | None = None,
    queue: bool = False,
    extra: dict[str, Any] | None = None,
) -> Sent:
    """Deliver a message to the inbox of every agent `to` names, as ONE record (a broadcast reaches
    exactly the agents online when it was sent, or none of them on a crash)."""
    validate_agent(sender)
    check_fields(kind, thread, reply_to)
    names = recipients(board, sender, to, queue=queue)
    for _ in range(_ID_ATTEMPTS):
        message_id = new_id("m")
        value = envelope(
            message_id, sender, to, kind, body, thread=thread, reply_to=reply_to, deadline=deadline, extra=extra
        )
        try:
            if len(names) == 1:  # a plain put: a message is one record of its own
                entry = board.write(f"{PREFIX}{names[0]}/{message_id}", value, author=sender, expect_version=0)
                return Sent(message_id, entry.seq, (names[0],))
            with board.transaction(author=sender) as tx:
                for name in names:
                    tx.expect(f"{PREFIX}{name}/{message_id}", 0)  # a new key: an id never overwrites
                    tx.write(f"{PREFIX}{name}/{message_id}", value)
            return Sent(message_id, tx.seq, tuple(names))
        except VersionConflict:
            continue  # 48 random bits met an id waiting in that inbox: draw another
    raise InvalidValue(f"could not draw an unused message id in {_ID_ATTEMPTS} attempts")


#: Draws of a message id before giving up (a collision in one inbox is ~1e-9 at 10,000 waiting).
_ID_ATTEMPTS = 5
_KIND = r"[a-z][a-z_-]{0,31}"


def check_fields(kind: str, thread: str | None, reply_to: str | None) -> None:
    if not isinstance(kind, str) or not re.fullmatch(_KIND, kind):
        raise InvalidValue(f"a kind is 1-32 of a-z, '_' and '-', starting with a letter, not {kind!r}")
    if thread is not None and (not isinstance(thread, str) or not 1 <= len(thread) <= 200):
        raise InvalidValue("a thread is a string of 1 to 200 characters")
    if reply_to is not None:
        validate_id(reply_to, "m")


def pending(board: Board, name: str, *, limit: int | None = None) -> list[Message]:
    """The messages waiting in `name`'s inbox, oldest (lowest seq) first."""
    messages = [m for e in board.entries(inbox_prefix(name)) if (m := Message.of(e, board)) is not None]
    messages.sort(key=lambda m: m.seq)
    return messages if limit is None else messages[:limit]


def get(board: Board, name: str, message_id: str) -> Message:
    entry = board.get(f"{inbox_prefix(name)}{validate_id(message_id, 'm')}")
    message = None if entry is None else Message.of(entry, board)
    if message is None:
        raise NoSuchMessage(name, message_id)
    return message


def ack(board: Board, name: str, *message_ids: str) -> int:
    """Delete the messages' keys, as ONE record: all of them handled, or (`NoSuchMessage` for the
    first that is not, or no longer, there) none. Returns the record's seq."""
    keys = [f"{inbox_prefix(name)}{validate_id(message_id, 'm')}" for message_id in message_ids]
    if not keys:
        raise InvalidValue("ack needs at least one message id")
    if len(set(keys)) != len(keys):
        raise InvalidValue("a message id is given twice")
    try:
        with board.transaction(author=name) as tx:
            for key, message_id in zip(keys, message_ids, strict=True):
                if tx.get(key) is None:  # and the commit requires it still there: acked once
                    raise NoSuchMessage(name, message_id)
                tx.delete(key)
    except VersionConflict as exc:  # acked by another process between the read and the commit
        raise NoSuchMessage(name, exc.key.rsplit("/", 1)[1]) from None
    return tx.seq


def _from_event(event: Event, board: Board) -> Message | None:
    if event.op != "put":
        return None
    return Message.of(Entry(event.key, event.value, event.version, event.seq, event.author, event.ts), board)


def wait_for(
    board: Board, name: str, *, since: int, timeout: float, match: Callable[[Message], bool] | None = None
) -> Message | None:
    """The first message put into `name`'s inbox after seq `since` that `match`es, waiting up to
    `timeout` seconds in all (replay then live: one that came before the call is found too)."""
    deadline = time.monotonic() + timeout
    with board.watch(inbox_prefix(name), since=since, timeout=max(timeout, 0.0)) as watcher:
        for event in watcher:
            message = _from_event(event, board)
            if message is not None and (match is None or match(message)):
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            watcher.timeout = remaining  # the time left, not a fresh timeout per event
    return None


def inbox(board: Board, name: str, *, wait: float = 0.0, limit: int | None = None) -> list[Message]:
    """The pending messages; if there are none, wait up to `wait` seconds for the first one."""
    since = board.last_seq  # before listing: a message sent between the two is replayed, not missed
    messages = pending(board, name, limit=limit)
    if messages or wait <= 0:
        return messages
    if wait_for(board, name, since=since, timeout=wait) is None:
        return []
    return pending(board, name, limit=limit)


def iterate(board: Board, name: str, *, wait: float | None = None) -> Iterator[Message]:
    """Each pending message, then each new one as it arrives, until `wait` idle seconds pass (None:
    forever). The inbox is listed once; after that the watch delivers, so a backlog of N costs N, not
    N squared. A message not acked when the loop ends is listed again next time."""
    since = board.last_seq  # before listing: what is sent meanwhile comes from the watch
    listed: set[str] = set()
    for message in pending(board, name):
        if message.seq > since:
            listed.add(message.id)  # the watch will see it too
        yield message
    with board.watch(inbox_prefix(name), since=since, timeout=wait) as watcher:
        for event in watcher:
            new = _from_event(event, board)
            # version 1 only: a later version is a change to a message already delivered (a call
            # its caller marked missed), not a new one
            if new is None or event.version != 1 or new.id in listed:
                continue
            yield new


def request(
    board: Board, sender: str, to: str, body: Any, *, timeout: float, thread: str | None = None, queue: bool = False
) -> Message:
    """Send a request and wait for the reply to it; the reply is acked and returned. `TimedOut` if
    none comes within `timeout` seconds (a later reply stays in the inbox, flagged late)."""
    sent = send(board, sender, to, body, kind="request", thread=thread, deadline=now() + timeout, queue=queue)
    reply = wait_for(board, sender, since=sent.seq, timeout=timeout, match=lambda m: m.reply_to == sent.id)
    if reply is None:
        raise TimedOut(f"no reply to request {sent.id} from {to} within {timeout:g} s")
    ack(board, sender, reply.id)
    return reply


def reply(
    board: Board, me: str, request_id: str, body: Any, *, kind: str = "reply", extra: dict[str, Any] | None = None
) -> Sent:
    """Answer message `request_id` of `me`'s inbox and ack it, in ONE transaction: never a reply
    without the ack, nor an ack without the reply."""
    asked = get(board, me, request_id)
    late = asked.expired
    message_id = new_id("m")
    value = envelope(
        message_id, me, asked.sender, kind, body, thread=asked.thread, reply_to=asked.id, late=late, extra=extra
    )
    target = f"{PREFIX}{validate_agent(asked.sender)}/{message_id}"
    with board.transaction(author=me) as tx:
        tx.expect(asked.key, asked.version)  # still there, unchanged: acked once
        tx.delete(asked.key)
        tx.expect(target, 0)
        tx.write(target, value)
    return Sent(message_id, tx.seq, (asked.sender,))

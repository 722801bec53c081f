"""The agents layer from the shell (spec/AGENTS.md): presence, messages, request/reply, calls,
digest (conversations: cli/conv.py).

No logic lives here: each command translates its arguments to one call of `blackboard.agents` and
its result to JSON (or a line for people). Every command acts as `--as NAME` (or BLACKBOARD_AGENT),
which `base.open_board` turns into one sign of life.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..agents import Agent, AgentInfo, Item, Message
from ..agents import messages as _messages
from ..agents import presence as _presence
from ..board import Board
from ..core import codec as _codec
from ..errors import NoSuchMessage, UnknownAgent
from .base import (
    F,
    NumberCommand,
    agent_option,
    board_option,
    emit_json,
    identity,
    json_noop_option,
    open_board,
    require_agent,
)
from .render import age, cell, line_width, short_json, table

#: An unanswered request, a missed call, `inbox --wait` with nothing (base.EXIT_CODES).
EXIT_TIMED_OUT = 7
#: A rejected call (a `Refused` library error is 9 too).
EXIT_REFUSED = 9

TEXT_HELP = "BODY is a string, taken as it is (not parsed as JSON)."


def agent_command(name: str | None = None) -> Callable[[Callable[..., Any]], click.Command]:
    """A command that acts as an agent: `--board`, `--as`."""

    def decorate(f: Callable[..., Any]) -> click.Command:
        # NumberCommand: a BODY may be a negative number (`send bob -4`), as `write k -5` takes
        return click.command(name, cls=NumberCommand)(agent_option(board_option(f)))

    return decorate


def body_of(raw: str, text: bool) -> Any:
    """BODY as `write` takes VALUE: JSON, or a string with --text; '-' reads it from stdin."""
    data = sys.stdin.read() if raw == "-" else raw
    if text:
        return data[:-1] if raw == "-" and data.endswith("\n") else data
    return _codec.parse_user_json(data)


def text_option(f: F) -> F:
    return click.option("--text", is_flag=True, help=TEXT_HELP)(f)


# -- presence ------------------------------------------------------------------------------------------


@agent_command()
@click.option("--capability", "capabilities", multiple=True, metavar="C", help="What you can do (repeatable).")
@click.option("--description", default="", help="One line saying who you are.")
@click.option(
    "--ttl",
    type=click.FloatRange(1, 86400),
    metavar="S",
    default=_presence.DEFAULT_TTL,
    show_default=True,
    help="Stale after S seconds without a sign of life; offline after 3 x S.",
)
@click.option("--status", default="available", show_default=True, help="available, busy, in-call, or another word.")
@click.option(
    "--pid", type=click.IntRange(min=1), help="A process whose death makes you offline at once (a shell's $$)."
)
@json_noop_option
def join(
    board_dir: Path,
    agent: str | None,
    capabilities: tuple[str, ...],
    description: str,
    ttl: float,
    status: str,
    pid: int | None,
) -> None:
    """Register as an agent, with capabilities and a description.

    The name is --as NAME (or BLACKBOARD_AGENT); joining again changes what it says. Prints the
    registration. This process exits at once, so no pid is recorded unless --pid says
    which process stands for you; every later command run --as NAME is a sign of life.
    """
    name = require_agent(agent)
    with open_board(board_dir, agent=name) as board:
        _presence.register(
            board, name, capabilities=capabilities, description=description, status=status, ttl=ttl, pid=pid
        )
        emit_json(_lookup(board, name).as_dict())


def _lookup(board: Board, name: str) -> AgentInfo:
    """The registration as the registry derives it now (its state included)."""
    info = _presence.lookup(board, name)
    if info is None:
        raise UnknownAgent(name)
    return info


@agent_command()
@json_noop_option
def leave(board_dir: Path, agent: str | None) -> None:
    """Mark yourself gone: offline at once (messages still queue). Prints the registration."""
    name = require_agent(agent)
    with open_board(board_dir, agent=name) as board:
        if _presence.leave(board, name) is None:
            raise UnknownAgent(name)
        emit_json(_lookup(board, name).as_dict())


@agent_command()
@click.argument("status")
@json_noop_option
def status(board_dir: Path, agent: str | None, status: str) -> None:
    """Set your declared status (available, busy, in-call, ...). Prints the registration."""
    name = require_agent(agent)
    with open_board(board_dir, agent=name) as board:
        _presence.set_status(board, name, status)
        emit_json(_lookup(board, name).as_dict())


@click.command()
@board_option
@agent_option
@click.option("--capability", metavar="C", help="Only the agents with capability C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per agent and line.")
def who(board_dir: Path, agent: str | None, capability: str | None, as_json: bool) -> None:
    """The registered agents and their state (available, stale, ...).

    Needs no identity: anyone may look. Columns: name, state, capabilities, last seen, description.
    """
    with open_board(board_dir, read_only=True, agent=agent) as board:
        agents = _presence.who(board, capability=capability)
    if as_json:
        for info in agents:
            emit_json(info.as_dict())
        return
    now = time.time()
    table([a.name, a.state, ",".join(a.capabilities) or "-", age(now - a.last_seen), a.description] for a in agents)


# -- messages ------------------------------------------------------------------------------------------


@agent_command()
@click.argument("to")
@click.argument("body")
@click.option("--kind", default="message", show_default=True, help="message, request, reply, ... or your own word.")
@click.option("--thread", metavar="ID", help="A string grouping messages (a reply keeps its request's).")
@click.option("--reply-to", metavar="ID", help="The id of the message this answers.")
@text_option
@click.option("--queue", is_flag=True, help="Send to a name that never joined: it waits in that inbox.")
@json_noop_option
def send(
    board_dir: Path,
    agent: str | None,
    to: str,
    body: str,
    kind: str,
    thread: str | None,
    reply_to: str | None,
    text: bool,
    queue: bool,
) -> None:
    """Send BODY to an agent, to '*' or to '@capability'.

    '*' is every agent online but you, '@C' every agent online with capability C. BODY is JSON,
    a string with --text, '-' to read it from stdin. A name that never joined is refused (exit 3,
    with the closest names) unless --queue. Prints the id, seq and recipients.
    """
    name = require_agent(agent)
    value = body_of(body, text)
    with open_board(board_dir, agent=name) as board:
        sent = Agent(board, name, join=False).send(to, value, kind=kind, thread=thread, reply_to=reply_to, queue=queue)
    emit_json(sent.as_dict())


def message_line(message: Message, width: int | None) -> str:
    """`m-3f9a0c1d2e4b  atlas  request  {"q":"why?"}`: the id first, so that `cut -d' ' -f1` finds it."""
    cells = [message.id, message.sender, message.kind]
    if message.reply_to is not None:
        cells.append(f"re {message.reply_to}")
    if message.thread is not None:
        cells.append(f"thread {message.thread}")
    head = "  ".join(cells) + "  "
    return head + short_json(message.body, None if width is None else max(width - len(head), 20))


@agent_command()
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    metavar="S",
    help="With none waiting, wait up to S s for one (exit 7 if none came).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="At most N messages (stderr says how many more wait)."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON message per line (id, from, to, kind, body, thread, reply_to, seq, ts, ...).",
)
@click.option("--ack", "ack_them", is_flag=True, help="Ack the messages printed, once they are printed.")
def inbox(
    board_dir: Path, agent: str | None, wait: float | None, limit: int | None, as_json: bool, ack_them: bool
) -> None:
    """The messages waiting for you, oldest first.

    With --wait S and none waiting, waits up to S seconds for one (exit 7 if none came). A message
    is listed again by every inbox until it is acked (--ack, or `ack ID`).
    """
    name = require_agent(agent)
    with open_board(board_dir, agent=name, read_only=not ack_them) as board:
        waiting = _messages.inbox(board, name, wait=wait or 0.0)
        shown = waiting if limit is None else waiting[:limit]
        width = None if as_json else line_width()
        for message in shown:
            if as_json:
                emit_json(message.as_dict())
            else:
                click.echo(message_line(message, width))
        sys.stdout.flush()  # printed before acked: a crash between the two lists them again
        if len(waiting) > len(shown):
            click.echo(f"blackboard: {len(waiting) - len(shown)} more message(s) waiting", err=True)
        if ack_them:
            for message in shown:
                with contextlib.suppress(NoSuchMessage):  # another process acked it meanwhile: handled
                    _messages.ack(board, name, message.id)
    if wait is not None and not waiting:
        sys.exit(EXIT_TIMED_OUT)


@agent_command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--result-key", metavar="K", help="With a delivery: write the result under K, in the ack's record.")
@click.option("--result", metavar="JSON", help="With a delivery: the result ('-' reads stdin).")
@json_noop_option
def ack(board_dir: Path, agent: str | None, ids: tuple[str, ...], result_key: str | None, result: str | None) -> None:
    """Ack messages ID... of your inbox, or a queue delivery.

    Messages (`m-...`): all in one record, or none (exit 3 for an id not in your inbox). A delivery
    of `take` (`GROUP:KEY:TAG`): its removal from the group's pending list and, with --result-key
    and --result, the result, in one record; exit 11 (fenced) for a delivery that is not current
    (redelivered, acked, dead). Prints what was acked.
    """
    deliveries = [i for i in ids if ":" in i]
    if deliveries:
        if len(ids) != 1:
            raise click.UsageError("ack one delivery at a time (and no message ids with it)")
        if (result_key is None) != (result is None):
            raise click.UsageError("give --result-key and --result together")
        from ..work import queue

        value = None if result is None else body_of(result, False)
        with open_board(board_dir, agent=agent) as board:
            seq = queue.ack(board, ids[0], result_key=result_key, result=value, author=identity(agent))
        emit_json({"acked": list(ids), "seq": seq, "result_key": result_key})
        return
    if result_key is not None or result is not None:
        raise click.UsageError("--result-key and --result are for a delivery of `take`, not for messages")
    name = require_agent(agent)
    with open_board(board_dir, agent=name) as board:
        seq = _messages.ack(board, name, *ids)
    emit_json({"acked": list(ids), "seq": seq})


@agent_command()
@click.argument("to")
@click.argument("body")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    required=True,
    metavar="S",
    help="Wait up to S seconds for the reply (then exit 7).",
)
@text_option
@click.option("--thread", metavar="ID", help="A string grouping messages; the reply keeps it.")
@json_noop_option
def request(
    board_dir: Path, agent: str | None, to: str, body: str, timeout: float, text: bool, thread: str | None
) -> None:
    """Send a request to TO and wait for its reply (exit 7: none).

    Prints the reply message as JSON (and acks it). A reply that comes later stays in your inbox,
    flagged late.
    """
    name = require_agent(agent)
    value = body_of(body, text)
    with open_board(board_dir, agent=name) as board:
        answer = Agent(board, name, join=False).request(to, value, timeout=timeout, thread=thread)
    emit_json(answer.as_dict())


@agent_command()
@click.argument("message_id", metavar="ID")
@click.argument("body")
@text_option
@json_noop_option
def reply(board_dir: Path, agent: str | None, message_id: str, body: str, text: bool) -> None:
    """Answer message ID with BODY and ack it, in one record.

    Exit 3 if ID is not in your inbox (acked already: a reply is never sent twice). Prints the
    reply's id, seq and recipient.
    """
    name = require_agent(agent)
    value = body_of(body, text)
    with open_board(board_dir, agent=name) as board:
        sent = Agent(board, name, join=False).reply(message_id, value)
    emit_json(sent.as_dict())


# -- calls -----------------------------------------------------------------------------------------------


@agent_command()
@click.argument("callee", metavar="NAME")
@click.option("--topic", required=True, help="What the call is about (the conversation's topic).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="S",
    help="Ring for up to S seconds.",
)
@json_noop_option
def call(board_dir: Path, agent: str | None, callee: str, topic: str, timeout: float) -> None:
    """Ring agent NAME: exit 0 accepted, 9 rejected, 7 missed.

    Prints how it ended: id, state (accepted, rejected, missed), to, conversation, reason. A call
    to an agent not online is missed at once and waits in its inbox.
    """
    name = require_agent(agent)
    with open_board(board_dir, agent=name) as board:
        result = Agent(board, name, join=False).call(callee, topic=topic, timeout=timeout)
    emit_json(result.as_dict())
    if result.state != "accepted":
        sys.stdout.flush()
        why = "" if result.reason is None else f": {cell(result.reason)}"
        click.echo(f"blackboard: call {result.state}{why}", err=True)
        sys.exit(EXIT_REFUSED if result.state == "rejected" else EXIT_TIMED_OUT)


@agent_command()
@click.argument("call_id", metavar="ID")
@click.option("--turn-limit", type=click.IntRange(min=1), metavar="N", help="At most N message turns.")
@json_noop_option
def accept(board_dir: Path, agent: str | None, call_id: str, turn_limit: int | None) -> None:
    """Accept a ringing call ID: a conversation with the caller starts.

    Prints {"conversation": CID}. Exit 9 if the call no longer rings (missed: call back instead).
    """
    name = require_agent(agent)
    with open_board(board_dir, agent=name) as board:
        cid = Agent(board, name, join=False).accept(call_id, turn_limit=turn_limit)
    emit_json({"conversation": cid})


@agent_command()
@click.argument("call_id", metavar="ID")
@click.option("--reason", help="Why (the caller gets it).")
@json_noop_option
def reject(board_dir: Path, agent: str | None, call_id: str, reason: str | None) -> None:
    """Reject a ringing call ID (the caller exits 9)."""
    name = require_agent(agent)
    with open_board(board_dir, agent=name) as board:
        Agent(board, name, join=False).reject(call_id, reason)
    emit_json({"rejected": call_id, "reason": reason})


# -- digest ---------------------------------------------------------------------------------------------


def item_line(item: Item) -> str:
    due = "" if item.deadline is None else f"  (until {item.deadline})"
    return f"{item.what:<12}  {item.id}  {item.sender}  {cell(item.summary)}{due}"


@agent_command()
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON item per line (rank, type, id, from, summary, seq, deadline)."
)
def digest(board_dir: Path, agent: str | None, as_json: bool) -> None:
    """What needs your attention now, most urgent first.

    Ringing calls, then requests (soonest deadline first), then open conversations with new turns by
    others, then other messages. Conversations count turns since your last digest: each digest moves that mark to now.
    """
    name = require_agent(agent)
    with open_board(board_dir, agent=name) as board:
        items = Agent(board, name, join=False).digest()
    for item in items:
        if as_json:
            emit_json(item.as_dict())
        else:
            click.echo(item_line(item))

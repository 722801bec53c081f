"""`blackboard conv new|say|show|watch|close` and `say`: conversations of 2 to 6 agents, turn by
turn, with an optional turn limit (spec/AGENTS.md 6). Translation only, as in cli/agents.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..agents import Agent, Turn
from ..agents import conversations as _conversations
from .agents import agent_command, body_of
from .base import emit_json, group_json, json_noop_option, open_board, require_agent, subcommand
from .render import cell, table


@click.group()
@click.option("--json", "as_json", is_flag=True, help="JSON output from the subcommand (as its own --json).")
def conv(as_json: bool) -> None:
    """Conversations, turn by turn: new, say, show, watch, close.

    2 to 6 registered agents; turn n is added once (never two turns n), and a turn past the limit
    is refused with nothing written. `say` is also a command of its own.
    """


def _turn_text(turn: Turn) -> str:
    return cell(turn.text)


@subcommand(conv, "new", agent_command)
@click.option("--topic", required=True, help="What it is about.")
@click.option("--with", "others", required=True, metavar="A,B,...", help="The other participants (registered agents).")
@click.option("--turn-limit", type=click.IntRange(min=1), metavar="N", help="At most N message turns.")
@json_noop_option
def conv_new(board_dir: Path, agent: str | None, topic: str, others: str, turn_limit: int | None) -> None:
    """Start a conversation of you and the agents --with names. Prints its id and meta."""
    name = require_agent(agent)
    people = [other.strip() for other in others.split(",") if other.strip()]
    with open_board(board_dir, agent=name) as board:
        cid, meta = _conversations.create(board, name, people, topic=topic, turn_limit=turn_limit)
    emit_json({"conversation": cid, **meta})


@agent_command()
@click.argument("cid", metavar="CONV")
@click.argument("text")
@json_noop_option
def say(board_dir: Path, agent: str | None, cid: str, text: str) -> None:
    """Add TEXT as your turn in conversation CONV.

    Exit 9 (nothing written) past the turn limit, in a closed conversation, or if you are not a
    participant. TEXT '-' reads it from stdin. Prints the turn: conversation, n, from, kind, text, seq, ts.
    """
    name = require_agent(agent)
    value = body_of(text, True)
    with open_board(board_dir, agent=name) as board:
        turn = Agent(board, name, join=False).say(cid, value)
    emit_json(turn.as_dict())


conv.add_command(say)


@subcommand(conv, "show", agent_command)
@click.argument("cid", metavar="CONV")
@click.option("--json", "as_json", is_flag=True, help="The meta, then one JSON turn per line.")
def conv_show(board_dir: Path, agent: str | None, cid: str, as_json: bool) -> None:
    """The conversation's meta and its turns, as a chat: one line per turn, `n  from  text`."""
    with open_board(board_dir, agent=agent, read_only=True) as board:
        meta = _conversations.meta(board, cid)
        turns = _conversations.turns(board, cid)
    if group_json(conv, as_json):
        emit_json(meta)
        for turn in turns:
            emit_json(turn.as_dict())
        return
    limit = meta.get("turn_limit")
    used = f"{meta.get('messages', 0)}/{limit} messages" if limit is not None else f"{meta.get('messages', 0)} messages"
    click.echo(f"{cid}  {meta.get('topic')}  {meta.get('state')}  {', '.join(meta.get('participants', []))}  {used}")
    table([str(t.n), t.sender, _turn_text(t)] for t in turns)


@subcommand(conv, "watch", agent_command)
@click.argument("cid", metavar="CONV")
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="SEQ",
    help="Turns after seq SEQ (0: every turn).",
)
@click.option("--timeout", type=click.FloatRange(min=0), metavar="S", help="Stop after S idle seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON turn per line.")
def conv_watch(board_dir: Path, agent: str | None, cid: str, since: int, timeout: float | None, as_json: bool) -> None:
    """Print each turn of CONV as it comes, until the conversation closes or --timeout idle seconds."""
    from .live import stop_on_sigterm

    wants_json = group_json(conv, as_json)
    with open_board(board_dir, agent=agent, read_only=True) as board, stop_on_sigterm():
        people = _conversations.meta(board, cid).get("participants", [])
        width = max((len(p) for p in people), default=0)
        for turn in _conversations.follow(board, cid, since=since, timeout=timeout):
            if wants_json:
                emit_json(turn.as_dict())
            else:
                click.echo(f"{turn.n:>3}  {turn.sender.ljust(width)}  {_turn_text(turn)}")
            sys.stdout.flush()  # live, through a pipe too


@subcommand(conv, "close", agent_command)
@click.argument("cid", metavar="CONV")
@json_noop_option
def conv_close(board_dir: Path, agent: str | None, cid: str) -> None:
    """Close CONV: a system turn says so, and later turns are refused (exit 9). Prints that turn."""
    name = require_agent(agent)
    with open_board(board_dir, agent=name) as board:
        turn = Agent(board, name, join=False).close_conversation(cid)
    emit_json(turn.as_dict())

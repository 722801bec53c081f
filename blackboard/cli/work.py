"""The work layer's commands: claim/renew/release (leases), push/take/nack/extend/pending/dead
(queues with consumer groups; `ack` of a delivery is in agents.py's `ack`), and `task ...`.

They translate to and from `blackboard.work` (spec/WORK.md) and hold no logic of their own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..core import codec as _codec
from .base import (
    F,
    agent_option,
    board_option,
    emit_json,
    group_json,
    identity,
    json_noop_option,
    open_board,
    subcommand,
)

#: `take --wait` and `task next --wait` that found nothing (the timeout code of `watch`, `request`).
EXIT_TIMED_OUT = 7


def _holder(explicit: str | None) -> str:
    """Who holds or consumes: `--as NAME`, else BLACKBOARD_AGENT, else this host and pid."""
    name = identity(explicit)
    if name is not None:
        return name
    from ..agents import process_name

    return process_name()


def _json_arg(raw: str | None) -> Any:
    if raw is None:
        return None
    return _codec.parse_user_json(sys.stdin.read() if raw == "-" else raw)


def work_command(name: str | None = None) -> Callable[[Callable[..., Any]], click.Command]:
    def decorate(f: Callable[..., Any]) -> click.Command:
        return click.command(name)(agent_option(board_option(f)))

    return decorate


def ttl_option(f: F) -> F:
    return click.option("--ttl", type=click.FloatRange(0.1, 86400), required=True, metavar="S", help="Seconds.")(f)


def wait_option(f: F) -> F:
    return click.option(
        "--wait", type=click.FloatRange(0, 86400), default=0.0, metavar="S", help="Wait up to S seconds [default: 0]."
    )(f)


# -- leases ---------------------------------------------------------------------------------------------


@work_command()
@click.argument("key")
@ttl_option
@wait_option
@json_noop_option
def claim(board_dir: Path, agent: str | None, key: str, ttl: float, wait: float) -> None:
    """Take the exclusive lease KEY for --ttl seconds (exit 10: held).

    Prints holder, token and expiry as JSON. Exit 10 if another holds it (the error names the
    holder and the expiry). Renew it before it expires; guard writes with `write ... --fence TOKEN`:
    they are refused once it was granted again.
    """
    from ..work import lease

    holder = _holder(agent)
    with open_board(board_dir, agent=agent) as board:
        emit_json(lease.claim(board, key, holder, ttl=ttl, wait=wait).as_dict())


@work_command()
@click.argument("key")
@click.option("--token", type=click.IntRange(min=1), required=True, help="The token `claim` printed.")
@json_noop_option
def renew(board_dir: Path, agent: str | None, key: str, token: int) -> None:
    """Extend lease KEY by its ttl (exit 11: it was lost)."""
    from ..work import lease

    with open_board(board_dir, agent=agent) as board:
        emit_json(lease.renew(board, key, token).as_dict())


@work_command()
@click.argument("key")
@click.option("--token", type=click.IntRange(min=1), required=True, help="The token `claim` printed.")
@json_noop_option
def release(board_dir: Path, agent: str | None, key: str, token: int) -> None:
    """Free lease KEY (exit 11: not held with TOKEN any more)."""
    from ..work import lease

    with open_board(board_dir, agent=agent) as board:
        lease.release(board, key, token)
    emit_json({"key": key, "token": token, "released": True})


# -- queues ---------------------------------------------------------------------------------------------


@work_command()
@click.argument("prefix")
@click.argument("value")
@click.option("--text", is_flag=True, help="VALUE is a string, not JSON.")
@json_noop_option
def push(board_dir: Path, agent: str | None, prefix: str, value: str, text: bool) -> None:
    """Add an item under PREFIX, named in push order.

    Prints its key and seq; key order is push order (`<PREFIX><12-digit seq>`).
    """
    from ..work import queue

    item = value if text else _json_arg(value)
    with open_board(board_dir, agent=agent) as board:
        entry = queue.push(board, prefix, item, author=identity(agent))
    emit_json({"key": entry.key, "seq": entry.seq})


@work_command()
@click.argument("prefix")
@click.option("--group", required=True, metavar="G", help="The consumer group.")
@click.option("--lease", type=click.FloatRange(0.01, 86400), default=30.0, show_default=True, metavar="S")
@click.option("--max-deliver", type=click.IntRange(min=1), default=5, show_default=True, help="For a new group.")
@wait_option
@json_noop_option
def take(
    board_dir: Path, agent: str | None, prefix: str, group: str, lease: float, max_deliver: int, wait: float
) -> None:
    """Take one item of PREFIX for group G (exit 7: none).

    Prints its delivery (delivery_id, key, value, attempt). `ack DELIVERY_ID` when done
    (`--result-key K --result JSON` writes the result in the same record), `nack` to give it back,
    `extend` to keep it longer. An item not acked within --lease seconds is redelivered; after
    --max-deliver attempts it goes to `dead`. Exit 7 if none came.
    """
    from ..work import queue

    with (
        open_board(board_dir, agent=agent) as board,
        queue.Consumer(board, prefix, group, _holder(agent), lease=lease, max_deliver=max_deliver) as consumer,
    ):
        delivery = consumer.take(wait=wait)
    if delivery is None:
        sys.exit(EXIT_TIMED_OUT)
    emit_json(delivery.as_dict())


@work_command()
@click.argument("delivery_id")
@click.option("--delay", type=click.FloatRange(0, 86400), default=0.0, metavar="S", help="Redeliver after S s.")
@json_noop_option
def nack(board_dir: Path, agent: str | None, delivery_id: str, delay: float) -> None:
    """Give a delivery back: redelivered after --delay.

    The next take gets it with attempt + 1. Exit 11 if the delivery is not current (stale).
    """
    from ..work import queue

    with open_board(board_dir, agent=agent) as board:
        queue.nack(board, delivery_id, delay=delay, author=identity(agent))
    emit_json({"delivery_id": delivery_id, "nacked": True, "delay": delay})


@work_command()
@click.argument("delivery_id")
@click.option("--lease", type=click.FloatRange(0.01, 86400), required=True, metavar="S")
@json_noop_option
def extend(board_dir: Path, agent: str | None, delivery_id: str, lease: float) -> None:
    """Keep a delivery in progress for --lease more seconds.

    Exit 11 if the delivery is not current (stale).
    """
    from ..work import queue

    with open_board(board_dir, agent=agent) as board:
        emit_json(queue.extend(board, delivery_id, lease=lease, author=identity(agent)).as_dict())


def _rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    """JSON lines, or a table for people with a header (a missing value shows as '-')."""
    if as_json:
        for row in rows:
            emit_json(row)
        return
    from .render import cell, table

    if rows:
        table([columns, *([("-" if row.get(c) is None else cell(row.get(c))) for c in columns] for row in rows)])


@click.command()
@board_option
@click.argument("prefix", required=False)
@click.option("--group", required=True, metavar="G")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def pending(board_dir: Path, prefix: str | None, group: str, as_json: bool) -> None:
    """The deliveries of group G in flight.

    Item, consumer, attempt, idle seconds, delivery id.
    """
    from ..work import queue

    with open_board(board_dir, read_only=True) as board:
        if prefix is not None and queue.meta(board, group)["prefix"] != prefix:
            raise click.BadParameter(
                f"group {group!r} reads {queue.meta(board, group)['prefix']!r}", param_hint="PREFIX"
            )
        rows = [d.as_dict() for d in queue.pending(board, group)]
    _rows(rows, ["key", "consumer", "attempt", "idle", "delivery_id"], as_json)


@click.command()
@board_option
@click.argument("prefix", required=False)
@click.option("--group", required=True, metavar="G")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dead(board_dir: Path, prefix: str | None, group: str, as_json: bool) -> None:
    """The items of group G that ran out of attempts.

    Also those deleted while in flight.
    """
    from ..work import queue

    with open_board(board_dir, read_only=True) as board:
        rows = queue.dead(board, group)
    _rows(rows, ["item", "attempt", "reason", "consumer", "dead_at"], as_json)


# -- tasks ----------------------------------------------------------------------------------------------


@click.group()
@click.option("--json", "as_json", is_flag=True, help="JSON output from the subcommand (as its own --json).")
def task(as_json: bool) -> None:
    """Tasks that block one another: add, list, next, done, fail.

    States as in the A2A protocol: submitted, working, input-required, completed, failed, canceled,
    rejected.
    """


@subcommand(task, "add")
@board_option
@agent_option
@click.argument("title")
@click.option("--blocked-by", "blocked_by", multiple=True, metavar="ID", help="A task that must complete first.")
@click.option("--json-data", "data", metavar="JSON", help="Data for the worker.")
@json_noop_option
def task_add(board_dir: Path, agent: str | None, title: str, blocked_by: tuple[str, ...], data: str | None) -> None:
    """Add a task TITLE: prints it as JSON (its id for --blocked-by of later ones)."""
    from ..work import tasks

    with open_board(board_dir, agent=agent) as board:
        emit_json(
            tasks.add(board, title, blocked_by=blocked_by, data=_json_arg(data), author=identity(agent)).as_dict()
        )


@subcommand(task, "list")
@board_option
@click.option(
    "--state",
    type=click.Choice(["submitted", "working", "input-required", "completed", "failed", "canceled", "rejected"]),
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def task_list(board_dir: Path, state: str | None, as_json: bool) -> None:
    """Every task (in --state), oldest first."""
    from ..work import tasks

    with open_board(board_dir, read_only=True) as board:
        rows = [t.as_dict() for t in tasks.all_tasks(board, state=state)]
    _rows(rows, ["id", "state", "owner", "title", "blocked_by"], group_json(task, as_json))


@subcommand(task, "next")
@board_option
@agent_option
@click.option("--lease", type=click.FloatRange(0.01, 86400), default=300.0, show_default=True, metavar="S")
@wait_option
@json_noop_option
def task_next(board_dir: Path, agent: str | None, lease: float, wait: float) -> None:
    """Claim the oldest task whose blockers are all completed: prints it. Exit 7 if none is ready."""
    import time

    from ..work import tasks

    worker = _holder(agent)
    deadline = time.monotonic() + wait
    with open_board(board_dir, agent=agent) as board:
        while True:
            since = board.last_seq
            claimed = tasks.claim_next(board, worker, lease=lease)
            if claimed is not None:
                emit_json(claimed.as_dict())
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                sys.exit(EXIT_TIMED_OUT)
            with board.watch(tasks.PREFIX, since=since, timeout=remaining) as watcher:
                next(iter(watcher), None)  # a task added or finished: look again


@subcommand(task, "done")
@board_option
@agent_option
@click.argument("task_id")
@click.option("--result", metavar="JSON")
@json_noop_option
def task_done(board_dir: Path, agent: str | None, task_id: str, result: str | None) -> None:
    """Complete task ID you hold (exit 9 if you do not hold it)."""
    from ..work import tasks

    with open_board(board_dir, agent=agent) as board:
        emit_json(tasks.done(board, task_id, _holder(agent), result=_json_arg(result)).as_dict())


@subcommand(task, "fail")
@board_option
@agent_option
@click.argument("task_id")
@click.option("--reason", required=True)
@json_noop_option
def task_fail(board_dir: Path, agent: str | None, task_id: str, reason: str) -> None:
    """Fail task ID you hold, saying why (exit 9 if you do not hold it)."""
    from ..work import tasks

    with open_board(board_dir, agent=agent) as board:
        emit_json(tasks.fail(board, task_id, _holder(agent), reason=reason).as_dict())

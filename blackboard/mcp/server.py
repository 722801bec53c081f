"""The MCP server: one long-lived process, one open board, each tool one call of the library.

Tools are named as the CLI's verbs and take the library's parameter names; no logic lives here
beyond translating arguments in and results (or errors, `results.py`) out. Waits are bounded by
`wait_s` (at most `MAX_WAIT_S`): clients cap a blocking call, and some drop server push, so a
model polls with a bounded wait rather than relying on a notification. Identity is configuration
(`--as`, BLACKBOARD_AGENT), never an argument a model types.

>>> serve(Path("board"), agent="atlas", profile="messaging")   # runs until stdin closes
"""

from __future__ import annotations

import bisect
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from .. import __version__
from ..agents import Agent, process_name
from ..agents import presence as _presence
from ..board import Board
from ..core import codec as _codec
from ..errors import BlackboardError, InvalidValue, KeyNotFound, TimedOut
from ..models import Event
from ..work import lease as _lease
from ..work import queue as _queue
from ..work import tasks as _tasks
from . import MAX_WAIT_S, PROFILES
from .results import from_exception, ok, structured_errors

Wait = Annotated[float, Field(ge=0, le=MAX_WAIT_S, description=f"Seconds to wait, at most {MAX_WAIT_S:g}.")]
Key = Annotated[str, Field(description="A board key, e.g. 'results/q1'.")]
Json = Annotated[Any, Field(description="Any JSON value.")]
Token = Annotated[int, Field(ge=1, description="The token `claim` returned.")]
Limit = Annotated[int, Field(ge=1, le=1000)]
Seconds = Annotated[float, Field(gt=0, le=86400)]

INSTRUCTIONS = (
    "A shared blackboard: keys with JSON values that agents, scripts and people read, write and watch. "
    "Waits are bounded by wait_s; a wait that ends with nothing returns timed_out true (not an error). "
    "Errors come as {error: {type, message, ...data}}."
)


class Tools:
    """The tools of one server: a board opened once, and who this process acts as."""

    def __init__(self, board: Board, name: str | None) -> None:
        self.board = board
        self.name = name
        self.joined: Agent | None = None

    @property
    def me(self) -> Agent:
        if self.name is None:  # refused at start-up for the profiles that need it; a guard only
            raise BlackboardError("this server acts as no agent: start it with --as NAME")
        return Agent(self.board, self.name, join=False)

    @property
    def holder(self) -> str:
        """Who holds a lease or consumes a queue: this agent, else this host and pid (as the CLI)."""
        return self.name or process_name()

    # -- keys ----------------------------------------------------------------------------------------

    def read(self, key: Key, at: Annotated[int | None, Field(ge=0)] = None) -> dict[str, Any]:
        """The entry of KEY (value, version, seq, author, ts); with `at`, as it was just after that seq."""
        entry = self.board.get(key, at=at)
        if entry is None:
            raise KeyNotFound(key, at=at)
        return entry.as_dict()

    def ls(self, prefix: str = "", limit: Limit = 100, after: str | None = None) -> dict[str, Any]:
        """Live entries whose key starts with `prefix`, in key order; page on with `after` = the `next` returned."""
        keys = self.board.keys(prefix)
        start = 0 if after is None else bisect.bisect_right(keys, after)
        page = keys[start : start + limit]
        entries = [e.as_dict() for k in page if (e := self.board.get(k)) is not None]
        more = start + limit < len(keys)
        return {"entries": entries, "next": page[-1] if more and page else None}

    def write(
        self,
        key: Key,
        value: Json,
        expect_version: Annotated[int | None, Field(ge=0, description="Only at this version (0: absent).")] = None,
        idempotency_key: str | None = None,
        fence: Annotated[int | None, Field(ge=1, description="A lease token: refused once it is lost.")] = None,
    ) -> dict[str, Any]:
        """Set KEY to VALUE. Returns key, version, seq."""
        entry = self.board.write(
            key, value, expect_version=expect_version, idempotency_key=idempotency_key, fence=self._fence(fence)
        )
        return {"key": entry.key, "version": entry.version, "seq": entry.seq}

    def delete(
        self,
        key: Key,
        expect_version: Annotated[int | None, Field(ge=1)] = None,
        idempotency_key: str | None = None,
        fence: Annotated[int | None, Field(ge=1)] = None,
    ) -> dict[str, Any]:
        """Delete KEY. Returns key, seq."""
        entry = self.board.delete(
            key, expect_version=expect_version, idempotency_key=idempotency_key, fence=self._fence(fence)
        )
        return {"key": entry.key, "seq": entry.seq}

    def _fence(self, token: int | None) -> Any:
        return None if token is None else _lease.fence_of_token(self.board, token)

    def history(self, key: Key, limit: Limit = 50) -> dict[str, Any]:
        """The latest `limit` retained events of KEY, oldest first, deletes included."""
        return {"events": [e.as_dict() for e in self.board.history(key)[-limit:]]}

    def watch(
        self,
        prefix: str = "",
        key: Annotated[str | None, Field(description="One key exactly, instead of a prefix.")] = None,
        since: Annotated[int | None, Field(ge=0, description="Events after this seq (the `since` returned).")] = None,
        cursor: Annotated[str | None, Field(description="A consumer name kept in the board, instead of since.")] = None,
        wait_s: Wait = 0.0,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        """Events after `since` (or `cursor`), waiting up to wait_s for the first. Returns events, since, timed_out."""
        events: list[Event] = []
        with self.board.watch(prefix, key=key, since=since, cursor=cursor, timeout=wait_s) as watcher:
            event = watcher.next_nowait()
            if event is None and wait_s > 0:
                event = next(watcher, None)
            while event is not None:
                # A page ends between seqs, never inside a transaction: `since` is a seq, and a cut
                # inside one would skip the rest of it. The event left over is not committed (a
                # cursor stays before it) and `since` replays it: it comes again in the next page.
                if len(events) >= limit and event.seq != events[-1].seq:
                    resume = events[-1].seq
                    break
                events.append(event)
                event = watcher.next_nowait()
            else:
                resume = watcher.seq  # drained: every event up to the reader's position was seen
        return {"events": [e.as_dict() for e in events], "since": resume, "timed_out": not events}

    # -- agents (spec/AGENTS.md) ---------------------------------------------------------------------

    def who(self, capability: str | None = None) -> dict[str, Any]:
        """The registered agents and their state (available, busy, stale, offline, ...)."""
        return {"agents": [a.as_dict() for a in _presence.who(self.board, capability=capability)]}

    def join(
        self,
        capabilities: list[str] | None = None,
        description: str = "",
        status: str = "available",
        ttl: Annotated[float, Field(ge=1, le=86400)] = _presence.DEFAULT_TTL,
    ) -> dict[str, Any]:
        """Register as this server's agent, so others can message you; alive while the server runs."""
        me = self.me
        if self.joined is None:
            # Its heartbeat thread signs life while this process lives; its pid makes it offline
            # at once when the process dies.
            self.joined = Agent(
                self.board, me.name, capabilities=capabilities or (), description=description, status=status, ttl=ttl
            )
            self.joined.join()
        else:  # joined already: change what the registration says; the heartbeat goes on
            self.joined.ttl = ttl
            _presence.register(
                self.board,
                me.name,
                capabilities=capabilities or (),
                description=description,
                status=status,
                ttl=ttl,
                pid=os.getpid(),
            )
        info = _presence.lookup(self.board, me.name)
        return {} if info is None else info.as_dict()

    def send(
        self,
        to: Annotated[str, Field(description="An agent, '*' (everyone online) or '@capability'.")],
        body: Json,
        kind: str = "message",
        thread: str | None = None,
        reply_to: str | None = None,
        queue: Annotated[bool, Field(description="To a name that never joined: it waits in that inbox.")] = False,
    ) -> dict[str, Any]:
        """Send BODY to an agent. Returns id, seq, recipients."""
        return self.me.send(to, body, kind=kind, thread=thread, reply_to=reply_to, queue=queue).as_dict()

    def inbox(self, wait_s: Wait = 0.0, limit: Limit | None = None) -> dict[str, Any]:
        """Your messages not yet acked, oldest first; with none, waits up to wait_s for one."""
        found = self.me.inbox(wait=wait_s, limit=limit)
        return {"messages": [m.as_dict() for m in found], "timed_out": not found}

    def ack(
        self,
        ids: Annotated[list[str], Field(min_length=1, description="Message ids (m-...), or one delivery id of take.")],
        result_key: Annotated[str | None, Field(description="With a delivery: write `result` here too.")] = None,
        result: Json = None,
    ) -> dict[str, Any]:
        """Mark messages handled (all or none), or finish a delivery of `take`. Returns the seq."""
        if any(":" in i for i in ids):  # a delivery id (GROUP:KEY:TAG), as `blackboard ack` tells them apart
            if len(ids) != 1:
                raise InvalidValue("ack one delivery at a time, and no message ids with it")
            seq = _queue.ack(self.board, ids[0], result_key=result_key, result=result, author=self.name)
            return {"acked": ids, "seq": seq, "result_key": result_key}
        if result_key is not None:
            raise InvalidValue("result_key and result are for a delivery of take, not for messages")
        return {"acked": ids, "seq": self.me.ack(*ids)}

    def request(
        self,
        to: str,
        body: Json,
        wait_s: Annotated[float, Field(gt=0, le=MAX_WAIT_S)] = 20.0,
        thread: str | None = None,
    ) -> dict[str, Any]:
        """Send a request and wait up to wait_s for its reply (acked for you). A later reply waits in your inbox."""
        try:
            answer = self.me.request(to, body, timeout=wait_s, thread=thread)
        except TimedOut as exc:
            return {"reply": None, "timed_out": True, "message": str(exc)}
        return {"reply": answer.as_dict(), "timed_out": False}

    def reply(self, message_id: str, body: Json) -> dict[str, Any]:
        """Answer message MESSAGE_ID of your inbox and ack it, in one record."""
        return self.me.reply(message_id, body).as_dict()

    def digest(self, mark: bool = True) -> dict[str, Any]:
        """What needs your attention now, most urgent first: calls, requests, conversations, messages."""
        return {"items": [i.as_dict() for i in self.me.digest(mark=mark)]}

    # -- work (spec/WORK.md) -------------------------------------------------------------------------

    def claim(self, key: str, ttl: Seconds, wait_s: Wait = 0.0) -> dict[str, Any]:
        """Take the exclusive lease KEY for ttl s (error Held: who holds it, until when). Returns its token."""
        return _lease.claim(self.board, key, self.holder, ttl=ttl, wait=wait_s).as_dict()

    def renew(self, key: str, token: Token) -> dict[str, Any]:
        """Extend lease KEY by its ttl (error Fenced: it was lost)."""
        return _lease.renew(self.board, key, token).as_dict()

    def release(self, key: str, token: Token) -> dict[str, Any]:
        """Free lease KEY."""
        _lease.release(self.board, key, token)
        return {"key": key, "token": token, "released": True}

    def take(
        self,
        prefix: str,
        group: str,
        lease: Annotated[float, Field(ge=0.01, le=86400)] = _queue.DEFAULT_LEASE,
        max_deliver: Annotated[int, Field(ge=1)] = _queue.DEFAULT_MAX_DELIVER,
        wait_s: Wait = 0.0,
    ) -> dict[str, Any]:
        """Take one item under PREFIX for consumer group GROUP; ack its delivery_id when done, or nack it."""
        with _queue.Consumer(self.board, prefix, group, self.holder, lease=lease, max_deliver=max_deliver) as consumer:
            delivery = consumer.take(wait=wait_s)
        return {"delivery": None if delivery is None else delivery.as_dict(), "timed_out": delivery is None}

    def nack(self, delivery_id: str, delay: Annotated[float, Field(ge=0, le=86400)] = 0.0) -> dict[str, Any]:
        """Give a delivery back: redelivered after delay s."""
        _queue.nack(self.board, delivery_id, delay=delay, author=self.name)
        return {"delivery_id": delivery_id, "nacked": True, "delay": delay}

    def task_add(self, title: str, blocked_by: list[str] | None = None, data: Json = None) -> dict[str, Any]:
        """Add a task (blocked until every task of blocked_by completes). Returns it, with its id."""
        return _tasks.add(self.board, title, blocked_by=blocked_by or (), data=data, author=self.name).as_dict()

    def task_next(self, lease: Annotated[float, Field(ge=0.01, le=86400)] = _tasks.DEFAULT_LEASE) -> dict[str, Any]:
        """Claim the oldest task whose blockers all completed; task null if none is ready."""
        task = _tasks.claim_next(self.board, self.holder, lease=lease)
        return {"task": None if task is None else task.as_dict()}

    def task_done(self, task_id: str, result: Json = None) -> dict[str, Any]:
        """Complete a task you hold."""
        return _tasks.done(self.board, task_id, self.holder, result=result).as_dict()


#: tool -> its method, where the name would shadow a builtin (`list` is the CLI's `ls`)
_METHODS = {"list": "ls"}
#: Tools that change nothing: a client may run them without asking.
READ_ONLY = frozenset({"read", "list", "history", "watch", "who", "digest"})


def _as_tool(method: Callable[..., dict[str, Any]], touch: Callable[[], None]) -> Callable[..., CallToolResult]:
    """`method` as the SDK calls a tool: the same signature (the SDK derives the JSON schema from
    it), a `CallToolResult` out, and library errors as structured results."""

    def tool(**arguments: Any) -> CallToolResult:
        touch()
        try:
            payload = method(**arguments)
        except (BlackboardError, OSError) as exc:
            return from_exception(exc)
        return ok(payload)

    tool.__name__, tool.__doc__ = method.__name__, method.__doc__
    signature = inspect.signature(method, eval_str=True)
    tool.__signature__ = signature.replace(return_annotation=CallToolResult)  # type: ignore[attr-defined]
    return tool


def build(board: Board, *, agent: str | None, profile: str) -> tuple[MCPServer[Any], Tools]:
    """The server of `profile`'s tools on `board`, acting as `agent`."""
    from mcp_types import ToolAnnotations

    tools = Tools(board, agent)
    server: MCPServer[Any] = MCPServer(
        "blackboard",
        version=__version__,
        instructions=INSTRUCTIONS,
        middleware=[structured_errors],
        log_level="WARNING",
    )

    def touch() -> None:
        if agent is not None:
            board.mark_seen(agent)  # every call is a sign of life, as every CLI command run --as NAME

    for name in PROFILES[profile]:
        method = getattr(tools, _METHODS.get(name, name))
        server.add_tool(
            _as_tool(method, touch),
            name=name,
            description=(method.__doc__ or "").strip(),
            annotations=ToolAnnotations(read_only_hint=name in READ_ONLY),
            structured_output=False,
        )
    _add_entry_resource(server, board)
    return server, tools


def _add_entry_resource(server: MCPServer[Any], board: Board) -> None:
    """`blackboard://entry/{+key}`: an entry, read-only, for clients that attach resources to a
    prompt. Offered in every profile: a client lists resources on demand, they cost no context."""
    from mcp.server.mcpserver.exceptions import ResourceError

    @server.resource(
        "blackboard://entry/{+key}",
        name="entry",
        description="The entry of a key, as JSON.",
        mime_type="application/json",
    )
    def entry(key: str) -> str:
        try:
            found = board.get(key)
            if found is None:
                raise KeyNotFound(key)
        except BlackboardError as exc:
            raise ResourceError(str(exc)) from None
        return _codec.dumps(found.as_dict()).decode()


def serve(board_dir: Path, *, agent: str | None, profile: str) -> None:
    """Open the board once and answer tool calls on stdin/stdout until the client closes stdin."""
    from ..trust.files import signer_for

    # An agent that holds a key (`blackboard keygen --as NAME`) signs what it writes here too.
    board = Board.open(board_dir, author=agent, signer=None if agent is None else signer_for(agent))
    try:
        if agent is not None:
            board.mark_seen(agent)
        server, tools = build(board, agent=agent, profile=profile)
        try:
            server.run("stdio")
        except* (BrokenPipeError, ConnectionResetError):
            pass  # the client is gone (killed, or it closed the pipe mid-answer): so is our job
        finally:
            if tools.joined is not None:
                tools.joined.leave()  # a clean end: offline at once, not after 3 ttls
    finally:
        board.close()

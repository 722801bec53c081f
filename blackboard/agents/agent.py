"""`board.agent(name, ...)`: one agent's handle on the layer, as a context manager that registers,
signs life from a thread, and leaves on exit (spec/AGENTS.md)."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from .. import Board
from . import calls, conversations, digest, messages, presence
from .calls import CallResult
from .conversations import Turn
from .digest import Item
from .messages import Message, Sent
from .names import validate_agent
from .presence import AgentInfo

T = TypeVar("T")


async def off_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`await asyncio.to_thread(...)`, with asyncio imported here: a module that imports it at the
    top costs every synchronous caller (each CLI command of a shell agent) ~25 ms."""
    import asyncio

    return await asyncio.to_thread(function, *args, **kwargs)


class Agent:
    """Acts as `name` on `board`. With `join=True` (the default for `board.agent`) entering the
    context registers it and starts a heartbeat every ttl/3 seconds; leaving the context leaves."""

    def __init__(
        self,
        board: Board,
        name: str,
        *,
        capabilities: list[str] | tuple[str, ...] = (),
        description: str = "",
        status: str = "available",
        ttl: float = presence.DEFAULT_TTL,
        join: bool = True,
    ) -> None:
        self.board = board
        self.name = validate_agent(name)
        self.capabilities = tuple(capabilities)
        self.description = description
        self.ttl = ttl
        self._status = status
        self._join = join
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        #: the error that stopped the heartbeat, if one did (a board gone read-only, ...)
        self.heartbeat_error: BaseException | None = None

    # -- presence ----------------------------------------------------------------------------------

    def join(self) -> None:
        presence.register(
            self.board,
            self.name,
            capabilities=self.capabilities,
            description=self.description,
            status=self._status,
            ttl=self.ttl,
            pid=os.getpid(),
        )
        if self._beat is None:
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, name=f"blackboard-agent-{self.name}", daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.board.mark_seen(self.name)
            except Exception as exc:  # reported on the handle; presence then goes stale, as it should
                self.heartbeat_error = exc
                return

    def leave(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)
            self._beat = None
        presence.leave(self.board, self.name)

    @property
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        presence.set_status(self.board, self.name, value)
        self._status = value

    def who(self, capability: str | None = None) -> list[AgentInfo]:
        return presence.who(self.board, capability=capability)

    # -- messages ----------------------------------------------------------------------------------

    def send(
        self,
        to: str,
        body: Any,
        *,
        kind: str = "message",
        thread: str | None = None,
        reply_to: str | None = None,
        queue: bool = False,
    ) -> Sent:
        return messages.send(self.board, self.name, to, body, kind=kind, thread=thread, reply_to=reply_to, queue=queue)

    def inbox(self, *, wait: float = 0.0, limit: int | None = None) -> list[Message]:
        """The messages not yet acked, oldest first; with none, wait up to `wait` s for one."""
        return messages.inbox(self.board, self.name, wait=wait, limit=limit)

    def messages(self, *, wait: float | None = None) -> Iterator[Message]:
        """Every pending message, then each new one as it comes, until `wait` idle seconds pass."""
        return messages.iterate(self.board, self.name, wait=wait)

    def ack(self, *handled: Message | str) -> int:
        """Mark messages handled, all in one record (`me.ack(*batch)`: one write for a batch)."""
        return messages.ack(self.board, self.name, *(m if isinstance(m, str) else m.id for m in handled))

    def request(self, to: str, body: Any, *, timeout: float, thread: str | None = None) -> Message:
        """Send a request and block for its reply (`TimedOut` after `timeout` s)."""
        return messages.request(self.board, self.name, to, body, timeout=timeout, thread=thread)

    def reply(self, message: Message | str, body: Any) -> Sent:
        return messages.reply(self.board, self.name, message if isinstance(message, str) else message.id, body)

    # -- calls and conversations -------------------------------------------------------------------

    def call(self, to: str, *, topic: str, timeout: float = 30.0) -> CallResult:
        return calls.call(self.board, self.name, to, topic=topic, timeout=timeout)

    def accept(self, call: Message | str, *, turn_limit: int | None = None) -> str:
        return calls.accept(self.board, self.name, call if isinstance(call, str) else call.id, turn_limit=turn_limit)

    def reject(self, call: Message | str, reason: Any = None) -> None:
        calls.reject(self.board, self.name, call if isinstance(call, str) else call.id, reason)

    def conversation(self, others: list[str], *, topic: str, turn_limit: int | None = None) -> str:
        cid, _ = conversations.create(self.board, self.name, others, topic=topic, turn_limit=turn_limit)
        return cid

    def say(self, cid: str, text: Any) -> Turn:
        return conversations.say(self.board, self.name, cid, text)

    def turns(self, cid: str) -> list[Turn]:
        return conversations.turns(self.board, cid)

    def close_conversation(self, cid: str) -> Turn:
        return conversations.close(self.board, self.name, cid)

    def digest(self, *, mark: bool = True) -> list[Item]:
        return digest.digest(self.board, self.name, mark=mark)

    # -- asyncio twins: the same calls on a worker thread, so the event loop never blocks ------------

    async def asend(self, to: str, body: Any, **options: Any) -> Sent:
        return await off_loop(self.send, to, body, **options)

    async def ainbox(self, *, wait: float = 0.0, limit: int | None = None) -> list[Message]:
        return await off_loop(self.inbox, wait=wait, limit=limit)

    async def amessages(self, *, wait: float | None = None) -> AsyncIterator[Message]:
        iterator = self.messages(wait=wait)
        done = object()
        while (message := await off_loop(next, iterator, done)) is not done:
            assert isinstance(message, Message)
            yield message

    async def arequest(self, to: str, body: Any, *, timeout: float, thread: str | None = None) -> Message:
        return await off_loop(self.request, to, body, timeout=timeout, thread=thread)

    async def acall(self, to: str, *, topic: str, timeout: float = 30.0) -> CallResult:
        return await off_loop(self.call, to, topic=topic, timeout=timeout)

    # -- context -------------------------------------------------------------------------------------

    def __enter__(self) -> Agent:
        if self._join:
            self.join()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._join:
            self.leave()

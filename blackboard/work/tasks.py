"""Tasks with dependencies (spec/WORK.md section 3): a plan that agents work through.

Each task is the key `tasks/<id>`; its states are the A2A protocol's. `next` claims the oldest
submitted task whose blockers are all completed, with a compare-and-set on its version, so two
workers never take the same task; a claim carries a lease, and a worker that dies without finishing
leaves the task to be claimed again once its lease runs out. Finishing is fenced on the claim: a
worker whose task was taken over cannot complete it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from .. import Board, Fence, Fenced, InvalidValue, KeyNotFound, Refused, VersionConflict
from ..agents import format_ts, validate_agent
from .checks import check_seconds

PREFIX = "tasks/"
STATES = ("submitted", "working", "input-required", "completed", "failed", "canceled", "rejected")
#: States a task does not leave.
FINAL = ("completed", "failed", "canceled", "rejected")
DEFAULT_LEASE = 300.0


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    state: str
    blocked_by: tuple[str, ...]
    data: Any
    result: Any
    reason: str | None
    owner: str | None
    attempt: int
    created: float
    seq: int
    lease: float
    updated: float

    @property
    def fence(self) -> Fence:
        """The claim this task is held by (its latest change): finishing is conditioned on it."""
        return Fence(PREFIX + self.id, self.seq)

    @property
    def expired(self) -> bool:
        return self.state == "working" and time.time() > self.updated + self.lease

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "state": self.state,
            "blocked_by": list(self.blocked_by),
            "data": self.data,
            "result": self.result,
            "reason": self.reason,
            "owner": self.owner,
            "attempt": self.attempt,
            "created": format_ts(self.created),
            "seq": self.seq,
        }


def _task(board: Board, task_id: str) -> Task:
    entry = board.get(PREFIX + _check_id(task_id))
    if entry is None:
        raise KeyNotFound(PREFIX + task_id)
    return _of(entry.value, entry.seq, entry.ts.timestamp())


def _of(value: dict[str, Any], seq: int, updated: float) -> Task:
    return Task(
        value["id"],
        value["title"],
        value["state"],
        tuple(value.get("blocked_by") or ()),
        value.get("data"),
        value.get("result"),
        value.get("reason"),
        value.get("owner"),
        int(value.get("attempt") or 0),
        float(value["created"]),
        seq,
        float(value.get("lease") or DEFAULT_LEASE),
        updated,
    )


def _check_id(task_id: object) -> str:
    if not isinstance(task_id, str) or not task_id.startswith("t-") or not 3 <= len(task_id) <= 66:
        raise InvalidValue(f"not a task id: {task_id!r}")
    validate_agent(task_id)
    return task_id


def add(
    board: Board,
    title: str,
    *,
    blocked_by: list[str] | tuple[str, ...] = (),
    data: Any = None,
    author: str | None = None,
) -> Task:
    """A new submitted task. Its blockers must exist (so the graph can have no cycle)."""
    if not isinstance(title, str) or not 1 <= len(title) <= 500:
        raise InvalidValue("a task's title is a string of 1 to 500 characters")
    blockers = list(dict.fromkeys(blocked_by))
    task_id = f"t-{secrets.token_hex(4)}"
    value = {
        "id": task_id,
        "title": title,
        "state": "submitted",
        "blocked_by": blockers,
        "data": data,
        "result": None,
        "reason": None,
        "owner": None,
        "attempt": 0,
        "created": time.time(),
    }
    with board.transaction(author=author) as tx:
        for blocker in blockers:
            if tx.get(PREFIX + _check_id(blocker)) is None:  # and the commit requires it still there
                raise KeyNotFound(PREFIX + blocker)
        tx.expect(PREFIX + task_id, 0)
        tx.write(PREFIX + task_id, value)
    entry = tx.entries[-1]
    return _of(entry.value, entry.seq, entry.ts.timestamp())


def all_tasks(board: Board, *, state: str | None = None) -> list[Task]:
    """Every task (in `state`, if given), oldest first."""
    if state is not None and state not in STATES:
        raise InvalidValue(f"a task's state is one of {', '.join(STATES)}, not {state!r}")
    tasks = [_of(e.value, e.seq, e.ts.timestamp()) for e in board.entries(PREFIX) if isinstance(e.value, dict)]
    tasks.sort(key=lambda t: (t.created, t.id))
    return [t for t in tasks if state is None or t.state == state]


def ready(board: Board) -> list[Task]:
    """The tasks a worker may claim now, oldest first: submitted (or working with a lease run out)
    and every blocker completed."""
    tasks = all_tasks(board)
    done = {t.id for t in tasks if t.state == "completed"}
    return [t for t in tasks if (t.state == "submitted" or t.expired) and set(t.blocked_by) <= done]


def claim_next(board: Board, worker: str, *, lease: float = DEFAULT_LEASE) -> Task | None:
    """Claim the oldest ready task for `worker` (compare-and-set: one worker per task); None if none."""
    validate_agent(worker)
    check_seconds("a lease", lease, 0.01)
    while True:
        candidates = ready(board)
        if not candidates:
            return None
        for task in candidates:
            value = {**task.as_dict(), "created": task.created, "state": "working", "owner": worker}
            value.update(attempt=task.attempt + 1, lease=float(lease))
            del value["seq"]
            try:
                entry = board.write(PREFIX + task.id, value, author=worker, fence=task.fence)
            except Fenced:
                continue  # another worker claimed it first
            return _of(entry.value, entry.seq, entry.ts.timestamp())


def _finish(board: Board, task: Task, worker: str | None, state: str, **fields: Any) -> Task:
    value = {**task.as_dict(), "created": task.created, "state": state, **fields}
    del value["seq"]
    entry = board.write(PREFIX + task.id, value, author=worker, fence=task.fence)
    return _of(entry.value, entry.seq, entry.ts.timestamp())


def _held(board: Board, task_id: str, worker: str) -> Task:
    task = _task(board, task_id)
    if task.state != "working" or task.owner != worker:
        raise Refused(
            f"task {task_id} is {task.state}" + (f", held by {task.owner}" if task.owner else "") + f", not by {worker}"
        )
    return task


def done(board: Board, task_id: str, worker: str, *, result: Any = None) -> Task:
    """Complete a task `worker` holds (`Refused` if it does not; `Fenced` if it was taken over)."""
    return _finish(board, _held(board, task_id, worker), worker, "completed", result=result)


def fail(board: Board, task_id: str, worker: str, *, reason: str) -> Task:
    return _finish(board, _held(board, task_id, worker), worker, "failed", reason=reason)


def renew(board: Board, task_id: str, worker: str) -> Task:
    """Restart the claim's lease (a write fenced on the claim)."""
    task = _held(board, task_id, worker)
    return _finish(board, task, worker, "working")


def set_state(board: Board, task_id: str, state: str, *, reason: str | None = None, author: str | None = None) -> Task:
    """Move a task that is not final to `state` (input-required, canceled, rejected, submitted)."""
    if state not in STATES:
        raise InvalidValue(f"a task's state is one of {', '.join(STATES)}, not {state!r}")
    while True:
        task = _task(board, task_id)
        if task.state in FINAL:
            raise Refused(f"task {task_id} is {task.state} already")
        try:
            return _finish(board, task, author, state, reason=reason)
        except (Fenced, VersionConflict):
            continue

"""`board.transaction()`: several puts and deletes committed as one record, conditioned on versions.

Optimistic, like etcd's txn: reads inside the block go to the board (never stale) and each read
key's version becomes a condition of the commit ("unchanged since I read it"), as do `expect()`s;
the writes are kept in memory and committed at the end of the block as ONE log record with one seq
(spec/FORMAT.md section 5.4), so readers and watchers see all of it or none of it, and a SIGKILL
mid-commit leaves none of it (the record is one write() of a whole line). Nothing holds the writer
lock while the block runs.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from .core import codec as _codec
from .core.engine import Committed, Op
from .core.index import DELETE, PUT
from .core.keys import validate_key
from .errors import InvalidValue
from .models import Entry, Fence, HasFence, as_fence

if TYPE_CHECKING:
    from .board import Board


class Transaction:
    """Collects conditions and changes; `commit()` (or the end of a `with` block) applies them at once."""

    def __init__(self, board: Board, *, author: str | None = None, idempotency_key: str | None = None) -> None:
        self.board = board
        self.author = author
        self.idempotency_key = idempotency_key
        self.expected: dict[str, int] = {}
        self.fences: dict[str, int] = {}
        self.ops: list[Op] = []
        self._keys: set[str] = set()
        self._done: Committed | None = None
        self.seq = 0
        self.committed = False

    # -- conditions --------------------------------------------------------------------------------

    def expect(self, key: str, version: int) -> None:
        """Commit only if `key` is at `version` when the transaction commits (0: absent)."""
        validate_key(key)
        if type(version) is not int or version < 0:
            raise InvalidValue(f"expected version of {key!r} must be an int >= 0, not {version!r}")
        self.expected[key] = version

    def fence(self, fence: Fence | HasFence) -> None:
        """Commit only while `fence` holds (a lease not granted again since): else `Fenced`."""
        key, seq = as_fence(fence)
        self.fences[key] = seq

    def get(self, key: str) -> Entry | None:
        """The key's committed entry now; the commit then requires it unchanged (same version, or
        still absent). Reads see the board, not this transaction's own writes (they apply at commit)."""
        entry = self.board.get(key)
        self.expected.setdefault(key, 0 if entry is None else entry.version)
        return entry

    def read(self, key: str, default: Any = None) -> Any:
        """The key's committed value now, or `default`; see `get`."""
        entry = self.get(key)
        return default if entry is None else entry.value

    # -- changes -------------------------------------------------------------------------------------

    def write(self, key: str, value: Any) -> None:
        """Put `key` = `value` when the transaction commits."""
        validate_key(key)
        self._add(Op(PUT, key, _codec.encode_value(value, self.board.config.max_value_bytes)))

    def delete(self, key: str) -> None:
        """Delete `key` when the transaction commits (`KeyNotFound` then if it has no value)."""
        validate_key(key)
        self._add(Op(DELETE, key))

    def _add(self, op: Op) -> None:
        if self.committed:
            raise InvalidValue("this transaction was committed already")
        if op.key in self._keys:
            raise InvalidValue(f"key {op.key!r} is changed twice in one transaction")
        self.ops.append(op)
        self._keys.add(op.key)

    # -- committing ----------------------------------------------------------------------------------

    def commit(self) -> list[Entry]:
        """Apply every change as one record, if every condition holds (`VersionConflict` naming the
        first key that broke one: then nothing is written). A transaction with no change writes nothing."""
        self._apply()
        return self.entries

    def _apply(self) -> None:
        if self.committed:
            raise InvalidValue("this transaction was committed already")
        if self.ops:
            self._done = self.board.commit(
                self.ops, expect=self.expected, author=self.author, idem=self.idempotency_key, fences=self.fences
            )
            self.seq = self._done.seq
        self.committed = True  # only once it is: a refused commit leaves it False

    @property
    def entries(self) -> list[Entry]:
        """The entries the commit made (a delete's: value None, version 0), in the order given; built
        when asked for (each holds a fresh copy of its value)."""
        done = self._done
        if done is None:
            return []
        return [
            Entry(c.key, None if c.op == DELETE else _codec.decode(c.value), c.version, done.seq, done.author, done.ts)
            for c in done.changes
        ]

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and not self.committed:
            self._apply()  # the entries are built only if someone asks for them

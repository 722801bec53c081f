"""The three stores under test behind one small interface: blackboard, sqlite3 (WAL) and diskcache.

Each does the same logical work per write, at a stated durability:

- blackboard: `board.write(key, value)` (one log append under flock; entry files follow in the background).
- sqlite3: one transaction = INSERT a log row + UPSERT the key's row (version + 1), WAL journal.
- diskcache: `cache.set(key, value)` (diskcache keeps no log; its set is one sqlite transaction too).

Default durability: blackboard's write() is in the page cache (survives SIGKILL), sqlite
synchronous=NORMAL, diskcache as shipped (synchronous=NORMAL). Durable: blackboard `fsync=True`,
sqlite synchronous=FULL, diskcache `sqlite_synchronous=2` (FULL).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson

SYSTEMS = ("blackboard", "sqlite3", "diskcache")
OURS = "blackboard"
PEERS = ("sqlite3", "diskcache")

PAYLOAD = "x" * 100


def make_value(i: int) -> dict[str, Any]:
    """The value every benchmark writes: a small dict, ~120 bytes as JSON."""
    return {"i": i, "payload": PAYLOAD}


def prefix_end(prefix: str) -> str:
    """The smallest string above every string that starts with `prefix` (for a range query)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Store(Protocol):
    def write(self, key: str, value: Any) -> None: ...

    def read(self, key: str) -> Any: ...

    def read_prefix(self, prefix: str) -> dict[str, Any]: ...

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        """Bulk set-up, untimed: the fastest way the store offers to hold these items."""

    def verify(self, writes: int, keys: int) -> str:
        """After a run: '' if the store holds what `writes` writes to `keys` distinct keys leave, else why not."""

    def close(self) -> None: ...


def init_board_whole_log(path: Path) -> Any:
    """`Board.init(path)` with writers' own background compaction off (`compact_at_bytes=None`), so
    that the log keeps every record written; plain `Board.init(path)` on a build without the setting."""
    from blackboard import Board

    try:
        return Board.init(path, compact_at_bytes=None)
    except TypeError:
        return Board.init(path)


class BoardStore:
    def __init__(self, path: Path, *, durable: bool, create: bool) -> None:
        from blackboard import Board

        board = path / "board"
        self.board = Board.init(board, fsync=durable) if create else Board.open(board)

    def write(self, key: str, value: Any) -> None:
        self.board.write(key, value)

    def read(self, key: str) -> Any:
        return self.board.read(key)

    def read_prefix(self, prefix: str) -> dict[str, Any]:
        return self.board.read_prefix(prefix)

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        write = self.board.write
        for key, value in items:
            write(key, value)

    def verify(self, writes: int, keys: int) -> str:
        problems = []
        if self.board.last_seq != writes:
            problems.append(f"log holds {self.board.last_seq} records, expected {writes}")
        if len(self.board.keys()) != keys:
            problems.append(f"{len(self.board.keys())} live keys, expected {keys}")
        report = self.board.check()
        if not report.ok:
            problems.append(f"check(): {report.problems()[:3]}")
        return "; ".join(problems)

    def close(self) -> None:
        self.board.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB NOT NULL, ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL, seq INTEGER NOT NULL
) WITHOUT ROWID;
"""
_INSERT_LOG = "INSERT INTO log (key, value, ts) VALUES (?, ?, ?)"
_UPSERT_KV = (
    "INSERT INTO kv (key, value, version, seq) VALUES (?, ?, 1, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = kv.version + 1, seq = excluded.seq"
)


class SqliteStore:
    def __init__(self, path: Path, *, durable: bool, create: bool) -> None:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the write lock
        # up front and waits in the busy handler, instead of failing to upgrade a read transaction.
        self.con = sqlite3.connect(path / "db.sqlite", timeout=60.0, isolation_level=None)
        if create:
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.executescript(_SCHEMA)
        self.con.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")

    def write(self, key: str, value: Any) -> None:
        data = orjson.dumps(value)
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            seq = con.execute(_INSERT_LOG, (key, data, time.time())).lastrowid
            con.execute(_UPSERT_KV, (key, data, seq))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def read(self, key: str) -> Any:
        row = self.con.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def read_prefix(self, prefix: str) -> dict[str, Any]:
        rows = self.con.execute(
            "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, prefix_end(prefix))
        )
        return {key: orjson.loads(value) for key, value in rows}

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            for key, value in items:
                data = orjson.dumps(value)
                seq = self.con.execute(_INSERT_LOG, (key, data, time.time())).lastrowid
                self.con.execute(_UPSERT_KV, (key, data, seq))

    def verify(self, writes: int, keys: int) -> str:
        (logged,) = self.con.execute("SELECT count(*) FROM log").fetchone()
        (held,) = self.con.execute("SELECT count(*) FROM kv").fetchone()
        if (logged, held) != (writes, keys):
            return f"{logged} log rows and {held} keys, expected {writes} and {keys}"
        return ""

    def close(self) -> None:
        self.con.close()


class DiskcacheStore:
    def __init__(self, path: Path, *, durable: bool, create: bool) -> None:
        import diskcache  # no type hints: pyproject.toml lets mypy treat it as Any

        # The default (durable=False) is diskcache as shipped: WAL, synchronous=NORMAL (1).
        settings: dict[str, Any] = {"sqlite_synchronous": 2} if durable else {}
        self.cache: Any = diskcache.Cache(str(path / "cache"), **settings)

    def write(self, key: str, value: Any) -> None:
        self.cache.set(key, value)

    def read(self, key: str) -> Any:
        return self.cache.get(key)

    def read_prefix(self, prefix: str) -> dict[str, Any]:
        # diskcache has no range query; iterkeys() walks keys in sorted order, so start at the first
        # key of the prefix's range and stop at the first one past it (its best case, not a full scan).
        out: dict[str, Any] = {}
        get = self.cache.get
        for key in self.cache.iterkeys():
            if key < prefix:
                continue
            if not key.startswith(prefix):
                break
            out[key] = get(key)
        return out

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        with self.cache.transact():
            for key, value in items:
                self.cache.set(key, value)

    def verify(self, writes: int, keys: int) -> str:
        held = len(self.cache)
        return "" if held == keys else f"{held} keys, expected {keys}"

    def close(self) -> None:
        self.cache.close()


_STORES: dict[str, type[BoardStore | SqliteStore | DiskcacheStore]] = {
    "blackboard": BoardStore,
    "sqlite3": SqliteStore,
    "diskcache": DiskcacheStore,
}


def open_store(system: str, path: Path, *, durable: bool, create: bool = False) -> Store:
    """Open `system`'s store in directory `path`; `create` makes it (once, before any worker opens it)."""
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return _STORES[system](path, durable=durable, create=create)

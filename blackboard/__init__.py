"""blackboard: a file-based shared blackboard through which agents, scripts and people coordinate.

A board is a directory. Every change is one JSON line appended to `log.jsonl` (the source of truth);
the latest value of every live key also sits in `entries/<key>.json`. See spec/FORMAT.md.

The layers above the core (agents, work queues, trust, the CLI, MCP and web adapters) use only the
names exported here.
"""

from typing import TYPE_CHECKING, Any

from .board import Board
from .core.entries import Report
from .errors import (
    BlackboardError,
    Compacted,
    CorruptLog,
    InvalidKey,
    InvalidValue,
    KeyNotFound,
    LockTimeout,
    NotABoard,
    ReadOnlyBoard,
    VersionConflict,
)
from .models import BoardConfig, Entry, Event
from .transaction import Transaction

if TYPE_CHECKING:
    from .core.compact import CompactReport
    from .core.watch import Subscription, Watcher

__version__ = "0.2.0"

__all__ = [
    "BlackboardError",
    "Board",
    "BoardConfig",
    "CompactReport",
    "Compacted",
    "CorruptLog",
    "Entry",
    "Event",
    "InvalidKey",
    "InvalidValue",
    "KeyNotFound",
    "LockTimeout",
    "NotABoard",
    "ReadOnlyBoard",
    "Report",
    "Subscription",
    "Transaction",
    "VersionConflict",
    "Watcher",
    "__version__",
]

_LAZY = {"CompactReport": "compact", "Subscription": "watch", "Watcher": "watch"}


def __getattr__(name: str) -> Any:
    """The types of watching and compaction, imported on first use (watchfiles is not light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".core.{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

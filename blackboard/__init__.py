"""blackboard: a file-based shared blackboard through which agents, scripts and people coordinate.

A board is a directory. Every change is one JSON line appended to `log.jsonl` (the source of truth);
the latest value of every live key also sits in `entries/<key>.json`. See spec/FORMAT.md.

The layers above the core (agents, work queues, trust, the CLI, MCP and web adapters) use only the
names exported here.
"""

from typing import TYPE_CHECKING, Any

from .board import Board
from .core.rules import CONTRACTS_KEY, KEYS_PREFIX, Contract
from .errors import (
    BlackboardError,
    Compacted,
    ContractViolation,
    CorruptLog,
    Fenced,
    Held,
    InvalidKey,
    InvalidValue,
    KeyNotFound,
    LockLost,
    LockTimeout,
    LogGone,
    LogTruncated,
    NoSuchMessage,
    NotABoard,
    OutOfSpace,
    ReadOnlyBoard,
    Refused,
    StaleView,
    TimedOut,
    UnknownAgent,
    Unverified,
    VersionConflict,
)
from .models import BoardConfig, Entry, Event, Fence, LogRecord, Signer

if TYPE_CHECKING:
    from .core.compact import CompactReport
    from .core.entries import Report
    from .core.repair import RepairReport
    from .core.watch import Subscription, Watcher
    from .transaction import Transaction

__version__ = "0.2.0"

__all__ = [
    "CONTRACTS_KEY",
    "KEYS_PREFIX",
    "BlackboardError",
    "Board",
    "BoardConfig",
    "CompactReport",
    "Compacted",
    "Contract",
    "ContractViolation",
    "CorruptLog",
    "Entry",
    "Event",
    "Fence",
    "Fenced",
    "Held",
    "InvalidKey",
    "InvalidValue",
    "KeyNotFound",
    "LockLost",
    "LockTimeout",
    "LogGone",
    "LogRecord",
    "LogTruncated",
    "NoSuchMessage",
    "NotABoard",
    "OutOfSpace",
    "ReadOnlyBoard",
    "Refused",
    "RepairReport",
    "Report",
    "Signer",
    "StaleView",
    "Subscription",
    "TimedOut",
    "Transaction",
    "UnknownAgent",
    "Unverified",
    "VersionConflict",
    "Watcher",
    "__version__",
]

_LAZY = {
    "CompactReport": ".core.compact",
    "RepairReport": ".core.repair",
    "Report": ".core.entries",
    "Subscription": ".core.watch",
    "Transaction": ".transaction",
    "Watcher": ".core.watch",
}


def __getattr__(name: str) -> Any:
    """Types imported on first use: a CLI command that reads a key needs none of them (watchfiles,
    gzip and the maintenance code are not light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

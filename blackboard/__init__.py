"""blackboard: a file-based shared blackboard through which agents, scripts and people coordinate.

A board is a directory. Every change is one JSON line appended to `log.jsonl` (the source of truth);
the latest value of every live key also sits in `entries/<key>.json`. See spec/FORMAT.md.
"""

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
from .models import Entry, Event

__version__ = "0.1.0"

__all__ = [
    "BlackboardError",
    "Board",
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
    "VersionConflict",
    "__version__",
]

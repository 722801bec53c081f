"""The public data types: `Entry`, `Event` and `BoardConfig` (the contents of `board.json`).

Plain slotted classes, not pydantic models: every read builds an `Entry` and a watcher builds an
`Event` per record, and a shell agent pays for imports on every command. Importing pydantic and
building three models cost ~135 ms of a ~260 ms `blackboard read` (measured, see bench/RESULTS.md),
and constructing a validated model ~3 us of a ~2 us budget per event. Nothing here needs validating:
the fields come from records the log reader has already checked. `BoardConfig` validates
`board.json` by hand (eight fields), with messages in the shape pydantic gives.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

FORMAT_NAME: Literal["blackboard"] = "blackboard"
#: 2: transaction records, idempotency keys and the log header's generation (spec/FORMAT.md).
FORMAT_VERSION = 3
#: A soft board's format: its writer lock is the token lock (spec 9.1), which releases that know only
#: filelock's claims do not take, so they must refuse the board (spec 3).
SOFT_LOCK_VERSION = 4
#: Boards of these format versions open; a writer upgrades board.json to FORMAT_VERSION (spec 3).
READABLE_VERSIONS = (1, 2, 3, 4)


class _Record:
    """What Entry and Event share: fields in slots, `ts` parsed on first use, `as_dict()` for JSON."""

    __slots__ = ("_ts", "_when", "author", "key", "seq", "value", "version")
    _FIELDS: tuple[str, ...] = ()

    key: str
    value: Any
    version: int
    seq: int
    author: str
    _ts: str
    _when: datetime | None

    @property
    def ts(self) -> datetime:
        """The time of the write (UTC), parsed from the record's RFC 3339 string on first use."""
        when = self._when
        if when is None:
            when = self._when = datetime.fromisoformat(self._ts)
        return when

    @property
    def ts_text(self) -> str:
        """The record's `ts` exactly as on disk: `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
        return self._ts

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (ts as its RFC 3339 string): what `--json` prints."""
        return {name: (self._ts if name == "ts" else getattr(self, name)) for name in self._FIELDS}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  # values are JSON: lists and dicts do not hash

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({inner})"


class Entry(_Record):
    """The latest state of a key: what `board.get()` returns and what an entry file holds.

    `version` is 1 when the key was created and +1 per put (0 in the entry a delete returns); `seq`
    is the sequence number of the record that produced this state.
    """

    __slots__ = ()
    _FIELDS = ("key", "value", "version", "seq", "author", "ts")

    def __init__(self, key: str, value: Any, version: int, seq: int, author: str, ts: str | datetime) -> None:
        self.key = key
        self.value = value
        self.version = version
        self.seq = seq
        self.author = author
        if isinstance(ts, datetime):
            self._when, self._ts = ts, format_ts(ts)
        else:
            self._when, self._ts = None, ts


class Event(_Record):
    """One change, as a watcher receives it and `board.history()` lists it.

    `compacted` is True when compaction removed events of this key between the watcher's position
    and this one: the event carries the key's state, not every step to it. `txn` is True when the
    change is part of a multi-key transaction: the other changes of that transaction share its seq.
    """

    __slots__ = ("compacted", "op", "txn")
    _FIELDS = ("seq", "op", "key", "value", "version", "author", "ts", "compacted", "txn")

    op: Literal["put", "delete"]
    compacted: bool
    txn: bool

    def __init__(
        self,
        seq: int,
        op: Literal["put", "delete"],
        key: str,
        value: Any,
        version: int,
        author: str,
        ts: str | datetime,
        compacted: bool = False,
        txn: bool = False,
    ) -> None:
        self.seq = seq
        self.op = op
        self.key = key
        self.value = value
        self.version = version
        self.author = author
        if isinstance(ts, datetime):
            self._when, self._ts = ts, format_ts(ts)
        else:
            self._when, self._ts = None, ts
        self.compacted = compacted
        self.txn = txn

    def to_entry(self) -> Entry:
        """The entry this event left: what `board.get(key)` returned right after it (a put's)."""
        return Entry(self.key, self.value, self.version, self.seq, self.author, self._ts)


def format_ts(when: datetime) -> str:
    """A datetime as a record's `ts`: UTC, microseconds, `Z`."""
    from datetime import UTC

    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Fence(NamedTuple):
    """A condition a write may carry: commit only if `key`'s latest change is still the one at `seq`
    (etcd's mod_revision compare). A lease's grant is a fence: `board.write(k, v, fence=lease)`."""

    key: str
    seq: int


class HasFence(Protocol):
    """Anything that carries a fence (a lease): `board.write(k, v, fence=lease)`."""

    @property
    def fence(self) -> Fence: ...


def as_fence(fence: Fence | HasFence) -> Fence:
    """The (key, seq) of a fence or of what carries one, checked."""
    found = fence if isinstance(fence, Fence) else getattr(fence, "fence", None)
    if not isinstance(found, Fence):
        from .errors import InvalidValue

        raise InvalidValue(f"a fence is a Fence(key, seq) or has one (a lease), not {fence!r}")
    from .core.keys import validate_key

    validate_key(found.key)
    if type(found.seq) is not int or found.seq < 1:
        from .errors import InvalidValue

        raise InvalidValue(f"a fence's seq is an int >= 1, not {found.seq!r}")
    return found


class LogRecord(NamedTuple):
    """One record of the log as a signature check needs it (spec/TRUST.md 4): the record, checked
    (its checksum member removed), and the message its `sig` covers (None if it has no `sig`, or one
    that is not where the spec puts it)."""

    record: dict[str, Any]
    message: bytes | None


class Signer(Protocol):
    """What signs the records an agent writes (spec/TRUST.md 4): `blackboard.trust.load_signer`
    makes one from a key created by `blackboard keygen`. A board handle given one signs every record
    whose author is `name`."""

    @property
    def name(self) -> str: ...

    @property
    def kid(self) -> str:
        """The id of its key, as registered at `_board/keys/<name>` (spec/TRUST.md 3)."""
        ...

    def sign(self, message: bytes) -> str:
        """The `sig` member's value for `message` (what spec/TRUST.md 4 says a signature covers)."""
        ...


#: Defaults of a new board (spec/FORMAT.md section 3): a board that is just used compacts itself once
#: its log passes 64 MiB and half of it is superseded, so it never needs an operator to stay fast.
DEFAULT_COMPACT_AT_BYTES = 64 << 20
DEFAULT_COMPACT_AT_DEAD_RATIO = 0.5
DEFAULT_RETENTION_SECONDS = 24 * 3600.0


class BoardConfig:
    """The contents of `board.json`: the format marker and the settings every process must share.

    lock: `flock` (kernel locks, for local disks) or `soft` (an exclusively created claim, for
    NFS/SMB where flock may exclude nothing). fsync: fsync every append (survive power loss, not just
    SIGKILL). retention_seconds: how long compaction keeps deletes and idempotency keys.
    compact_at_bytes / compact_at_dead_ratio: writers compact in the background once the log passes
    that size and at least that share of its records is superseded (None: never on their own).

    Immutable, compared by its settings (not `extra`). A plain slotted class rather than a frozen
    dataclass: the decorator generates and compiles its methods at import (~0.5 ms of every command).
    """

    __slots__ = (
        "compact_at_bytes",
        "compact_at_dead_ratio",
        "extra",
        "format",
        "fsync",
        "lock",
        "max_value_bytes",
        "retention_seconds",
        "version",
    )
    #: the settings, in board.json's order (`extra` is not one: it holds the fields we do not know)
    FIELDS = (
        "format",
        "version",
        "lock",
        "max_value_bytes",
        "fsync",
        "retention_seconds",
        "compact_at_bytes",
        "compact_at_dead_ratio",
    )

    format: Literal["blackboard"]
    version: int
    lock: Literal["flock", "soft"]
    max_value_bytes: int
    fsync: bool
    retention_seconds: float
    compact_at_bytes: int | None
    compact_at_dead_ratio: float
    #: fields this release does not know, kept so that rewriting board.json loses nothing
    extra: dict[str, Any]

    def __init__(
        self,
        format: Literal["blackboard"] = FORMAT_NAME,
        version: int = FORMAT_VERSION,
        lock: Literal["flock", "soft"] = "flock",
        max_value_bytes: int = 1 << 20,
        fsync: bool = False,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        compact_at_bytes: int | None = DEFAULT_COMPACT_AT_BYTES,
        compact_at_dead_ratio: float = DEFAULT_COMPACT_AT_DEAD_RATIO,
        extra: dict[str, Any] | None = None,
    ) -> None:
        init = object.__setattr__  # __setattr__ refuses: the settings are shared, never changed in place
        init(self, "format", format)
        init(self, "version", version)
        init(self, "lock", lock)
        init(self, "max_value_bytes", max_value_bytes)
        init(self, "fsync", fsync)
        init(self, "retention_seconds", retention_seconds)
        init(self, "compact_at_bytes", compact_at_bytes)
        init(self, "compact_at_dead_ratio", compact_at_dead_ratio)
        init(self, "extra", {} if extra is None else extra)
        problems = _config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BoardConfig:
        """From board.json's object (ValueError naming each bad field); unknown fields are kept."""
        known = cls.FIELDS
        return cls(
            **{k: v for k, v in raw.items() if k in known}, extra={k: v for k, v in raw.items() if k not in known}
        )

    def as_dict(self) -> dict[str, Any]:
        """board.json's object: the settings, then the unknown fields kept from the file."""
        out = {name: getattr(self, name) for name in self.FIELDS}
        return {**out, **self.extra}

    def _settings(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not BoardConfig:
            return NotImplemented
        return self._settings() == other._settings()

    def __hash__(self) -> int:
        return hash(self._settings())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in (*self.FIELDS, "extra"))
        return f"BoardConfig({inner})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"BoardConfig is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"BoardConfig is immutable: cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would restore the slots with setattr, which this class refuses.
        return (_config_from_dict, (self.as_dict(),))


def _config_from_dict(raw: dict[str, Any]) -> BoardConfig:
    return BoardConfig.from_dict(raw)


def _config_problems(config: BoardConfig) -> list[str]:
    def is_int(v: object) -> bool:
        return type(v) is int

    def is_number(v: object) -> bool:
        return type(v) in (int, float)

    out = []
    if config.format != FORMAT_NAME:
        out.append(f"format: must be {FORMAT_NAME!r}")
    if not is_int(config.version) or config.version < 1:
        out.append("version: must be an integer >= 1")
    if config.lock not in ("flock", "soft"):
        out.append("lock: must be 'flock' or 'soft'")
    if not is_int(config.max_value_bytes) or config.max_value_bytes <= 0:
        out.append("max_value_bytes: must be an integer > 0")
    if type(config.fsync) is not bool:
        out.append("fsync: must be true or false")
    if not is_number(config.retention_seconds) or config.retention_seconds < 0:
        out.append("retention_seconds: must be a number >= 0")
    if config.compact_at_bytes is not None and (not is_int(config.compact_at_bytes) or config.compact_at_bytes <= 0):
        out.append("compact_at_bytes: must be an integer > 0 or null")
    ratio = config.compact_at_dead_ratio
    if not is_number(ratio) or not 0 < ratio <= 1:
        out.append("compact_at_dead_ratio: must be a number in (0, 1]")
    return out

"""The public data types (pydantic models) and the board's settings file, `board.json`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

FORMAT_NAME: Literal["blackboard"] = "blackboard"
FORMAT_VERSION = 1


class Entry(BaseModel):
    """The latest state of a key: what `board.get()` returns and what an entry file holds."""

    model_config = ConfigDict(frozen=True)

    key: str
    value: Any
    version: int = Field(description="1 when the key was created, +1 per put; 0 in the entry a delete returns")
    seq: int = Field(description="sequence number of the log record that produced this state")
    author: str
    ts: datetime


_M = TypeVar("_M", bound=BaseModel)


def _trusted(cls: type[_M], fields: dict[str, Any]) -> _M:
    """A model from fields the library built itself, without validation.

    pydantic's `model_construct` costs ~3 us; this ~1 us. Every write returns an Entry and a watcher
    builds an Event per record, so that is most of the difference between ~250k and ~500k events/s
    in a catch-up, and a tenth of a write.
    """
    obj = object.__new__(cls)
    _set_dict(obj, "__dict__", fields)
    # One set shared by every trusted instance of a class: frozen models never change it.
    _set_fields(obj, _ALL_FIELDS.get(cls) or _ALL_FIELDS.setdefault(cls, set(cls.model_fields)))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


# The slot setters pydantic's BaseModel declares, fetched once (cheaper than object.__setattr__).
_set_dict = object.__setattr__
_set_fields = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}


def entry(key: str, value: Any, version: int, seq: int, author: str, ts: str) -> Entry:
    """An Entry from a record's fields (see `_trusted`)."""
    return _trusted(
        Entry,
        {
            "key": key,
            "value": value,
            "version": version,
            "seq": seq,
            "author": author,
            "ts": datetime.fromisoformat(ts),
        },
    )


class Event(BaseModel):
    """One log record, as a watcher receives it and `board.history()` lists it."""

    model_config = ConfigDict(frozen=True)

    seq: int
    op: Literal["put", "delete"]
    key: str
    value: Any
    version: int
    author: str
    ts: datetime
    compacted: bool = Field(
        default=False,
        description="True when compaction removed events of this key between the watcher's position "
        "and this one: the event carries the key's state, not every step to it",
    )

    @classmethod
    def from_record(cls, rec: dict[str, Any], *, compacted: bool = False) -> Event:
        """Build from a record already checked by the log reader (see `_trusted`)."""
        return _trusted(
            cls,
            {
                "seq": rec["seq"],
                "op": rec["op"],
                "key": rec["key"],
                "value": rec.get("value"),
                "version": rec["version"],
                "author": rec.get("author", ""),
                "ts": datetime.fromisoformat(rec["ts"]),
                "compacted": compacted,
            },
        )

    def to_entry(self) -> Entry:
        """The entry this event left: what `board.get(key)` returned right after it (a put's)."""
        return _trusted(
            Entry,
            {
                "key": self.key,
                "value": self.value,
                "version": self.version,
                "seq": self.seq,
                "author": self.author,
                "ts": self.ts,
            },
        )


class BoardConfig(BaseModel):
    """The contents of `board.json`: the format marker and the settings every process must share."""

    model_config = ConfigDict(extra="allow")

    format: Literal["blackboard"] = FORMAT_NAME
    version: int = FORMAT_VERSION
    lock: Literal["flock", "soft"] = Field(
        default="flock",
        description="flock: kernel locks, for local disks. soft: filelock's strict soft lock (an "
        "exclusively created file), for NFS/SMB where flock may exclude nothing",
    )
    max_value_bytes: int = Field(default=1 << 20, gt=0)
    fsync: bool = Field(default=False, description="fsync every append: survive power loss, not just SIGKILL")
    retention_seconds: float = Field(default=24 * 3600, ge=0, description="how long compaction keeps deletes")
    compact_at_bytes: int | None = Field(
        default=None, description="if set, writers compact once the log passes this size"
    )
    compact_at_dead_ratio: float = Field(
        default=0.5, gt=0, le=1, description="...and at least this share of its records is superseded"
    )

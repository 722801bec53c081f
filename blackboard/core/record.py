"""The record format, in one place: the log header, a record's bytes, parsing and checking them,
and the seq rule (spec/FORMAT.md sections 5 and 5.2).

Every other module asks this one what a line means. A record is one JSON object on one line:

    {"seq":7,"op":"put","key":"k","value":1,"version":2,"author":"a@h","ts":"...Z"}
    {"seq":8,"op":"txn","ops":[{"op":"put","key":"a","value":1,"version":1},
                               {"op":"delete","key":"b","value":null,"version":0}],"author":"a@h","ts":"...Z"}

with an optional `"idem":"..."` (the idempotency key of the write) after `ts`, an optional
`"sig":"..."` (the writer's signature of every byte before `,"sig":`, spec/TRUST.md 4) after that, and, in a log of
format 3, the record's checksum as its last member, `"xxh3":"<16 hex digits>"`: XXH3-64 of every byte
of the line before `,"xxh3":"` (spec 5.3). A flipped bit anywhere in the line is then detected, not
read as another value. Lines are built by concatenation so that a value is encoded exactly once;
our writer's field order is fixed, which lets hot paths (the index, watchers) read a few fields of a
line without parsing all of it. A line that is not laid out that way is parsed in full: other
writers may order fields as they like (the checksum member alone has a fixed place and spelling).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, cast

from xxhash import xxh3_64_hexdigest as _xxh3

from ..errors import CorruptLog
from . import codec as _codec

PUT = "put"
DELETE = "delete"
TXN = "txn"
#: A repair's record of seqs whose records it quarantined (spec 5.4): `from` .. `seq`, no change.
LOST = "lost"
_OPS = frozenset((PUT, DELETE))
HEADER_KEY = "blackboard_log"
#: Format version written in new log headers (readers accept any; board.json's version governs).
LOG_VERSION = 3
#: Logs of this version and later carry a checksum on every line, the header's included.
SEALED_VERSION = 3
#: The checksum member, as the last 27 bytes of a line of a sealed log: `,"xxh3":"`, 16 hex digits, `"}`.
_SEAL = b',"xxh3":"'
_SEAL_TAIL = len(_SEAL) + 16 + 2
assert _SEAL_TAIL == 27  # spelled out on the hot paths
_NO_SEAL = "no checksum (a log of format 3 has one on every line)"
_MISMATCH = "checksum mismatch (the record was damaged)"
#: The signature member, right before the checksum member (or the closing brace of an older log's line).
SIG_MEMBER = b',"sig":'
#: What signs a record: the bytes of its line before `,"sig":` -> the member's value (spec/TRUST.md 4).
Sign = Callable[[bytes], str]


class Change(NamedTuple):
    """One key's change in a record: a put or delete record has one, a transaction several."""

    op: str
    key: str
    version: int
    #: the value's JSON (b"null" for a delete): reads decode only it
    value: bytes


# -- the header ------------------------------------------------------------------------------------


class Header:
    """What a log file's first line says (spec/FORMAT.md 5.1)."""

    __slots__ = ("archived_through", "compacted_through", "generation", "line", "purged_deletes_through", "version")

    def __init__(
        self,
        compacted_through: int = 0,
        purged_deletes_through: int = 0,
        generation: str = "",
        archived_through: int = 0,
        line: bytes = b"",
        version: int = LOG_VERSION,
    ) -> None:
        self.compacted_through = compacted_through
        self.purged_deletes_through = purged_deletes_through
        #: random per log file (init, compaction): a reopened file is the same log only if it matches
        self.generation = generation
        #: the removed history of every record with seq <= this is in archive/ (as-of reads use it)
        self.archived_through = archived_through
        self.line = line
        #: the log's format: from SEALED_VERSION on, every line carries its checksum
        self.version = version

    @property
    def sealed(self) -> bool:
        return self.version >= SEALED_VERSION


def new_generation() -> str:
    return os.urandom(8).hex()


def log_header(
    compacted_through: int = 0, purged_deletes_through: int = 0, *, generation: str = "", archived_through: int = 0
) -> bytes:
    """The first line of a new log file (format LOG_VERSION, so sealed), newline included."""
    body = _codec.dumps(
        {
            HEADER_KEY: LOG_VERSION,
            "compacted_through": compacted_through,
            "purged_deletes_through": purged_deletes_through,
            "archived_through": archived_through,
            "generation": generation or new_generation(),
        }
    )
    return seal(body[:-1]) + b"\n"


def seal(body: bytes) -> bytes:
    """`body`, a line's JSON object without its closing brace, closed with its checksum member."""
    return b"".join((body, _SEAL, _xxh3(body).encode(), b'"}'))


def reseal(line: bytes) -> bytes:
    """A complete line of an unsealed log (format 1 or 2, any writer's layout) with a checksum added:
    what a compaction or repair writes when it rewrites an old log at the current format."""
    body = line.rstrip()
    if not body.endswith(b"}"):
        raise ValueError("not a JSON object")
    return seal(body[:-1].rstrip())


def is_sealed(line: bytes) -> bool:
    """Whether a line has a checksum member where the spec puts it (not whether it matches)."""
    return len(line) > _SEAL_TAIL and line.startswith(_SEAL, len(line) - _SEAL_TAIL)


def check_seal(path: Path | str, offset: int, line: bytes) -> None:
    """Raise `CorruptLog` unless the line ends with its checksum member and the checksum matches.

    For lines a hot path passes over without parsing them (another prefix's, already seen). ~0.25 us:
    the member is rebuilt and compared whole, layout included, in one comparison.
    """
    if line[-27:] != (',"xxh3":"' + _xxh3(line[:-27]) + '"}').encode():  # the _SEAL member, rebuilt
        raise corrupt(path, offset, _MISMATCH if is_sealed(line) else _NO_SEAL, line)


def corrupt(path: Path | str, offset: int, reason: str, line: bytes = b"") -> CorruptLog:
    """The error for a bad line, with the seq it claims when one can be read (it may be damaged too)."""
    return CorruptLog(str(path), offset, reason, seq=fast_seq(line) if line else None)


def parse_header(path: Path | str, line: bytes) -> Header:
    """The header line, or a `CorruptLog` saying the file is not a blackboard log."""
    try:
        raw: Any = _codec.decode(line)
    except _codec.DecodeError as exc:
        raise CorruptLog(str(path), 0, f"the first line is not the log header ({exc})") from None
    if not isinstance(raw, dict) or HEADER_KEY not in raw:
        raise CorruptLog(str(path), 0, "the first line is not the log header")
    version = raw[HEADER_KEY]
    if type(version) is not int or version < 1:
        raise CorruptLog(str(path), 0, "the log header's format version is not a positive integer")
    if version >= SEALED_VERSION and raw.pop("xxh3", None) != _xxh3(line[: len(line) - _SEAL_TAIL]):
        raise CorruptLog(str(path), 0, "the log header's checksum is missing or does not match")
    if version < SEALED_VERSION and "xxh3" in raw:
        # No writer of an older format writes one: the version itself was damaged (a 3 read as 2
        # would turn every line's check off).
        raise CorruptLog(str(path), 0, f"a log header of format {version} with a checksum (its version was damaged)")
    through, purged = raw.get("compacted_through", 0), raw.get("purged_deletes_through", 0)
    archived, generation = raw.get("archived_through", 0), raw.get("generation", "")
    if type(through) is not int or type(purged) is not int or type(archived) is not int:
        raise CorruptLog(str(path), 0, "the log header's seqs are not integers")
    if type(generation) is not str:
        raise CorruptLog(str(path), 0, "the log header's generation is not a string")
    return Header(through, purged, generation, archived, bytes(line), version)


# -- writing ---------------------------------------------------------------------------------------


def encode_record(
    seq: int,
    op: str,
    key: str,
    value_json: bytes,
    version: int,
    author: str,
    ts: str,
    idem: str | None = None,
    *,
    sealed: bool = True,
    sign: Sign | None = None,
) -> bytes:
    """One put or delete line, newline included, fields in the order spec/FORMAT.md gives; signed by
    `sign` if given; with its checksum unless the log is of an older format (`sealed=False`)."""
    body = b"".join(
        (
            b'{"seq":%d,"op":"%s","key":' % (seq, op.encode()),
            _codec.dumps(key),
            b',"value":',
            value_json,
            b',"version":%d,"author":' % version,
            _codec.dumps(author),
            b',"ts":"',
            ts.encode(),
            b'"' if idem is None else b'","idem":' + _codec.dumps(idem),
        )
    )
    return _close(body, sealed, sign)


def _close(body: bytes, sealed: bool, sign: Sign | None) -> bytes:
    """A record's line from its body (no closing brace): its signature member, then its checksum."""
    if sign is not None:
        body = body + SIG_MEMBER + _codec.dumps(sign(body))
    return seal(body) + b"\n" if sealed else body + b"}\n"


#: What a signature covers, before the record's bytes: a context that no other use of the key shares,
#: and the board's id (board.json's `id`), so that a record copied from another board does not verify.
SIG_CONTEXT = b"blackboard-record-signature/1\n"


def signature_message(board_id: str, body: bytes) -> bytes:
    """The message an agent signs for a record whose line, before `,"sig":`, is `body`."""
    return b"".join((SIG_CONTEXT, board_id.encode(), b"\n", body))


def signed_bytes(line: bytes, sig: object, *, sealed: bool) -> bytes | None:
    """The bytes a record's signature covers: its line before `,"sig":`, if the member `sig` (its
    value, as parsed) is where spec/TRUST.md 4 puts it, spelled as our writer spells it; else None."""
    if type(sig) is not str:
        return None
    line = line.rstrip(b"\n")
    member = SIG_MEMBER + _codec.dumps(sig)
    end = len(line) - (_SEAL_TAIL if sealed else 1)
    if end < len(member) or line[end - len(member) : end] != member:
        return None
    return line[: end - len(member)]


def encode_lost(first: int, seq: int, author: str, ts: str) -> bytes:
    """The record a repair writes for seqs `first`..`seq`, whose records it quarantined (always sealed:
    a repaired log is of the current format)."""
    body = (
        b'{"seq":%d,"op":"lost","from":%d,"author":' % (seq, first) + _codec.dumps(author) + b',"ts":"%s"' % ts.encode()
    )
    return seal(body) + b"\n"


def encode_txn(
    seq: int,
    changes: list[Change],
    author: str,
    ts: str,
    idem: str | None = None,
    *,
    sealed: bool = True,
    sign: Sign | None = None,
) -> bytes:
    """One transaction line: every change of the transaction, one seq."""
    ops = b",".join(
        b'{"op":"%s","key":' % c.op.encode()
        + _codec.dumps(c.key)
        + b',"value":'
        + c.value
        + b',"version":%d}' % c.version
        for c in changes
    )
    body = b"".join(
        (
            b'{"seq":%d,"op":"txn","ops":[' % seq,
            ops,
            b'],"author":',
            _codec.dumps(author),
            b',"ts":"',
            ts.encode(),
            b'"' if idem is None else b'","idem":' + _codec.dumps(idem),
        )
    )
    return _close(body, sealed, sign)


# -- reading ---------------------------------------------------------------------------------------


_fromisoformat = datetime.fromisoformat
_loads = _codec.decode


def parse_record(path: Path | str, offset: int, line: bytes, *, sealed: bool, check_ts: bool = True) -> dict[str, Any]:
    """Decode and check one log line (its checksum first, in a `sealed` log); a bad complete line is
    corruption, never silently skipped. The checksum member is not in the returned record.

    On every read path (index replay, watchers, compaction, history): kept to ~1 us a line.
    """
    try:
        rec = _loads(line)
    except _codec.DecodeError as exc:
        raise corrupt(path, offset, f"not JSON ({exc})", line) from None
    if sealed:
        # The member's value against the bytes before it: if the line is not laid out as the spec
        # says (the member last, no spaces), the cut is elsewhere and the digest cannot match.
        try:
            matches = rec.pop("xxh3") == _xxh3(line[:-27])  # -_SEAL_TAIL, spelled out: ~30 ns a line
        except (KeyError, AttributeError, TypeError):  # no member, or not an object at all
            raise corrupt(path, offset, _NO_SEAL, line) from None
        if not matches:
            raise corrupt(path, offset, _MISMATCH, line)
    try:
        op = rec["op"]
        seq = rec["seq"]
        ok = type(seq) is int and seq > 0 and type(rec["author"]) is str and type(rec["ts"]) is str
        if op in _OPS:
            ok = ok and type(rec["key"]) is str and type(rec["version"]) is int and "value" in rec
        elif op == TXN:
            ops = rec["ops"]
            ok = ok and type(ops) is list and len(ops) > 0
            for item in ops:
                ok = ok and item["op"] in _OPS and type(item["key"]) is str and type(item["version"]) is int
        elif op == LOST:
            first = rec["from"]
            ok = ok and type(first) is int and 0 < first <= seq
        else:
            ok = False
        if ok and "idem" in rec:
            ok = type(rec["idem"]) is str
        if ok and "sig" in rec:
            ok = type(rec["sig"]) is str
    except (KeyError, TypeError):  # a field missing, or not an object at all
        ok = False
    if not ok:
        raise corrupt(
            path,
            offset,
            "not a record (seq, op, key, value, version, author, ts, idem or sig missing or mistyped)",
            line,
        )
    if check_ts:
        try:
            _fromisoformat(rec["ts"])
        except ValueError:
            raise corrupt(path, offset, f"ts {rec['ts']!r} is not an RFC 3339 time", line) from None
    return cast("dict[str, Any]", rec)


def changes(rec: dict[str, Any]) -> list[Change]:
    """The changes a checked record makes, each with its value's JSON (none for a `lost` record)."""
    # The value re-encoded, not cut from the line: ~0.3 us against ~1.2 us to prove the cut exact
    # (another writer's field order or spacing), and it reads back the same. An exact-size copy: an
    # index keeps one per key, and orjson's output holds a ~4 KiB buffer.
    op = rec["op"]
    if op == LOST:
        return []
    if op != TXN:
        return [Change(rec["op"], rec["key"], rec["version"], _codec.exact(_codec.dumps(rec["value"])))]
    return [
        Change(item["op"], item["key"], item["version"], _codec.exact(_codec.dumps(item.get("value"))))
        for item in rec["ops"]
    ]


def fast_seq(line: bytes) -> int | None:
    """The seq of a line our writer wrote (seq first), without parsing it; None for other layouts."""
    if line.startswith(b'{"seq":'):
        end = line.find(b",", 7)
        if end > 7:
            try:
                return int(line[7:end])
            except ValueError:
                return None
    return None


def key_starts_with(line: bytes, seq: int, prefix: bytes) -> bool | None:
    """Whether the put/delete line's key starts with `prefix` (a prefix's UTF-8, with no '"' or '\\'),
    without parsing the line; None when only a parse can tell (a transaction, another layout).

    orjson escapes only '"', '\\' and control characters (which keys cannot hold), so the encoded key
    starts with those bytes exactly when the key starts with the prefix.
    """
    for op in (b"put", b"delete"):
        head = b'{"seq":%d,"op":"%s","key":"' % (seq, op)
        if line.startswith(head):
            start = len(head)
            if line.startswith(prefix, start):
                return True
            # Another writer may escape what orjson does not (\u00e9, \/): then only a parse can tell.
            # (The key's JSON ends at the first '","value":': the key holds no unescaped quote.)
            end = line.find(b'","value":', start)
            window = line[start : min(start + 6 * len(prefix), end if end >= 0 else len(line))]
            return None if b"\\" in window else False
    return None


def first_seq(rec: dict[str, Any]) -> int:
    """The first seq a checked record covers: its seq, or for a `lost` record the first lost one."""
    return int(rec["from"]) if rec["op"] == LOST else int(rec["seq"])


def check_order(path: Path | str, offset: int, last: int, first: int, compacted_through: int, seq: int) -> None:
    """Raise `CorruptLog` unless a record whose (first) seq is `first` may follow the line of seq
    `last` (spec 5.2: above it, and gapless after the compacted prefix)."""
    if first <= last or is_gap(last, first, compacted_through):
        raise CorruptLog(str(path), offset, f"seq {first} after seq {last} (a gap or a reorder)", seq=seq)


def is_gap(last: int, seq: int, compacted_through: int) -> bool:
    """Whether `seq` right after `last` breaks spec 5.2: seqs are gapless after the compacted prefix
    (up to `compacted_through` records may be missing; after it, none)."""
    return seq != last + 1 and (last >= compacted_through or seq > compacted_through + 1)

"""Every byte on disk goes through here: the only module that imports orjson.

A record is one JSON object on one line. We build the line by concatenation so that the value is
encoded exactly once (its size is checked on those same bytes), in a fixed field order that the spec
documents. Values are checked to be plain JSON first: orjson would silently turn NaN into `null` and a
tuple into a list, and a value that does not read back as written is a lost write.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from ..errors import InvalidValue

#: Largest and smallest integers a record may carry: orjson and most other languages' readers
#: hold integers in 64 bits.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
_MAX_DEPTH = 200

_SCALARS = (str, bool, type(None))


def _check(value: Any, depth: int) -> None:
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidValue(f"integer {value} does not fit in 64 bits")
        return
    if kind is float:
        if not math.isfinite(value):
            raise InvalidValue(f"{value} is not a JSON number")
        return
    if depth > _MAX_DEPTH:
        raise InvalidValue(f"nested deeper than {_MAX_DEPTH} levels")
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise InvalidValue(f"object key {k!r} is not a string")
            _check(v, depth + 1)
        return
    if kind is list:
        for v in value:
            _check(v, depth + 1)
        return
    raise InvalidValue(f"a {kind.__name__} is not a JSON value (use dict, list, str, int, float, bool, None)")


def encode_value(value: Any, max_bytes: int) -> bytes:
    """Check that `value` is plain JSON no larger than `max_bytes` encoded, and return its encoding."""
    _check(value, 0)
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # e.g. a str holding a lone surrogate
        raise InvalidValue(str(exc)) from None
    if len(data) > max_bytes:
        raise InvalidValue(f"{len(data)} bytes encoded, more than this board's limit of {max_bytes}")
    return data


def encode_record(seq: int, op: str, key: str, value_json: bytes, version: int, author: str, ts: str) -> bytes:
    """One log line, newline included, fields in the order spec/FORMAT.md gives."""
    return b"".join(
        (
            b'{"seq":%d,"op":"%s","key":' % (seq, op.encode()),
            orjson.dumps(key),
            b',"value":',
            value_json,
            b',"version":%d,"author":' % version,
            orjson.dumps(author),
            b',"ts":"',
            ts.encode(),
            b'"}\n',
        )
    )


def value_slice(line: bytes, rec: dict[str, Any]) -> bytes:
    """The value's JSON out of a record line: an exact-size copy (orjson's own output keeps a ~4 KiB
    buffer per object, which an index holding one per key cannot afford).

    Taken from the line when the line is exactly what `encode_record` writes for `rec` (its head
    before the value and its tail after it match byte for byte, so what lies between is the value);
    re-encoded otherwise (another writer's field order or spacing).
    """
    head = b'{"seq":%d,"op":"%s","key":' % (rec["seq"], rec["op"].encode()) + orjson.dumps(rec["key"]) + b',"value":'
    author, ts = rec.get("author"), rec.get("ts")
    # Exactly the seven fields: with an unknown one (readers must accept them) the framing could match
    # around more than the value.
    if len(rec) == 7 and line.startswith(head) and isinstance(author, str) and isinstance(ts, str):
        tail = b',"version":%d,"author":' % rec["version"] + orjson.dumps(author) + b',"ts":"' + ts.encode() + b'"}'
        if line.endswith(tail) and len(head) + len(tail) < len(line):
            return line[len(head) : len(line) - len(tail)]
    return exact(orjson.dumps(rec.get("value")))


def exact(data: bytes) -> bytes:
    """A copy of exactly `len(data)` bytes, for keeping: orjson's output holds ~4 KiB however small."""
    return bytes(memoryview(data))


def key_starts_with(line: bytes, seq: int, prefix: bytes) -> bool | None:
    """Whether the record line's key starts with `prefix` (a prefix's UTF-8, with no '"' or '\\'),
    without parsing the line; None when the line is not laid out as `encode_record` writes it.

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


def decode(data: bytes | str) -> Any:
    """Parse JSON written by this library (log lines, entry files, board.json)."""
    return orjson.loads(data)


DecodeError = orjson.JSONDecodeError


def dumps(obj: Any) -> bytes:
    """Compact JSON, as on a log line or a `--json` output line."""
    return orjson.dumps(obj)


def dumps_pretty(obj: Any) -> bytes:
    """Indented JSON with a final newline: entry files and board.json, made to be `cat`."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _reject_constant(name: str) -> Any:
    raise InvalidValue(f"{name} is not a JSON number")


def _parse_int(text: str) -> int:
    number = int(text)
    if not INT_MIN <= number <= INT_MAX:
        raise InvalidValue(f"integer {text} does not fit in 64 bits")
    return number


def parse_user_json(text: str) -> Any:
    """Parse JSON typed by a person or a script, strictly.

    The standard parser is used on purpose: orjson reads an over-long integer as a float, which would
    store a different number than the one given. Here that, NaN and Infinity are errors.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise InvalidValue(f"not valid JSON ({exc}); use --text to store it as a string") from None
    except RecursionError:
        raise InvalidValue("nested too deeply") from None

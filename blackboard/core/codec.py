"""Every byte on disk goes through here: the only module that imports orjson.

What a record line looks like is `record`'s business; this module encodes and decodes values. A
value is encoded exactly once (its size is checked on those same bytes). Values are checked to be
plain JSON first: orjson would silently turn NaN into `null` and a
tuple into a list, and a value that does not read back as written is a lost write.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
            raise InvalidValue(f"integer {_int_text(value)} does not fit in 64 bits")
        return
    if kind is float:
        if not math.isfinite(value):
            raise InvalidValue(f"{value} is not a JSON number")
        return
    if depth > _MAX_DEPTH:
        raise InvalidValue(f"nested deeper than {_MAX_DEPTH} levels")
    # Strings, booleans and None need no look (most members of most values): no call for them.
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise InvalidValue(f"object key {k!r} is not a string")
            if type(v) not in _SCALARS:
                _check(v, depth + 1)
        return
    if kind is list:
        for v in value:
            if type(v) not in _SCALARS:
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


def exact(data: bytes) -> bytes:
    """A copy of exactly `len(data)` bytes, for keeping: orjson's output holds ~4 KiB however small."""
    return bytes(memoryview(data))


#: Parse JSON written by this library (log lines, entry files, board.json). orjson's own function,
#: not a wrapper: it runs once per record on every read path.
decode: Callable[[bytes | str], Any] = orjson.loads


DecodeError = orjson.JSONDecodeError


def dumps(obj: Any) -> bytes:
    """Compact JSON, as on a log line or a `--json` output line."""
    return orjson.dumps(obj)


def same_value(a_json: bytes, b_json: bytes) -> bool:
    """Whether two values' JSON is the same JSON value: numbers by value (1 and 1.0), objects by
    members (in any order), and never a boolean equal to a number (Python's True == 1)."""
    return a_json == b_json or _same(orjson.loads(a_json), orjson.loads(b_json))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    return bool(a == b)


def dumps_pretty(obj: Any) -> bytes:
    """Indented JSON with a final newline: entry files and board.json, made to be `cat`."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _reject_constant(name: str) -> Any:
    raise InvalidValue(f"{name} is not a JSON number")


def _int_text(value: int) -> str:
    """`value` in decimal, or its length if Python's int/str conversion limit refuses it."""
    try:
        return str(value)
    except ValueError:
        return f"of about {value.bit_length() * 3 // 10} digits"


def _parse_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:  # Python's 4,300-digit limit (sys.get_int_max_str_digits)
        raise InvalidValue(f"integer of {len(text)} digits does not fit in 64 bits") from None
    if not INT_MIN <= number <= INT_MAX:
        raise InvalidValue(f"integer {text} does not fit in 64 bits")
    return number


def parse_user_json(text: str) -> Any:
    """Parse JSON typed by a person or a script, strictly.

    The standard parser is used on purpose: orjson reads an over-long integer as a float, which would
    store a different number than the one given. Here that, NaN and Infinity are errors.
    """
    import json  # only commands that take JSON from a person need it

    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise InvalidValue(f"not valid JSON ({exc}); use --text to store it as a string") from None
    except RecursionError:
        raise InvalidValue("nested too deeply") from None

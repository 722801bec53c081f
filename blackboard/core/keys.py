"""Keys: validation, and the reversible mapping from a key to its entry file's relative path.

A key is '/'-separated segments. Validation rejects everything that could make a path leave the
board (`..`, `.`, empty segments, a leading or trailing '/', NUL) or confuse a terminal (control
characters). The mapping then percent-encodes every byte outside `[A-Za-z0-9_.-]`, a leading '.' (no
hidden files, no `.`/`..`, nothing watchfiles' default filter would drop) and a trailing `.json` (so a
directory can never be mistaken for an entry file). The result contains only safe ASCII characters, so
no key can name a path outside `entries/` whatever validation let through.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..errors import InvalidKey

MAX_KEY_BYTES = 1024
#: An encoded segment plus ".json" must fit in a file name (255 bytes on every common filesystem).
MAX_SEGMENT_FILE_BYTES = 255
ENTRY_SUFFIX = ".json"

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
#: A %-escape of `key_to_relpath` (compiled on first use by `re`'s cache: not at every command's start).
_PERCENT = r"%([0-9A-F]{2})"


def _forbidden(text: str) -> str | None:
    """The first C0/C1 control character (U+0000-U+001F, U+007F-U+009F) of `text`, or None."""
    if text.isprintable():  # the common case, in C: every control character is unprintable
        return None
    return next((c for c in text if c < " " or "\x7f" <= c <= "\x9f"), None)


def validate_key(key: object) -> str:
    """Return `key` if it is a valid key, else raise `InvalidKey` saying why."""
    if not isinstance(key, str):
        raise InvalidKey(repr(key), f"a key is a str, not {type(key).__name__}")
    return _validate(key)


@lru_cache(maxsize=1 << 16)  # agents write the same keys again and again; only valid keys are cached
def _validate(key: str) -> str:
    if not key:
        raise InvalidKey(key, "empty")
    bad = _forbidden(key)
    if bad is not None:
        raise InvalidKey(key, f"control character U+{ord(bad):04X} is not allowed")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(key, "not valid Unicode (lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(key, f"{size} bytes in UTF-8, more than {MAX_KEY_BYTES}")
    if key.startswith("/"):
        raise InvalidKey(key, "a key cannot start with '/'")
    if key.endswith("/"):
        raise InvalidKey(key, "a key cannot end with '/'")
    for segment in key.split("/"):
        if segment == "":
            raise InvalidKey(key, "empty segment ('//')")
        if segment in (".", ".."):
            raise InvalidKey(key, f"segment {segment!r} is not allowed")
        if len(_encode_segment(segment)) + len(ENTRY_SUFFIX) > MAX_SEGMENT_FILE_BYTES:
            raise InvalidKey(key, f"segment {segment[:20]!r}... is too long for a file name once encoded")
    return key


def validate_prefix(prefix: object) -> str:
    """A prefix is any string a key could start with: no control characters, no leading '/'."""
    if not isinstance(prefix, str):
        raise InvalidKey(repr(prefix), f"a prefix is a str, not {type(prefix).__name__}")
    bad = _forbidden(prefix)
    if bad is not None:
        raise InvalidKey(prefix, f"control character U+{ord(bad):04X} is not allowed")
    try:
        prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(prefix, "not valid Unicode (lone surrogate)") from None
    if prefix.startswith("/"):
        raise InvalidKey(prefix, "a prefix cannot start with '/'")
    return prefix


@lru_cache(maxsize=4096)
def _encode_segment(segment: str) -> str:
    out = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in segment.encode("utf-8"))
    if out.startswith("."):
        out = "%2E" + out[1:]
    if out.endswith(ENTRY_SUFFIX):
        out = out[: -len(ENTRY_SUFFIX)] + "%2Ejson"
    return out


def key_to_relpath(key: str) -> str:
    """The entry file of `key`, relative to `entries/`, with '/' separators. `key` must be valid."""
    return "/".join(_encode_segment(s) for s in key.split("/")) + ENTRY_SUFFIX


def relpath_to_key(relpath: str) -> str:
    """Inverse of `key_to_relpath`."""
    if not relpath.endswith(ENTRY_SUFFIX):
        raise ValueError(f"{relpath!r} is not an entry file name")
    body = relpath[: -len(ENTRY_SUFFIX)]
    return "/".join(_unquote(s) for s in body.split("/"))


def _unquote(segment: str) -> str:
    return re.sub(_PERCENT, lambda m: chr(int(m.group(1), 16)), segment).encode("latin-1").decode("utf-8")

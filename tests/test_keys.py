"""Keys: validation and the key <-> entry file mapping, by property (hypothesis) and on a real board.

The properties that matter: the mapping is reversible and injective, and no key, however hostile its
text, makes the board create anything outside `entries/` (or outside the board at all).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _workers import assert_entries_match_log, snapshot
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from blackboard import Board, InvalidKey
from blackboard.core.keys import key_to_relpath, relpath_to_key, validate_key

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Pieces that have broken path encodings elsewhere: traversal, separators, escapes, suffixes, hidden
#: and editor-temp names, bidi and zero-width characters, astral characters, Windows specials.
HOSTILE = [
    "..",
    ".",
    "%",
    "%2E",
    "%2F",
    "%25",
    "%%",
    ".json",
    "json",
    ".JSON",
    "~",
    ".#",
    ".swp",
    "\\",
    "..\\..",
    ":",
    "*",
    "?",
    "CON",
    " ",
    "é",
    "e\u0301",
    "日本",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\U0001f600",
    "\U0010ffff",
]

# Characters a valid key may hold: anything but '/', control characters and lone surrogates.
key_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x85")
segment = (
    st.lists(st.sampled_from(HOSTILE) | st.text(key_chars, min_size=1, max_size=4), min_size=1, max_size=4)
    .map("".join)
    .filter(lambda s: s not in (".", ".."))
)
#: Valid keys with short segments (at most 16 * 4 chars, so never too long for a file name).
valid_keys = st.lists(segment, min_size=1, max_size=4).map("/".join)

#: Arbitrary text over an alphabet rich in the characters that matter to paths.
path_text = st.text(
    st.sampled_from(["/", ".", "%", "a", "j", "s", "o", "n", "\x00", "\n", "\x7f", "\x9f", "é", "\U0001f600", " "])
    | key_chars,
    max_size=24,
)


def expected_reason(key: str) -> str | None:
    """An independent statement of the key rules (for keys without over-long segments)."""
    if key == "":
        return "empty"
    if CONTROL.search(key):
        return "control character"
    if key.startswith("/") or key.endswith("/"):
        return "'/'"
    segments = key.split("/")
    if "" in segments:
        return "empty segment"
    if "." in segments or ".." in segments:
        return "segment"
    return None


def invalidate(key: str, how: int, position: int) -> str:
    """A way of spoiling a valid key: each result breaks one rule."""
    cut = position % (len(key) + 1)
    variants = [
        "",
        "/" + key,
        key + "/",
        key + "//x",
        key[:cut] + "\x00" + key[cut:],
        key[:cut] + "\n" + key[cut:],
        key[:cut] + "\x1b" + key[cut:],
        key[:cut] + "\x7f" + key[cut:],
        key[:cut] + "\x85" + key[cut:],
        "../" + key,
        key + "/..",
        key + "/../x",
        "./" + key,
        key + "/./x",
        key + "/" + "a" * 251,
        "/".join([key] * (1025 // len(key.encode()) + 1)),
        key[:cut] + "\ud800" + key[cut:],
        "/",
        "//",
    ]
    return variants[how % len(variants)]


SAFE_RELPATH = re.compile(r"[A-Za-z0-9_.%/-]+")
BOARD_FILES = {"board.json", "log.jsonl", "lock", "materialized", "materialize.lock"}
BOARD_DIRS = {"entries", "cursors", "tmp", "archive"}


def assert_safe_relpath(rel: str) -> None:
    """An entry file's path: plain ASCII, no hidden or dot segment, '.json' only on the file itself."""
    assert SAFE_RELPATH.fullmatch(rel), rel
    *dirs, name = rel.split("/")
    assert name.endswith(".json") and name != ".json", rel
    for part in [*dirs, name]:
        assert part and not part.startswith("."), rel
        assert not part.endswith("~"), rel
        assert len(part.encode()) <= 255, rel
    for part in dirs:
        assert not part.endswith(".json"), f"directory {part!r} of {rel!r} looks like an entry file"


# -- the mapping, by property ------------------------------------------------------------------------


@given(valid_keys)
@example("a")
@example("..a/b..")
@example("x.json")
@example("x.json/y.json")
@example(".json")
@example("%2E%2E/%2F")
@example("\U0010ffff")
@example("a" * 250)
def test_key_to_relpath_round_trips(key: str) -> None:
    assert validate_key(key) == key
    rel = key_to_relpath(key)
    assert_safe_relpath(rel)
    assert relpath_to_key(rel) == key


@given(valid_keys, valid_keys)
@example("a", "a.json")
@example("a/b", "a%2Fb")
@example(".a", "%2Ea")
@example("A", "a")
def test_key_to_relpath_is_injective(one: str, other: str) -> None:
    assume(one != other)
    assert key_to_relpath(one) != key_to_relpath(other)


@given(path_text)
@example("")
@example("/")
@example("a//b")
@example("a/./b")
@example("...")
@example("a\x85b")
def test_validation_follows_the_rules(key: str) -> None:
    reason = expected_reason(key)
    if reason is None:
        assert validate_key(key) == key
    else:
        with pytest.raises(InvalidKey) as info:
            validate_key(key)
        assert info.value.key == key
        assert reason in info.value.reason, (key, info.value.reason)


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("a" * 250, True),  # 250 + ".json": a 255-byte file name, the most every filesystem allows
        ("a" * 251, False),
        ("d/" + "a" * 250, True),
        ("a" * 251 + "/d", False),  # too long as a directory name too
        ("日" * 27, True),  # 27 characters * 3 bytes * "%XX" = 243 bytes encoded
        ("日" * 28, False),
        ("/".join(["a" * 204] * 5), True),  # 1024 bytes
        ("/".join(["a" * 204] * 5) + "b", False),  # 1025 bytes
    ],
)
def test_length_limits(tmp_path: Path, key: str, valid: bool) -> None:
    with Board.init(tmp_path / "b") as board:
        if valid:
            board.write(key, "long")
            assert board.read(key) == "long"
        else:
            before = snapshot(tmp_path / "b")
            with pytest.raises(InvalidKey, match=r"long|bytes"):
                board.write(key, "long")
            assert snapshot(tmp_path / "b") == before
    state = assert_entries_match_log(tmp_path / "b")
    assert list(state) == ([key] if valid else [])


# -- on a real board -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for boards made per hypothesis example (function-scoped tmp_path is made once per test)."""
    return tmp_path_factory.mktemp("keys")


@contextlib.contextmanager
def fresh_dir(scratch: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir=scratch) as name:
        yield Path(name)


def walk_all(root: Path) -> Iterator[Path]:
    """Every file, directory and link below `root`, without following links."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.lists(valid_keys, min_size=1, max_size=8, unique=True),
    extra_prefixes=st.lists(st.text(key_chars, max_size=3), max_size=3),
)
@example(keys=["a", "a/b", "a.json", "a.json/b", "..a", "%2E", ".json/.json"], extra_prefixes=["a/", "a."])
@example(keys=["\U0010ffff", "\U0010ffff/x", "\U0010fffe"], extra_prefixes=["\U0010ffff", "\U0010fffe"])
def test_no_key_writes_outside_the_board(scratch: Path, keys: list[str], extra_prefixes: list[str]) -> None:
    with fresh_dir(scratch) as outer:
        root = outer / "board"
        with Board.init(root) as board:
            for key in keys:
                assert board.write(key, key).version == 1
            for key in keys[::3]:
                board.delete(key)
            live = sorted(set(keys) - set(keys[::3]))
            assert board.keys() == live
            # keys(prefix) is a plain string prefix, computed by bisection: compare with a scan.
            prefixes = {key[:cut] for key in keys for cut in range(len(key) + 1)} | set(extra_prefixes)
            for prefix in prefixes:
                expected = [k for k in live if k.startswith(prefix)]
                assert board.keys(prefix) == expected, prefix
                assert list(board.read_prefix(prefix)) == expected, prefix

        # Nothing beside the board, nothing unexpected in it, and every entry file is a live key's.
        assert [p.name for p in outer.iterdir()] == ["board"]
        assert {p.name for p in root.iterdir()} <= BOARD_FILES | BOARD_DIRS
        assert not list((root / "tmp").iterdir()), "temporary files left behind after close()"
        entries = (root / "entries").resolve()
        found: set[str] = set()
        for path in walk_all(outer):
            assert not path.is_symlink(), path
            assert path.resolve().is_relative_to(root.resolve()), path
            if path.is_file() and path.resolve().is_relative_to(entries):
                rel = path.relative_to(root / "entries").as_posix()
                assert_safe_relpath(rel)
                found.add(relpath_to_key(rel))
            elif path.is_file():
                assert path.parent == root and path.name in BOARD_FILES, path
        assert sorted(found) == live
        assert_entries_match_log(root)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=valid_keys, how=st.integers(0, 100), position=st.integers(0, 1000))
def test_invalid_keys_raise_and_change_nothing(board: Board, key: str, how: int, position: int) -> None:
    if not board.keys():
        board.write("existing", 1)
        board.write(key, 2)
        board.flush()
    bad = invalidate(key, how, position)
    with pytest.raises(InvalidKey):
        validate_key(bad)
    before = snapshot(board.path)
    seq = board.last_seq
    attempts: list[Callable[[], object]] = [
        lambda: board.write(bad, 1),
        lambda: board.write(bad, 1, expect_version=0),
        lambda: board.delete(bad),
        lambda: board.get(bad),
        lambda: board.read(bad, "default"),
        lambda: board.history(bad),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidKey) as info:
            attempt()
        assert info.value.reason in str(info.value)
    assert board.last_seq == seq
    assert snapshot(board.path) == before

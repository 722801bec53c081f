"""The error hierarchy: one base, leaves that inherit the matching builtin, carry data and pickle."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import pytest
from _workers import error_samples, raise_sample

import blackboard
from blackboard import BlackboardError, Board, InvalidValue, KeyNotFound, VersionConflict

# name -> (the builtin it must also be, its data attributes, the exact message)
EXPECTED: dict[str, tuple[type[Exception] | None, dict[str, Any], str]] = {
    "InvalidKey": (
        ValueError,
        {"key": "a//b", "reason": "empty segment ('//')"},
        "invalid key 'a//b': empty segment ('//')",
    ),
    "InvalidValue": (
        ValueError,
        {"key": "k", "reason": "nan is not a JSON number"},
        "invalid value for key 'k': nan is not a JSON number",
    ),
    "NotABoard": (
        FileNotFoundError,
        {"path": "/srv/b", "reason": "not a board: no board.json"},
        "/srv/b: not a board: no board.json",
    ),
    "KeyNotFound": (KeyError, {"key": "tasks/1"}, "no such key: 'tasks/1'"),
    "VersionConflict": (
        None,
        {"key": "tasks/1", "expected": 2, "actual": 3},
        "version conflict on 'tasks/1': expected version 2, but it is at version 3",
    ),
    "LockTimeout": (
        TimeoutError,
        {"lock_path": "/srv/b/lock", "timeout": 1.5},
        "could not take the writer lock /srv/b/lock within 1.5 s",
    ),
    "ReadOnlyBoard": (
        PermissionError,
        {"path": "/srv/b", "reason": "opened with read_only=True"},
        "/srv/b: board is read-only here: opened with read_only=True",
    ),
    "CorruptLog": (
        None,
        {"path": "/srv/b/log.jsonl", "offset": 120, "reason": "not JSON"},
        "/srv/b/log.jsonl: corrupt record at byte 120: not JSON",
    ),
    "Compacted": (None, {"requested": 5, "purged_through": 10}, "events after seq 5 were compacted away"),
    "LogGone": (FileNotFoundError, {"path": "/srv/b/log.jsonl"}, "/srv/b/log.jsonl: the log file is gone"),
    "LogTruncated": (
        None,
        {"path": "/srv/b/log.jsonl", "last_seq": 4, "seen": 9, "trace": "the watermark (materialized)"},
        "/srv/b/log.jsonl: the log ends at seq 4, but the watermark (materialized) shows seq 9 was written",
    ),
    "LockLost": (
        None,
        {"lock_path": "/srv/b/lock.d"},
        "/srv/b/lock.d: this process's hold on the writer lock was broken before it could write",
    ),
    "StaleView": (
        None,
        {"path": "/srv/b/log.jsonl", "seen_seq": 4, "seen_end": 400, "note_seq": 5, "note_end": 480},
        "/srv/b/log.jsonl: this client sees the log up to seq 4 (400 bytes), but the last writer left it at seq 5",
    ),
    "OutOfSpace": (
        OSError,
        {"path": "/srv/b/log.jsonl", "errno": 28, "outcome": "nothing was written"},
        "/srv/b/log.jsonl: no space left on device",
    ),
    "UnknownAgent": (
        KeyError,
        {"name": "bobb", "close": ["bob"]},
        "no such agent: 'bobb' (it never joined this board; did you mean bob?)",
    ),
    "NoSuchMessage": (
        KeyError,
        {"agent": "bob", "message_id": "m-0123456789ab"},
        "no message m-0123456789ab in bob's inbox (acked already, or never sent to bob)",
    ),
    "TimedOut": (TimeoutError, {}, "no reply to request m-0123456789ab from bob within 5 s"),
    "Refused": (None, {}, "conversation c-0123456789ab is closed"),
    "Fenced": (
        None,
        {"key": "leases/job", "expected_seq": 10, "actual_seq": 12},
        "fenced: 'leases/job' was changed at seq 12, after the fence of seq 10 was taken: nothing was written",
    ),
    "Held": (
        None,
        {"key": "job", "holder": "atlas", "token": 10},
        "'job' is held by atlas (token 10) until 2026-12-02T08:00:00.000000Z unless renewed",
    ),
    "ContractViolation": (
        ValueError,
        {"key": "results/q1", "prefix": "results/", "rule": "schema/properties/answer/type", "path": "$.answer"},
        "refused by the contract on 'results/': 'results/q1' at $.answer: \"x\" is not of type \"integer\" "
        "(rule schema/properties/answer/type)",
    ),
    "Unverified": (
        None,
        {"seq": 7, "key": "plan/a", "author": "atlas"},
        "seq 7 ('plan/a' by 'atlas') is not verified: the signature does not match",
    ),
}

NAMES = sorted(EXPECTED)


def test_every_public_error_is_covered() -> None:
    exported = {n for n in blackboard.__all__ if isinstance(getattr(blackboard, n), type)}
    errors = {n for n in exported if issubclass(getattr(blackboard, n), BlackboardError)}
    assert errors - {"BlackboardError"} == set(NAMES) == set(error_samples())


@pytest.mark.parametrize("name", NAMES)
def test_str_attributes_and_bases(name: str) -> None:
    err = error_samples()[name]
    builtin, attrs, message = EXPECTED[name]
    assert type(err).__name__ == name
    assert isinstance(err, BlackboardError)
    assert isinstance(err, Exception)
    if builtin is not None:
        assert isinstance(err, builtin)
    for attr, value in attrs.items():
        assert getattr(err, attr) == value, attr
    assert str(err).startswith(message), str(err)
    assert "\n" not in str(err), "an error's message is one line"


@pytest.mark.parametrize("name", NAMES)
def test_pickle_round_trip(name: str) -> None:
    err = error_samples()[name]
    _builtin, attrs, _message = EXPECTED[name]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(err, protocol=protocol))
        assert type(back) is type(err), protocol
        assert str(back) == str(err), protocol
        assert back.args == err.args, protocol
        for attr, value in attrs.items():
            assert getattr(back, attr) == value, (protocol, attr)
    for clone in (copy.copy(err), copy.deepcopy(err)):
        assert type(clone) is type(err)
        assert str(clone) == str(err)
        assert clone.__dict__ == err.__dict__


def test_errors_cross_a_process_boundary() -> None:
    """Raised in a spawned pool worker, each error arrives in the parent with its type and data."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        for name in NAMES:
            with pytest.raises(BlackboardError) as info:
                pool.apply(raise_sample, (name,))
            err = info.value
            assert type(err).__name__ == name
            assert str(err) == str(error_samples()[name])
            for attr, value in EXPECTED[name][1].items():
                assert getattr(err, attr) == value, (name, attr)
        pool.close()
        pool.join()


def test_version_conflict_wording() -> None:
    assert "expected absent, but it is at version 3" in str(VersionConflict("k", 0, 3))
    assert "expected version 2, but it is absent" in str(VersionConflict("k", 2, 0))


def test_invalid_value_without_key() -> None:
    err = InvalidValue("a set is not a JSON value")
    assert err.key is None
    assert str(err) == "invalid value: a set is not a JSON value"


def test_key_not_found_is_not_quoted_twice() -> None:
    # KeyError's own __str__ would give "\"no such key: 'k'\"".
    assert str(KeyNotFound("k")) == "no such key: 'k'"


def test_exit_codes_for_the_cli() -> None:
    codes = {name: type(err).exit_code for name, err in error_samples().items()}
    assert all(isinstance(code, int) and code >= 1 for code in codes.values())
    assert BlackboardError.exit_code == 1
    assert codes["InvalidKey"] == codes["InvalidValue"]  # both are "bad input"
    assert len({codes["KeyNotFound"], codes["VersionConflict"], codes["NotABoard"], codes["InvalidKey"]}) == 4


def test_library_errors_are_catchable_as_builtins(board: Board, tmp_path: Path) -> None:
    """What the library raises is caught by `except <builtin>` (callers that know nothing of us)."""
    with pytest.raises(KeyError):
        board.delete("missing")
    with pytest.raises(ValueError):
        board.write("a//b", 1)
    with pytest.raises(ValueError):
        board.write("k", float("nan"))
    with pytest.raises(FileNotFoundError):
        Board.open(tmp_path / "nowhere")
    with pytest.raises(PermissionError):
        Board.open(board.path, read_only=True).write("k", 1)
    board.write("k", 1)
    with pytest.raises(VersionConflict) as info:
        board.write("k", 2, expect_version=0)
    assert (info.value.key, info.value.expected, info.value.actual) == ("k", 0, 1)

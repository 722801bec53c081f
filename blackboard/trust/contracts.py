"""Setting and removing contracts (spec/TRUST.md 2): each change is one compare-and-set write of
`_board/contracts`, so it is logged and versioned like any other, and two people changing different
prefixes at once both land (the loser of the race retries on what the winner left).

Every writer enforces them (the core checks them under the writer lock); `Board.contracts()` reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import CONTRACTS_KEY, Board, Contract, Entry, InvalidValue, KeyNotFound, VersionConflict

#: Schemas a contract can name instead of a file (`--schema builtin:NAME`).
BUILTIN = "builtin:"


def builtin_schemas() -> dict[str, dict[str, Any]]:
    from ..agents.messages import ENVELOPE_SCHEMA

    return {"envelope": ENVELOPE_SCHEMA}


def load_schema(source: str) -> dict[str, Any] | bool:
    """A schema from a file (JSON), or `builtin:NAME` (`envelope`: the agents layer's messages)."""
    if source.startswith(BUILTIN):
        name = source[len(BUILTIN) :]
        known = builtin_schemas()
        if name not in known:
            raise InvalidValue(f"no built-in schema {name!r} (known: {', '.join(sorted(known))})")
        return known[name]
    try:
        schema = json.loads(Path(source).read_bytes())
    except OSError as exc:
        raise InvalidValue(f"cannot read the schema {source}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidValue(f"the schema {source} is not JSON ({exc})") from None
    if not isinstance(schema, dict | bool):
        raise InvalidValue(f"the schema {source} is not a JSON Schema (an object or a boolean)")
    return schema


def set_contract(
    board: Board,
    prefix: str,
    *,
    schema: dict[str, Any] | bool | None = None,
    writers: list[str] | None = None,
    max_bytes: int | None = None,
    retention: float | None = None,
    signed: bool = False,
) -> Entry:
    """Set (replace) the contract on `prefix`. Refused with nothing written if it is not valid (a
    schema that is not a JSON Schema, a limit out of range); returns the contracts' new entry.

    >>> set_contract(board, "results/", schema={"type": "object"}, writers=["atlas"])
    """
    contract = Contract(prefix, schema, None if writers is None else tuple(writers), max_bytes, retention, signed)
    return _change(board, lambda now: {**now, prefix: contract.as_dict()})


def remove_contract(board: Board, prefix: str) -> Entry:
    """Remove the contract on `prefix` (`KeyNotFound` if it has none)."""

    def without(now: dict[str, Any]) -> dict[str, Any]:
        if prefix not in now:
            missing = KeyNotFound(CONTRACTS_KEY)
            missing.args = (f"no contract on {prefix!r} (`blackboard contract show` lists them)",)
            raise missing
        return {p: c for p, c in now.items() if p != prefix}

    return _change(board, without)


def _change(board: Board, edit: Any) -> Entry:
    while True:
        entry = board.get(CONTRACTS_KEY)
        now = entry.value if entry is not None and isinstance(entry.value, dict) else {}
        new = edit(now)
        try:  # the board checks the contracts (their prefixes included) before it appends them
            return board.write(CONTRACTS_KEY, new, expect_version=entry.version if entry is not None else 0)
        except VersionConflict:
            continue  # another change landed first: apply ours to what it left

"""The board's rules, kept in the board itself (spec/TRUST.md): the contracts per key prefix, read
from the key `_board/contracts`, and checked by every writer under the writer lock, so that no
process writes past a contract it could have seen.

A contract says what a prefix's values must look like (a JSON Schema, compiled once per version of
the contracts), who may write under it, how large a value may be, whether writes there must be
signed, and how long compaction keeps its history. Every contract whose prefix a key starts with
applies to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import ContractViolation, InvalidKey, InvalidValue
from . import codec as _codec
from .keys import validate_prefix
from .record import DELETE, Change

#: The key that holds every contract: one JSON object, prefix -> contract (spec/TRUST.md 2).
CONTRACTS_KEY = "_board/contracts"
#: Where agents' public keys are registered: `_board/keys/<name>` (spec/TRUST.md 3).
KEYS_PREFIX = "_board/keys/"
_FIELDS = frozenset(("schema", "writers", "max_bytes", "retention", "signed"))


class Contract(NamedTuple):
    """What may be written under `prefix`: values valid under `schema`, by `writers` (None: anyone),
    at most `max_bytes` of JSON each, signed by their author if `signed`; compaction keeps the
    superseded history of its keys `retention` seconds (None: the board's policy)."""

    prefix: str
    schema: dict[str, Any] | bool | None = None
    writers: tuple[str, ...] | None = None
    max_bytes: int | None = None
    retention: float | None = None
    signed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The contract as stored (without its prefix, the member's name): unset rules left out."""
        out: dict[str, Any] = {}
        if self.schema is not None:
            out["schema"] = self.schema
        if self.writers is not None:
            out["writers"] = list(self.writers)
        if self.max_bytes is not None:
            out["max_bytes"] = self.max_bytes
        if self.retention is not None:
            out["retention"] = self.retention
        if self.signed:
            out["signed"] = True
        return out


def parse_contracts(value: Any) -> dict[str, Contract]:
    """The contracts `_board/contracts` holds, or `InvalidValue` saying which part is wrong."""
    if not isinstance(value, dict):
        raise InvalidValue(f"{CONTRACTS_KEY} must be a JSON object of prefix -> contract", CONTRACTS_KEY)
    return {prefix: parse_contract(prefix, raw) for prefix, raw in value.items()}


def parse_contract(prefix: str, raw: Any) -> Contract:
    def bad(why: str) -> InvalidValue:
        return InvalidValue(f"the contract on {prefix!r}: {why}", CONTRACTS_KEY)

    try:
        validate_prefix(prefix)
    except InvalidKey as exc:
        raise bad(f"not a key prefix ({exc.reason})") from None
    if not isinstance(raw, dict):
        raise bad("must be a JSON object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise bad(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})")
    schema = raw.get("schema")
    if schema is not None and not isinstance(schema, dict | bool):
        raise bad("schema must be a JSON Schema (an object or a boolean)")
    writers = raw.get("writers")
    if writers is not None and (not isinstance(writers, list) or not all(type(w) is str and w for w in writers)):
        raise bad("writers must be a list of agent names")
    max_bytes = raw.get("max_bytes")
    if max_bytes is not None and (type(max_bytes) is not int or max_bytes <= 0):
        raise bad("max_bytes must be an integer > 0")
    retention = raw.get("retention")
    if retention is not None and (type(retention) not in (int, float) or retention < 0):
        raise bad("retention must be a number of seconds >= 0")
    signed = raw.get("signed", False)
    if type(signed) is not bool:
        raise bad("signed must be true or false")
    return Contract(
        prefix,
        schema,
        None if writers is None else tuple(writers),
        max_bytes,
        None if retention is None else float(retention),
        signed,
    )


def compile_schema(prefix: str, schema: dict[str, Any] | bool) -> Any:
    """A validator for `schema` (jsonschema-rs: ~0.2 us a small value, against ~11 us for the
    pure-Python `jsonschema`); `InvalidValue` if it is not a valid JSON Schema."""
    import jsonschema_rs

    try:
        jsonschema_rs.meta.validate(schema)
        # Never fetched: a writer must not wait on (or be steered by) the network to check a value.
        return jsonschema_rs.validator_for(schema, retriever=_no_remote)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        message = str(getattr(exc, "message", exc)).splitlines()[0]
        raise InvalidValue(f"the contract on {prefix!r}: not a valid JSON Schema: {message}", CONTRACTS_KEY) from None


def _no_remote(uri: str) -> Any:
    raise ValueError(f"{uri}: a contract's schema must be self-contained (no $ref to another document)")


class Rules:
    """The contracts of one version of `_board/contracts` (the record of `seq`), compiled."""

    def __init__(self, seq: int = 0, value: bytes | None = None) -> None:
        self.seq = seq
        self.contracts: dict[str, Contract] = {}
        self._validators: dict[str, Any] = {}
        #: why the stored contracts cannot be used (written past `contract set`): every write but one
        #: that fixes them is refused, rather than let through what a contract may forbid
        self.broken: str | None = None
        if value is None:
            return
        try:
            self.contracts = parse_contracts(_codec.decode(value))
            self._validators = {
                c.prefix: compile_schema(c.prefix, c.schema) for c in self.contracts.values() if c.schema is not None
            }
        except InvalidValue as exc:
            self.contracts, self._validators, self.broken = {}, {}, exc.reason

    def applying(self, key: str) -> list[Contract]:
        """The contracts whose prefix `key` starts with, shortest prefix first."""
        return sorted((c for c in self.contracts.values() if key.startswith(c.prefix)), key=lambda c: len(c.prefix))

    def check(self, made: list[Change], author: str, signed: bool, registered: Callable[[str], bool]) -> None:
        """Raise `ContractViolation` for the first change of a record by `author` that a contract
        refuses; nothing is written then. `signed`: the record is signed with a key `author` has
        registered. `registered(key)`: whether `key` (a `_board/keys/` entry) has a live value."""
        for change in made:
            # Built in, whatever the contracts: an agent's registered keys change only by a write
            # it signs itself (the first registration is taken on trust: spec/TRUST.md 3).
            key = change.key
            if key.startswith(KEYS_PREFIX) and registered(key):
                name = key[len(KEYS_PREFIX) :]
                if author != name or not signed:
                    raise ContractViolation(
                        key, KEYS_PREFIX, "keys", f"{name}'s registered keys change only by a write {name} signs"
                    )
        for change in made:
            if change.key == CONTRACTS_KEY and change.op != DELETE:
                # What every writer will enforce must parse and compile: a bad one is refused here,
                # not met by every later write.
                new = Rules(0, change.value)
                if new.broken is not None:
                    raise ContractViolation(CONTRACTS_KEY, CONTRACTS_KEY, "contracts", new.broken)
        if self.broken is not None:
            if all(c.key == CONTRACTS_KEY for c in made):
                return  # the way out: a write that replaces the broken contracts
            raise ContractViolation(made[0].key, "", "contracts", f"the board's contracts are unusable: {self.broken}")
        if not self.contracts:
            return
        for change in made:
            for contract in self.applying(change.key):
                self._check(contract, change, author, signed)

    def _check(self, contract: Contract, change: Change, author: str, signed: bool) -> None:
        key, prefix = change.key, contract.prefix
        if contract.writers is not None and author not in contract.writers:
            raise ContractViolation(
                key,
                prefix,
                "writers",
                f"{author!r} is not one of its writers ({', '.join(contract.writers) or 'none'})",
            )
        if contract.signed and not signed:
            raise ContractViolation(
                key,
                prefix,
                "signed",
                f"writes here must be signed by their author: this one is not signed with a key {author!r} "
                "registered "
                f"(`blackboard keygen --as {author}`)",
            )
        if change.op == DELETE:
            return
        if contract.max_bytes is not None and len(change.value) > contract.max_bytes:
            raise ContractViolation(
                key, prefix, "max_bytes", f"the value is {len(change.value)} bytes of JSON, over {contract.max_bytes}"
            )
        validator = self._validators.get(prefix)
        if validator is None:
            return
        value = _codec.decode(change.value)
        if validator.is_valid(value):
            return
        error = next(iter(validator.iter_errors(value)))
        where = "$" + "".join(f"[{p}]" if type(p) is int else f".{p}" for p in error.instance_path)
        rule = "/".join(str(p) for p in error.schema_path)
        raise ContractViolation(key, prefix, f"schema/{rule}", error.message, where)


NO_RULES = Rules()


def registered_kids(value: bytes | None) -> frozenset[str]:
    """The ids of the keys a `_board/keys/<name>` value registers (none if it is not one)."""
    if value is None:
        return frozenset()
    try:
        keys = _codec.decode(value).get("keys")
        return frozenset(k["kid"] for k in keys if isinstance(k, dict) and type(k.get("kid")) is str)
    except (AttributeError, TypeError, _codec.DecodeError):
        return frozenset()

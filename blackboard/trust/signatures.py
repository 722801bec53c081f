"""Checking signatures (spec/TRUST.md 4, 5): one record (`Verifier.check`), a read (`read_verified`),
a watch (`verified`), and the whole log (`verify`, behind `blackboard verify`).

A record verifies when its `sig` member is where the spec puts it, names a key its author registered
in the board, and is that key's signature of the record's bytes in this board's context: a changed
byte, a record copied to another key, seq or board, and an author it was not signed by all fail.
"""

from __future__ import annotations

import hmac
import logging
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .. import KEYS_PREFIX, Board, Event, InvalidKey, KeyNotFound, LogRecord, Unverified
from ..agents.names import validate_agent
from .keys import ED25519, HMAC, ed25519_kid, hmac_kid, read_secret, registered, unb64

OK, UNSIGNED, BAD, UNCHECKED = "ok", "unsigned", "bad", "unchecked"


class Checked(NamedTuple):
    """What a signature check found for the record of `seq`: `status` ok, unsigned, bad, or
    unchecked (an HMAC signature whose group secret this user does not hold), and why."""

    seq: int
    keys: list[str]
    author: str
    status: str
    reason: str
    #: the key id the record was signed with ("" if none could be read)
    kid: str = ""

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


def record_keys(rec: dict[str, Any]) -> list[str]:
    if rec["op"] == "txn":
        return [op["key"] for op in rec["ops"]]
    return [rec["key"]] if "key" in rec else []


class Verifier:
    """Checks records against the keys registered in `board` now (public keys decoded once)."""

    def __init__(self, board: Board, directory: Path | None = None) -> None:
        self.board = board
        self.directory = directory
        self._public: dict[str, Any] = {}
        self._secrets: dict[str, tuple[bytes, str]] = {}
        #: each author's registered keys, checked once per verifier (see _registered)
        self._keys: dict[str, tuple[list[dict[str, Any]], str]] = {}

    def check(self, found: LogRecord, keysets: Mapping[str, list[dict[str, Any]]] | None = None) -> Checked:
        """The status of one record. `keysets`: the keys to check against, by agent (default: what
        each author has registered in the board now)."""
        rec, message = found
        seq, keys, author = rec["seq"], record_keys(rec), rec["author"]

        def result(status: str, reason: str, kid: str = "") -> Checked:
            return Checked(seq, keys, author, status, reason, kid)

        sig = rec.get("sig")
        if sig is None:
            return result(UNSIGNED, "no signature")
        if message is None:
            return result(BAD, "the sig member is not where spec/TRUST.md 4 puts it (last, before the checksum)")
        alg, _, rest = sig.partition(":")
        kid, _, text = rest.partition(":")
        if keysets is not None:
            known = keysets.get(author, [])
        else:
            known, why = self._registered(author)
            if why:
                return result(BAD, why, kid)
        entry = next((k for k in known if k.get("kid") == kid), None)
        if entry is None:
            reason = f"signed with key {kid or '?'}, which is not one {author!r} registered"
            return result(BAD, reason if known else f"{author!r} has no registered key", kid)
        if entry.get("alg") != alg:
            return result(BAD, f"key {kid} is an {entry.get('alg')} key, not {alg}", kid)
        try:
            signature = unb64(text)
        except ValueError:
            return result(BAD, "the signature is not base64url", kid)
        if alg == ED25519:
            return self._ed25519(entry, kid, signature, message, result)
        if alg == HMAC:
            try:
                secret, secret_kid = self._secret(str(entry.get("group")))
            except (KeyNotFound, InvalidKey):
                return result(
                    UNCHECKED, f"an HMAC signature of group {entry.get('group')!r}, whose secret is not here", kid
                )
            if secret_kid != kid:
                return result(UNCHECKED, f"the secret held for group {entry.get('group')!r} is another one", kid)
            good = hmac.compare_digest(hmac.digest(secret, message, "sha256"), signature)
            return result(OK, "") if good else result(BAD, "the HMAC does not match (a changed record?)", kid)
        return result(BAD, f"unknown signature algorithm {alg!r}", kid)

    def _registered(self, name: str) -> tuple[list[dict[str, Any]], str]:
        """`name`'s keys as registered now, and why they are not to be trusted ("" if they are).

        A first registration is taken on trust; a later version of the entry must be signed by
        `name` with a key it lists before the newest (registrations add one key at a time), so that a
        line appended past the board that adds a forger's key, signed by that key, vouches for nothing.
        The whole history is `verify`'s to check (spec/TRUST.md 5)."""
        cached = self._keys.get(name)
        if cached is not None:
            return cached
        try:
            entry = self.board.get(KEYS_PREFIX + validate_agent(name))
        except InvalidKey:
            entry = None
        keys = registered(self.board, name) if entry is not None else []
        why = ""
        if entry is not None and entry.version > 1:
            found = self.board.record(entry.seq)
            older = {k.get("kid") for k in keys[:-1]}
            checked = None if found is None else self.check(found, {name: keys[:-1]})
            if checked is None or checked.status != OK or found is None or found.record["author"] != name:
                why = f"{name}'s key registry entry (version {entry.version}) is not signed by a key {name} had before"
            elif checked.kid not in older:
                why = f"{name}'s key registry entry is signed by its newest key, not one {name} had before"
        self._keys[name] = (keys, why)
        return keys, why

    def _secret(self, group: str) -> tuple[bytes, str]:
        """A group's secret and its id, read once per verifier (a read per record halved HMAC's speed)."""
        found = self._secrets.get(group)
        if found is None:
            secret = read_secret(group, self.directory)
            found = self._secrets[group] = (secret, hmac_kid(secret))
        return found

    def _ed25519(self, entry: dict[str, Any], kid: str, signature: bytes, message: bytes, result: Any) -> Checked:
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        except ImportError:
            return result(UNCHECKED, "Ed25519 needs the cryptography package: pip install 'blackboard[trust]'", kid)  # type: ignore[no-any-return]
        text = str(entry.get("public"))
        # By the registered bytes, not the kid: an entry that claims another key's kid must not
        # make the cache vouch for its own key under that kid.
        public = self._public.get(text)
        if public is None:
            try:
                raw = unb64(text)
                if ed25519_kid(raw) != kid:
                    return result(BAD, f"key {kid}'s registered public half has another id", kid)  # type: ignore[no-any-return]
                public = self._public[text] = Ed25519PublicKey.from_public_bytes(raw)
            except ValueError:
                return result(BAD, f"key {kid}'s registered public half is not an Ed25519 key", kid)  # type: ignore[no-any-return]
        try:
            public.verify(signature, message)
        except InvalidSignature:
            return result(BAD, "the signature does not match (a changed record, or not this key's)", kid)  # type: ignore[no-any-return]
        return result(OK, "", kid)  # type: ignore[no-any-return]


def read_verified(board: Board, key: str, directory: Path | None = None) -> Any:
    """`key`'s value, if its latest record verifies (else `Unverified`; `KeyNotFound` if none)."""
    entry = board.get(key)
    if entry is None:
        raise KeyNotFound(key)
    check_seq(board, entry.seq, Verifier(board, directory))
    return entry.value


def check_seq(board: Board, seq: int, verifier: Verifier) -> Checked:
    """Raise `Unverified` unless the record of `seq` verifies."""
    found = board.record(seq)
    if found is None:
        raise Unverified(seq, "?", "?", "its record is not in the log (compacted away?)")
    checked = verifier.check(found)
    if checked.status != OK:
        raise Unverified(seq, ", ".join(checked.keys), checked.author, checked.reason)
    return checked


def verified(board: Board, events: Iterable[Event], directory: Path | None = None) -> Iterator[Event]:
    """The events of `events` whose records verify; each other one is left out with a warning on
    stderr naming it (a watch that acts on what it gets never acts on a forged event)."""
    verifier = Verifier(board, directory)
    last: tuple[int, bool] = (0, False)
    for event in events:
        if last[0] != event.seq:  # a transaction's events share one record
            try:
                check_seq(board, event.seq, verifier)
                last = (event.seq, True)
            except Unverified as exc:
                # The "blackboard" logger, as the core's own warnings (the CLI prints them on stderr).
                logging.getLogger("blackboard").warning("left out: %s", exc)
                last = (event.seq, False)
        if last[1]:
            yield event


class Report(NamedTuple):
    """What `verify` found: how many records it checked under the prefix, how many verified, and
    every problem (a bad signature; an unsigned record where one is required)."""

    checked: int
    verified: int
    unsigned: int
    problems: list[Checked]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "verified": self.verified,
            "unsigned": self.unsigned,
            "problems": [p.as_dict() for p in self.problems],
        }


def verify(board: Board, prefix: str = "", directory: Path | None = None) -> Report:
    """Check every record of the log that touches a key starting with `prefix` (spec/TRUST.md 5).

    A problem is a signature that does not verify, or an unsigned record where a signature is due:
    under a prefix whose contract says `signed`, or by an agent after its key's registration in the
    log. Changes of `_board/keys/<name>` are checked against the keys before them: a name's first
    registration in the log is taken on trust, every later change must be signed by a key it
    already had (else a forged registration would make forged records verify)."""
    verifier = Verifier(board, directory)
    contracts = board.contracts()
    signed_prefixes = [p for p, c in contracts.items() if c.signed]
    keysets: dict[str, list[dict[str, Any]]] = {}
    checked = good = unsigned = 0
    problems: list[Checked] = []
    current = {name: registered(board, name) for name in _agents_with_keys(board)}
    # The keys as the walk has them, else as registered now: one view, not a merged copy per record.
    walked = ChainMap(keysets, current)
    for found in board.records():
        rec = found.record
        if rec["op"] == "lost":
            continue
        keys = record_keys(rec)
        registry = [k[len(KEYS_PREFIX) :] for k in keys if k.startswith(KEYS_PREFIX)]
        if registry:
            # Against the keys as the log had them before this record (its own change cannot vouch
            # for it), but a first registration against the keys it registers (self-signed, or not).
            own = _keysets_of(rec)
            first = {n: own.get(n) or [] for n in registry if n not in keysets}
            result = verifier.check(found, {**keysets, **first})
        else:
            result = verifier.check(found, walked)
        if registry:
            problem = _registry_problem(rec, result, registry, keysets)
            if problem is not None:
                result = result._replace(status=BAD, reason=problem)
            else:  # a change not to be trusted does not change the keys later records are checked with
                _apply_registry(rec, keysets)
        if not any(k.startswith(prefix) for k in keys):
            continue
        checked += 1
        if result.status == OK:
            good += 1
        elif result.status == UNSIGNED:
            unsigned += 1
            due = [p for p in signed_prefixes if any(k.startswith(p) for k in keys)]
            if due:
                problems.append(
                    result._replace(reason=f"unsigned under {due[0]!r}, whose contract requires signatures")
                )
            elif rec["author"] in keysets:
                problems.append(result._replace(reason=f"unsigned, but {rec['author']!r} registered a key before it"))
        else:
            problems.append(result)
    return Report(checked, good, unsigned, problems)


def _agents_with_keys(board: Board) -> list[str]:
    return [key[len(KEYS_PREFIX) :] for key in board.keys(KEYS_PREFIX)]


def _registry_problem(
    rec: dict[str, Any], result: Checked, names: list[str], keysets: dict[str, list[dict[str, Any]]]
) -> str | None:
    """Why a change of `_board/keys/<name>` is not to be trusted, or None."""
    for name in names:
        if name not in keysets:
            continue  # the first registration this log shows: on trust (TOFU)
        if result.status != OK or rec["author"] != name:
            return f"{name}'s registered keys were changed by a record {name} did not sign with a key it had"
    return None


def _keysets_of(rec: dict[str, Any]) -> dict[str, list[dict[str, Any]] | None]:
    """The `_board/keys/<name>` changes of a record: name -> the keys it leaves (None: deleted)."""
    out: dict[str, list[dict[str, Any]] | None] = {}
    for op in rec["ops"] if rec["op"] == "txn" else [rec]:
        if op["key"].startswith(KEYS_PREFIX):
            value = op.get("value")
            keys = value.get("keys") if isinstance(value, dict) and op["op"] == "put" else None
            out[op["key"][len(KEYS_PREFIX) :]] = (
                [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else None
            )
    return out


def _apply_registry(rec: dict[str, Any], keysets: dict[str, list[dict[str, Any]]]) -> None:
    for name, keys in _keysets_of(rec).items():
        if keys is None:
            keysets.pop(name, None)
        else:
            keysets[name] = keys

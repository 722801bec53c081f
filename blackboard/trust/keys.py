"""Signing keys (spec/TRUST.md 3, 4): created by `blackboard keygen`, kept outside every board, with
their public half registered in the board at `_board/keys/<name>`.

An agent's key file is `<keys dir>/<name>.key`, mode 0600, a JSON object:
`{"alg": "ed25519", "private": "<base64 of the 32-byte seed>"}`, or for a group that shares an HMAC
secret, `{"alg": "hmac-sha256", "group": "<group>"}` beside the group's secret `<group>.secret`
(hex), which every member holds a copy of. Ed25519 lets any reader verify and only the holder sign;
with HMAC, any holder of the secret can sign as any member (and only holders can verify).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from .. import KEYS_PREFIX, Board, InvalidValue, KeyNotFound, VersionConflict
from ..agents.names import validate_agent
from .files import ENV_KEYS, has_key, keys_dir

__all__ = ["ENV_KEYS", "Ed25519Signer", "HmacSigner", "has_key", "keys_dir", "load_signer", "new_key", "register"]

ED25519 = "ed25519"
HMAC = "hmac-sha256"
_NEEDS_CRYPTOGRAPHY = "Ed25519 signatures need the cryptography package: pip install 'blackboard[trust]'"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    """Base64url without padding (what keys and signatures are written in), or ValueError."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ed25519_kid(public: bytes) -> str:
    """A key's id: the first 16 hex digits of SHA-256 of its 32 public bytes."""
    return hashlib.sha256(public).hexdigest()[:16]


def hmac_kid(secret: bytes) -> str:
    """A group secret's id, which tells nothing of the secret."""
    return hashlib.sha256(b"blackboard-hmac-kid\n" + secret).hexdigest()[:16]


class Ed25519Signer:
    """Signs as agent `name` with its Ed25519 key: the `sig` member `ed25519:<kid>:<base64url>`."""

    alg = ED25519

    def __init__(self, name: str, seed: bytes) -> None:
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        except ImportError:
            raise InvalidValue(_NEEDS_CRYPTOGRAPHY) from None
        self.name = name
        self._seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.kid = ed25519_kid(self.public)
        self._prefix = f"{ED25519}:{self.kid}:"

    def sign(self, message: bytes) -> str:
        return self._prefix + _b64(self._key.sign(message))

    def registration(self) -> dict[str, Any]:
        return {"kid": self.kid, "alg": ED25519, "public": _b64(self.public)}

    def key_file(self) -> dict[str, Any]:
        return {"alg": ED25519, "private": _b64(self._seed)}


class HmacSigner:
    """Signs as agent `name` with its group's shared secret: `hmac-sha256:<kid>:<base64url>`."""

    alg = HMAC

    def __init__(self, name: str, group: str, secret: bytes) -> None:
        self.name = name
        self.group = group
        self._secret = secret
        self.kid = hmac_kid(secret)
        self._prefix = f"{HMAC}:{self.kid}:"

    def sign(self, message: bytes) -> str:
        return self._prefix + _b64(hmac.digest(self._secret, message, "sha256"))

    def registration(self) -> dict[str, Any]:
        return {"kid": self.kid, "alg": HMAC, "group": self.group}

    def key_file(self) -> dict[str, Any]:
        return {"alg": HMAC, "group": self.group}


Signer = Ed25519Signer | HmacSigner


def key_path(name: str, directory: Path | None = None) -> Path:
    return (directory or keys_dir()) / f"{validate_agent(name)}.key"


def load_signer(name: str, directory: Path | None = None) -> Signer:
    """The signer for agent `name` from its key file (`KeyNotFound` if this user holds none)."""
    path = key_path(name, directory)
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise KeyNotFound(str(path)) from None
    except ValueError as exc:
        raise InvalidValue(f"{path}: not a key file ({exc})") from None
    try:
        if raw["alg"] == ED25519:
            return Ed25519Signer(name, unb64(raw["private"]))
        if raw["alg"] == HMAC:
            group = raw["group"]
            return HmacSigner(name, group, read_secret(group, path.parent))
    except (KeyError, TypeError, ValueError):
        pass
    raise InvalidValue(f"{path}: not a key file of blackboard (alg ed25519 or hmac-sha256)")


def read_secret(group: str, directory: Path | None = None) -> bytes:
    """Group `group`'s HMAC secret (`KeyNotFound` if this user holds no copy)."""
    path = (directory or keys_dir()) / f"{validate_agent(group)}.secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise KeyNotFound(str(path)) from None
    except ValueError:
        raise InvalidValue(f"{path}: a group secret is hex digits") from None


def _write_private(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write `path` readable by its owner only (never group or world, whatever the umask), atomically:
    built beside it, then renamed over it, or (`replace=False`) linked into place only if `path` does
    not exist yet, so that of two processes making it at once one wins and both read the winner's."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)  # the whole of it, short writes included
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def new_key(name: str, *, group: str | None = None, directory: Path | None = None) -> Signer:
    """A new signing key for agent `name`, not saved yet (`save_key`): Ed25519, or with `group` that
    group's HMAC secret (made, and saved at once, if this user holds no copy yet)."""
    validate_agent(name)
    if group is None:
        return Ed25519Signer(name, secrets.token_bytes(32))
    secret_path = (directory or keys_dir()) / f"{validate_agent(group)}.secret"
    if not secret_path.exists():
        # Only if absent, even if another process made it since the look: a secret replaced under a
        # member that already signs with it would make its signatures fail.
        _write_private(secret_path, secrets.token_hex(32).encode() + b"\n", replace=False)
    return HmacSigner(name, group, read_secret(group, directory))


def save_key(signer: Signer, directory: Path | None = None) -> Path:
    """Write `signer`'s key file (replacing the agent's previous one), readable by this user only."""
    path = key_path(signer.name, directory)
    _write_private(path, json.dumps(signer.key_file()).encode())
    return path


def registered(board: Board, name: str) -> list[dict[str, Any]]:
    """The keys `name` registered in `board`, oldest first ([] if none)."""
    return _keys_of(board.read(KEYS_PREFIX + validate_agent(name)))


def _keys_of(value: Any) -> list[dict[str, Any]]:
    """The keys a `_board/keys/<name>` value lists ([] if it is not one)."""
    keys = value.get("keys") if isinstance(value, dict) else None
    return [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []


def register(board: Board, signer: Signer) -> int:
    """Register `signer`'s public half (an HMAC key: its group and id) as one of its agent's keys in
    `board` (a key already registered is left as it is); returns the registry entry's version.

    Written as the agent, signed by `board.signer`: the new key itself for a first registration
    (which is taken on trust), the agent's current key for another (the board's built-in rule: a
    name's keys change only by a write it signs)."""
    key = KEYS_PREFIX + signer.name
    while True:
        entry = board.get(key)
        keys = _keys_of(entry.value if entry is not None else None)  # as of the version the write expects
        if any(k.get("kid") == signer.kid for k in keys):
            return entry.version if entry is not None else 0
        value = {"agent": signer.name, "keys": [*keys, signer.registration()]}
        try:
            return board.write(key, value, author=signer.name, expect_version=entry.version if entry else 0).version
        except VersionConflict:
            continue  # another registration landed meanwhile: add ours to what it left

"""The trust layer (spec/TRUST.md): contracts per key prefix, signing keys, and checking signatures.

    from blackboard import trust
    trust.set_contract(board, "plan/", writers=["planner"], signed=True)
    # once: `blackboard keygen --as planner` (new_key, register, save_key)
    planner = Board.open(path, author="planner", signer=trust.load_signer("planner"))
    trust.verify(board).ok                                     # every record's signature checked

Built on `blackboard`'s public names (and the agents layer's names); the core enforces the rules.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .contracts import load_schema, remove_contract, set_contract
    from .files import signer_for
    from .keys import (
        ENV_KEYS,
        Ed25519Signer,
        HmacSigner,
        has_key,
        keys_dir,
        load_signer,
        new_key,
        register,
        registered,
        save_key,
    )
    from .signatures import Checked, Report, Verifier, read_verified, verified, verify

__all__ = [
    "ENV_KEYS",
    "Checked",
    "Ed25519Signer",
    "HmacSigner",
    "Report",
    "Verifier",
    "has_key",
    "keys_dir",
    "load_schema",
    "load_signer",
    "new_key",
    "read_verified",
    "register",
    "registered",
    "remove_contract",
    "save_key",
    "set_contract",
    "signer_for",
    "verified",
    "verify",
]

_LAZY = {
    **dict.fromkeys(("load_schema", "remove_contract", "set_contract"), ".contracts"),
    **dict.fromkeys(
        (
            "ENV_KEYS",
            "Ed25519Signer",
            "HmacSigner",
            "has_key",
            "keys_dir",
            "load_signer",
            "new_key",
            "register",
            "registered",
            "save_key",
        ),
        ".keys",
    ),
    **dict.fromkeys(("ENV_KEYS", "has_key", "keys_dir", "signer_for"), ".files"),
    **dict.fromkeys(("Checked", "Report", "Verifier", "read_verified", "verified", "verify"), ".signatures"),
}


def __getattr__(name: str) -> Any:
    """Names load on first use: a writer that only checks whether it holds a key imports `keys` alone."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

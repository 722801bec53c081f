"""Where this user's signing keys live (outside every board), and whether one is held: what every
writing command asks, so it imports nothing the trust layer's other modules need (a command run
as another user, or a cold start, pays for none of it)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

ENV_KEYS = "BLACKBOARD_KEYS"
#: An agent name (spec/AGENTS.md 1), as agents.names checks it.
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


def keys_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`explicit`, else $BLACKBOARD_KEYS, else $XDG_CONFIG_HOME/blackboard/keys, else
    ~/.config/blackboard/keys."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(ENV_KEYS)
    if env:
        return Path(env)
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "blackboard" / "keys"


def has_key(name: str, directory: Path | None = None) -> bool:
    """Whether this user holds a signing key for agent `name` (one stat: no key is loaded)."""
    if re.fullmatch(_NAME, name) is None:
        return False
    try:
        return ((directory or keys_dir()) / f"{name}.key").is_file()
    except OSError:  # a keys directory this process may not enter (another user's home): it holds none
        return False


def signer_for(name: str, directory: Path | None = None) -> Any:
    """The signer of agent `name` if this user holds its key (else None): what a writing adapter
    (CLI, MCP server) gives its board, so that an agent's writes are signed once it ran `keygen`.
    One stat when it holds none; the rest of the trust layer loads only when it does."""
    if not has_key(name, directory):
        return None
    from .keys import load_signer

    return load_signer(name, directory)

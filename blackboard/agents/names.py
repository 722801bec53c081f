"""Agent names, ids and times of the agents layer (spec/AGENTS.md sections 1, 4)."""

from __future__ import annotations

import os
import re
import secrets
import time
from datetime import UTC, datetime

from .. import InvalidKey

ENV_AGENT = "BLACKBOARD_AGENT"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ID = r"[a-z]-[0-9a-f]{12}"
_STATUS = r"[a-z][a-z -]{0,31}"


def validate_agent(name: object) -> str:
    """An agent name: 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit (a key segment, a
    cursor name, and a word a shell passes as it is)."""
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        raise InvalidKey(str(name), "an agent name is 1-64 of A-Z a-z 0-9 _ . - and starts with a letter or a digit")
    return name


def validate_status(status: object) -> str:
    if not isinstance(status, str) or not re.fullmatch(_STATUS, status):
        raise InvalidKey(str(status), "a status is 1-32 of a-z, space and '-', starting with a letter")
    return status


def agent_from_env(explicit: str | None = None) -> str | None:
    """`--as NAME` if given, else BLACKBOARD_AGENT, else None; validated."""
    name = explicit if explicit is not None else os.environ.get(ENV_AGENT) or None
    return None if name is None else validate_agent(name)


def process_name() -> str:
    """This process as an agent name, for one that was given none: `<host>.<pid>`."""
    import socket

    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).strip(".-")[:40] or "host"
    return f"{host}.{os.getpid()}"


def new_id(kind: str) -> str:
    """`m-3f9a0c1d2e4b`: a message (m) or a conversation (c); 48 random bits, unique in practice."""
    return f"{kind}-{secrets.token_hex(6)}"


def validate_id(text: object, kind: str) -> str:
    if not isinstance(text, str) or not re.fullmatch(_ID, text) or not text.startswith(kind + "-"):
        raise InvalidKey(str(text), f"not an id of the form {kind}-<12 hex digits>")
    return text


def format_ts(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def now() -> float:
    return time.time()

"""Settings resolved in one place: explicit argument, else environment variable, else default.

No other module reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DIR = "BLACKBOARD_DIR"
ENV_AUTHOR = "BLACKBOARD_AUTHOR"
ENV_POLL = "BLACKBOARD_POLL"
ENV_POLL_INTERVAL = "BLACKBOARD_POLL_INTERVAL"

DEFAULT_DIR = ".blackboard"
DEFAULT_LOCK_TIMEOUT = 30.0
#: How long a writing handle waits for more writes before it brings entry files up to date.
DEFAULT_FLUSH_INTERVAL = 0.05
DEFAULT_POLL_INTERVAL = 0.01


def board_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)


def author(explicit: str | None = None) -> str:
    if explicit is not None:
        return explicit  # even "": the caller checks it, rather than silently use the default
    env = os.environ.get(ENV_AUTHOR)
    if env:
        return env
    return f"{_user()}@{os.uname().nodename}"  # os.uname: `socket` costs a shell agent ~2 ms a command


#: What getpass.getuser() reads, in its order (getpass itself would import pwd and more up front).
_USER_VARS = ("LOGNAME", "USER", "LNAME", "USERNAME")


def _user() -> str:
    for name in _USER_VARS:
        user = os.environ.get(name)
        if user:
            return user
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no passwd entry (containers)
        return str(os.getuid())


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def poll(explicit: bool | None = None) -> bool:
    """Whether watchers poll the log's size instead of waiting for notifications (NFS, SMB, ...)."""
    if explicit is not None:
        return explicit
    return _truthy(os.environ.get(ENV_POLL, ""))


def poll_interval(explicit: float | None = None) -> float:
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_POLL_INTERVAL)
    if not env:
        return DEFAULT_POLL_INTERVAL
    try:
        value = float(env)
    except ValueError:
        value = -1.0
    if not value > 0:
        from ..errors import InvalidValue

        raise InvalidValue(f"{ENV_POLL_INTERVAL}={env!r} is not a number of seconds > 0")
    return value

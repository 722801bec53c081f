"""`blackboard mcp`: the board as tools of a Model Context Protocol server on stdio (README, "MCP server").

The server (`server.py`) needs the official `mcp` SDK, the `[mcp]` extra; this module does not, so
that `blackboard mcp --help` and the profile names work without it.
"""

from __future__ import annotations

#: profile -> its tools. Each tool costs a model's context its name, description and schema at every
#: turn (a 48-tool mailbox added profiles to cut that by ~70 %): `minimal` is enough for the
#: blackboard pattern itself; `messaging` and `work` add one layer each; `full` is every tool.
PROFILES: dict[str, tuple[str, ...]] = {
    "minimal": ("read", "write", "watch", "claim"),
    "messaging": ("read", "write", "watch", "who", "join", "send", "inbox", "ack", "request", "reply", "digest"),
    "work": (
        "read",
        "write",
        "watch",
        "claim",
        "renew",
        "release",
        "take",
        "ack",
        "nack",
        "task_add",
        "task_next",
        "task_done",
    ),
    "full": (
        "read",
        "list",
        "write",
        "delete",
        "history",
        "watch",
        "claim",
        "renew",
        "release",
        "take",
        "ack",
        "nack",
        "who",
        "join",
        "send",
        "inbox",
        "request",
        "reply",
        "digest",
        "task_add",
        "task_next",
        "task_done",
    ),
}
DEFAULT_PROFILE = "minimal"
#: Profiles whose tools act as an agent (an inbox, a registration): they need an identity.
NEEDS_IDENTITY = ("messaging", "full")
#: The longest a tool waits (watch, inbox, take, claim, request): clients cap a blocking call at
#: ~60 s (the TypeScript SDK's default), and a wait must end well before the client gives up.
MAX_WAIT_S = 25.0

__all__ = ["DEFAULT_PROFILE", "MAX_WAIT_S", "NEEDS_IDENTITY", "PROFILES"]

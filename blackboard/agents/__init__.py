"""The agents layer: presence, inboxes, request/reply, calls, conversations, digest (spec/AGENTS.md).

Built on `blackboard`'s public names only. Start with `board.agent("atlas", capabilities=[...])`.
Names load on first use: a CLI command that only checks an agent name imports `names` alone.
"""

from typing import TYPE_CHECKING, Any

from .names import ENV_AGENT, agent_from_env, format_ts, parse_ts, process_name, validate_agent

if TYPE_CHECKING:
    from .agent import Agent, off_loop
    from .calls import CallResult
    from .conversations import Turn
    from .digest import Item
    from .messages import Message, Sent
    from .presence import AgentInfo

__all__ = [
    "ENV_AGENT",
    "Agent",
    "AgentInfo",
    "CallResult",
    "Item",
    "Message",
    "Sent",
    "Turn",
    "agent_from_env",
    "format_ts",
    "off_loop",
    "parse_ts",
    "process_name",
    "validate_agent",
]

_LAZY = {
    "Agent": ".agent",
    "off_loop": ".agent",
    "AgentInfo": ".presence",
    "CallResult": ".calls",
    "Item": ".digest",
    "Message": ".messages",
    "Sent": ".messages",
    "Turn": ".conversations",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The agents layer: presence, inboxes, request/reply, calls, conversations, digest (spec/AGENTS.md).

Built on `blackboard`'s public names only. Start with `board.agent("atlas", capabilities=[...])`.
"""

from .agent import Agent
from .calls import CallResult
from .conversations import Turn
from .digest import Item
from .messages import Message, Sent
from .names import ENV_AGENT, agent_from_env, format_ts, parse_ts, process_name, validate_agent
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
    "parse_ts",
    "process_name",
    "validate_agent",
]

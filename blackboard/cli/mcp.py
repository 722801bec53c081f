"""`blackboard mcp`: serve the board to an MCP client over stdio (blackboard/mcp/).

The SDK is imported only when the command runs, and only if the `[mcp]` extra is installed: every
other command, and this one's --help, work without it.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..mcp import DEFAULT_PROFILE, NEEDS_IDENTITY, PROFILES
from .base import agent_option, board_option, fail, identity, json_noop_option

INSTALL = "pip install 'blackboard[mcp]'"


def _profiles_help() -> str:
    import textwrap

    return "\n".join(
        textwrap.fill(", ".join(tools), 78, initial_indent=f"  {name:<10} ", subsequent_indent=" " * 13)
        for name, tools in PROFILES.items()
    )


@click.command(
    epilog=f"\b\nProfiles (--profile) and their tools:\n{_profiles_help()}",
)
@board_option
@agent_option
@click.option(
    "--profile",
    type=click.Choice(list(PROFILES)),
    default=DEFAULT_PROFILE,
    show_default=True,
    help="Which tools to offer (below).",
)
@json_noop_option  # stdout is JSON-RPC: JSON already
def mcp(board_dir: Path, agent: str | None, profile: str) -> None:
    """An MCP server on stdio: the board as tools for Claude Code and other MCP clients.

    One long-lived process that opens the board once; the client starts it and talks to it over
    stdin and stdout. Every tool's wait is bounded by its wait_s (at most 25 s: clients give up on a
    blocking call after ~60 s). The tools act as --as NAME (or BLACKBOARD_AGENT): identity is
    configuration, never a tool argument; messaging and full need one.

    The default profile is minimal: every tool costs the model's context its description at every
    turn, and read, write, watch and claim are the blackboard itself; add the others when an agent
    needs them. Needs the [mcp] extra (pip install 'blackboard[mcp]').
    """
    name = identity(agent)
    if name is None and profile in NEEDS_IDENTITY:
        raise click.UsageError(f"the {profile} profile acts as an agent: give --as NAME or set BLACKBOARD_AGENT")
    try:
        from ..mcp.server import serve
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.split(".")[0].startswith("mcp"):
            raise
        fail(f"`blackboard mcp` needs the MCP SDK: {INSTALL} (or pip install -e '.[mcp]' in a clone)", 1)
    serve(board_dir, agent=name, profile=profile)

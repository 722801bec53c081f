"""Shell completion of key names (click's: `eval "$(_BLACKBOARD_COMPLETE=bash_source blackboard)"`).

Attach with `@click.argument("key", shell_complete=complete_keys)`. The shell runs `blackboard` on
every Tab, so this opens the board read-only, prints what it finds and never fails: a missing or
damaged board, or a bad prefix, completes to nothing rather than to a traceback in the prompt.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.shell_completion import CompletionItem

from ..core import settings as _settings

#: At most this many completions: past it, keys are grouped by their next '/' segment.
MAX_COMPLETIONS = 200


def _board_dir(ctx: click.Context) -> Path:
    """The board the command line names, as `base._resolve_board` resolves it: the command's
    --board, else the group's, else BLACKBOARD_DIR, else the default."""
    value = ctx.params.get("board_dir")
    if value is None:
        value = ctx.find_root().params.get("board_dir")
    return _settings.board_dir(value)


def segments(keys: list[str], prefix: str) -> list[str]:
    """Each key cut after its next '/' past `prefix`, once each, in order: `jobs/` for `jobs/1`...

    As a shell completes paths: a board of a million keys offers its top-level "directories".
    """
    out: dict[str, None] = {}
    for key in keys:
        slash = key.find("/", len(prefix))
        out[key if slash < 0 else key[: slash + 1]] = None
    return list(out)


def key_candidates(keys: list[str], prefix: str, limit: int = MAX_COMPLETIONS) -> list[str]:
    """What to offer for `prefix`, from the live keys that start with it (in key order).

    All of them if they are few; else their next segments, descending while there is only one
    (the shell would add a space after a lone `jobs/`, and the user would have to delete it).
    """
    while len(keys) > limit:
        groups = segments(keys, prefix)
        if len(groups) != 1 or groups[0] == prefix:
            return groups[:limit]
        prefix = groups[0]
    return keys


def complete_keys(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The live keys of the command line's board that start with `incomplete`; none on any error."""
    try:
        from ..board import Board  # only when completing: the command itself may not need it

        with Board.open(_board_dir(ctx), read_only=True) as board:
            keys = board.keys(incomplete)
        return [CompletionItem(key) for key in key_candidates(keys, incomplete)]
    except Exception:  # a Tab must never print a traceback into the user's prompt
        return []

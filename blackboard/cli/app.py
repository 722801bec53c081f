"""The `blackboard` command's entry point: errors end here.

The group (`base.cli`) is lazy: it imports the module of the command that runs, no other.
"""

from __future__ import annotations

import sys

import click

from ..errors import BlackboardError
from .base import EXIT_INTERRUPTED, cli, fail


def main() -> None:
    """Entry point of the `blackboard` script: every error ends as one line and an exit code."""
    try:
        code = cli.main(prog_name="blackboard", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        fail(exc.format_message() + hint, 2)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:  # Ctrl-C while click itself was waiting
        sys.exit(EXIT_INTERRUPTED)
    except BlackboardError as exc:  # raised while click parses options, before a command runs
        fail(str(exc), exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)

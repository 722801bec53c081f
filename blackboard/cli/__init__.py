"""The `blackboard` command: a thin layer over `Board`, with the same names (see `blackboard --help`)."""

from .app import main
from .base import EXIT_CHECK_FAILED, EXIT_CODES, cli

__all__ = ["EXIT_CHECK_FAILED", "EXIT_CODES", "cli", "main"]

"""Warnings of the core, on the "blackboard" logger: one function every module can import (the
engine and the soft lock both warn, and neither may import the other for it)."""

from __future__ import annotations


def warn(message: str, *args: object) -> None:
    """Log a warning on the "blackboard" logger; `logging` is imported on first use (~5 ms of every
    CLI command's start otherwise)."""
    import logging

    logging.getLogger("blackboard").warning(message, *args)

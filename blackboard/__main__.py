"""`python -m blackboard`: the same as the `blackboard` command."""

from .cli import main

main()

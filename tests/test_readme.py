"""The README cannot drift: its set-up commands, its code and the CLI it shows are checked here."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from blackboard import Board
from blackboard.cli import EXIT_CODES, cli

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.DOTALL)


def test_readme_opens_with_exactly_two_setup_commands() -> None:
    first_two = [body.strip() for lang, body in BLOCKS[:2]]
    assert [lang for lang, _ in BLOCKS[:2]] == ["sh", "sh"]
    demo, tests = first_two
    assert demo.endswith("blackboard demo") and "\n" not in demo
    assert "pytest" in tests and "ruff check" in tests and "mypy" in tests and "\n" not in tests
    # CI runs the README's test command, word for word.
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_python_blocks_run_as_pasted(tmp_path: Path) -> None:
    """Each Python block of the README, verbatim, as a script of its own in a fresh directory."""
    python = [body for lang, body in BLOCKS if lang == "python"]
    assert len(python) == 2
    for number, body in enumerate(python):
        script = tmp_path / f"block{number}.py"
        script.write_text(body)
        run = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert run.returncode == 0, (body, run.stderr)
        if number == 1:
            assert "analysis/q1 {'verdict': 'plausible'}" in run.stdout, run.stdout
    with Board.open(tmp_path / "board") as board:
        assert board.read("research_results/q1") == {"seen": "why?"}  # the watch answered the request
        assert board.read("tasks/7") == {"owner": "me"}
        assert board.read("counters/done") == 1


def shell_tour() -> list[list[str]]:
    tour = next(body for lang, body in BLOCKS[2:] if lang == "sh")
    commands = []
    for line in tour.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "blackboard":
            commands.append(words[1:])
    return commands


@pytest.mark.parametrize("words", shell_tour(), ids=lambda w: " ".join(w)[:40])
def test_shell_tour_commands_exist_with_those_options(words: list[str]) -> None:
    runner = CliRunner()
    command = cli.get_command(click.Context(cli), words[0])
    assert command is not None, words
    options = {o for w in words if w.startswith("-") for o in [w]}
    help_text = runner.invoke(cli, [words[0], "--help"]).output
    for option in options:
        assert option in help_text, (words, option)


def test_shell_tour_runs(tmp_path: Path) -> None:
    runner = CliRunner()
    board = str(tmp_path / "board")
    outputs = []
    for tour_words in shell_tour():
        words = [*tour_words, "--timeout", "0.1"] if "--cursor" in tour_words else tour_words  # bound a live consumer
        if words[0] == "tail" and "-f" in words:
            continue  # follows forever
        result = runner.invoke(cli, [words[0], "--board", board, *words[1:]])
        outputs.append(result.output)
        if words[:2] == ["write", "research_results/q1"] and "--expect-version" in words:
            assert result.exit_code == 0, result.output
    assert '{"answer":42}' in "".join(outputs)


def test_exit_codes_in_readme_match_help() -> None:
    documented = dict(re.findall(r"(\d+) ([a-z][a-z -]+?)(?:,|\s\()", README.split("Exit codes let")[1][:300]))
    for code, words in documented.items():
        assert re.search(rf"^\s*{code}\s+.*{words.split()[0]}", EXIT_CODES, re.MULTILINE | re.IGNORECASE), (code, words)

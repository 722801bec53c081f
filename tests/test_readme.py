"""The README cannot drift: its set-up commands, its code and the CLI it shows are checked here."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from _workers import cli_env
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
    assert len(python) == 5
    for number, body in enumerate(python):
        script = tmp_path / f"block{number}.py"
        script.write_text(body)
        run = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert run.returncode == 0, (body, run.stderr)
        if number == 1:
            assert "analysis/q1 {'verdict': 'plausible'}" in run.stdout, run.stdout
        if number == 2:
            assert run.stdout.splitlines() == [
                "[('atlas', 'available'), ('bob', 'available')]",
                "atlas {'note': 'hello'}",
                "{'answer': 42}",
                "[('atlas', 'plan'), ('atlas', 'first'), ('bob', 'second')]",  # the join turn, then two
                "['conversation']",
            ], run.stdout
        if number == 3:
            assert run.stdout.splitlines() == [
                "a second ack is refused: Fenced",
                "design -> build | ['results/0', 'results/1', 'results/2']",
            ], run.stdout
        if number == 4:
            assert run.stdout.splitlines() == ["refused: signed", "{'do': 'collect sources'} True"], run.stdout
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


def test_exit_codes_in_readme_match_help_and_spec() -> None:
    """The README's exit codes, `blackboard --help`'s table and spec section 12 name the same codes,
    and the README's word for each is in the help's line for it: none of the three can drift."""
    paragraph = README.split("Exit codes let")[1].split("\n\n")[0]
    documented = {code: word.strip("`,") for code, word in re.findall(r"(?:(?<=[:,] )|(?<=\n))(\d+) (\S+)", paragraph)}
    for code, word in documented.items():
        assert re.search(rf"^\s*{code}\s+.*{word}", EXIT_CODES, re.MULTILINE | re.IGNORECASE), (code, word)
    spec = (ROOT / "spec" / "FORMAT.md").read_text().split("## 12. Errors")[1].split("\n### ")[0]
    in_help = set(re.findall(r"^\s+(\d+)\s", EXIT_CODES, re.MULTILINE))
    assert set(documented) == in_help == set(re.findall(r"^\| (\d+) \|", spec, re.MULTILINE))


def request_reply_line() -> str:
    block = README.split("### Request and reply from the shell")[1]
    (line,) = [str(body).strip() for _, body in re.findall(r"```(\w+)\n(.*?)```", block, re.DOTALL)[:1]]
    return line


def test_request_reply_one_liner_gets_exactly_its_reply(tmp_path: Path) -> None:
    """The README's one-liner, verbatim in bash: a reply to r10 first (a prefix watch would take it),
    then the reply to r1 from another process once it sees the request: exit 0, that reply printed."""
    line = request_reply_line()
    board_dir = tmp_path / "board"
    with Board.init(board_dir) as board:
        board.write("responses/r10", "not yours")
    responder = subprocess.Popen(
        [sys.executable, "-c", RESPONDER, str(board_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    env = {**cli_env(), "BLACKBOARD_DIR": str(board_dir)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    try:
        run = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, timeout=60, check=False)
    finally:
        _, err = responder.communicate(timeout=60)
    assert responder.returncode == 0, err
    assert run.returncode == 0, run.stderr
    (event,) = [json.loads(text) for text in run.stdout.splitlines()]
    assert (event["key"], event["value"]) == ("responses/r1", {"a": "because", "q": "why?"})


def test_request_reply_one_liner_without_a_reply_exits_7(tmp_path: Path) -> None:
    """Nobody answers: exit 7 once the timeout passes (the one-liner with its 30 s made 1 s)."""
    line = request_reply_line()
    assert "--timeout 30" in line
    board_dir = tmp_path / "board"
    Board.init(board_dir).close()
    env = {**cli_env(), "BLACKBOARD_DIR": str(board_dir)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    run = subprocess.run(
        ["bash", "-c", line.replace("--timeout 30", "--timeout 1")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 7, run.stderr
    assert run.stdout == ""


#: Answers the first request it sees with {"a": "because", "q": <the question>}, then exits.
RESPONDER = """
import sys
from blackboard import Board
with Board.open(sys.argv[1]) as board:
    for event in board.watch("requests/", since=0, timeout=30):
        board.write("responses/" + event.key.split("/")[1], {"a": "because", "q": event.value["q"]})
        break
    else:
        sys.exit("no request came")
"""

"""Every example in examples/ runs to its end as a real process, exits 0 and reports its own check.

The examples are found by glob, so a new one is run without touching this file; the ones named in
`EXPECTED` must also print the line that says their correctness check passed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLES = sorted([*ROOT.glob("examples/*.py"), *ROOT.glob("examples/*.sh")])
#: Each example runs in under ~10 s on 2 cores; the margin is for a loaded CI machine.
TIMEOUT = 60.0

#: A line each example prints only when its own correctness check passed.
EXPECTED = {
    "agents_conversation.py": r"^conversation: (\d+)/\1 turns in order, each by its sender; the next one refused",
    "research_pipeline.py": r"^(\d+)/\1 requests analysed",
    "request_response.py": r"^client: 6/6 responses matched their requests",
    "shell_agent.sh": r"^3/3 questions answered by the shell agent$",
    "shell_responder.sh": r"^(\d+)/\1 requests answered by the shell responder$",
    "trusted_plan.py": r"^trusted plan: 3/3 signed steps acted on; 2 forgeries refused by the board; the one written",
    "task_queue.py": r"^all 20 tasks done, each exactly once; the (\d+)-task plan ran in a valid order",
}


def command(example: Path) -> list[str]:
    if example.suffix == ".sh":
        return ["bash", str(example)]
    return [sys.executable, str(example)]


def test_named_examples_exist() -> None:
    assert set(EXPECTED) <= {example.name for example in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_example_runs(example: Path, tmp_path: Path) -> None:
    # The shell example finds the CLI through BLACKBOARD_CLI: the one of this interpreter, whatever
    # is (or is not) on PATH. --board keeps each run's board inside tmp_path.
    env = {**os.environ, "BLACKBOARD_CLI": f"{sys.executable} -m blackboard"}
    started = time.monotonic()
    result = subprocess.run(
        [*command(example), "--board", str(tmp_path / "board")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    elapsed = time.monotonic() - started
    report = f"{example.name}: exit {result.returncode} after {elapsed:.1f} s\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
    assert result.stdout.strip(), report
    expected = EXPECTED.get(example.name)
    if expected is not None:
        assert re.search(expected, result.stdout, re.MULTILINE), report

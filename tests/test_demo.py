"""The main job, `blackboard demo`, runs to its end by itself and says what happened."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(60)
def test_demo_runs_the_pipeline_and_summarizes(tmp_path: Path) -> None:
    board = tmp_path / "board"
    result = subprocess.run(
        [sys.executable, "-m", "blackboard", "demo", "--board", str(board), "--requests", "3", "--interval", "0.05"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "3 requests -> 3 results -> 3 analyses" in result.stdout
    assert "9 events seen live" in result.stdout  # 3 requests, 3 results, 3 analyses
    assert "event latency" in result.stdout
    # Presence: `who` once, with the three agents online and their capabilities.
    who = result.stdout.split("who:\n", 1)[1].split("\nrequest ", 1)[0].splitlines()
    assert [line.split()[:2] for line in who] == [
        ["analyst", "available"],
        ["requester", "available"],
        ["researcher", "available"],
    ]
    assert who[2].endswith("can research")
    # One request -> reply between two of the agents, with its round trip.
    assert '\nrequest requester -> researcher {"question":"ready?"}\n' in result.stdout
    reply = r'^  reply {"ready":true,"answered":1} in \d+\.\d ms; the next request \d+\.\d ms$'
    assert re.search(reply, result.stdout, re.MULTILINE)
    assert "Traceback" not in result.stderr
    # The agents coordinated only through the board: it holds their work, and the agents exited.
    out = subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(board), "ls", "--keys", "analysis/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["analysis/q1", "analysis/q2", "analysis/q3"]
    # Every agent left the registry on its way out; the request and its reply were both handled.
    agents = subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(board), "ls", "--json", "agents/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert sorted((e["key"], e["value"]["left"]) for e in map(json.loads, agents)) == [
        ("agents/analyst", True),
        ("agents/requester", True),
        ("agents/researcher", True),
    ]
    inboxes = subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(board), "ls", "--keys", "inbox/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert inboxes == []

"""The main job, `blackboard demo`, runs to its end by itself and says what happened."""

from __future__ import annotations

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
    assert "Traceback" not in result.stderr
    # The agents coordinated only through the board: it holds their work, and the agents exited.
    out = subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(board), "ls", "--keys", "analysis/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["analysis/q1", "analysis/q2", "analysis/q3"]

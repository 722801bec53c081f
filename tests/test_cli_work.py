"""The work layer's commands (spec/WORK.md) through real `python -m blackboard` processes: leases and
fenced writes, a queue's take/ack/nack/extend/pending/dead, tasks; documented exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _workers import cli_env, command

from blackboard import Board

pytestmark = pytest.mark.timeout(120)


def run(board: Board, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(board, *args), capture_output=True, text=True, timeout=60, env=cli_env(**env), check=False
    )


def ok(board: Board, *args: str) -> Any:
    result = run(board, *args)
    assert result.returncode == 0, (args, result.stderr)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return lines[0] if len(lines) == 1 else lines


def fails(board: Board, code: int, *args: str) -> str:
    result = run(board, *args)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    return line


def times_out(board: Board, *args: str) -> None:
    """Exit 7, as `watch --timeout` does: nothing on stdout, nothing to report on stderr."""
    result = run(board, *args)
    assert (result.returncode, result.stdout, result.stderr) == (7, "", ""), args


@pytest.fixture
def wboard(tmp_path: Path) -> Board:
    return Board.init(tmp_path / "board")


def test_claim_held_renew_release_and_fenced_writes(wboard: Board) -> None:
    first = ok(wboard, "claim", "deploy", "--ttl", "30", "--as", "a")
    assert (first["key"], first["holder"], first["expired"]) == ("deploy", "a", False)
    token = str(first["token"])
    line = fails(wboard, 10, "claim", "deploy", "--ttl", "30", "--as", "b")
    assert "held by a" in line and f"token {token}" in line
    assert ok(wboard, "write", "deploy/status", '"up"', "--fence", token)["version"] == 1
    assert ok(wboard, "renew", "deploy", "--token", token)["token"] == first["token"]
    ok(wboard, "release", "deploy", "--token", token)
    second = ok(wboard, "claim", "deploy", "--ttl", "30", "--as", "b")
    assert second["token"] > first["token"]
    before = wboard.last_seq
    assert "fenced" in fails(wboard, 11, "write", "deploy/status", '"stale"', "--fence", token)
    assert "fenced" in fails(wboard, 11, "rm", "deploy/status", "--fence", token)
    assert "lost" in fails(wboard, 11, "renew", "deploy", "--token", token)
    assert fails(wboard, 11, "release", "deploy", "--token", token)
    assert wboard.last_seq == before and wboard.read("deploy/status") == "up"


def test_claim_waits_for_another_process_to_release(wboard: Board) -> None:
    token = str(ok(wboard, "claim", "job", "--ttl", "60", "--as", "a")["token"])
    waiting = subprocess.Popen(
        command(wboard, "claim", "job", "--ttl", "60", "--wait", "60", "--as", "b"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    ok(wboard, "release", "job", "--token", token)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert json.loads(out)["holder"] == "b"


def test_queue_take_pending_extend_nack_dead(wboard: Board) -> None:
    pushed = [ok(wboard, "push", "jobs/", json.dumps({"n": n})) for n in range(2)]
    assert pushed[0]["key"] < pushed[1]["key"], "push names items in order"
    first = ok(wboard, "take", "jobs/", "--group", "g", "--as", "c1", "--max-deliver", "2", "--lease", "60")
    assert (first["key"], first["value"], first["attempt"]) == (pushed[0]["key"], {"n": 0}, 1)
    second = ok(wboard, "take", "jobs/", "--group", "g", "--as", "c2")
    assert second["key"] == pushed[1]["key"]
    times_out(wboard, "take", "jobs/", "--group", "g", "--as", "c3", "--wait", "0.2")
    rows = ok(wboard, "pending", "jobs/", "--group", "g", "--json")
    assert [(r["key"], r["consumer"]) for r in rows] == [(first["key"], "c1"), (second["key"], "c2")]
    assert ok(wboard, "extend", first["delivery_id"], "--lease", "120")["lease"] == 120
    ok(wboard, "nack", first["delivery_id"])
    again = ok(wboard, "take", "jobs/", "--group", "g", "--as", "c3", "--wait", "30")
    assert (again["key"], again["attempt"]) == (first["key"], 2)
    assert "no longer current" in fails(wboard, 11, "nack", first["delivery_id"])
    ok(wboard, "nack", again["delivery_id"])
    times_out(wboard, "take", "jobs/", "--group", "g", "--as", "c3")  # out of attempts: dead
    (letter,) = (ok(wboard, "dead", "--group", "g", "--json"),)
    assert letter["item"] == first["key"] and letter["reason"] == "max_deliver"
    plain = run(wboard, "pending", "--group", "g")
    assert plain.returncode == 0 and second["key"] in plain.stdout and "consumer" in plain.stdout.splitlines()[0]


def test_tasks_from_the_shell(wboard: Board) -> None:
    a = ok(wboard, "task", "add", "design")
    b = ok(wboard, "task", "add", "build", "--blocked-by", a["id"], "--json-data", '{"repo": "x"}')
    assert b["blocked_by"] == [a["id"]] and b["data"] == {"repo": "x"}
    assert "no such key" in fails(wboard, 3, "task", "add", "orphan", "--blocked-by", "t-00000000")
    mine = ok(wboard, "task", "next", "--as", "w1")
    assert (mine["id"], mine["state"], mine["owner"]) == (a["id"], "working", "w1")
    times_out(wboard, "task", "next", "--as", "w2")  # b waits for a
    assert "not by w2" in fails(wboard, 9, "task", "done", a["id"], "--as", "w2")
    assert ok(wboard, "task", "done", a["id"], "--as", "w1", "--result", "1")["state"] == "completed"
    theirs = ok(wboard, "task", "next", "--as", "w2")
    assert theirs["id"] == b["id"]
    assert ok(wboard, "task", "fail", b["id"], "--as", "w2", "--reason", "no disk")["state"] == "failed"
    listed = ok(wboard, "task", "list", "--json")
    assert [(t["title"], t["state"]) for t in listed] == [("design", "completed"), ("build", "failed")]
    assert [t["title"] for t in [ok(wboard, "task", "list", "--state", "failed", "--json")]] == ["build"]


def test_bad_input_is_one_line_and_exit_2(wboard: Board) -> None:
    for args in (
        ["claim", "../x", "--ttl", "1"],
        ["claim", "k", "--ttl", "0"],
        ["take", "jobs/", "--group", "bad group"],
        ["nack", "not-a-delivery"],
        ["task", "done", "nope", "--as", "w"],
    ):
        fails(wboard, 2, *args)
    assert wboard.last_seq == 0


def test_ack_of_a_delivery_writes_its_result_in_the_same_record_and_a_stale_ack_is_fenced(wboard: Board) -> None:
    ok(wboard, "push", "jobs/", '{"n": 1}')
    first = ok(wboard, "take", "jobs/", "--group", "g", "--as", "c1", "--lease", "60")
    ok(wboard, "nack", first["delivery_id"])
    second = ok(wboard, "take", "jobs/", "--group", "g", "--as", "c2")
    before = wboard.last_seq
    assert "no longer current" in fails(wboard, 11, "ack", first["delivery_id"], "--result-key", "r", "--result", "1")
    assert wboard.last_seq == before
    acked = ok(wboard, "ack", second["delivery_id"], "--result-key", "results/1", "--result", '{"ok": true}')
    assert acked["seq"] == before + 1
    events = [e for e in wboard.tail(2) if e.seq == acked["seq"]]
    assert {e.key for e in events} == {"results/1", "groups/g/pending/" + second["key"]}, "one record"
    assert wboard.read("results/1") == {"ok": True}
    assert "exit" not in fails(wboard, 11, "ack", second["delivery_id"])
    fails(wboard, 2, "ack", second["delivery_id"], "m-000000000000")
    fails(wboard, 2, "ack", second["delivery_id"], "--result", "1")
    fails(wboard, 2, "--as", "a", "ack", "m-000000000000", "--result-key", "k", "--result", "1")


def test_the_readme_work_tour_runs_in_bash(tmp_path: Path) -> None:
    """The README's shell block of "Work: leases, queues, tasks", verbatim, with `bash -e`."""
    import re
    import sys

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (tour,) = re.findall(r"```sh\n(.*?)```", readme.split("### Work: leases, queues, tasks")[1], re.DOTALL)[:1]
    board = Board.init(tmp_path / "board")
    env = cli_env(BLACKBOARD_DIR=str(board.path))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    result = subprocess.run(
        ["bash", "-e", "-c", tour], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert board.read("deploy/status") == "rolling out" and board.read("results/1") == {"status": 200}
    states = {
        t["title"]: t["state"]
        for t in (json.loads(x) for x in run(board, "task", "list", "--json").stdout.splitlines())
    }
    assert states == {"collect sources": "completed", "write the summary": "submitted"}

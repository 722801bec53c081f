"""`blackboard demo`: a research -> analysis pipeline of agent processes coordinating through a board.

The agents join with their capabilities (spec/AGENTS.md); the demo process shows `who`, asks the
researcher one request and times its reply, then posts research requests; the researcher reacts to
each and writes its findings; the analyst reacts to those and writes an analysis. The agents share
nothing but the board directory. Run an agent alone with `python -m blackboard.cli.demo researcher BOARD`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from ..agents import Agent
from ..board import Board
from .render import event_line

QUESTIONS = [
    "Which eviction policy suits an agent's long-term memory?",
    "How do file locks behave on NFS?",
    "What makes a log-structured store fast on small writes?",
    "When does polling beat inotify?",
    "How should agents fence a task whose lease expired?",
    "What is the cost of fsync on this disk?",
    "How do etcd watches resume after a disconnect?",
    "Which JSON parser is fastest in Python?",
]

#: role -> (the prefix it reacts to, the prefix it writes)
ROLES = {
    "researcher": ("research_request/", "research_results/"),
    "analyst": ("research_results/", "analysis/"),
}
CAPABILITIES = {"researcher": ["research"], "analyst": ["analysis"], "requester": ["questions"]}
SHUTDOWN = "control/shutdown"
QUESTION = {"question": "ready?"}  # the one request the demo sends the researcher


def work(role: str, value: object) -> dict[str, object]:
    """Stand-in for an LLM call: takes a little time, returns structured output."""
    time.sleep(random.uniform(0.05, 0.25))
    assert isinstance(value, dict)
    if role == "researcher":
        return {
            "question": value["question"],
            "findings": [f"finding {i + 1} on {value['question'][:24]}..." for i in range(random.randint(2, 4))],
            "sources": random.randint(3, 12),
        }
    return {  # the verdict first: it is what a person watching the demo looks for
        "verdict": random.choice(["well supported", "plausible", "needs more data"]),
        "confidence": round(random.uniform(0.55, 0.95), 2),
        "based_on": len(value["findings"]),
        "question": value["question"],
    }


def run_agent(role: str, board_dir: str) -> None:
    """One agent: join, react to every event of its input prefix, write to its output prefix, answer
    requests in its inbox, stop on shutdown (leaving the registry as it goes)."""
    source, outbox = ROLES[role]
    answered = 0
    with Board.open(board_dir, author=role) as board, board.agent(role, capabilities=CAPABILITIES[role]) as me:
        # since=0 + a cursor: requests posted before this process was up are not missed, and a
        # restarted agent resumes where it stopped.
        for event in board.watch("", since=0, cursor=role):
            if event.key == SHUTDOWN:
                return
            if event.op == "put" and event.key.startswith(source):
                item = event.key.removeprefix(source)
                board.write(outbox + item, work(role, event.value))
            elif event.op == "put" and event.key.startswith(f"inbox/{role}/"):
                for message in me.inbox():  # handled: the reply and its ack are one record
                    if message.kind == "request":
                        answered += 1
                        me.reply(message, {"ready": True, "answered": answered})
                    else:
                        me.ack(message)


def demo(board_dir: Path | None, requests: int, interval: float) -> None:
    """Start the agents, post requests, show every event live, print a summary."""
    colour = sys.stdout.isatty()
    root = board_dir or Path(tempfile.mkdtemp(prefix="blackboard-demo-"))
    board = Board.init(root, author="requester")
    click.secho("blackboard demo: agents coordinating through one board directory", bold=True)
    click.echo(f"  board      {root}  (the log: {root / 'log.jsonl'})")
    agents = {role: subprocess.Popen([sys.executable, "-m", "blackboard.cli.demo", role, str(root)]) for role in ROLES}
    for role, proc in agents.items():
        source, outbox = ROLES[role]
        click.echo(f"  {role:<10} pid {proc.pid:<7} reacts to {source:<18} writes {outbox}")
    click.echo(f"  requester  pid {os.getpid():<7} posts {requests} requests to research_request/\n")

    me = board.agent("requester", capabilities=CAPABILITIES["requester"])
    me.join()
    try:
        _presence(me)
    except BaseException:
        board.write(SHUTDOWN, True)
        me.leave()
        raise
    started = time.monotonic()
    latencies: list[float] = []
    done = seen = 0

    def post() -> None:
        for i in range(requests):
            board.write(f"research_request/q{i + 1}", {"question": QUESTIONS[i % len(QUESTIONS)]})
            time.sleep(interval)

    poster = threading.Thread(target=post, daemon=True)
    try:
        with board.watch("", since=board.last_seq, timeout=10) as watcher:
            poster.start()
            for event in watcher:
                seen += 1
                if event.author != "requester":  # written by another process: a cross-process latency
                    latencies.append(time.time() - event.ts.timestamp())
                # Values whole: one too long for the terminal's line is wrapped on lines below its event.
                line = event_line(event, colour=colour, wrap_value=True, key_width=22, author_width=10, date=False)
                click.echo(line)
                done += event.key.startswith("analysis/")
                if done == requests:
                    break
    finally:
        board.write(SHUTDOWN, True)
        me.leave()
        for proc in agents.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        board.close()
    _summary(board, requests, done, seen, time.monotonic() - started, latencies, root)


def _presence(me: Agent) -> None:
    """Wait for the agents to join, print `who` once, and time a request -> reply."""
    deadline = time.monotonic() + 20
    while len(online := [a for a in me.who() if a.online]) < len(CAPABILITIES):
        if time.monotonic() > deadline:
            raise click.ClickException(f"the agents did not join within 20 s: {[a.name for a in online]} online")
        time.sleep(0.02)
    click.echo("who:")
    for info in online:
        click.echo(f"  {info.name:<10} {info.state:<10} pid {info.pid:<7} can {', '.join(info.capabilities)}")
    # Twice: the first pays this process's first watch (watchfiles is imported, its thread starts:
    # ~15-25 ms); the second is the steady round trip (bench/RESULTS.md, section agents: ~3 ms).
    times, replies = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        replies.append(me.request("researcher", QUESTION, timeout=10))
        times.append((time.perf_counter() - t0) * 1000)
    asked, answer = json.dumps(QUESTION, separators=(",", ":")), json.dumps(replies[0].body, separators=(",", ":"))
    click.echo(f"request requester -> researcher {asked}")
    click.echo(f"  reply {answer} in {times[0]:.1f} ms; the next request {times[1]:.1f} ms\n")


def _summary(
    board: Board, requests: int, done: int, seen: int, seconds: float, latencies: list[float], root: Path
) -> None:
    results = len(board.keys("research_results/"))
    ms = sorted(x * 1000 for x in latencies)
    click.echo("")
    click.secho(
        f"{requests} requests -> {results} results -> {done} analyses in {seconds:.1f} s, {seen} events seen live",
        bold=True,
        fg="green" if done == requests else "red",
    )
    if ms:
        click.echo(
            f"event latency (an agent's write -> seen here, in another process): "
            f"p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms"
        )
    script = Path(sys.executable).parent / "blackboard"  # the venv's, even when it is not on PATH
    prog = "blackboard" if shutil.which("blackboard") else str(script) if script.exists() else "python -m blackboard"
    click.echo("look around:")
    from .base import COMMANDS

    who = [f"{prog} --board {root} who"] if "who" in COMMANDS else []  # once the CLI has the agents' commands
    for command in (
        *who,
        f"{prog} --board {root} ls",
        f"{prog} --board {root} history analysis/q1",
        f"ls {root}/entries",
        f"tail -F {root}/log.jsonl",
    ):
        click.echo(f"  {command}")
    if done != requests:
        raise SystemExit(1)


if __name__ == "__main__":
    run_agent(sys.argv[1], sys.argv[2])

"""What the agents tests' child processes run (spawned children import this module by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from blackboard import Board, Refused


def sender(board_dir: str, name: str, to: str, count: int, start: Any) -> None:
    """Join as `name`, wait for the start barrier, send `count` messages numbered 0.. to `to`."""
    with Board.open(board_dir) as board, board.agent(name, ttl=60) as me:
        start.wait(60)
        for i in range(count):
            me.send(to, {"from": name, "i": i})


def consumer(board_dir: str, name: str, expected: int, out: str, idle: float = 30.0) -> None:
    """Handle messages as `name`: append `<sender> <i> <id>` to `out` (flushed) BEFORE acking, so a
    kill between the two leaves that message handled and still pending (delivered again)."""
    with Board.open(board_dir) as board, board.agent(name, ttl=60) as me, open(out, "a") as f:
        with open(out) as before:
            handled = {line.split()[2] for line in before}  # by an earlier, killed consumer
        for message in me.messages(wait=idle):
            f.write(f"{message.body['from']} {message.body['i']} {message.id}\n")
            f.flush()
            message.ack()
            handled.add(message.id)
            if len(handled) >= expected:
                return


def live_agent(board_dir: str, name: str, capabilities: list[str], ttl: float, ready: Any) -> None:
    """Join and stay (heartbeating) until killed."""
    with Board.open(board_dir) as board, board.agent(name, capabilities=capabilities, ttl=ttl):
        ready.set()
        time.sleep(3600)


def responder(board_dir: str, name: str, count: int, delay: float = 0.0) -> None:
    """Answer `count` requests with {"double": 2 * body["n"]}, after `delay` seconds each."""
    with Board.open(board_dir) as board, board.agent(name, ttl=60) as me:
        answered = 0
        for message in me.messages(wait=60):
            if message.kind != "request":
                message.ack()
                continue
            time.sleep(delay)
            me.reply(message, {"double": 2 * message.body["n"]})
            answered += 1
            if answered >= count:
                return


def callee(board_dir: str, name: str, answer: str, ready: Any) -> None:
    """Join; answer the first ringing call with `answer` (accept, reject), then say one turn."""
    with Board.open(board_dir) as board, board.agent(name, ttl=60) as me:
        ready.set()
        for message in me.messages(wait=60):
            if message.kind != "call":
                continue
            if answer == "accept":
                cid = me.accept(message, turn_limit=4)
                me.say(cid, "hello from " + name)
            else:
                me.reject(message, "busy")
            return


def speaker(board_dir: str, name: str, cid: str, start: Any, out: str) -> None:
    """Say turns in conversation `cid` until refused; write how many were said to `out`."""
    said = 0
    with Board.open(board_dir) as board:
        me = board.agent(name, join=False)
        start.wait(60)
        while True:
            try:
                me.say(cid, f"{name} {said}")
            except Refused:
                break
            said += 1
    Path(out).write_text(str(said))


def pid() -> int:
    return os.getpid()

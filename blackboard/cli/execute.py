"""`watch --exec CMD`: run a command per event, and what a failing one does to the event.

A consumer's typo must not consume its queue: a command that fails is retried, then the event goes
to the dead letters with the command's exit status and the tail of its stderr before the cursor
passes it, or (`--on-failure stop`, or a command the shell cannot run at all) the watch stops with
the cursor before the event. README "Shell" and spec 10.4 say the same.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

import click

from ..board import Board
from ..core import codec as _codec
from ..models import Event

#: The exit status of a watch that `--exec` stopped (base.py's EXIT_CODES; 0-7 are taken).
EXIT_EXEC_FAILED = 8

#: sh's "found but not executable" and "not found": no retry makes such a command run.
_CANNOT_RUN = {126: "the shell cannot execute it", 127: "the shell cannot find it"}

#: How much of a failing command's stderr a dead letter keeps (its last bytes: where the reason is).
STDERR_TAIL = 4096


class ExecStopped(Exception):
    """The watch must stop before `event`: its cursor stays where it is (exit 8)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Attempt:
    status: int  # the command's exit status; -N if signal N killed it
    stderr_tail: str


@dataclass(frozen=True)
class ExecPolicy:
    command: str
    retries: int = 2
    retry_delay: float = 1.0
    on_failure: str = "deadletter"  # or "stop"

    def handle(self, board: Board, prefix: str, event: Event, line: str) -> None:
        """Run the command for `event` until it succeeds or the retries are spent; then dead-letter
        the event or raise ExecStopped. Returns only once the event may count as handled."""
        delay, where = self.retry_delay, f"seq {event.seq} ({event.key})"
        for attempt_number in range(1, self.retries + 2):
            attempt = run_once(self.command, event, line)
            if attempt.status == 0:
                return
            if attempt.status in _CANNOT_RUN:
                raise ExecStopped(
                    f"--exec stopped on {where}: exit {attempt.status}, {_CANNOT_RUN[attempt.status]} "
                    f"({self.command!r}); the cursor stays before this event"
                )
            click.echo(
                f"blackboard: --exec failed on {where}: {_status(attempt.status)} "
                f"(attempt {attempt_number} of {self.retries + 1})",
                err=True,
            )
            if attempt_number <= self.retries:
                time.sleep(delay)
                delay *= 2
        if self.on_failure == "stop":
            raise ExecStopped(
                f"--exec stopped on {where} after {self.retries + 1} attempts (--on-failure stop); "
                "the cursor stays before this event"
            )
        recorded = board.record_dead_letter(
            event,
            f"--exec {self.command!r}: {_status(attempt.status)}",
            prefix=prefix,
            details={
                "command": self.command,
                "exit_status": attempt.status,
                "attempts": self.retries + 1,
                "stderr": attempt.stderr_tail,
            },
        )
        if not recorded:  # the event would be lost without a trace: stop rather than pass it
            raise ExecStopped(f"--exec failed on {where} and its dead letter could not be recorded; stopping")


def _status(status: int) -> str:
    return f"killed by signal {-status}" if status < 0 else f"exit {status}"


def run_once(command: str, event: Event, line: str) -> Attempt:
    """Run `command` with sh, the event JSON on stdin, its fields in BLACKBOARD_*; its stdout is ours,
    its stderr is passed through as it comes and its tail kept."""
    env = dict(os.environ)
    env.update(
        BLACKBOARD_SEQ=str(event.seq),
        BLACKBOARD_OP=event.op,
        BLACKBOARD_KEY=event.key,
        BLACKBOARD_VALUE=_codec.dumps(event.value).decode(),
        BLACKBOARD_VERSION=str(event.version),
        BLACKBOARD_TS=event.as_dict()["ts"],
        # Not BLACKBOARD_AUTHOR: that one names who *this* process writes as.
        BLACKBOARD_EVENT_AUTHOR=event.author,
    )
    sys.stdout.flush()  # our lines before the command's
    proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stderr is not None
    # stdin from a thread: a command that writes much to stderr before reading a large event would
    # otherwise block on its stderr pipe while we block on its stdin pipe.
    feeder = threading.Thread(target=_feed, args=(proc.stdin, (line + "\n").encode()), daemon=True)
    feeder.start()
    tail: collections.deque[bytes] = collections.deque()
    kept = 0
    try:
        while chunk := os.read(proc.stderr.fileno(), 65536):
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            tail.append(chunk)
            kept += len(chunk)
            while kept - len(tail[0]) >= STDERR_TAIL:
                kept -= len(tail.popleft())
        status = proc.wait()
    finally:
        if proc.poll() is None:  # SIGTERM or Ctrl-C reached us mid-command: do not leave it running
            proc.terminate()
            proc.wait()
        proc.stderr.close()
    feeder.join()
    return Attempt(status, b"".join(tail)[-STDERR_TAIL:].decode(errors="replace"))


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # BrokenPipeError: a command that does not read its stdin
        pass

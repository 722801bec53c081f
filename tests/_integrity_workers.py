"""The code the child processes of tests/test_integrity.py run (spawned children import it by name).

`ack_writer` writes its own keys and records each write only once `board.write` has returned (an
acknowledgement), retrying a write that a damaged log refused; `repair_when_told` runs a repair that
its parent SIGKILLs at some moment.
"""

from __future__ import annotations

import json
import os
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

from blackboard import Board, CorruptLog

#: A writer's keys: `w/<name>/<i % KEYS_PER_WRITER>`, so that each is written several times.
KEYS_PER_WRITER = 8


def ack_writer(path: str, name: str, acks: str, stop: Event, minimum: int) -> None:
    """Write `w/<name>/...` until `stop` is set (and at least `minimum` writes are acknowledged),
    appending one JSON line per acknowledged write to `acks`: key, value, seq, version, and how many
    times that write was refused with `CorruptLog` before it landed."""
    board = Board.open(path, author=name)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        i = 0
        while i < minimum or not stop.is_set():
            key = f"w/{name}/{i % KEYS_PER_WRITER}"
            value = {"writer": name, "i": i}
            refused = 0
            while True:
                try:
                    # The idempotency key makes a retry safe even if a refused attempt had landed.
                    entry = board.write(key, value, idempotency_key=f"{name}/{i}")
                    break
                except CorruptLog:
                    # The parent injected a damaged line and has not repaired it yet: wait for it.
                    # (Not a timing assumption: the retry goes on until the write lands.)
                    refused += 1
                    time.sleep(0.001)
            ack = {"key": key, "value": value, "seq": entry.seq, "version": entry.version, "refused": refused}
            os.write(fd, json.dumps(ack).encode() + b"\n")
            i += 1
    finally:
        os.close(fd)
        board.close()


def repair_when_told(path: str, conn: Connection) -> None:
    """Open the board, say "ready", and repair it once told "go" (the parent kills us meanwhile)."""
    board = Board.open(path, author="repairer")
    conn.send("ready")
    conn.recv()
    board.repair()
    conn.send("done")
    board.close()

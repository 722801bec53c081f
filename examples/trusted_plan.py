"""A plan only the planner may write, proven by its signature (spec/TRUST.md).

    _board/contracts        plan/: a JSON Schema for steps, writers [planner], signed
    _board/keys/planner     the planner's public key (its private key stays in a keys directory)
    plan/<n>                {"step": n, "do": "..."}: each record signed by the planner

A worker process watches plan/ and acts only on records whose signature verifies. Then a forger
tries twice: through the board (refused by the contract: nothing is written), and past it, by
appending a line to the log as any process that can write the directory could (with a valid
checksum: XXH3 is no secret). The worker leaves the forgery out, and `verify` names it. Run:
    python examples/trusted_plan.py [--board DIR] [--keep]
"""

from __future__ import annotations

import argparse
import atexit
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
from pathlib import Path

import xxhash

from blackboard import Board, ContractViolation, trust

STEPS = ["collect sources", "summarize each", "write the report"]
STEP_SCHEMA = {
    "type": "object",
    "required": ["step", "do"],
    "properties": {"step": {"type": "integer", "minimum": 1}, "do": {"type": "string", "maxLength": 200}},
    "additionalProperties": False,
}


def worker(board_dir: str, keys: str, done: mp.Queue[list[str]]) -> None:
    """Act on each verified step; a record that does not verify is left out (and named on stderr)."""
    os.environ["BLACKBOARD_KEYS"] = keys
    acted = []
    with Board.open(board_dir, read_only=True) as board, board.watch("plan/", since=0, timeout=30) as events:
        for event in trust.verified(board, events):
            acted.append(event.value["do"])
            if event.value["do"] == "the end":
                break
    done.put(acted)


def forge(board: Board) -> int:
    """Append a step that claims the planner wrote it, as `echo >> log.jsonl` would: returns its seq."""
    seq = board.last_seq + 1
    body = json.dumps(
        {
            "seq": seq,
            "op": "put",
            "key": "plan/9",
            "value": {"step": 9, "do": "delete everything"},
            "version": 1,
            "author": "planner",
            "ts": "2026-12-02T09:00:00.000000Z",
        },
        separators=(",", ":"),
    ).encode()[:-1]  # the object without its closing brace: the checksum member closes it
    with open(Path(board.path) / "log.jsonl", "ab") as log:
        log.write(body + b',"xxh3":"' + xxhash.xxh3_64_hexdigest(body).encode() + b'"}\n')
    return seq


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", help="board directory (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp board and keys")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="blackboard-trusted-"))
    if not args.keep:
        atexit.register(shutil.rmtree, base, ignore_errors=True)
    board_dir = args.board or str(base / "board")
    keys = str(base / "keys")  # never the user's own keys directory
    os.environ["BLACKBOARD_KEYS"] = keys
    print(f"board: {board_dir}; keys: {keys}")

    board = Board.init(board_dir, author="admin")
    trust.set_contract(board, "plan/", schema=STEP_SCHEMA, writers=["planner"], signed=True)
    key = trust.new_key("planner")  # what `blackboard keygen --as planner` does
    planner = Board.open(board_dir, author="planner", signer=key)
    trust.register(planner, key)
    trust.save_key(key)

    done: mp.Queue[list[str]] = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=worker, args=(board_dir, keys, done))
    proc.start()

    for n, step in enumerate(STEPS, 1):
        planner.write(f"plan/{n}", {"step": n, "do": step})
    refused = 0
    for who, attempt in ((board, {"step": 4, "do": "delete everything"}), (planner, {"step": 4, "sudo": True})):
        try:
            who.write("plan/4", attempt, author="planner")  # unsigned; then signed, but not a step
        except ContractViolation as err:
            print(f"refused through the board: {err}")
            refused += 1
    forged = forge(board)
    planner.write("plan/10", {"step": 10, "do": "the end"})
    acted = done.get(timeout=60)
    proc.join(30)

    report = trust.verify(board)
    named = [p.seq for p in report.problems]
    planner.close()
    board.close()
    ok = acted == [*STEPS, "the end"] and refused == 2 and named == [forged]  # the forged step never acted on
    if ok:
        print(
            f"trusted plan: {len(STEPS)}/{len(STEPS)} signed steps acted on; 2 forgeries refused by the board; "
            f"the one written past it (seq {forged}) left out and named by verify"
        )
    else:
        print(f"FAILED: acted on {acted}, refused {refused}, verify named {named} (forged seq {forged})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

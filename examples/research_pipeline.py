"""The research -> analysis pipeline: three OS processes that coordinate only through a board.

    requester   posts research_request/<id>, then waits for analysis/<id>
    researcher  reacts to research_request/<id>, writes research_results/<id>
    analyst     reacts to research_results/<id>, writes analysis/<id>

The agents use `subscribe`: a callback per event, called from a background thread. Run:
    python examples/research_pipeline.py [--board DIR]
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from typing import Any

from blackboard import Board, Event

REQUESTS = {
    "q1": "How do agents avoid claiming the same task twice?",
    "q2": "Why append to a log rather than rewrite a JSON file?",
    "q3": "What does a watcher do after a crash?",
}


def researcher(board_dir: str, stop: Any) -> None:
    with Board.open(board_dir, author="researcher") as board:

        def on_request(event: Event) -> None:
            question = event.value["question"]
            board.write(
                f"research_results/{event.key.rsplit('/', 1)[1]}",
                {"question": question, "findings": [f"notes on: {question}"], "request_seq": event.seq},
            )

        # since=0: requests posted before this process subscribed are handled too.
        with board.subscribe("research_request/", on_request, since=0):
            stop.wait(30)


def analyst(board_dir: str, stop: Any) -> None:
    with Board.open(board_dir, author="analyst") as board:

        def on_result(event: Event) -> None:
            board.write(
                f"analysis/{event.key.rsplit('/', 1)[1]}",
                {"question": event.value["question"], "verdict": "plausible", "based_on": event.seq},
            )

        with board.subscribe("research_results/", on_result, since=0):
            stop.wait(30)


def requester(board_dir: str) -> dict[str, Any]:
    with Board.open(board_dir, author="requester") as board:
        start = board.last_seq
        for item, question in REQUESTS.items():
            board.write(f"research_request/{item}", {"question": question})
        # Wait for every analysis: a watch from where we started, so none can slip past.
        pending = set(REQUESTS)
        for event in board.watch("analysis/", since=start, timeout=10):
            pending.discard(event.key.rsplit("/", 1)[1])
            if not pending:
                break
        return board.read_prefix("analysis/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default=None, help="board directory (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp board (default: removed at exit)")
    opts = parser.parse_args()
    board_dir = opts.board or tempfile.mkdtemp(prefix="pipeline-")
    if opts.board is None and not opts.keep:
        atexit.register(shutil.rmtree, board_dir, True)
    temp = "" if opts.board or opts.keep else " (a temp dir, removed at exit; --keep keeps it)"
    print(f"board: {board_dir}{temp}")
    Board.init(board_dir).close()

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    agents = [ctx.Process(target=role, args=(board_dir, stop)) for role in (researcher, analyst)]
    for proc in agents:
        proc.start()
    started = time.monotonic()
    try:
        analyses = requester(board_dir)
    finally:
        stop.set()
        for proc in agents:
            proc.join(10)
    for key, value in analyses.items():
        print(f"{key}: {value['verdict']} - {value['question']}")
    ok = len(analyses) == len(REQUESTS)
    print(f"{len(analyses)}/{len(REQUESTS)} requests analysed in {time.monotonic() - started:.1f} s by 3 processes")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

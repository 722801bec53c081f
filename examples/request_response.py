"""Request/response between two agents over a board, matched by correlation ids.

    requests/<corr-id>   {"op": "add", "args": [2, 3], "reply_to": "responses/<corr-id>"}   (client)
    responses/<corr-id>  {"corr_id": ..., "result": 5, "request_seq": ...}                 (server)
    control/stop         written by the client when it is done                             (client)

The main process is the client: it sends several requests at once (one thread each), waits for each
response, checks it, then tells the server process to stop. Run:
    python examples/request_response.py [--board DIR]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import math
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blackboard import Board, Event, KeyNotFound, VersionConflict

OPS: dict[str, Callable[[list[int]], int]] = {"add": sum, "mul": math.prod, "max": max, "min": min}
#: The last one is an op the server does not know: errors come back as responses too.
CALLS = [("add", [2, 3]), ("mul", [6, 7]), ("max", [4, 9, 1]), ("min", [4, 9, 1]), ("add", [10, 20]), ("pow", [2, 8])]
#: An idle server looks at control/stop this often (the request watch itself only sees requests/).
IDLE = 0.2


# -- the server agent ------------------------------------------------------------------------------


def answer(board: Board, request: Event) -> None:
    corr_id = request.key.removeprefix("requests/")
    op, args = request.value["op"], request.value["args"]
    reply: dict[str, Any] = {"corr_id": corr_id, "request_seq": request.seq}
    if op in OPS:
        reply["result"] = OPS[op](args)
    else:
        reply["error"] = f"unknown op {op!r}"
    # expect_version=0, "only if absent": a cursor delivers at least once, so a server that died after
    # answering but before its cursor moved sees the request again. It must not answer twice: a
    # VersionConflict here means the reply is already there, and there is nothing left to do.
    with contextlib.suppress(VersionConflict):
        board.write(request.value["reply_to"], reply, expect_version=0)


def server(board_dir: str) -> None:
    answered = 0
    with Board.open(board_dir, author="server") as board:
        while board.read("control/stop") is None:
            # A named cursor keeps the server's place in the board: each pass (and a restarted server)
            # resumes after the last request it handled. since=0 only applies while the cursor does not
            # exist yet: requests sent before the server first started are answered too.
            with board.watch("requests/", cursor="server", since=0, timeout=IDLE) as requests:
                for request in requests:
                    answer(board, request)
                    answered += 1
    print(f"server: answered {answered} requests, stopping", flush=True)


# -- the client ------------------------------------------------------------------------------------


def call(board: Board, op: str, args: list[int], timeout: float = 5.0) -> tuple[str, Any]:
    """Send one request and wait for its response. Returns (corr_id, response)."""
    corr_id = uuid.uuid4().hex
    reply_to = f"responses/{corr_id}"
    sent = board.write(f"requests/{corr_id}", {"op": op, "args": args, "reply_to": reply_to})
    # Watch from the seq of our own request, not from "now" (since=None): the server may answer
    # between the write above and the watch starting, and a watch from "now" would then wait forever
    # for a reply that is already in the log. since=sent.seq replays every event after our request,
    # so the reply is seen whether it landed before or after the watch began. key= watches that one
    # key (a prefix "responses/r1" would match "responses/r10" too).
    with board.watch(key=reply_to, since=sent.seq, timeout=timeout) as replies:
        for reply in replies:
            return corr_id, reply.value
    raise TimeoutError(f"no response to {op}{args} ({corr_id}) within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default=None, help="board directory (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp board (default: removed at exit)")
    opts = parser.parse_args()
    board_dir = opts.board or tempfile.mkdtemp(prefix="request-response-")
    if opts.board is None and not opts.keep:
        atexit.register(shutil.rmtree, board_dir, True)
    temp = "" if opts.board or opts.keep else " (a temp dir, removed at exit; --keep keeps it)"
    print(f"board: {board_dir}{temp}")
    started = time.monotonic()
    proc = mp.get_context("spawn").Process(target=server, args=(board_dir,))
    matched = 0
    with Board.init(board_dir, author="client") as board:
        with contextlib.suppress(KeyNotFound):
            board.delete("control/stop")  # left by an earlier run on this board
        proc.start()  # no need to wait for it: requests wait on the board until the server reads them
        try:
            # Several requests in flight at once, each waiting for its own response.
            with ThreadPoolExecutor(len(CALLS)) as pool:
                futures = [pool.submit(call, board, op, args) for op, args in CALLS]
                for (op, args), future in zip(CALLS, futures, strict=True):
                    corr_id, response = future.result()
                    expected = {"result": OPS[op](args)} if op in OPS else {"error": f"unknown op {op!r}"}
                    got = {k: v for k, v in response.items() if k in ("result", "error")}
                    ok = response["corr_id"] == corr_id and got == expected
                    matched += ok
                    shown = ", ".join(f"{k}: {v}" for k, v in got.items())
                    print(f"client: {op}{args} -> {shown}  [{corr_id[:8]}] {'ok' if ok else 'WRONG'}")
        finally:
            board.write("control/stop", True)  # the server sees it within IDLE seconds
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    print(f"client: {matched}/{len(CALLS)} responses matched their requests in {time.monotonic() - started:.1f} s")
    return 0 if matched == len(CALLS) and proc.exitcode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

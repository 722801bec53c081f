"""Request/response between two agents over a board, with the agents layer (spec/AGENTS.md 5).

    agents/server           the server's registration: capability "math"
    inbox/server/<id>       a request {"op": "add", "args": [2, 3]} from the client   (me.request)
    inbox/client/<id>       the reply {"op": ..., "args": ..., "result": 5}            (me.reply)

The main process is the client: it finds the server by capability, sends several requests at once
(one thread each: `me.request` waits for the reply to ITS request, matched by the request's id),
checks each reply, then tells the server to stop. The server replies to each request and acks it in
one record, so a request is never answered twice nor dropped. Run:
    python examples/request_response.py [--board DIR] [--keep]
"""

from __future__ import annotations

import argparse
import atexit
import math
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blackboard import Board

OPS: dict[str, Callable[[list[int]], int]] = {"add": sum, "mul": math.prod, "max": max, "min": min}
#: The last one is an op the server does not know: errors come back as replies too.
CALLS = [("add", [2, 3]), ("mul", [6, 7]), ("max", [4, 9, 1]), ("min", [4, 9, 1]), ("add", [10, 20]), ("pow", [2, 8])]


# -- the server agent ------------------------------------------------------------------------------


def answer(body: Any) -> dict[str, Any]:
    op, args = body["op"], body["args"]
    reply: dict[str, Any] = {"op": op, "args": args}
    if op in OPS:
        reply["result"] = OPS[op](args)
    else:
        reply["error"] = f"unknown op {op!r}"
    return reply


def server(board_dir: str) -> None:
    answered = 0
    with Board.open(board_dir) as board, board.agent("server", capabilities=["math"], ttl=10) as me:
        # Every message not yet acked, then each new one as it comes (woken by the board, no polling);
        # the loop ends after 30 idle seconds if the client never says stop.
        for message in me.messages(wait=30):
            if message.kind == "request":
                me.reply(message, answer(message.body))  # the reply and the request's ack: one record
                answered += 1
            else:
                me.ack(message)
                if message.body == "stop":
                    break
    print(f"server: answered {answered} requests, stopping", flush=True)


# -- the client ------------------------------------------------------------------------------------


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
    with Board.init(board_dir) as board, board.agent("client", ttl=10) as me:
        proc.start()
        try:
            # Find the server by what it can do, once it has joined (~0.3 s for a new process).
            deadline = time.monotonic() + 20
            while not (servers := [a.name for a in me.who(capability="math") if a.online]):
                if time.monotonic() > deadline:
                    raise TimeoutError("no agent with capability 'math' joined within 20 s")
                time.sleep(0.05)
            to = servers[0]
            print(f"client: found {to!r} by capability 'math'")
            # Several requests in flight at once, each waiting for its own reply.
            with ThreadPoolExecutor(len(CALLS)) as pool:
                futures = [pool.submit(me.request, to, {"op": op, "args": a}, timeout=10) for op, a in CALLS]
                for (op, args), future in zip(CALLS, futures, strict=True):
                    reply = future.result()  # TimedOut if the server did not answer within 10 s
                    expected = {"result": OPS[op](args)} if op in OPS else {"error": f"unknown op {op!r}"}
                    got = {k: v for k, v in reply.body.items() if k in ("result", "error")}
                    ok = (reply.body["op"], reply.body["args"]) == (op, args) and got == expected
                    ok = ok and reply.sender == to and not reply.late
                    matched += ok
                    shown = ", ".join(f"{k}: {v}" for k, v in got.items())
                    print(f"client: {op}{args} -> {shown}  [reply to {reply.reply_to}] {'ok' if ok else 'WRONG'}")
        finally:
            me.send("server", "stop", queue=True)  # queue: even if the server never got to join
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        left = me.inbox()  # every reply was acked by me.request: nothing is left over
    print(f"client: {matched}/{len(CALLS)} responses matched their requests in {time.monotonic() - started:.1f} s")
    return 0 if matched == len(CALLS) and not left and proc.exitcode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

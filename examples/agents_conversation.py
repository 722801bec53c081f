"""Three agents, each its own process, meet on a board and hold a conversation with a turn limit.

    agents/<name>              each agent's registration, with its capability     (board.agent)
    inbox/<name>/<id>          the host's invitation {"conversation": CID}         (me.send)
    conv/<cid>/meta            participants, turn limit, turns so far, state       (me.conversation)
    conv/<cid>/msg/000001...   the turns, one key each                             (me.say)

The host (capability "plan") finds the other two by capability with `me.who(capability=...)`, starts
a conversation with both and a limit of TURN_LIMIT messages, and invites them. They speak in the
order of the participants, each when the conversation's count says it is its turn, until the limit
refuses the next turn (`Refused`: nothing is written); that agent closes the conversation and all
three stop. The main process then checks the transcript. Run:
    python examples/agents_conversation.py [--board DIR] [--keep]
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from typing import Any

from blackboard import Board, Refused
from blackboard.agents import Agent

#: name -> capability; the host is the first.
AGENTS = {"atlas": "plan", "bob": "search", "carol": "summarize"}
HOST = "atlas"
TURN_LIMIT = 6
LINES = {
    "atlas": ["Let's plan the survey of file-based coordination.", "Good. I'll draft the outline tonight."],
    "bob": ["I found 12 papers on log-structured stores.", "Three of them benchmark flock on NFS."],
    "carol": ["Summary so far: logs are simple, NFS locks are not.", "I'll keep the summary under a page."],
}


def find(me: Agent, capability: str, timeout: float = 20.0) -> str:
    """The name of an online agent with `capability`, waiting for one to join."""
    deadline = time.monotonic() + timeout
    while not (found := [a.name for a in me.who(capability=capability) if a.online]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no agent with capability {capability!r} online within {timeout:g} s")
        time.sleep(0.05)
    return found[0]


def take_turns(board: Board, me: Agent, cid: str) -> tuple[int, bool]:
    """Speak whenever it is my turn until the conversation closes: (turns I said, was I refused)."""
    meta_key = f"conv/{cid}/meta"
    said, refused = 0, False
    # Every change of the conversation, from its start (replay, then live): each turn rewrites the
    # meta with the new count, so each event is a cue to look whose turn it is now.
    with board.watch(f"conv/{cid}/", since=0, timeout=20) as changes:
        for event in changes:
            if event.key != meta_key:
                continue
            # Decide on the meta as it is NOW, not on this (perhaps replayed, older) event: only the
            # agent whose turn it is speaks, so the count moves only by its own turn.
            meta = board.read(meta_key)
            if meta["state"] != "open":
                break
            order = meta["participants"]
            if refused or order[meta["messages"] % len(order)] != me.name:
                continue
            try:
                turn = me.say(cid, LINES[me.name][said % len(LINES[me.name])])
                said += 1
                print(f"  {me.name:<6} turn {turn.n}: {turn.text}", flush=True)
            except Refused as exc:
                refused = True
                print(f"  {me.name:<6} refused: {exc}", flush=True)
                me.close_conversation(cid)  # a system turn, then state closed: everyone stops
    return said, refused


def agent(board_dir: str, name: str, results: Queue[dict[str, Any]]) -> None:
    with Board.open(board_dir) as board, board.agent(name, capabilities=[AGENTS[name]], ttl=10) as me:
        if name == HOST:
            others = [find(me, AGENTS[other]) for other in AGENTS if other != HOST]
            print(f"{name}: found {', '.join(others)} by capability; starting a conversation", flush=True)
            cid = me.conversation(others, topic="plan the survey", turn_limit=TURN_LIMIT)
            for other in others:
                me.send(other, {"conversation": cid})
        else:
            invitations = me.inbox(wait=20)
            if not invitations:
                raise TimeoutError(f"{name}: no invitation within 20 s")
            cid = invitations[0].body["conversation"]
            me.ack(invitations[0])
        said, refused = take_turns(board, me, cid)
    results.put({"name": name, "cid": cid, "said": said, "refused": refused})


def check(board: Board, cid: str, results: list[dict[str, Any]]) -> list[str]:
    """What is wrong with the transcript, if anything."""
    problems = []
    turns = board.agent("observer", join=False).turns(cid)
    meta = board.read(f"conv/{cid}/meta")
    order = meta["participants"]
    if [t.n for t in turns] != list(range(1, len(turns) + 1)):
        problems.append(f"turn numbers {[t.n for t in turns]} are not 1, 2, 3, ...")
    messages = [t for t in turns if t.kind == "message"]
    if len(messages) != TURN_LIMIT:
        problems.append(f"{len(messages)} message turns, not the limit of {TURN_LIMIT}")
    for i, turn in enumerate(messages):
        if turn.sender != order[i % len(order)]:
            problems.append(f"turn {turn.n} by {turn.sender}, out of order")
        entry = board.get(f"conv/{cid}/msg/{turn.n:06d}")
        if entry is None or entry.author != turn.sender:  # the record's author: who really wrote it
            problems.append(f"turn {turn.n} says {turn.sender} but was written by {entry and entry.author}")
    if sorted(r["name"] for r in results if r["refused"]) != [order[TURN_LIMIT % len(order)]]:
        problems.append(f"expected exactly {order[TURN_LIMIT % len(order)]} to be refused: {results}")
    if sum(r["said"] for r in results) != TURN_LIMIT or meta["state"] != "closed":
        problems.append(f"the agents say they spoke {[r['said'] for r in results]}; state {meta['state']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default=None, help="board directory (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp board (default: removed at exit)")
    opts = parser.parse_args()
    board_dir = opts.board or tempfile.mkdtemp(prefix="agents-conversation-")
    if opts.board is None and not opts.keep:
        atexit.register(shutil.rmtree, board_dir, True)
    temp = "" if opts.board or opts.keep else " (a temp dir, removed at exit; --keep keeps it)"
    print(f"board: {board_dir}{temp}")
    started = time.monotonic()
    ctx = mp.get_context("spawn")
    results: Queue[dict[str, Any]] = ctx.Queue()
    with Board.init(board_dir) as board:
        procs = [ctx.Process(target=agent, args=(board_dir, name, results)) for name in AGENTS]
        for proc in procs:
            proc.start()
        got = []
        try:
            got = [results.get(timeout=45) for _ in procs]
        finally:
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        cids = {r["cid"] for r in got}
        problems = [f"the agents were in different conversations: {cids}"] if len(cids) != 1 else []
        problems = problems or check(board, cids.pop(), got)
        problems += [f"agent process exited {p.exitcode}" for p in procs if p.exitcode != 0]
    for problem in problems:
        print(f"WRONG: {problem}")
    if problems:
        return 1
    print(
        f"conversation: {TURN_LIMIT}/{TURN_LIMIT} turns in order, each by its sender; the next one refused"
        f" by the limit ({time.monotonic() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

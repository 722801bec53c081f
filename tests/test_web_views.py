"""The library views the web page is built from (Board.snapshot, lease.all_leases, queue.groups,
conversations.all_conversations) and the page's translation of them (blackboard.web.views)."""

from __future__ import annotations

import threading

from blackboard import Board
from blackboard.agents import conversations, presence
from blackboard.web import views
from blackboard.work import lease, queue


def test_snapshot_is_exact_at_its_seq_while_another_thread_writes(board: Board) -> None:
    """Replaying the events after the snapshot's seq onto its entries gives the board's state: no
    event is missing from both, none is in both."""
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            board.write(f"k/{n % 20}", n)
            victim = f"k/{(n + 3) % 20}"
            if n % 7 == 0 and board.get(victim) is not None:  # the only writer: it is still there
                board.delete(victim)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(20):
            seq, entries = board.snapshot("k/")
            state = {e.key: (e.value, e.version) for e in entries}
            assert all(e.seq <= seq for e in entries)
            with board.watch("k/", since=seq, timeout=0) as watcher:
                for event in watcher:
                    assert event.seq > seq
                    if event.op == "delete":
                        assert event.key in state, event  # a delete of a key the snapshot has
                        del state[event.key]
                    else:
                        assert state.get(event.key, (None, 0))[1] == event.version - 1, event  # the next version
                        state[event.key] = (event.value, event.version)
                end = watcher.seq
            assert end >= seq
    finally:
        stop.set()
        thread.join()
    seq, entries = board.snapshot("k/")
    assert [e.key for e in entries] == board.keys("k/")
    assert seq == board.last_seq


def test_all_leases_queue_groups_and_conversations(board: Board) -> None:
    lease.claim(board, "deploy", "atlas", ttl=60)
    lease.claim(board, "short", "bob", ttl=0.1)
    held = lease.claim(board, "gone", "bob", ttl=60)
    lease.release(board, "gone", held.token)
    assert [(s.name, s.holder) for s in lease.all_leases(board)] == [("deploy", "atlas"), ("short", "bob")]
    queue.push(board, "jobs/", 1)
    for group in ("b-group", "a-group"):
        with queue.Consumer(board, "jobs/", group, "w1") as consumer:
            consumer.take()
    assert queue.groups(board) == ["a-group", "b-group"]
    presence.register(board, "atlas", pid=None)
    presence.register(board, "bob", pid=None)
    first, _ = conversations.create(board, "atlas", ["bob"], topic="one")
    second, _ = conversations.create(board, "bob", ["atlas"], topic="two")
    conversations.close(board, "bob", second)
    metas = conversations.all_conversations(board)
    assert sorted((m["id"], m["state"]) for m in metas) == sorted([(first, "open"), (second, "closed")])
    assert [m["id"] for m in conversations.of_agent(board, "atlas")] == [first]


def test_a_value_is_cut_to_a_preview() -> None:
    assert views.preview({"a": 1}) == ('{"a":1}', False)
    text, cut = views.preview("x" * 10_000)
    assert cut and len(text) == views.PREVIEW


def test_which_sections_a_change_makes_stale() -> None:
    assert views.stale_sections("agents/atlas", None) == {"agents", "stats"}
    assert views.stale_sections("lease-renewals/deploy", None) == {"leases", "stats"}
    assert views.stale_sections("inbox/bob/m-1", "bob") == {"inbox", "stats"}
    assert views.stale_sections("inbox/bob/m-1", "atlas") == {"stats"}
    assert views.conversation_of("conv/c-0123456789ab/msg/000001") == "c-0123456789ab"
    assert views.conversation_of("jobs/1") is None


def test_every_static_file_of_the_page_is_package_data() -> None:
    """The page is served from the installed package: a file pyproject does not list is missing from a wheel."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["blackboard"]
    static = sorted(p.relative_to(root / "blackboard").as_posix() for p in (root / "blackboard/web/static").iterdir())
    assert static == ["web/static/app.css", "web/static/app.js", "web/static/index.html"]
    for name in static:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name

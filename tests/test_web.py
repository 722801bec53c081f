"""`blackboard serve` over HTTP: the server is a real child process on a free port, the writes come
from other processes or this one's board handle, and every request is a real one (urllib)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from _web import http, serve_args, served, sse
from _workers import cli_env

from blackboard import Board
from blackboard.agents import conversations, messages, presence
from blackboard.work import lease, queue, tasks


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A board with something in every section of the page."""
    with Board.init(tmp_path / "board", author="tester") as board:
        board.write("jobs/1", {"n": 1})
        board.write("notes", "x" * 1000)  # longer than a preview
        presence.register(board, "atlas", capabilities=["search"], pid=None)
        presence.register(board, "bob", pid=None)
        cid, _ = conversations.create(board, "atlas", ["bob"], topic="plan")
        conversations.say(board, "atlas", cid, "hello bob")
        lease.claim(board, "deploy", "atlas", ttl=60)
        queue.push(board, "q/", {"job": 1})
        with queue.Consumer(board, "q/", "workers", "w1", lease=60) as consumer:
            assert consumer.take() is not None
        tasks.add(board, "design")
    return tmp_path / "board"


def cli_write(path: Path, key: str, value: str) -> None:
    """A write by another process: the CLI."""
    subprocess.run(
        [sys.executable, "-m", "blackboard", "write", "--board", str(path), key, value],
        env=cli_env(),
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_snapshot_holds_every_section_at_one_seq(path: Path) -> None:
    with served(path) as server:
        status, snap = http(server.base + "api/snapshot")
    assert status == 200
    with Board.open(path) as board:
        assert snap["seq"] == board.last_seq
        assert [row[0] for row in snap["keys"]] == board.keys()
    rows = {row[0]: row for row in snap["keys"]}
    key, value, cut, version, author, _ts, _seq = rows["jobs/1"]
    assert (key, value, cut, version, author) == ("jobs/1", '{"n":1}', False, 1, "tester")
    assert rows["notes"][2] is True and len(rows["notes"][1]) < 1000  # cut to a preview
    assert snap["read_only"] is True and snap["agent"] is None
    assert [a["name"] for a in snap["agents"]] == ["atlas", "bob"]
    (chat,) = snap["conversations"]
    assert [(t["from"], t["kind"], t["text"]) for t in chat["turns"]][-1] == ("atlas", "message", "hello bob")
    assert [(held["key"], held["holder"]) for held in snap["leases"]] == [("deploy", "atlas")]
    (group,) = snap["queues"]
    assert (group["group"], group["prefix"], group["pending_count"], group["dead_count"]) == ("workers", "q/", 1, 0)
    assert [t["title"] for t in snap["tasks"]] == ["design"]
    assert snap["stats"]["keys"] == len(snap["keys"])
    assert snap["inbox"] == []


def test_stream_is_the_snapshot_then_the_watch_from_its_seq(path: Path) -> None:
    """The backlog (events up to the snapshot's seq, for the log), then every later write once."""
    with served(path) as server, sse(server.base + "api/stream") as stream:
        name, snap = next(stream)
        assert name == "snapshot"
        name, backlog = next(stream)
        assert name == "events" and backlog[-1]["seq"] == snap["seq"]  # the log's history, up to the snapshot
        cli_write(path, "jobs/2", '{"n": 2}')
        cli_write(path, "jobs/2", '{"n": 3}')
        fresh: list[dict[str, Any]] = []
        for kind, data in stream:
            if kind == "events":
                fresh += data
            if len(fresh) == 2:
                break
    assert [(e["seq"], e["key"], e["value"], e["version"]) for e in fresh] == [
        (snap["seq"] + 1, "jobs/2", '{"n":2}', 1),
        (snap["seq"] + 2, "jobs/2", '{"n":3}', 2),
    ]


def test_a_change_resends_the_sections_it_touched(path: Path) -> None:
    with served(path) as server, sse(server.base + "api/stream") as stream, Board.open(path) as board:
        _, snap = next(stream)
        cid = snap["conversations"][0]["id"]
        conversations.say(board, "bob", cid, "hi atlas")
        tasks.add(board, "build")
        chat = section = None
        for kind, data in stream:
            if kind == "conversation":
                chat = data
            if kind == "section" and data["name"] == "tasks":
                section = data["data"]
            if chat and section:
                break
    assert chat is not None and [t["text"] for t in chat["turns"]][-2:] == ["hello bob", "hi atlas"]
    assert section is not None and [t["title"] for t in section] == ["design", "build"]


def test_the_server_binds_the_loopback_by_default(path: Path) -> None:
    with served(path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        port = urllib.parse.urlsplit(server.url).port
        assert port is not None
        other = non_loopback_address()
        if other is not None:  # nothing listens on the machine's other addresses
            with pytest.raises(OSError), socket.create_connection((other, port), timeout=5):
                pass
        status, body = http(server.base + "api/snapshot", headers={"Host": f"evil.example:{port}"})
        assert status == 403 and "loopback" in body["error"]["message"]  # DNS rebinding


def non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_a_non_loopback_host_without_public_is_refused(path: Path) -> None:
    run = subprocess.run(
        [*serve_args(path), "--host", "0.0.0.0"], env=cli_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 2, run
    assert "--public" in run.stderr and run.stdout == ""


def test_a_public_server_requires_its_token_on_every_endpoint(path: Path) -> None:
    with served(path, "--host", "0.0.0.0", "--public") as server:
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(server.url).query)["token"][0]
        assert len(token) >= 24
        base = server.base.replace("0.0.0.0", "127.0.0.1")
        for endpoint in ("", "static/app.js", "api/snapshot", "api/stream", "api/entry?key=jobs/1"):
            status, body = http(base + endpoint)
            assert status == 403, endpoint
            assert "token" in body["error"]["message"]
            assert http(base + endpoint + ("&" if "?" in endpoint else "?") + "token=wrong")[0] == 403
        assert http(base + "api/snapshot?token=" + token)[0] == 200
        assert http(base + "api/snapshot", headers={"Cookie": f"blackboard_token={token}"})[0] == 200
        assert http(base + "api/say", method="POST", body={"conversation": "c", "text": "x"})[0] == 403


def test_posts_are_refused_on_a_read_only_server(path: Path) -> None:
    with Board.open(path) as board:
        before = board.last_seq
        cid = conversations.all_conversations(board)[0]["id"]
    with served(path) as server:
        status, body = http(server.base + "api/say", method="POST", body={"conversation": cid, "text": "hi"})
        assert status == 403 and body["error"]["type"] == "ReadOnly"
        status, body = http(server.base + "api/reply", method="POST", body={"id": "m-000000000000", "body": 1})
        assert status == 403
    with Board.open(path) as board:
        assert board.last_seq == before


def test_allow_post_says_and_replies_as_the_agent_given(path: Path) -> None:
    with Board.open(path) as board:
        cid = conversations.all_conversations(board)[0]["id"]
        asked = messages.send(board, "atlas", "bob", {"q": "ready?"}, kind="request", deadline=time.time() + 60)
    with served(path, "--allow-post", "--as", "bob") as server:
        status, snap = http(server.base + "api/snapshot")
        assert (snap["read_only"], snap["agent"]) == (False, "bob")
        assert [m["id"] for m in snap["inbox"]] == [asked.id]
        status, turn = http(server.base + "api/say", method="POST", body={"conversation": cid, "text": "hi atlas"})
        assert status == 200, turn
        assert (turn["from"], turn["text"]) == ("bob", "hi atlas")
        status, sent = http(server.base + "api/reply", method="POST", body={"id": asked.id, "body": "yes"})
        assert status == 200, sent
        status, again = http(server.base + "api/reply", method="POST", body={"id": asked.id, "body": "yes"})
        assert status == 404 and again["error"]["type"] == "NoSuchMessage"  # acked with its reply
        status, bad = http(server.base + "api/say", method="POST", body={"conversation": "nope", "text": "x"})
        assert status == 400 and set(bad) == {"error"}
    with Board.open(path) as board:
        turns = conversations.turns(board, cid)
        assert (turns[-1].sender, turns[-1].text) == ("bob", "hi atlas")
        assert board.get(f"conv/{cid}/msg/{turns[-1].n:06d}").author == "bob"  # type: ignore[union-attr]
        (answer,) = [m for m in messages.pending(board, "atlas") if m.reply_to == asked.id]
        assert (answer.sender, answer.body) == ("bob", "yes")


def test_a_post_must_be_json(path: Path) -> None:
    with served(path, "--allow-post", "--as", "bob") as server:
        status, body = http(server.base + "api/say", method="POST", body={}, headers={"Content-Type": "text/plain"})
        assert status == 415 and "application/json" in body["error"]["message"]


def test_allow_post_needs_an_agent(path: Path) -> None:
    run = subprocess.run(
        [*serve_args(path), "--allow-post"], env=cli_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 2 and "--as" in run.stderr


def test_errors_are_json_never_a_traceback(path: Path) -> None:
    with served(path) as server:
        status, whole = http(server.base + "api/entry?key=notes")
        assert status == 200 and whole["value"] == "x" * 1000  # whole, not the preview
        status, body = http(server.base + "api/entry?key=" + urllib.parse.quote("../etc/passwd"))
        assert status == 400 and body["error"]["type"] == "InvalidKey"
        assert http(server.base + "api/entry?key=missing")[0] == 404
        status, body = http(server.base + "no/such/page")
        assert status == 404 and set(body) == {"error"}
        status, body = http(server.base + "api/snapshot", method="POST", body={})
        assert status == 405 and set(body) == {"error"}


def test_json_prints_the_address_as_one_line(path: Path) -> None:
    with served(path, "--json") as server:
        assert server.url.startswith("http://127.0.0.1:")


def test_a_board_of_10000_keys_loads_in_one_snapshot(tmp_path: Path) -> None:
    with Board.init(tmp_path / "big") as board, board.transaction() as tx:
        for i in range(10_000):
            tx.write(f"items/{i // 100:03d}/{i:05d}", {"i": i, "pad": "x" * 50})
    with served(tmp_path / "big") as server:
        started = time.monotonic()
        status, snap = http(server.base + "api/snapshot")
        took = time.monotonic() - started
    assert status == 200 and len(snap["keys"]) == 10_000
    assert took < 10, took  # typically ~0.1 s


def test_the_readme_section_shows_real_options_and_its_picture() -> None:
    import re
    import shlex

    from click.testing import CliRunner

    from blackboard.cli import cli

    root = Path(__file__).parents[1]
    section = (root / "README.md").read_text().split("## Watching in a browser")[1].split("\n## ")[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        assert words[:2] == ["blackboard", "serve"], line
        for option in (w for w in words if w.startswith("--")):
            assert option in help_text, (line, option)
    (picture,) = re.findall(r"!\[[^]]*\]\(([^)]+)\)", section)
    assert (root / picture).stat().st_size > 10_000


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_server_with_pages_open(path: Path, sig: signal.Signals, status: int) -> None:
    """Ctrl-C and SIGTERM stop it promptly even while a page's stream is open, with the CLI's exit
    codes, and no traceback."""
    with served(path, "--allow-post", "--as", "bob") as server, sse(server.base + "api/stream") as stream:
        assert next(stream)[0] == "snapshot"
        stopping = time.monotonic()
        server.proc.send_signal(sig)
        assert server.proc.wait(timeout=30) == status
        assert time.monotonic() - stopping < 10
        assert server.proc.stderr is not None and server.proc.stderr.read() == ""


def test_a_compacted_board_streams_from_its_snapshot(tmp_path: Path) -> None:
    """The backlog's history is gone with the deletes compaction purged: the stream goes on from the
    snapshot (no backlog) rather than fail."""
    with Board.init(tmp_path / "board") as board:
        for n in range(50):
            board.write(f"k/{n}", n)
            board.delete(f"k/{n}")
        board.write("kept", 1)
        board.compact(retention=0)
    with served(tmp_path / "board") as server, sse(server.base + "api/stream") as stream:
        name, snap = next(stream)
        assert name == "snapshot" and [row[0] for row in snap["keys"]] == ["kept"]
        cli_write(tmp_path / "board", "after", "2")
        for name, data in stream:
            if name == "events":
                assert all(e["seq"] > snap["seq"] for e in data), data  # no backlog: it was compacted away
                assert [e["key"] for e in data] == ["after"]
                break
            assert name != "failed", data

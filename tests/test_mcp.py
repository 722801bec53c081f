"""`blackboard mcp` over the real protocol: the server is `python -m blackboard mcp` in a child
process, driven by the official SDK's stdio client (initialize, tools/list, tools/call), on a board
in tmp_path. No mocks: what a model's client sends is what these tests send."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp_types import CallToolResult

from blackboard import Board
from blackboard.mcp import PROFILES

#: What a tools/call waits for at most here: every wait the tests ask for is far shorter.
CALL_TIMEOUT = 60.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    Board.init(tmp_path / "board").close()
    return tmp_path / "board"


def server_args(path: Path, *options: str) -> list[str]:
    return ["-m", "blackboard", "mcp", "--board", str(path), *options]


@asynccontextmanager
async def connect(path: Path, *options: str) -> AsyncIterator[ClientSession]:
    """An initialized session with a new server process on `path` (ended when the block ends)."""
    params = StdioServerParameters(command=sys.executable, args=server_args(path, *options), cwd=str(path.parent))
    with open(path.parent / "server.stderr", "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> tuple[bool, dict[str, Any]]:
    """(is_error, the structured result) of one tool call."""
    result = await session.call_tool(tool, arguments, read_timeout_seconds=CALL_TIMEOUT)
    assert isinstance(result, CallToolResult)
    assert result.structured_content is not None, result.content
    return bool(result.is_error), result.structured_content


async def ok(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    failed, out = await call(session, tool, **arguments)
    assert not failed, out
    return out


async def fails(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    failed, out = await call(session, tool, **arguments)
    assert failed, out
    assert set(out) == {"error"} and {"type", "message"} <= set(out["error"]), out
    error: dict[str, Any] = out["error"]
    return error


# -- tools and profiles --------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_profile_lists_exactly_its_tools(path: Path, profile: str) -> None:
    expected = {
        "minimal": {"read", "write", "watch", "claim"},
        "messaging": {"read", "write", "watch", "who", "join", "send", "inbox", "ack", "request", "reply", "digest"},
        "work": {"read", "write", "watch", "claim", "renew", "release", "take", "ack", "nack"}
        | {"task_add", "task_next", "task_done"},
        "full": {"read", "list", "write", "delete", "history", "watch", "claim", "renew", "release", "take", "ack"}
        | {"nack", "who", "join", "send", "inbox", "request", "reply", "digest", "task_add", "task_next", "task_done"},
    }[profile]

    async def main() -> None:
        async with connect(path, "--as", "atlas", "--profile", profile) as session:
            tools = (await session.list_tools()).tools
            assert {t.name for t in tools} == expected
            for tool in tools:
                assert tool.description and len(tool.description) < 200, tool  # terse: each costs context
                assert tool.input_schema["type"] == "object"

    anyio.run(main)


def test_the_default_profile_is_minimal_and_needs_no_identity(path: Path) -> None:
    async def main() -> None:
        async with connect(path) as session:
            assert {t.name for t in (await session.list_tools()).tools} == set(PROFILES["minimal"])
            assert (await ok(session, "claim", key="deploy", ttl=30))["holder"]  # this host and pid

    anyio.run(main)


def test_schemas_name_the_librarys_parameters(path: Path) -> None:
    async def main() -> None:
        async with connect(path, "--as", "atlas", "--profile", "full") as session:
            schemas = {t.name: t.input_schema for t in (await session.list_tools()).tools}
        assert set(schemas["write"]["properties"]) == {"key", "value", "expect_version", "idempotency_key", "fence"}
        assert set(schemas["watch"]["properties"]) == {"prefix", "key", "since", "cursor", "wait_s", "limit"}
        assert schemas["watch"]["properties"]["wait_s"]["maximum"] == 25
        assert schemas["watch"]["properties"]["wait_s"]["default"] == 0
        assert schemas["read"]["required"] == ["key"]

    anyio.run(main)


def test_the_key_tools(path: Path) -> None:
    async def main() -> None:
        async with connect(path, "--as", "atlas", "--profile", "full") as me:
            assert await ok(me, "write", key="notes/a", value={"n": 1}) == {"key": "notes/a", "version": 1, "seq": 1}
            await ok(me, "write", key="notes/b", value=[1, 2], expect_version=0, idempotency_key="once")
            again = await ok(me, "write", key="notes/b", value=[1, 2], expect_version=0, idempotency_key="once")
            assert again["seq"] == 2  # the retry wrote nothing
            read = await ok(me, "read", key="notes/a")
            assert (read["value"], read["version"], read["author"]) == ({"n": 1}, 1, "atlas")
            await ok(me, "write", key="notes/a", value={"n": 2})
            assert (await ok(me, "read", key="notes/a", at=1))["value"] == {"n": 1}
            page = await ok(me, "list", prefix="notes/", limit=1)
            assert [e["key"] for e in page["entries"]] == ["notes/a"] and page["next"] == "notes/a"
            page = await ok(me, "list", prefix="notes/", limit=1, after=page["next"])
            assert [e["key"] for e in page["entries"]] == ["notes/b"] and page["next"] is None
            history = await ok(me, "history", key="notes/a")
            assert [e["value"] for e in history["events"]] == [{"n": 1}, {"n": 2}]
            assert (await ok(me, "delete", key="notes/b"))["key"] == "notes/b"
            assert (await fails(me, "read", key="notes/b"))["type"] == "KeyNotFound"
            watched = await ok(me, "watch", prefix="notes/", since=0)
            assert [(e["op"], e["key"]) for e in watched["events"]] == [
                ("put", "notes/a"),
                ("put", "notes/b"),
                ("put", "notes/a"),
                ("delete", "notes/b"),
            ]
            assert watched["timed_out"] is False and watched["since"] >= 4

    anyio.run(main)


def test_the_agent_tools(path: Path) -> None:
    async def main() -> None:
        async with connect(path, "--as", "atlas", "--profile", "full") as me:
            joined = await ok(me, "join", capabilities=["search"], description="finds things")
            assert (joined["name"], joined["state"], joined["pid"]) == ("atlas", "available", joined["pid"])
            assert [a["name"] for a in (await ok(me, "who"))["agents"]] == ["atlas"]
            sent = await ok(me, "send", to="atlas", body="note to self")
            assert sent["recipients"] == ["atlas"]
            inbox = await ok(me, "inbox")
            assert [m["body"] for m in inbox["messages"]] == ["note to self"]
            assert [i["type"] for i in (await ok(me, "digest"))["items"]] == ["message"]
            assert (await ok(me, "ack", ids=[sent["id"]]))["acked"] == [sent["id"]]
            await ok(me, "send", to="atlas", body="q?", kind="request")
            asked = (await ok(me, "inbox"))["messages"][0]
            assert (await ok(me, "reply", message_id=asked["id"], body="a!"))["recipients"] == ["atlas"]
            answer = (await ok(me, "inbox"))["messages"][0]
            assert (answer["reply_to"], answer["body"]) == (asked["id"], "a!")
            await ok(me, "ack", ids=[answer["id"]])
            late = await ok(me, "request", to="atlas", body="anyone?", wait_s=0.2)
            assert late["timed_out"] is True and late["reply"] is None  # nobody answered: not an error

    anyio.run(main)
    with Board.open(path) as board:
        assert board.read("agents/atlas")["left"] is True  # the server left as it ended: offline at once


def test_the_work_tools(path: Path) -> None:
    async def main() -> None:
        async with connect(path, "--as", "atlas", "--profile", "full") as me:
            granted = await ok(me, "claim", key="deploy", ttl=30)
            assert (granted["holder"], granted["key"]) == ("atlas", "deploy")
            await ok(me, "write", key="deploy/status", value="running", fence=granted["token"])
            assert (await ok(me, "renew", key="deploy", token=granted["token"]))["token"] == granted["token"]
            assert (await ok(me, "release", key="deploy", token=granted["token"]))["released"] is True
            fenced = await fails(me, "write", key="deploy/status", value="late", fence=granted["token"])
            assert fenced["type"] == "Fenced"
            # queues
            await ok(me, "write", key="jobs/1", value={"url": "u1"})
            taken = (await ok(me, "take", prefix="jobs/", group="workers"))["delivery"]
            assert (taken["key"], taken["value"], taken["attempt"]) == ("jobs/1", {"url": "u1"}, 1)
            await ok(me, "nack", delivery_id=taken["delivery_id"])
            again = (await ok(me, "take", prefix="jobs/", group="workers"))["delivery"]
            assert again["attempt"] == 2
            stale = await fails(me, "ack", ids=[taken["delivery_id"]])
            assert stale["type"] == "Fenced"
            done = await ok(me, "ack", ids=[again["delivery_id"]], result_key="results/1", result="ok")
            assert done["result_key"] == "results/1"
            assert (await ok(me, "read", key="results/1"))["value"] == "ok"
            nothing = await ok(me, "take", prefix="jobs/", group="workers", wait_s=0.1)
            assert nothing == {"delivery": None, "timed_out": True}
            # tasks
            first = await ok(me, "task_add", title="fetch")
            second = await ok(me, "task_add", title="parse", blocked_by=[first["id"]], data={"n": 1})
            assert (await ok(me, "task_next"))["task"]["id"] == first["id"]
            assert (await ok(me, "task_next"))["task"] is None  # parse waits for fetch
            assert (await ok(me, "task_done", task_id=first["id"], result=3))["state"] == "completed"
            assert (await ok(me, "task_next"))["task"]["id"] == second["id"]

    anyio.run(main)
    with Board.open(path) as board:
        assert board.check().ok


def test_a_watch_page_never_cuts_a_transaction(path: Path) -> None:
    with Board.open(path) as board, board.transaction() as tx:
        for i in range(3):
            tx.write(f"t/{i}", i)
    with Board.open(path) as board:
        board.write("t/after", 1)

    async def main() -> None:
        async with connect(path) as session:
            page = await ok(session, "watch", prefix="t/", since=0, limit=1)
            assert [e["key"] for e in page["events"]] == ["t/0", "t/1", "t/2"] and page["since"] == 1
            page = await ok(session, "watch", prefix="t/", since=page["since"], limit=1)
            assert [e["key"] for e in page["events"]] == ["t/after"]

    anyio.run(main)


def test_a_watch_with_a_cursor_goes_on_where_it_stopped(path: Path) -> None:
    async def main() -> None:
        async with connect(path) as session:
            await ok(session, "write", key="k/1", value=1)
            assert [e["key"] for e in (await ok(session, "watch", prefix="k/", cursor="me"))["events"]] == []
            await ok(session, "write", key="k/2", value=2)
            assert [e["key"] for e in (await ok(session, "watch", prefix="k/", cursor="me"))["events"]] == ["k/2"]
            assert (await ok(session, "watch", prefix="k/", cursor="me"))["events"] == []

    anyio.run(main)


def test_a_watch_with_wait_s_times_out_cleanly(path: Path) -> None:
    async def main() -> None:
        async with connect(path) as session:
            started = time.monotonic()
            failed, out = await call(session, "watch", key="never/written", wait_s=0.5)
            assert time.monotonic() - started >= 0.5
            assert not failed and out == {"events": [], "since": 0, "timed_out": True}
            # a wait past the bound is refused before it starts: clients give up on a call after ~60 s
            assert (await fails(session, "watch", wait_s=60))["type"] == "InvalidArguments"

    anyio.run(main)


# -- two agents ------------------------------------------------------------------------------------------


def test_two_clients_request_and_reply(path: Path) -> None:
    async def main() -> None:
        async with (
            connect(path, "--as", "alice", "--profile", "messaging") as alice,
            connect(path, "--as", "bob", "--profile", "messaging") as bob,
        ):
            await ok(bob, "join", capabilities=["math"])
            got: dict[str, Any] = {}

            async def ask() -> None:
                got["answer"] = await ok(alice, "request", to="bob", body={"q": "6*7"}, wait_s=20)

            async def answer() -> None:
                waiting = await ok(bob, "inbox", wait_s=20)
                [request] = waiting["messages"]
                assert (request["from"], request["kind"], request["body"]) == ("alice", "request", {"q": "6*7"})
                await ok(bob, "reply", message_id=request["id"], body=42)

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                tg.start_soon(answer)
            reply = got["answer"]
            assert reply["timed_out"] is False
            assert (reply["reply"]["from"], reply["reply"]["body"]) == ("bob", 42)
            assert (await ok(alice, "inbox"))["messages"] == []  # the reply was acked for alice
            digest = await ok(bob, "digest")
            assert digest["items"] == []
            # a typo'd name is refused, naming who it may have meant
            unknown = await fails(alice, "send", to="bobb", body="hi")
            assert (unknown["type"], unknown["name"], unknown["close"]) == ("UnknownAgent", "bobb", ["bob"])

    anyio.run(main)


def test_a_claim_held_by_one_is_refused_to_the_other_naming_the_holder(path: Path) -> None:
    async def main() -> None:
        async with connect(path, "--as", "alice") as alice, connect(path, "--as", "bob") as bob:
            granted = await ok(alice, "claim", key="deploy", ttl=60)
            held = await fails(bob, "claim", key="deploy", ttl=60)
            assert (held["type"], held["holder"], held["token"]) == ("Held", "alice", granted["token"])
            assert held["expires"] == granted["expires"]
            fenced = await fails(bob, "write", key="deploy/status", value="mine", fence=granted["token"] + 1)
            assert fenced["type"] == "Fenced"

    anyio.run(main)


# -- errors ----------------------------------------------------------------------------------------------


def test_bad_arguments_are_structured_errors_and_change_nothing(path: Path) -> None:
    async def main() -> None:
        async with connect(path, "--as", "atlas", "--profile", "full") as me:
            await ok(me, "write", key="k", value=1)
            before = (await ok(me, "watch", since=0))["since"]
            bad_type = await fails(me, "write", key="k", value=2, expect_version="two")
            assert bad_type["type"] == "InvalidArguments" and "expect_version" in bad_type["message"]
            missing = await fails(me, "write", key="k")
            assert missing["type"] == "InvalidArguments" and "value" in missing["message"]
            invalid = await fails(me, "write", key="../escape", value=1)
            assert (invalid["type"], invalid["key"]) == ("InvalidKey", "../escape")
            conflict = await fails(me, "write", key="k", value=2, expect_version=0)
            assert (conflict["type"], conflict["expected"], conflict["actual"]) == ("VersionConflict", 0, 1)
            assert (await fails(me, "ack", ids=["m-000000000000"]))["type"] == "NoSuchMessage"
            assert (await fails(me, "no_such_tool"))["type"] == "ToolError"
            assert "Traceback" not in str(bad_type) + str(missing) + str(invalid)
            assert (await ok(me, "watch", since=before))["events"] == []  # nothing was written
            assert (await ok(me, "read", key="k"))["version"] == 1

    anyio.run(main)


def test_agent_profiles_need_an_identity(path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BLACKBOARD_AGENT"}
    proc = subprocess.run(
        [sys.executable, *server_args(path, "--profile", "messaging")],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 2 and "--as NAME" in proc.stderr


def test_without_the_sdk_one_line_names_the_install(path: Path) -> None:
    hide = "import sys; sys.modules['mcp'] = None; from blackboard.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", hide, "mcp", "--board", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "pip install 'blackboard[mcp]'" in proc.stderr, proc.stderr


# -- a client killed mid-work ----------------------------------------------------------------------------

CLIENT = """
import sys, anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

async def main():
    params = StdioServerParameters(command=sys.executable, args=sys.argv[1:])
    async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        joined = await s.call_tool("join", {})
        print(joined.structured_content["pid"], flush=True)
        n = 0
        while True:
            await s.call_tool("write", {"key": f"spam/{n % 50}", "value": {"n": n, "pad": "x" * 500}})
            n += 1
            if n == 20:
                print("writing", flush=True)

anyio.run(main)
"""


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie does not: it is reaped by its parent, or by init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_killing_the_client_and_its_server_leaves_the_board_consistent(path: Path) -> None:
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(CLIENT),
            *server_args(path, "--as", "spammer", "--profile", "messaging"),
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # one group: the client and the server it started
    )
    try:
        assert client.stdout is not None
        server = int(client.stdout.readline())
        assert client.stdout.readline() == "writing\n"
        time.sleep(0.2)  # more writes in flight: the kill lands mid-stream, wherever it lands
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(client.pid, signal.SIGKILL)
        client.wait(30)
        if client.stdout is not None:
            client.stdout.close()
    # The server (the SDK starts it in a session of its own) ends with its client: its pipes broke.
    deadline = time.monotonic() + 30
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(server)
    with Board.open(path) as board:
        report = board.check()
        assert report.ok, report.problems()
        assert len(board.keys("spam/")) > 0
        board.write("after", "kill")  # and it takes writes


# -- resources and the README's configuration -------------------------------------------------------------


def test_an_entry_is_a_read_only_resource(path: Path) -> None:
    with Board.open(path) as board:
        board.write("notes/a", {"n": 1})

    async def main() -> None:
        async with connect(path) as session:
            templates = (await session.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["blackboard://entry/{+key}"]
            read = await session.read_resource("blackboard://entry/notes/a")
            [content] = read.contents
            entry = json.loads(getattr(content, "text", ""))
            assert (entry["key"], entry["value"], entry["version"]) == ("notes/a", {"n": 1}, 1)
            with pytest.raises(Exception, match="no such key"):
                await session.read_resource("blackboard://entry/notes/none")

    anyio.run(main)


def test_the_readmes_client_configuration_starts_a_working_server(path: Path) -> None:
    """The `.mcp.json` snippet and the `claude mcp add` line of the README, with a real board path."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## MCP server") : readme.index("## Keeping the log small")]
    config = json.loads(
        next(body for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL) if "mcpServers" in body)
    )
    server = config["mcpServers"]["blackboard"]
    add = next(line for line in section.splitlines() if line.startswith("claude mcp add blackboard -- "))
    assert add.split(" -- ", 1)[1].split() == [server["command"], *server["args"]]
    args = [str(path) if a == "/path/to/board" else a for a in server["args"]]
    assert server["command"] == "blackboard"

    async def main() -> None:
        command = str(Path(sys.executable).parent / "blackboard")  # the console script the README names
        params = StdioServerParameters(command=command, args=args)
        with open(path.parent / "server.stderr", "a") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                assert {t.name for t in (await session.list_tools()).tools} == set(PROFILES["messaging"])
                assert (await ok(session, "join"))["name"] == "atlas"

    anyio.run(main)


def test_an_agent_that_holds_a_key_signs_what_it_writes(path: Path, keys_dir: Path) -> None:
    """`blackboard mcp --as atlas` with atlas's key (spec/TRUST.md 3): its writes verify."""
    from blackboard import trust

    signer = trust.new_key("atlas")
    with Board.open(path, author="atlas", signer=signer) as handle:
        trust.register(handle, signer)
    trust.save_key(signer)

    async def main() -> None:
        # The SDK passes a child only a few variables: this one says where the test's keys are.
        env = {"PATH": os.environ["PATH"], "BLACKBOARD_KEYS": str(keys_dir)}
        params = StdioServerParameters(command=sys.executable, args=server_args(path, "--as", "atlas"), env=env)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            await ok(session, "write", key="notes/a", value={"n": 1})

    anyio.run(main)
    with Board.open(path, read_only=True) as board:
        assert trust.read_verified(board, "notes/a") == {"n": 1}
        assert trust.verify(board).verified == 2

"""The agents layer from the shell (issue 11, spec/AGENTS.md): every case through real
`python -m blackboard` processes on real boards; two agents are two processes. Waits are on output
and exit, with generous deadlines; no case assumes a sleep is long enough.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _users import other_user, read_only_everywhere
from _workers import cli_env

from blackboard import Board

pytestmark = pytest.mark.timeout(120)

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_TIMED_OUT, EXIT_REFUSED = 2, 3, 7, 9
BLACKBOARD = f"{sys.executable} -m blackboard"
README = (Path(__file__).parents[1] / "README.md").read_text()


def agent_env(**extra: str) -> dict[str, str]:
    """`cli_env` without an identity from the environment this suite runs in, plus `extra`."""
    env = {k: v for k, v in cli_env().items() if k != "BLACKBOARD_AGENT"}
    env.update(extra)
    return env


def run(board: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(board), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        env=agent_env(**env),
        check=False,
    )


def ok(board: Path, *args: str, **env: str) -> str:
    result = run(board, *args, **env)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def one(board: Path, *args: str, **env: str) -> Any:
    return json.loads(ok(board, *args, **env))


def lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


def bash(board: Path, script: str) -> subprocess.Popen[str]:
    """`script` in bash in the background, with $BB the blackboard command on `board`."""
    env = agent_env(BB=f"{BLACKBOARD} --board {board}", PY=sys.executable)
    return subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=90)
    return proc.returncode, out, err


def who(board: Path) -> dict[str, Any]:
    return {a["name"]: a for a in lines(ok(board, "who", "--json"))}


@pytest.fixture
def board(tmp_path: Path) -> Path:
    path = tmp_path / "board"
    Board.init(path).close()
    return path


@pytest.fixture
def pair(board: Path) -> Path:
    """atlas and bob joined."""
    ok(board, "--as", "atlas", "join", "--capability", "search", "--description", "finds papers")
    ok(board, "--as", "bob", "join", "--capability", "summarize")
    return board


# -- identity --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["join"], ["leave"], ["send", "bob", "1"], ["inbox"], ["request", "bob", "1", "--timeout", "1"], ["digest"]],
)
def test_an_agent_command_without_an_identity_exits_2(pair: Path, args: list[str]) -> None:
    result = run(pair, *args)
    assert result.returncode == EXIT_USAGE
    (line,) = result.stderr.splitlines()
    assert "--as" in line and "BLACKBOARD_AGENT" in line, line


def test_the_identity_from_blackboard_agent_and_from_either_as(pair: Path) -> None:
    sent = [
        one(pair, "send", "bob", "1", BLACKBOARD_AGENT="atlas")["id"],
        one(pair, "--as", "atlas", "send", "bob", "2")["id"],
        one(pair, "send", "--as", "atlas", "bob", "3", BLACKBOARD_AGENT="bob"),  # the command's wins
    ]
    inbox = lines(ok(pair, "inbox", "--json", BLACKBOARD_AGENT="bob"))
    assert [m["from"] for m in inbox] == ["atlas"] * 3
    assert [m["id"] for m in inbox[:2]] == sent[:2]


def test_a_bad_agent_name_exits_2(pair: Path) -> None:
    result = run(pair, "--as", "not a name", "read", "k")
    assert result.returncode == EXIT_USAGE and "agent name" in result.stderr


def test_the_agents_variable_is_the_libraries() -> None:
    from blackboard.agents import ENV_AGENT
    from blackboard.cli.base import ENV_AGENT as CLI_ENV_AGENT

    assert CLI_ENV_AGENT == ENV_AGENT


# -- presence --------------------------------------------------------------------------------------


def test_join_prints_the_registration_and_who_lists_it(board: Path) -> None:
    joined = one(board, "--as", "atlas", "join", "--capability", "search", "--capability", "cite", "--ttl", "30")
    assert joined["name"] == "atlas" and joined["capabilities"] == ["cite", "search"]
    assert (joined["state"], joined["online"], joined["ttl"], joined["pid"]) == ("available", True, 30.0, None)
    one(board, "join", "--description", "writes summaries", "--status", "busy", BLACKBOARD_AGENT="bob")
    agents = lines(ok(board, "who", "--json"))
    assert [a["name"] for a in agents] == ["atlas", "bob"]
    assert set(agents[0]) >= {"name", "capabilities", "description", "status", "state", "online", "last_seen", "ttl"}
    assert agents[1]["state"] == "busy" and agents[1]["description"] == "writes summaries"
    assert [a["name"] for a in lines(ok(board, "who", "--json", "--capability", "cite"))] == ["atlas"]


def test_who_is_a_table_with_aligned_columns(pair: Path) -> None:
    rows = ok(pair, "who").splitlines()
    assert len(rows) == 2
    assert rows[0].split()[:3] == ["atlas", "available", "search"] and rows[0].endswith("finds papers")
    assert rows[1].split()[:3] == ["bob", "available", "summarize"]
    ages = [re.search(r"\d+ s ago", row) for row in rows]
    assert all(ages) and len({m.start() for m in ages if m}) == 1, rows
    assert rows[0].index("available") == rows[1].index("available"), rows


def test_status_and_leave(pair: Path) -> None:
    assert one(pair, "--as", "bob", "status", "in-call")["state"] == "in-call"
    assert who(pair)["bob"]["status"] == "in-call"
    assert run(pair, "--as", "bob", "status", "Not OK!").returncode == EXIT_USAGE
    left = one(pair, "--as", "bob", "leave")
    assert (left["state"], left["online"]) == ("offline", False)
    assert who(pair)["bob"]["state"] == "offline"
    assert run(pair, "--as", "nobody", "leave").returncode == EXIT_NOT_FOUND


def test_join_pid_of_a_dead_process_is_offline_at_once(board: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=60)
    assert one(board, "--as", "ghost", "join", "--pid", str(gone.pid))["state"] == "offline"
    assert one(board, "--as", "alive", "join", "--pid", str(os.getpid()))["state"] == "available"


def test_a_command_with_an_identity_signs_life_without_a_log_record(pair: Path) -> None:
    ok(pair, "write", "k", "1")
    before = who(pair)["atlas"]["last_seen"]
    size = (pair / "log.jsonl").stat().st_size
    deadline = time.monotonic() + 60
    while who(pair)["atlas"]["last_seen"] == before and time.monotonic() < deadline:
        ok(pair, "--as", "atlas", "read", "k")  # an mtime's resolution: the first may land in the same tick
    assert who(pair)["atlas"]["last_seen"] > before
    assert (pair / "log.jsonl").stat().st_size == size


def test_as_sets_the_author_unless_author_is_given(pair: Path) -> None:
    ok(pair, "--as", "atlas", "write", "a", "1")
    ok(pair, "--as", "atlas", "write", "b", "1", "--author", "someone")
    assert one(pair, "read", "--json", "a")["author"] == "atlas"
    assert one(pair, "read", "--json", "b")["author"] == "someone"


# -- messages --------------------------------------------------------------------------------------


def test_send_to_an_unknown_name_exits_3_with_did_you_mean(pair: Path) -> None:
    result = run(pair, "--as", "atlas", "send", "bobb", "{}")
    assert result.returncode == EXIT_NOT_FOUND
    assert "did you mean bob" in result.stderr and len(result.stderr.splitlines()) == 1


def test_send_queue_keeps_a_message_for_a_name_not_joined_yet(pair: Path) -> None:
    sent = one(pair, "--as", "atlas", "send", "carol", '{"hi": 1}', "--queue")
    assert sent["recipients"] == ["carol"]
    (message,) = lines(ok(pair, "--as", "carol", "inbox", "--json"))
    assert (message["id"], message["body"]) == (sent["id"], {"hi": 1})


def test_broadcasts_to_everyone_online_and_to_a_capability(pair: Path) -> None:
    ok(pair, "--as", "carol", "join", "--capability", "summarize")
    assert one(pair, "--as", "atlas", "send", "*", "1")["recipients"] == ["bob", "carol"]
    assert one(pair, "--as", "bob", "send", "@summarize", "2")["recipients"] == ["carol"]
    nobody = run(pair, "--as", "atlas", "send", "@translate", "3")
    assert nobody.returncode == EXIT_NOT_FOUND and "reach nobody" in nobody.stderr
    assert [m["body"] for m in lines(ok(pair, "--as", "carol", "inbox", "--json"))] == [1, 2]


def test_inbox_json_fields_order_limit_and_ack(pair: Path) -> None:
    ids = [one(pair, "--as", "atlas", "send", "bob", json.dumps({"n": n}))["id"] for n in range(3)]
    text = one(pair, "--as", "atlas", "send", "bob", "hello there", "--text", "--thread", "t1", "--kind", "note")
    from_stdin = run(pair, "--as", "atlas", "send", "bob", "-", stdin='{"piped": true}\n')
    assert from_stdin.returncode == 0, from_stdin.stderr
    inbox = lines(ok(pair, "--as", "bob", "inbox", "--json"))
    assert [m["id"] for m in inbox] == [*ids, text["id"], json.loads(from_stdin.stdout)["id"]]
    assert [m["seq"] for m in inbox] == sorted(m["seq"] for m in inbox)
    assert set(inbox[0]) >= {"id", "from", "to", "kind", "body", "thread", "reply_to", "seq", "ts"}
    assert (inbox[3]["body"], inbox[3]["thread"], inbox[3]["kind"]) == ("hello there", "t1", "note")
    assert inbox[4]["body"] == {"piped": True}

    limited = run(pair, "--as", "bob", "inbox", "--limit", "2", "--ack", "--json")
    assert limited.returncode == 0
    assert [m["id"] for m in lines(limited.stdout)] == ids[:2]
    assert "3 more" in limited.stderr
    plain = ok(pair, "--as", "bob", "inbox").splitlines()
    assert [line.split()[0] for line in plain] == [ids[2], text["id"], json.loads(from_stdin.stdout)["id"]]
    assert plain[0].split()[1:3] == ["atlas", "message"] and plain[0].endswith('{"n":2}')

    acked = one(pair, "--as", "bob", "ack", ids[2], text["id"])
    assert acked["acked"] == [ids[2], text["id"]] and type(acked["seq"]) is int  # one record for both
    assert len(lines(ok(pair, "--as", "bob", "inbox", "--json"))) == 1
    unknown = run(pair, "--as", "bob", "ack", ids[0])
    assert unknown.returncode == EXIT_NOT_FOUND and "acked already" in unknown.stderr
    assert run(pair, "--as", "bob", "ack", "not-an-id").returncode == EXIT_USAGE


def test_an_empty_inbox_is_exit_0_and_with_wait_exit_7(pair: Path) -> None:
    assert run(pair, "--as", "bob", "inbox").returncode == 0
    waited = run(pair, "--as", "bob", "inbox", "--wait", "0.5")
    assert (waited.returncode, waited.stdout) == (EXIT_TIMED_OUT, "")


def test_inbox_wait_is_woken_by_a_send_from_another_process(pair: Path) -> None:
    seen = pair / "seen" / "bob"
    before = seen.stat().st_mtime_ns
    waiter = bash(pair, "$BB --as bob inbox --wait 60 --json")
    deadline = time.monotonic() + 60
    # Its sign of life comes just before it lists: a send after it most likely wakes the watch (one
    # before it is listed instead; either way the message must come out, once).
    while seen.stat().st_mtime_ns == before and waiter.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    sent = one(pair, "--as", "atlas", "send", "bob", '{"wake": "up"}')
    code, out, err = finish(waiter)
    assert code == 0, err
    assert [(m["id"], m["body"]) for m in lines(out)] == [(sent["id"], {"wake": "up"})]


# -- request and reply -----------------------------------------------------------------------------

RESPONDER = """
for i in 1 2; do
  $BB --as bob inbox --wait 60 --json --limit 1 > "$TMP/msg" || exit 7
  id=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/msg")
  answer=$($PY -c 'import json,sys; print(json.dumps({"echo": json.load(open(sys.argv[1]))["body"]}))' "$TMP/msg")
  $BB --as bob reply "$id" "$answer" > /dev/null || exit 1
done
"""


def test_request_and_reply_between_two_processes(pair: Path, tmp_path: Path) -> None:
    responder = bash(pair, f"TMP={tmp_path}\n{RESPONDER}")
    try:
        first = one(pair, "--as", "atlas", "request", "bob", '{"q": 1}', "--timeout", "60", "--thread", "t9")
        second = one(pair, "--as", "atlas", "request", "bob", "why?", "--text", "--timeout", "60")
    finally:
        code, _, err = finish(responder)
    assert code == 0, err
    assert (first["kind"], first["from"], first["body"], first["thread"]) == ("reply", "bob", {"echo": {"q": 1}}, "t9")
    assert second["body"] == {"echo": "why?"} and second["late"] is False
    assert ok(pair, "--as", "atlas", "inbox") == "" and ok(pair, "--as", "bob", "inbox") == ""  # all acked


def test_a_request_without_a_reply_exits_7_and_stays_in_the_inbox(pair: Path) -> None:
    result = run(pair, "--as", "atlas", "request", "bob", '{"q": 1}', "--timeout", "0.5")
    assert result.returncode == EXIT_TIMED_OUT and result.stdout == ""
    (asked,) = lines(ok(pair, "--as", "bob", "inbox", "--json"))
    assert asked["kind"] == "request" and asked["deadline"] is not None
    late = one(pair, "--as", "bob", "reply", asked["id"], '"sorry"')
    assert late["recipients"] == ["atlas"]
    (answer,) = lines(ok(pair, "--as", "atlas", "inbox", "--json"))
    assert (answer["reply_to"], answer["late"]) == (asked["id"], True)
    assert run(pair, "--as", "bob", "reply", asked["id"], "1").returncode == EXIT_NOT_FOUND  # never twice


# -- calls -----------------------------------------------------------------------------------------

#: bob waits for the call and answers it; `cut` takes the id, the first field of the JSON message.
CALLEE = (
    '$BB --as bob inbox --wait 60 --json --limit 1 | cut -d\\" -f4 > "$TMP/id"'
    ' && $BB --as bob {answer} "$(cat "$TMP/id")"'
)


@pytest.mark.parametrize(
    ("answer", "code", "state"),
    [("accept --turn-limit 4", 0, "accepted"), ("reject --reason busy", EXIT_REFUSED, "rejected")],
)
def test_a_call_answered_by_another_process(pair: Path, tmp_path: Path, answer: str, code: int, state: str) -> None:
    callee = bash(pair, f"TMP={tmp_path}; " + CALLEE.format(answer=answer))
    try:
        result = run(pair, "--as", "atlas", "call", "bob", "--topic", "plan the survey", "--timeout", "60")
    finally:
        callee_code, callee_out, err = finish(callee)
    assert callee_code == 0, err
    assert result.returncode == code, result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["state"], outcome["to"]) == (state, "bob")
    if state == "accepted":
        assert outcome["conversation"] == json.loads(callee_out)["conversation"]
        meta = lines(ok(pair, "conv", "show", outcome["conversation"], "--json"))[0]
        assert (meta["participants"], meta["topic"], meta["turn_limit"]) == (["atlas", "bob"], "plan the survey", 4)
    else:
        assert outcome["reason"] == "busy" and "rejected" in result.stderr
    assert ok(pair, "--as", "bob", "inbox") == ""


def test_a_call_not_answered_is_missed_exit_7_and_cannot_be_accepted(pair: Path) -> None:
    result = run(pair, "--as", "atlas", "call", "bob", "--topic", "t", "--timeout", "0.5")
    assert result.returncode == EXIT_TIMED_OUT
    missed = json.loads(result.stdout)
    assert missed["state"] == "missed"
    (ring,) = lines(ok(pair, "--as", "bob", "inbox", "--json"))
    assert (ring["id"], ring["kind"], ring["state"]) == (missed["id"], "call", "missed")
    assert run(pair, "--as", "bob", "accept", ring["id"]).returncode == EXIT_REFUSED


def test_a_call_to_an_agent_offline_is_missed_at_once(pair: Path) -> None:
    ok(pair, "--as", "bob", "leave")
    result = run(pair, "--as", "atlas", "call", "bob", "--topic", "t", "--timeout", "60")
    assert result.returncode == EXIT_TIMED_OUT and json.loads(result.stdout)["state"] == "missed"
    assert run(pair, "--as", "atlas", "call", "nobody", "--topic", "t").returncode == EXIT_NOT_FOUND


# -- conversations ---------------------------------------------------------------------------------


def new_conversation(board: Path, *extra: str) -> str:
    made = one(board, "--as", "atlas", "conv", "new", "--topic", "survey", "--with", "bob", *extra)
    assert (made["participants"], made["state"]) == (["atlas", "bob"], "open")
    return str(made["conversation"])


def test_conversation_turns_and_the_turn_limit(pair: Path) -> None:
    cid = new_conversation(pair, "--turn-limit", "2")
    turn = one(pair, "--as", "atlas", "say", cid, "hello")
    assert (turn["n"], turn["from"], turn["kind"], turn["text"]) == (2, "atlas", "message", "hello")
    assert one(pair, "--as", "bob", "conv", "say", cid, "hi atlas")["n"] == 3
    size = (pair / "log.jsonl").stat().st_size
    past = run(pair, "--as", "atlas", "say", cid, "one more")
    assert past.returncode == EXIT_REFUSED and "turn limit of 2" in past.stderr
    assert (pair / "log.jsonl").stat().st_size == size, "nothing written"
    chat = ok(pair, "conv", "show", cid).splitlines()
    assert cid in chat[0] and "survey" in chat[0]
    assert [line.split(None, 2) for line in chat[1:]] == [
        ["1", "atlas", "survey"],
        ["2", "atlas", "hello"],
        ["3", "bob", "hi atlas"],
    ]
    shown = lines(ok(pair, "conv", "show", cid, "--json"))
    assert shown[0]["turns"] == 3 and [t["n"] for t in shown[1:]] == [1, 2, 3]
    assert lines(ok(pair, "conv", "--json", "show", cid)) == shown


def test_only_participants_speak_and_only_registered_agents_take_part(pair: Path) -> None:
    cid = new_conversation(pair)
    ok(pair, "--as", "carol", "join")
    assert run(pair, "--as", "carol", "say", cid, "me too").returncode == EXIT_REFUSED
    no_one = run(pair, "--as", "atlas", "conv", "new", "--topic", "t", "--with", "nobody")
    assert no_one.returncode == EXIT_NOT_FOUND


def test_conv_watch_follows_turns_until_the_conversation_closes(pair: Path) -> None:
    cid = new_conversation(pair)
    start = one(pair, "--as", "atlas", "say", cid, "before the watch")["seq"]
    watcher = bash(pair, f"$BB conv watch {cid} --json --timeout 60")
    one(pair, "--as", "bob", "say", cid, "during the watch")
    closed = one(pair, "--as", "bob", "conv", "close", cid)
    code, out, err = finish(watcher)
    assert code == 0, err
    turns = lines(out)
    assert [t["text"] for t in turns] == ["survey", "before the watch", "during the watch", closed["text"]]
    assert turns[-1]["kind"] == "system"
    assert run(pair, "--as", "atlas", "say", cid, "after").returncode == EXIT_REFUSED
    since = lines(ok(pair, "conv", "watch", cid, "--since", str(start), "--json"))
    assert [t["text"] for t in since] == ["during the watch", closed["text"]]
    after = lines(ok(pair, "conv", "watch", cid, "--since", str(closed["seq"] + 1), "--json"))
    assert after == [], "a watch from after the close ends at once"
    plain = ok(pair, "conv", "watch", cid).splitlines()
    assert plain[1].split(None, 2) == ["2", "atlas", "before the watch"]


def test_conv_watch_of_an_open_conversation_ends_after_timeout(pair: Path) -> None:
    cid = new_conversation(pair)
    result = run(pair, "conv", "watch", cid, "--timeout", "0.5", "--json")
    assert result.returncode == 0 and [t["n"] for t in lines(result.stdout)] == [1]


# -- digest ----------------------------------------------------------------------------------------


def test_digest_ranks_calls_requests_conversations_messages(pair: Path, tmp_path: Path) -> None:
    one(pair, "--as", "atlas", "send", "bob", '"fyi"')
    cid = new_conversation(pair)
    one(pair, "--as", "atlas", "say", cid, "your turn")
    asker = bash(pair, "$BB --as atlas request bob '{\"q\": 1}' --timeout 60")
    caller = bash(pair, "$BB --as atlas call bob --topic urgent --timeout 60")
    try:
        ok(pair, "watch", "inbox/bob/", "--since", "0", "--count", "3", "--timeout", "60")  # fyi, request, call
        items = lines(ok(pair, "--as", "bob", "digest", "--json"))
        assert [(i["rank"], i["type"]) for i in items] == [
            (1, "call"),
            (2, "request"),
            (3, "conversation"),
            (4, "message"),
        ]
        assert items[2]["id"] == cid and items[2]["summary"]["last"] == "your turn"
        again = ok(pair, "--as", "bob", "digest").splitlines()
        assert [line.split()[0] for line in again] == ["call", "request", "message"], "no new turns since"
        call_id = items[0]["id"]
        request_id = items[1]["id"]
        ok(pair, "--as", "bob", "reject", call_id)
        ok(pair, "--as", "bob", "reply", request_id, "1")
    finally:
        caller_code, _, caller_err = finish(caller)
        asker_code, _, asker_err = finish(asker)
    assert (caller_code, asker_code) == (EXIT_REFUSED, 0), (caller_err, asker_err)


# -- help and the README ---------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["new", "say", "show", "watch", "close"])
def test_every_conv_subcommand_takes_json_and_as(sub: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "blackboard", "conv", sub, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+--json\b", result.stdout, re.MULTILINE) and "--as NAME" in result.stdout


def agents_tour() -> str:
    block = README.split("### Agents from the shell")[1]
    return str(re.findall(r"```sh\n(.*?)```", block, re.DOTALL)[0])


def test_the_readme_agents_tour_runs_in_bash(tmp_path: Path) -> None:
    env = {**agent_env(), "BLACKBOARD_DIR": str(tmp_path / "board")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    Board.init(tmp_path / "board").close()
    tour = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", agents_tour()],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )
    assert tour.returncode == 0, (tour.stdout, tour.stderr)
    assert '"state":"accepted"' in tour.stdout and "summarize" in tour.stdout


# -- a board this process cannot write -------------------------------------------------------------

#: `blackboard ARGS` as user `uid` (root ignores permission bits); modules imported first, as that
#: user may not read this checkout.
AS_USER = """
import os, sys
import encodings.ascii, encodings.latin_1, encodings.utf_8, logging, pwd, socket, textwrap, shutil
import blackboard.agents, blackboard.cli.app, blackboard.cli.agents, blackboard.cli.commands, blackboard.core.seen
if sys.argv[1] != "-":
    uid = int(sys.argv[1])
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
sys.argv = ["blackboard", *sys.argv[2:]]
from blackboard.cli.app import main
main()
"""


def run_as(uid: int | None, board: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", AS_USER, "-" if uid is None else str(uid), "--board", str(board), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=agent_env(), check=False)


def test_a_read_with_an_identity_works_on_a_board_it_cannot_write(shared_dir: Path) -> None:
    """The sign of life is skipped where it cannot be written; a read still reads. A write fails."""
    uid = other_user()
    board = shared_dir / "board"
    with Board.init(board) as handle:
        handle.write("k", 1)
    ok(board, "--as", "atlas", "join")
    read_only_everywhere(board)
    read = run_as(uid, board, "--as", "atlas", "read", "k")
    assert (read.returncode, read.stdout, read.stderr) == (0, "1\n", "")
    listed = run_as(uid, board, "--as", "atlas", "who", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["name"] == "atlas", listed.stderr
    write = run_as(uid, board, "--as", "atlas", "write", "k", "2")
    assert write.returncode == 1 and "read-only" in write.stderr, write.stderr


def test_a_negative_number_is_a_body_and_an_unknown_option_a_usage_error(tmp_path: Path) -> None:
    """As `write k -5`: `send bob -4` sends -4; `send bob --nope` is exit 2, nothing sent."""
    board = Board.init(tmp_path / "board")
    with board.agent("bob"):
        pass
    sent = run(board.path, "--as", "a", "send", "bob", "-4")
    assert sent.returncode == 0, sent.stderr
    assert [m.body for m in board.agent("bob", join=False).inbox()] == [-4]
    bad = run(board.path, "--as", "a", "send", "bob", "--nope")
    assert bad.returncode == 2 and "No such option" in bad.stderr
    assert len(board.agent("bob", join=False).inbox()) == 1

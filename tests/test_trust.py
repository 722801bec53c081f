"""The trust layer (spec/TRUST.md): contracts refuse what they forbid and change nothing, signed
records verify and every kind of tampering is named, keys change only by their owner, and a board a
group shares stays the group's. Real files, real processes; tests named after the spec's sections."""

from __future__ import annotations

import grp
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # the reference implementation, to compare with
import pytest
from _workers import CTX, cli_env, command, log_lines, snapshot
from conftest import sealed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blackboard import CONTRACTS_KEY, Board, ContractViolation, InvalidValue, Unverified, trust
from blackboard.core.record import encode_record, signature_message
from blackboard.trust.keys import Ed25519Signer, HmacSigner

SPEC = (Path(__file__).parent.parent / "spec" / "TRUST.md").read_text()
VECTOR = json.loads((Path(__file__).parent.parent / "spec" / "examples" / "trust" / "vector.json").read_text())
ANSWER = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}


def cli(board: Board, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(board, *args), check=False, capture_output=True, text=True, timeout=60, env=cli_env(**env)
    )


def agent(board: Board, name: str, *, group: str | None = None) -> Board:
    """A handle acting as agent `name`, with a new key registered in the board and saved."""
    signer = trust.new_key(name, group=group)
    handle = Board.open(board.path, author=name, signer=signer)
    trust.register(handle, signer)
    trust.save_key(signer)
    return handle


def append_raw(board: Board, line: bytes) -> None:
    """What `echo >> log.jsonl` does (with a checksum a forger can compute: XXH3 is no secret)."""
    with open(board.path / "log.jsonl", "ab") as f:
        f.write(sealed(line.rstrip(b"\n")) + b"\n")


def last_line(board: Board) -> bytes:
    return log_lines(board.path)[-1]


def problems(board: Board) -> dict[int, str]:
    return {p.seq: p.reason for p in trust.verify(board).problems}


# -- 2. contracts ------------------------------------------------------------------------------------


def test_trust_2_a_value_that_breaks_the_schema_is_refused_naming_where_and_which_rule(board: Board) -> None:
    trust.set_contract(board, "results/", schema=ANSWER)
    with pytest.raises(ContractViolation) as caught:
        board.write("results/q1", {"answer": "forty-two"})
    err = caught.value
    assert (err.key, err.prefix, err.rule, err.path) == (
        "results/q1",
        "results/",
        "schema/properties/answer/type",
        "$.answer",
    )
    assert board.write("results/q1", {"answer": 42}).version == 1
    assert board.write("elsewhere/q1", {"answer": "anything"}).version == 1  # no contract applies there


def test_trust_2_a_refused_write_changes_no_byte_of_the_board(board: Board) -> None:
    trust.set_contract(board, "results/", schema=ANSWER, writers=["atlas"], max_bytes=64)
    board.write("results/q1", {"answer": 1}, author="atlas")
    board.close()
    before = snapshot(board.path)
    for args in (
        ["write", "results/q1", '{"answer": "x"}', "--author", "atlas"],  # schema
        ["write", "results/q2", '{"answer": 2}', "--author", "bob"],  # writers
        ["rm", "results/q1", "--author", "bob"],  # writers, on a delete
        ["write", "results/q3", json.dumps({"answer": 3, "pad": "x" * 80}), "--author", "atlas"],  # max_bytes
        [
            "txn",
            json.dumps(
                {
                    "ops": [
                        {"op": "put", "key": "free/a", "value": 1},
                        {"op": "put", "key": "results/q4", "value": {"answer": "no"}},
                    ]
                }
            ),
            "--author",
            "atlas",
        ],  # one change of a transaction: the whole record
    ):
        proc = cli(board, *args)
        assert proc.returncode == 12, (args, proc.stderr)
        assert proc.stderr.startswith("blackboard: error: refused by the contract on 'results/'"), proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert snapshot(board.path) == before


def test_trust_2_writers_and_max_bytes(board: Board) -> None:
    trust.set_contract(board, "plan/", writers=["planner"], max_bytes=10)
    with pytest.raises(ContractViolation, match="'tester' is not one of its writers") as caught:
        board.write("plan/a", 1)
    assert caught.value.rule == "writers"
    board.write("plan/a", 1, author="planner")
    with pytest.raises(ContractViolation, match="over 10") as caught:
        board.write("plan/a", "x" * 20, author="planner")
    assert caught.value.rule == "max_bytes"
    with pytest.raises(ContractViolation):
        board.delete("plan/a")
    trust.set_contract(board, "plan/", writers=[])
    with pytest.raises(ContractViolation, match="none"):
        board.write("plan/b", 1, author="planner")


def test_trust_2_every_contract_whose_prefix_applies_is_checked(board: Board) -> None:
    trust.set_contract(board, "", max_bytes=100)
    trust.set_contract(board, "a/", schema={"type": "integer"})
    with pytest.raises(ContractViolation, match="not of type"):
        board.write("a/b", "text")
    with pytest.raises(ContractViolation, match="over 100"):
        board.write("a/b", "x" * 150)  # the shorter prefix's contract is checked first
    assert board.write("a/b", 5).version == 1


def test_trust_2_a_bad_contract_is_refused_and_changes_nothing(board: Board) -> None:
    for schema, why in (
        ({"type": "nope"}, "not a valid JSON Schema"),
        ({"$ref": "http://example.com/schema.json"}, "self-contained"),
    ):
        with pytest.raises(ContractViolation, match=why):
            trust.set_contract(board, "x/", schema=schema)
    with pytest.raises(ContractViolation, match="unknown field"):
        board.write(CONTRACTS_KEY, {"x/": {"schemaa": {}}})
    assert board.get(CONTRACTS_KEY) is None and board.last_seq == 0


def test_trust_2_contracts_written_past_the_library_refuse_every_write_but_their_fix(board: Board) -> None:
    board.write("x/a", 1)
    seq = board.last_seq + 1
    append_raw(
        board,
        b'{"seq":%d,"op":"put","key":"_board/contracts","value":{"x/":"junk"},"version":1,"author":"m","ts":"2026-12-02T09:00:00.000000Z"}'
        % seq,
    )
    with pytest.raises(ContractViolation, match="unusable"):
        board.write("y/a", 1)
    with pytest.raises(InvalidValue, match="unusable"):
        board.contracts()
    trust.set_contract(board, "x/", max_bytes=5)  # the way out: replace them
    assert board.write("y/a", 1).seq == seq + 2


def test_trust_2_a_contract_change_is_a_logged_versioned_write(board: Board) -> None:
    first = trust.set_contract(board, "a/", max_bytes=5)
    second = trust.set_contract(board, "b/", signed=True)
    assert (first.version, second.version) == (1, 2)
    assert set(board.contracts()) == {"a/", "b/"}
    assert [e.seq for e in board.history(CONTRACTS_KEY)] == [first.seq, second.seq]
    trust.remove_contract(board, "a/")
    assert set(board.contracts()) == {"b/"}


def _set_contracts(path: str, prefixes: list[str]) -> None:
    with Board.open(path) as handle:
        for prefix in prefixes:
            trust.set_contract(handle, prefix, max_bytes=1000)


def test_trust_2_concurrent_contract_changes_all_land(board: Board) -> None:
    """Two processes change the contracts of different prefixes at once: compare-and-set retries, so
    neither change is lost."""
    procs = [
        CTX.Process(target=_set_contracts, args=(str(board.path), [f"p{i}/{j}/" for j in range(20)])) for i in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert set(board.contracts()) == {f"p{i}/{j}/" for i in range(2) for j in range(20)}


def test_trust_2_a_contract_another_process_set_applies_to_the_next_write(board: Board) -> None:
    """Checked under the writer lock against the log's end: a long-lived handle needs no reopening."""
    board.write("results/a", "free")
    proc = CTX.Process(target=_set_contracts, args=(str(board.path), ["results/"]))
    proc.start()
    proc.join(60)
    trust.set_contract(Board.open(board.path), "results/", schema=ANSWER)
    with pytest.raises(ContractViolation):
        board.write("results/a", "not an object")


def test_trust_2_retention_keeps_the_prefix_history_through_compaction(board: Board) -> None:
    trust.set_contract(board, "audit/", retention=3600)
    for i in range(5):
        board.write("audit/x", i)
        board.write("scratch/x", i)
    board.compact()
    assert [e.value for e in board.history("audit/x")] == [0, 1, 2, 3, 4]
    assert [e.value for e in board.history("scratch/x")] == [4]


def test_trust_2_the_envelope_contract_lets_messages_through_and_nothing_else(board: Board) -> None:
    trust.set_contract(board, "inbox/", schema=trust.load_schema("builtin:envelope"))
    with board.agent("atlas") as atlas, board.agent("bob") as bob:
        atlas.send("bob", {"q": 1})
        assert [m.body for m in bob.inbox()] == [{"q": 1}]
    junk = {"id": "m-0123456789ab", "to": "bob", "kind": "message", "body": 1}
    with pytest.raises(ContractViolation, match='"from" is a required property'):
        board.write("inbox/bob/m-0123456789ab", junk)


# JSON Schemas of a few keywords, and values: two independent implementations must agree.
_types = st.sampled_from(["integer", "number", "string", "boolean", "null", "array", "object"])
_leaf = st.one_of(
    st.builds(lambda t: {"type": t}, _types),
    st.builds(lambda n: {"type": "integer", "minimum": n}, st.integers(-5, 5)),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 4)),
    st.builds(lambda v: {"enum": v}, st.lists(st.integers(-2, 2) | st.text(max_size=2), min_size=1, max_size=3)),
)
_schemas = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(
            lambda p, r: {"type": "object", "properties": p, "required": r[: len(p)] and list(p)[: len(r)]},
            st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
            st.lists(st.just(0), max_size=2),
        ),
        st.builds(lambda i: {"type": "array", "items": i}, inner),
        st.builds(lambda a: {"anyOf": a}, st.lists(inner, min_size=1, max_size=2)),
    ),
    max_leaves=5,
)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(-10, 10, allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcd"), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=_schemas, value=_values)
def test_trust_2_the_board_accepts_exactly_what_the_schema_allows(board: Board, schema: Any, value: Any) -> None:
    """Hypothesis over schemas and values: a write lands iff the reference Python implementation
    (jsonschema) says the value is valid; a refused one leaves the key as it was."""
    trust.set_contract(board, "h/", schema=schema)
    before = board.get("h/k")
    valid = jsonschema.Draft202012Validator(schema).is_valid(value)
    try:
        board.write("h/k", value)
        landed = True
    except ContractViolation:
        landed = False
    assert landed == valid, (schema, value)
    if not landed:
        assert board.get("h/k") == before


def test_trust_2_cli_contract_set_show_rm(board: Board, tmp_path: Path) -> None:
    schema = tmp_path / "answer.json"
    schema.write_text(json.dumps(ANSWER))
    proc = cli(board, "contract", "set", "results/", "--schema", str(schema), "--writers", "atlas,bob", "--signed")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["contract"] == {"schema": ANSWER, "writers": ["atlas", "bob"], "signed": True}
    shown = json.loads(cli(board, "contract", "show", "--json").stdout)
    assert shown["contracts"] == {"results/": {"schema": ANSWER, "writers": ["atlas", "bob"], "signed": True}}
    assert "results/  atlas,bob" in cli(board, "contract", "show").stdout
    bad = cli(board, "contract", "set", "x/", "--schema", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot read the schema" in bad.stderr
    assert cli(board, "contract", "rm", "results/").returncode == 0
    missing = cli(board, "contract", "rm", "results/")
    assert missing.returncode == 3, missing.stderr
    assert json.loads(cli(board, "contract", "show", "--json").stdout)["contracts"] == {}


# -- 3. keys -----------------------------------------------------------------------------------------


def test_trust_3_an_agents_keys_change_only_by_a_write_it_signs(board: Board, keys_dir: Path) -> None:
    atlas = agent(board, "atlas")
    impostor = trust.new_key("atlas")  # another key of the same name, held by someone else
    with pytest.raises(ContractViolation, match="atlas's registered keys change only by a write atlas signs"):
        trust.register(Board.open(board.path, author="atlas", signer=impostor), impostor)
    with pytest.raises(ContractViolation):
        board.delete("_board/keys/atlas", author="atlas")  # unsigned
    newer = trust.new_key("atlas")
    assert trust.register(atlas, newer) == 2  # signed by the key atlas had: a rotation
    assert [k["kid"] for k in trust.registered(board, "atlas")] == [atlas.signer.kid, newer.kid]  # type: ignore[union-attr]
    atlas.close()


def test_trust_3_keygen_makes_a_private_key_file_and_registers_it(board: Board, keys_dir: Path) -> None:
    proc = cli(board, "keygen", "--as", "atlas")
    assert proc.returncode == 0, proc.stderr
    made = json.loads(proc.stdout)
    key_file = Path(made["key_file"])
    assert key_file.parent == keys_dir and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert made["created"] and trust.registered(board, "atlas")[0]["kid"] == made["kid"]
    again = json.loads(cli(board, "keygen", "--as", "atlas").stdout)
    assert not again["created"] and again["kid"] == made["kid"]
    # Every write as atlas is signed from now on, and verifies.
    assert cli(board, "--as", "atlas", "write", "notes/a", "1").returncode == 0
    assert trust.verify(board).verified == 2  # the registration (self-signed) and the write
    rotated = json.loads(cli(board, "keygen", "--as", "atlas", "--rotate").stdout)
    assert rotated["kid"] != made["kid"] and rotated["registered_version"] == 2
    assert cli(board, "--as", "atlas", "write", "notes/a", "2").returncode == 0
    report = trust.verify(board)
    assert report.ok and report.verified == 4, report  # records of the old key still verify
    assert cli(board, "keygen").returncode == 2  # who? a usage error


# -- 4. signed records -------------------------------------------------------------------------------


def test_trust_4_the_test_vector() -> None:
    signer = Ed25519Signer("atlas", bytes.fromhex(VECTOR["seed_hex"]))
    assert signer.kid == VECTOR["kid"] and signer.registration()["public"] == VECTOR["public"]
    from blackboard.core.record import signature_message, signed_bytes

    line = VECTOR["line"].encode()
    sig = json.loads(line)["sig"]
    message = signature_message(VECTOR["board_id"], signed_bytes(line, sig, sealed=True) or b"")
    assert signer.sign(message) == sig  # Ed25519 is deterministic
    assert HmacSigner("atlas", "g", bytes.fromhex(VECTOR["hmac_secret_hex"])).sign(message) == VECTOR["hmac_sig"]
    assert VECTOR["line"] in SPEC and VECTOR["hmac_sig"] in SPEC


def test_trust_4_a_signed_record_verifies_and_every_tampering_is_named(board: Board) -> None:
    atlas = agent(board, "atlas")
    atlas.write("plan/a", {"step": 1})
    good = last_line(board)
    assert trust.verify(board).ok and trust.read_verified(board, "plan/a") == {"step": 1}
    rec = json.loads(good)

    def forged(**change: Any) -> bytes:
        body = {k: v for k, v in rec.items() if k != "xxh3"} | change
        return json.dumps(body, separators=(",", ":")).encode()

    seq = board.last_seq
    cases = {
        "value": forged(seq=seq + 1, version=2, value={"step": 2}),
        "copied to another key": forged(seq=seq + 2, key="plan/b"),
        "replayed at a later seq": forged(seq=seq + 3, version=3),
    }
    for line in cases.values():
        append_raw(board, line)
    found = problems(board)
    assert set(found) == {seq + 1, seq + 2, seq + 3}, found
    assert all("does not match" in reason for reason in found.values()), found
    with pytest.raises(Unverified, match="does not match"):
        trust.read_verified(board, "plan/a")
    # A forged author: bob's name on a record atlas signed (bob registered no key).
    append_raw(board, forged(seq=seq + 4, key="plan/c", version=1, author="bob"))
    assert "'bob' has no registered key" in problems(board)[seq + 4]
    # An unsigned record claiming atlas, who signs everything since registering.
    unsigned = {k: v for k, v in rec.items() if k not in ("xxh3", "sig")} | {"seq": seq + 5, "key": "plan/d"}
    append_raw(board, json.dumps(unsigned, separators=(",", ":")).encode())
    assert "'atlas' registered a key before it" in problems(board)[seq + 5]
    atlas.close()


class _Claiming:
    """Signs as `name` with `key`, but names the key id `kid` (another agent's): a forger's signer."""

    def __init__(self, name: str, key: Ed25519Signer | HmacSigner, kid: str) -> None:
        self.name, self.kid, self._key = name, kid, key

    def sign(self, message: bytes) -> str:
        return f"ed25519:{self.kid}:" + self._key.sign(message).rsplit(":", 1)[1]


def test_trust_4_a_registry_entry_that_claims_another_keys_id_vouches_for_nothing(board: Board) -> None:
    atlas = agent(board, "atlas")
    kid = atlas.signer.kid  # type: ignore[union-attr]
    forger = trust.new_key("mallory")
    # mallory's first registration (taken on trust) lists its own public key under atlas's key id.
    board.write("_board/keys/mallory", {"agent": "mallory", "keys": [{**forger.registration(), "kid": kid}]})
    Board.open(board.path, author="mallory", signer=_Claiming("mallory", forger, kid)).write("notes/m", 1)
    Board.open(board.path, author="atlas", signer=_Claiming("atlas", forger, kid)).write("notes/a", 1)
    found = problems(board)
    seq = board.last_seq
    assert "has another id" in found[seq - 1], found  # mallory's record: its entry's kid is not its key's
    assert "does not match" in found[seq], found  # the forgery as atlas: checked with atlas's own key
    atlas.close()


def test_trust_4_a_key_added_past_the_board_vouches_for_nothing(board: Board) -> None:
    """An `echo >>` that adds a forger's key to atlas's entry, signed by that key: a --verified reader
    trusts neither it nor what that key signs, and verify names both."""
    atlas = agent(board, "atlas")
    atlas.write("plan/a", 1)
    forger = trust.new_key("atlas")
    entry = board.get("_board/keys/atlas")
    assert entry is not None
    forged_keys = {"agent": "atlas", "keys": [*entry.value["keys"], forger.registration()]}
    # As a process past the board would: lines made and signed by hand, appended with their checksums.
    seq = board.last_seq
    for n, (key, value, version) in enumerate((("_board/keys/atlas", forged_keys, 2), ("plan/a", 2, 2)), 1):
        body = encode_record(
            seq + n,
            "put",
            key,
            json.dumps(value).encode(),
            version,
            "atlas",
            "2026-12-02T09:00:00.000000Z",
            sealed=False,
            sign=lambda b: forger.sign(signature_message(board.id, b)),
        )
        append_raw(board, body)
    with pytest.raises(Unverified, match="not signed by a key atlas had before"):
        trust.read_verified(board, "plan/a")
    found = problems(board)
    seq = board.last_seq
    assert "did not sign with a key it had" in found[seq - 1] and "does not match" not in found[seq - 1], found
    assert seq in found, found
    atlas.close()


def test_trust_4_a_signed_record_copied_into_another_board_does_not_verify(tmp_path: Path) -> None:
    one, two = Board.init(tmp_path / "one"), Board.init(tmp_path / "two")
    a1 = agent(one, "atlas")
    a2 = Board.open(two.path, author="atlas", signer=a1.signer)
    trust.register(a2, a1.signer)  # type: ignore[arg-type]  # the same key in both boards
    a1.write("x", 1)
    copied = last_line(one)
    assert json.loads(copied)["seq"] == two.last_seq + 1  # it fits the other board's log exactly
    append_raw(two, copied)
    assert trust.verify(one).ok
    assert "does not match" in problems(two)[two.last_seq]


def test_trust_4_a_signed_contract_refuses_unsigned_writes_and_verify_names_those_written_past_it(board: Board) -> None:
    atlas = agent(board, "atlas")
    trust.set_contract(board, "plan/", signed=True)
    with pytest.raises(ContractViolation, match="signed") as caught:
        board.write("plan/a", 1, author="atlas")  # this handle holds no key
    assert caught.value.rule == "signed"
    atlas.write("plan/a", 1)
    seq = board.last_seq + 1
    append_raw(
        board,
        b'{"seq":%d,"op":"put","key":"plan/a","value":2,"version":2,"author":"carol","ts":"2026-12-02T09:00:00.000000Z"}'
        % seq,
    )
    assert problems(board) == {seq: "unsigned under 'plan/', whose contract requires signatures"}
    proc = cli(board, "verify")
    assert proc.returncode == 12 and f"seq {seq}  plan/a  by carol: unsigned" in proc.stdout
    assert json.loads(cli(board, "verify", "--json").stdout)["problems"][0]["seq"] == seq
    assert cli(board, "verify", "elsewhere/").returncode == 0
    atlas.close()


def test_trust_4_hmac_signatures_verify_for_holders_of_the_group_secret(board: Board, tmp_path: Path) -> None:
    atlas = agent(board, "atlas", group="analysts")
    atlas.write("notes/a", 1)
    assert trust.verify(board).ok
    elsewhere = tmp_path / "no-secret"
    elsewhere.mkdir()
    unchecked = trust.verify(board, directory=elsewhere).problems
    assert {p.status for p in unchecked} == {"unchecked"} and "secret is not here" in unchecked[0].reason
    atlas.close()


def test_trust_4_read_and_watch_verified_from_the_cli(board: Board) -> None:
    atlas = agent(board, "atlas")
    atlas.write("plan/a", {"step": 1})
    rec = json.loads(last_line(board))
    assert json.loads(cli(board, "read", "plan/a", "--verified").stdout) == {"step": 1}
    board.write("plan/b", "unsigned")
    proc = cli(board, "read", "plan/b", "--verified")
    assert proc.returncode == 12 and "is not verified: no signature" in proc.stderr and proc.stderr.count("\n") == 1
    forged = {k: v for k, v in rec.items() if k != "xxh3"} | {
        "seq": board.last_seq + 1,
        "value": {"step": 9},
        "version": 2,
    }
    append_raw(board, json.dumps(forged, separators=(",", ":")).encode())
    atlas.write("plan/c", {"step": 3})
    watch = cli(board, "watch", "plan/", "--since", "0", "--count", "2", "--timeout", "20", "--verified")
    assert watch.returncode == 0, watch.stderr
    assert [json.loads(line)["key"] for line in watch.stdout.splitlines()] == ["plan/a", "plan/c"]
    assert watch.stderr.count("left out: seq") == 2  # the unsigned write and the forgery, each named
    atlas.close()


def _sign_forever(path: str, keys: str, ready: Any) -> None:
    os.environ["BLACKBOARD_KEYS"] = keys
    handle = Board.open(path, author="atlas", signer=trust.load_signer("atlas"))
    ready.set()
    i = 0
    while True:
        handle.write(f"k/{i % 10}", {"i": i})
        i += 1


def test_trust_4_a_signer_killed_at_any_moment_leaves_only_records_that_verify(board: Board, keys_dir: Path) -> None:
    agent(board, "atlas").close()
    for _ in range(3):
        ready = CTX.Event()
        proc = CTX.Process(target=_sign_forever, args=(str(board.path), str(keys_dir), ready))
        proc.start()
        assert ready.wait(60)
        target = board.last_seq + 200
        while board.last_seq < target:  # wait for progress, however fast the machine is
            time.sleep(0.01)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    board.write("after", 1)  # a writer after the kills (cuts a torn tail, if one was left)
    report = trust.verify(board, "k/")
    assert report.ok and report.verified == report.checked >= 600, report


# -- 6. shared boards --------------------------------------------------------------------------------


def _work_with_umask(path: str) -> None:
    os.umask(0o077)  # the least friendly umask: without the default ACL, nothing would be shared
    with Board.open(path, author="w") as handle:
        for i in range(50):
            handle.write(f"deep/tree/{i % 5}/k{i % 10}", i)  # superseded: the archive gets them
        with handle.watch("deep/", since=0, cursor="c1", timeout=0.5) as watcher:
            for _ in watcher:
                break
        handle.compact(archive=True)
        handle.write("after/compact", 1)


def test_trust_6_a_group_board_keeps_its_modes_for_files_made_later(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    path = tmp_path / "shared"
    proc = subprocess.run(
        [sys.executable, "-m", "blackboard", "init", "--group", group, "--board", str(path)],
        check=False,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["group"] == group
    child = CTX.Process(target=_work_with_umask, args=(str(path),))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    seen = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames:
            st_ = os.stat(os.path.join(dirpath, name))
            assert stat.S_IMODE(st_.st_mode) == 0o2770, (dirpath, name, oct(st_.st_mode))
            assert st_.st_gid == os.getgid()
        for name in filenames:
            st_ = os.stat(os.path.join(dirpath, name))
            assert stat.S_IMODE(st_.st_mode) & 0o777 == 0o660, (dirpath, name, oct(st_.st_mode))
            assert st_.st_gid == os.getgid()
            seen += 1
    assert seen > 15  # entry files, the new log, the cursor, the checkpoint, the archive segment...
    assert (path / "archive").is_dir() and any((path / "archive").iterdir())


def test_trust_6_an_unknown_group_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "blackboard", "init", "--group", "no-such-group-x", "--board", str(tmp_path / "b")],
        check=False,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 2 and "no such group: 'no-such-group-x'" in proc.stderr
    assert not (tmp_path / "b").exists()


def test_trust_readme_shell_block_runs_verbatim(tmp_path: Path) -> None:
    """The README's trust tour, pasted into bash -e (the group made the current user's own)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("### Contracts and signed writes")[1].split("```sh\n")[1].split("```")[0]
    block = block.replace("--group staff", f"--group {grp.getgrgid(os.getgid()).gr_name}")
    env = cli_env(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        ["bash", "-e", "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.splitlines().count("12") == 2, proc.stdout  # the two refused writes, nothing written
    assert '"answer" is a required property' in proc.stderr and "not one of its writers" in proc.stderr
    assert "0 problems" in proc.stdout and "inbox/" in proc.stdout
    with Board.open(tmp_path / "team") as team:
        assert sorted(team.keys("results/")) == ["results/q1"]


def _join_group(keys: str, name: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    out.put(trust.new_key(name, group="analysts", directory=Path(keys)).kid)


def test_trust_3_members_making_a_group_secret_at_once_all_sign_with_the_one_kept(tmp_path: Path) -> None:
    """Two processes join a group whose secret nobody holds yet, at the same moment: one secret is
    made, and both sign with it (a secret replaced under the first would make its signatures fail)."""
    for round_ in range(5):
        keys = tmp_path / f"keys{round_}"
        barrier, out = CTX.Barrier(2), CTX.Queue()
        procs = [CTX.Process(target=_join_group, args=(str(keys), n, barrier, out)) for n in ("atlas", "bob")]
        for proc in procs:
            proc.start()
        kids = {out.get(timeout=60), out.get(timeout=60)}
        for proc in procs:
            proc.join(60)
        assert kids == {HmacSigner("x", "analysts", trust.keys.read_secret("analysts", keys)).kid}

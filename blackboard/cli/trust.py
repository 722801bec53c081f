"""`contract`, `keygen`, `verify`: the trust layer (spec/TRUST.md) from a shell. Translation only:
the rules live in `blackboard.trust` and the core enforces them."""

from __future__ import annotations

from pathlib import Path

import click

from .base import (
    agent_option,
    board_option,
    complete_keys,
    emit_json,
    group_json,
    json_noop_option,
    open_board,
    require_agent,
    subcommand,
)


@click.group()
@click.option("--json", "as_json", is_flag=True, help="JSON output from the subcommand (as its own --json).")
def contract(as_json: bool) -> None:
    """The board's contracts per key prefix: set, show, rm.

    Specified in spec/TRUST.md 2.
    A contract says what values under PREFIX must look like (a JSON Schema), who may write there,
    how large a value may be, whether writes there must be signed, and how long compaction keeps
    the history of its keys. Every writer checks it before it appends: a refused write changes
    nothing and exits 12, naming the rule.
    """


def _writers(value: str | None) -> list[str] | None:
    if value is None:
        return None
    from ..agents.names import validate_agent

    return [validate_agent(name.strip()) for name in value.split(",") if name.strip()]


@subcommand(contract, "set")
@board_option
@click.argument("prefix", shell_complete=complete_keys)
@click.option("--schema", metavar="FILE", help="A JSON Schema file, or builtin:envelope (agents' messages).")
@click.option("--writers", metavar="A,B", help="Only these agents may write under PREFIX ('' : nobody).")
@click.option("--max-bytes", type=click.IntRange(min=1), metavar="N", help="Largest value, in bytes of JSON.")
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Compaction keeps the superseded history of PREFIX's keys this long.",
)
@click.option("--signed", is_flag=True, help="Refuse writes not signed by their author (blackboard keygen).")
@json_noop_option
def contract_set(
    board_dir: Path,
    prefix: str,
    schema: str | None,
    writers: str | None,
    max_bytes: int | None,
    retention: float | None,
    signed: bool,
) -> None:
    """Set (replace) the contract on PREFIX: one logged, versioned write of _board/contracts.
    Prints the contract, the contracts' new version and seq."""
    from ..trust.contracts import load_schema, set_contract

    loaded = None if schema is None else load_schema(schema)
    with open_board(board_dir) as board:
        entry = set_contract(
            board,
            prefix,
            schema=loaded,
            writers=_writers(writers),
            max_bytes=max_bytes,
            retention=retention,
            signed=signed,
        )
    emit_json({"prefix": prefix, "contract": entry.value[prefix], "version": entry.version, "seq": entry.seq})


@subcommand(contract, "show")
@board_option
@click.argument("prefix", required=False, shell_complete=complete_keys)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the contracts, their version and seq.")
def contract_show(board_dir: Path, prefix: str | None, as_json: bool) -> None:
    """The contracts (those that apply to keys starting with PREFIX, if given), by prefix."""
    from .. import CONTRACTS_KEY

    with open_board(board_dir, read_only=True) as board:
        contracts = board.contracts()
        entry = board.get(CONTRACTS_KEY)
    shown = {p: c for p, c in contracts.items() if prefix is None or prefix.startswith(p) or p.startswith(prefix)}
    if group_json(contract, as_json):
        emit_json(
            {
                "contracts": {p: c.as_dict() for p, c in sorted(shown.items())},
                "version": entry.version if entry else 0,
                "seq": entry.seq if entry else 0,
            }
        )
        return
    from .render import cell, table

    rows = [["prefix", "writers", "max_bytes", "retention", "signed", "schema"]]
    for p, c in sorted(shown.items()):
        rows.append(
            [
                p or "''",
                "-" if c.writers is None else ",".join(c.writers) or "(nobody)",
                "-" if c.max_bytes is None else str(c.max_bytes),
                "-" if c.retention is None else f"{c.retention:g}s",
                "yes" if c.signed else "no",
                "-" if c.schema is None else cell(c.schema),
            ]
        )
    if len(rows) > 1:
        table(rows)


@subcommand(contract, "rm")
@board_option
@click.argument("prefix", shell_complete=complete_keys)
@json_noop_option
def contract_rm(board_dir: Path, prefix: str) -> None:
    """Remove the contract on PREFIX (exit 3 if it has none). Prints the contracts' new version and seq."""
    from ..trust.contracts import remove_contract

    with open_board(board_dir) as board:
        entry = remove_contract(board, prefix)
    emit_json({"prefix": prefix, "removed": True, "version": entry.version, "seq": entry.seq})


@click.command()
@board_option
@agent_option
@click.option("--hmac", "group", metavar="GROUP", help="Sign with GROUP's shared secret (HMAC) instead of Ed25519.")
@click.option("--rotate", is_flag=True, help="Replace NAME's key: the new one is registered by a write the old signs.")
@json_noop_option
def keygen(board_dir: Path, agent: str | None, group: str | None, rotate: bool) -> None:
    """Create agent NAME's signing key and register its public half in the board.

    A key NAME has already is registered in this board too, unless --rotate replaces it.
    The key file is kept outside the board, readable by you only ($BLACKBOARD_KEYS, else
    ~/.config/blackboard/keys/NAME.key); from then on every write you make as NAME (--as, or
    BLACKBOARD_AGENT, or --author NAME) is signed. With --hmac GROUP, the group's secret
    (GROUP.secret beside it, made if absent) is what members copy to each other.
    """
    from ..trust import keys

    name = require_agent(agent)
    held = keys.has_key(name)
    # An existing key is registered in this board too (one key serves every board) unless --rotate.
    current = keys.load_signer(name) if held else None  # what signs the registration of another key
    new = keys.new_key(name, group=group) if current is None or rotate else current
    created = new is not current
    with open_board(board_dir, author=name) as board:
        board.signer = current or new
        version = keys.register(board, new)
    # Saved after it is registered: a registration that fails leaves the old key in place.
    path = keys.save_key(new) if created else keys.key_path(name)
    emit_json(
        {
            "agent": name,
            "alg": new.alg,
            "kid": new.kid,
            "created": created,
            "key_file": str(path),
            "registered_version": version,
        }
    )


@click.command()
@board_option
@click.argument("prefix", default="", shell_complete=complete_keys)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: counts and every problem.")
def verify(board_dir: Path, prefix: str, as_json: bool) -> None:
    """Check the signature of every record under PREFIX; name each bad one (exit 12).

    A problem is a signature that does not verify (a changed byte, a record moved to another key or
    seq, a forged author) or an unsigned record where one is due (a `signed` contract, or an agent
    that registered a key before it).
    """
    from ..trust.signatures import verify as check

    with open_board(board_dir, read_only=True) as board:
        report = check(board, prefix)
    if as_json:
        emit_json(report.as_dict())
    else:
        for p in report.problems:
            click.echo(f"seq {p.seq}  {', '.join(p.keys)}  by {p.author}: {p.status}: {p.reason}")
        click.echo(
            f"{report.checked} records checked: {report.verified} verified, {report.unsigned} unsigned, "
            f"{len(report.problems)} problems"
        )
    if not report.ok:
        raise SystemExit(12)

"""`blackboard txn`: several puts and deletes as one record, from a JSON document (see --help)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .base import author_option, board_option, emit_json, json_noop_option, open_board

TXN_EXAMPLE = '{"expect": {"a": 1}, "ops": [{"op": "put", "key": "a", "value": 2}, {"op": "delete", "key": "b"}]}'


@click.command(
    epilog=f"""\b
DOC, a JSON object:
  expect           optional {{KEY: VERSION}}: commit only if each KEY is at VERSION (0: absent)
  ops              1 or more {{"op": "put", "key": K, "value": V}} / {{"op": "delete", "key": K}}
  idempotency_key  optional: a retry with the same one writes nothing and prints the first result
Example:
  blackboard txn '{TXN_EXAMPLE}'"""
)
@board_option
@author_option
@click.argument("doc", required=False, metavar="[DOC]")
@json_noop_option
def txn(board_dir: Path, author: str | None, doc: str | None) -> None:
    """Apply several puts and deletes as ONE record with one seq: all of them or none.

    DOC is the JSON document below, or '-' (or nothing) to read it from stdin. Exit 4 if an
    expected version does not hold, 3 if a deleted key has no value: nothing is written then.
    Prints the seq and each change's key, version and seq.
    """
    from .txn_doc import Put, parse_document  # pydantic: imported only by this command

    document = parse_document(sys.stdin.read() if doc is None or doc == "-" else doc)
    with (
        open_board(board_dir, author=author) as board,
        board.transaction(idempotency_key=document.idempotency_key) as tx,
    ):
        for key, version in document.expect.items():
            tx.expect(key, version)
        for op in document.ops:
            if isinstance(op, Put):
                tx.write(op.key, op.value)
            else:
                tx.delete(op.key)
    emit_json({"seq": tx.seq, "entries": [{"key": e.key, "version": e.version, "seq": e.seq} for e in tx.entries]})

"""trust: what the trust layer (spec/TRUST.md) costs a writer and a verifier.

- **writes**: in the bench process, round after round (`rounds`), a fresh board per variant in a
  rotating order, each timed over `writes` `board.write(f"results/{i % 1000}", {"answer": i, "note":
  NOTE})` calls by author `atlas` after `WARMUP` untimed ones; microseconds per write = seconds /
  writes (`close()` is not timed: the entry files' flush). Variants: a plain write; under a contract
  on `results/` with `SCHEMA`; signed with an Ed25519 key registered by `trust.register` (no
  contract); signed and validated (the schema contract with `signed=True`, the key registered);
  the same with an HMAC key (a group secret in a temp keys directory). Every board is checked after
  its writes: `trust.verify(board, "results/")` must find every record (verified if signed, unsigned
  if not) and no problem. The column is the plain write of the same round; target: a signed,
  validated write costs at most 2x a plain one.
- **verify**: that `trust.verify(board, "results/")` call, timed, on the plain board (unsigned
  records), the Ed25519 and the HMAC signed-and-validated boards; records checked per second.
- **parts**: where a signed, validated write's extra time goes, each alone over `writes` calls:
  `signer.sign(message)` (Ed25519 and HMAC) of one record's signed message, and what the contract
  check does per value: `codec.decode` of the value's JSON + the compiled schema's `is_valid`.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench import Bench, Filesystem
from _report import Row, Target
from _sections import median, rotated, section

AUTHOR, PREFIX, KEYS, WARMUP = "atlas", "results/", 1000, 200
NOTE = "checked against the reference run; within tolerance"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["answer", "note"],
    "properties": {"answer": {"type": "integer"}, "note": {"type": "string", "maxLength": 200}},
    "additionalProperties": False,
}
PLAIN, SCHEMA_ONLY, SIGNED, SIGNED_VALID, HMAC_VALID = (
    "plain write",
    "schema contract",
    "Ed25519-signed",
    "Ed25519-signed + schema, signed=True",
    "HMAC-signed + schema, signed=True",
)
VARIANTS = (PLAIN, SCHEMA_ONLY, SIGNED, SIGNED_VALID, HMAC_VALID)
VERIFIED = {PLAIN: "unsigned records", SIGNED_VALID: "Ed25519-signed records", HMAC_VALID: "HMAC-signed records"}
TARGET = Target(2.0, PLAIN, inclusive=True)


@dataclass(frozen=True)
class TrustSizes:
    writes: int = 20_000  # timed writes per board (and records verified per verify)
    rounds: int = 5  # boards of each variant, in a rotating order

    @classmethod
    def quick(cls) -> TrustSizes:
        return cls(writes=3_000, rounds=2)


#: Set by run.py from --quick.
SIZES = TrustSizes()


@dataclass
class Result:
    write_s: float
    verify_s: float
    checked: int


def _value(i: int) -> dict[str, Any]:
    return {"answer": i, "note": NOTE}


def _variant(root: Path, variant: str, writes: int, keys_dir: Path) -> Result:
    """One fresh board of `variant`: `writes` timed writes, then a timed verify (checked)."""
    from blackboard import Board, trust

    path = root / "board"
    Board.init(path, author=AUTHOR).close()
    signer: Any = None
    if variant in (SIGNED, SIGNED_VALID):
        signer = trust.new_key(AUTHOR)
    elif variant == HMAC_VALID:
        signer = trust.new_key(AUTHOR, group="g", directory=keys_dir)
    board = Board.open(path, author=AUTHOR, signer=signer)
    try:
        if signer is not None:
            trust.register(board, signer)
        if variant not in (PLAIN, SIGNED):
            trust.set_contract(board, PREFIX, schema=SCHEMA, signed=variant != SCHEMA_ONLY)
        for i in range(WARMUP):
            board.write(f"{PREFIX}{i % KEYS}", _value(i))
        t0 = time.perf_counter()
        for i in range(writes):
            board.write(f"{PREFIX}{i % KEYS}", _value(i))
        write_s = time.perf_counter() - t0
        board.contracts()  # the index up to date before the verify's clock starts
        t0 = time.perf_counter()
        report = trust.verify(board, PREFIX, directory=keys_dir)
        verify_s = time.perf_counter() - t0
    finally:
        board.close()
    total = WARMUP + writes
    good, unsigned = (total, 0) if signer is not None else (0, total)
    if (report.checked, report.verified, report.unsigned) != (total, good, unsigned) or not report.ok:
        raise RuntimeError(
            f"verify found {report.checked} records, {report.verified} verified, {report.unsigned} unsigned,"
            f" {len(report.problems)} problem(s) (e.g. {report.problems[:1]}); expected {total}, {good}, {unsigned}"
        )
    return Result(write_s, verify_s, report.checked)


def _per_call(n: int, fn: Callable[[int], object]) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n * 1e6


def _keep(into: list[bytes]) -> Callable[[bytes], str]:
    def sign(body: bytes) -> str:
        into.append(body)
        return "-"

    return sign


def _parts(n: int, keys_dir: Path) -> dict[str, float]:
    """Microseconds per call of what a signed, validated write adds, each alone."""
    from blackboard import trust
    from blackboard.core import codec
    from blackboard.core.record import encode_record, signature_message
    from blackboard.core.rules import compile_schema

    # One record's signed message as the writer makes it: the line's bytes before `,"sig":`.
    bodies: list[bytes] = []
    value_json = codec.dumps(_value(20_001))
    encode_record(
        20_001, "put", f"{PREFIX}1", value_json, 21, AUTHOR, "2026-12-02T09:00:00.000000Z", sign=_keep(bodies)
    )
    message = signature_message("4c1f5638752742e3", bodies[0])
    ed, mac = trust.new_key(AUTHOR), trust.new_key(AUTHOR, group="g", directory=keys_dir)
    validator = compile_schema(PREFIX, SCHEMA)
    raw = codec.dumps(_value(1))

    def validate(_: int) -> None:
        if not validator.is_valid(codec.decode(raw)):
            raise RuntimeError("the bench's value is not valid under its schema")

    return {
        "Ed25519 sign()": _per_call(n, lambda _: ed.sign(message)),
        "HMAC sign()": _per_call(n, lambda _: mac.sign(message)),
        "decode + schema is_valid": _per_call(n, validate),
        "signed message bytes": float(len(message)),
    }


def _rows_fs(bench: Bench, fs: Filesystem) -> list[Row]:
    sizes = SIZES
    got: dict[str, list[Result]] = {v: [] for v in VARIANTS}
    keys_dir = Path(tempfile.mkdtemp(prefix="blackboard-bench-keys-"))
    try:
        for rnd in range(sizes.rounds):
            for variant in rotated(VARIANTS, rnd):
                root = bench.fresh_dir(fs, "trust")
                try:
                    result = _variant(root, variant, sizes.writes, keys_dir)
                except Exception as exc:
                    bench.problems.append(f"trust, {fs.label}, {variant}: {exc}")
                    bench.log(f"trust {fs.label:5} {variant}: FAILED: {exc}")
                    continue
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                got[variant].append(result)
                us = result.write_s / sizes.writes * 1e6
                bench.log(
                    f"trust {fs.label:5} round {rnd + 1} {variant:36} {us:6.2f} us/write"
                    f" ({sizes.writes / result.write_s:7,.0f} writes/s); verify {result.checked:,} records"
                    f" {result.checked / result.verify_s:8,.0f} records/s"
                )
        parts = _parts(sizes.writes, keys_dir)
    finally:
        shutil.rmtree(keys_dir, ignore_errors=True)

    def per_write(variant: str) -> float:
        return median([r.write_s / sizes.writes * 1e6 for r in got[variant]])

    def paired(variant: str) -> str:
        """The median of each round's own ratio to that round's plain write."""
        ratios = [a.write_s / b.write_s for a, b in zip(got[variant], got[PLAIN], strict=False)]
        return f"{median(ratios):.2f}x" if ratios else "-"

    rows = []
    plain = per_write(PLAIN)
    for variant in VARIANTS:
        us = per_write(variant)
        row = Row("trust", f"write, {variant}", fs.label, "us", False, us)
        rate = "-" if math.isnan(us) else f"{1e6 / us:,.0f} writes/s"
        if variant == PLAIN:
            row.note = (
                f"{rate}; {sizes.writes:,} writes per board after {WARMUP} warm-up, {KEYS:,} keys under"
                f" {PREFIX}, a fresh board per variant, {sizes.rounds} rounds in a rotating order, one process"
            )
        else:
            row.peers = {PLAIN: plain}
            row.note = f"{rate}; per-round ratio (median) {paired(variant)}"
        if variant in (SIGNED_VALID, HMAC_VALID):
            row.target = TARGET
        rows.append(row)
    for variant, what in VERIFIED.items():
        rates = [r.checked / r.verify_s for r in got[variant]]
        row = Row("trust", f"verify, {what}", fs.label, "records/s", True, median(rates))
        row.note = (
            f'trust.verify(board, "{PREFIX}") over {WARMUP + sizes.writes:,} records, the log in the page cache;'
            " checked: every record found, each verified (signed) or unsigned (plain), no problem"
        )
        rows.append(row)
    for what in ("Ed25519 sign()", "HMAC sign()", "decode + schema is_valid"):
        row = Row("trust", f"alone: {what}", fs.label, "us", False, parts[what])
        if what.startswith("Ed25519"):
            row.note = (
                f"one record's signed message ({parts['signed message bytes']:.0f} bytes), {sizes.writes:,} calls each"
            )
        elif what.startswith("decode"):
            row.note = "what the contract check does per put: codec.decode of the value's JSON, then is_valid"
        rows.append(row)
    return rows


@section("trust", "trust layer: write with a schema contract, signed (Ed25519, HMAC), both, vs plain; verify records/s")
def run_trust(bench: Bench) -> list[Row]:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        bench.log("trust skipped: the cryptography package ([trust] extra) is not installed")
        return []
    rows: list[Row] = []
    for fs in bench.filesystems:
        rows += _rows_fs(bench, fs)
    for row in rows:
        if row.target is not None:
            ratio = row.ratio(PLAIN)
            shown = "-" if ratio is None else f"{ratio:.2f}x"
            verdict = f"{row.ours:.1f} us, {shown} a plain write ({row.target_text}): {row.result}"
            print(f"trust: {row.metric} on {row.fs}: {verdict}")
    return rows

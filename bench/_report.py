"""Result rows, targets, and the two renderings of the table: the console and bench/RESULTS.md.

Each section gets its own table, with a column per peer its rows were measured against (writes:
sqlite3 and diskcache; latency: redis, etcd, a sqlite polling loop; ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from _peers import OURS, PEERS


@dataclass(frozen=True)
class Target:
    """Either a ratio against one peer (`peer` set) or an absolute bound on our figure (`peer` None)."""

    bound: float
    peer: str | None = None
    inclusive: bool = False  # a lower-is-better bound that may be met exactly: "<=" (">=" always is)

    def describe(self, unit: str, higher_is_better: bool) -> str:
        op = ">=" if higher_is_better else "<=" if self.inclusive else "<"
        if self.peer is not None:
            return f"{op} {self.bound:g}x {self.peer}"
        bound = f"{self.bound:,.0f}" if self.bound >= 10_000 else f"{self.bound:g}"
        return f"{op} {bound} {unit}"

    def passes(self, row: Row) -> bool | None:
        value = row.ours if self.peer is None else row.ratio(self.peer)
        if value is None or math.isnan(value):
            return None
        if row.higher_is_better:
            return value >= self.bound
        return value <= self.bound if self.inclusive else value < self.bound


@dataclass
class Row:
    section: str
    metric: str
    fs: str
    unit: str
    higher_is_better: bool
    ours: float
    peers: dict[str, float] = field(default_factory=dict)
    target: Target | None = None
    note: str = ""
    show_ratios: bool = True  # False where ours / peer means nothing (a ratio of ratios near 0)
    skipped: dict[str, str] = field(default_factory=dict)  # peer -> why it has no figure ("not installed")

    def ratio(self, peer: str) -> float | None:
        """ours / theirs; None where that means nothing: a missing figure, or one <= 0 (a change that
        reached a peer's listener before the peer's write call returned has a negative latency)."""
        theirs = self.peers.get(peer)
        if not self.show_ratios or theirs is None or math.isnan(theirs) or math.isnan(self.ours):
            return None
        if theirs <= 0 or (self.ours < 0 and self.unit == "ms"):
            return None
        return self.ours / theirs

    @property
    def better(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    @property
    def target_text(self) -> str:
        return "" if self.target is None else self.target.describe(self.unit, self.higher_is_better)

    @property
    def result(self) -> str:
        if self.target is None:
            return ""
        ok = self.target.passes(self)
        return "n/a" if ok is None else "PASS" if ok else "MISS"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "min/max":
        return f"{value:.2f}"
    if unit == "x":
        return f"{value:.2f}"
    if unit in ("ms", "s", "us"):
        size = abs(value)
        return f"{value:.3f}" if size < 1 else f"{value:.2f}" if size < 100 else f"{value:,.0f}"
    if unit in ("%", "MB"):
        return f"{value:.1f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def peer_columns(rows: Iterable[Row]) -> list[str]:
    """The peers these rows were compared with, in the order they first appear (the usual two first)."""
    seen: dict[str, None] = {}
    for row in rows:
        for peer in (*row.peers, *row.skipped):
            seen.setdefault(peer, None)
    return sorted(seen, key=lambda p: PEERS.index(p) if p in PEERS else len(PEERS))


def header(peers: list[str]) -> list[str]:
    return ["section", "metric", "fs", "better", OURS, *peers, *(f"ours/{p}" for p in peers), "target", "result"]


def cells(row: Row, peers: list[str]) -> list[str]:
    def peer_cell(p: str) -> str:
        if p in row.skipped:
            return f"skipped: {row.skipped[p]}"
        return fmt_value(row.peers.get(p), row.unit)

    return [
        row.section,
        f"{row.metric} ({row.unit})",
        row.fs,
        row.better,
        fmt_value(row.ours, row.unit),
        *(peer_cell(p) for p in peers),
        *(fmt_ratio(row.ratio(p)) for p in peers),
        row.target_text,
        row.result,
    ]


def by_section(rows: list[Row]) -> list[list[Row]]:
    """Rows grouped by section, sections in the order they first appear."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.section, []).append(row)
    return list(groups.values())


def _console_group(rows: list[Row]) -> str:
    peers = peer_columns(rows)
    head = header(peers)
    body = [head, *(cells(r, peers) for r in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(head))]
    numeric = set(range(4, 4 + 1 + 2 * len(peers)))

    def line(values: list[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        padded = (v.rjust(w) if i in numeric else v.ljust(w) for i, (v, w) in pairs)
        return "  ".join(padded)

    out = [line(head), "  ".join("-" * w for w in widths)]
    for row, values in zip(rows, body[1:], strict=True):
        out.append(line(values))
        if row.note:
            out.append(" " * (widths[0] + 2) + "note: " + row.note)
    return "\n".join(out)


def console_table(rows: list[Row]) -> str:
    return "\n\n".join(_console_group(group) for group in by_section(rows))


def _markdown_group(rows: list[Row]) -> str:
    peers = peer_columns(rows)
    head = [*header(peers), "note"]
    align = ["---", "---", "---", "---", *["---:"] * (1 + 2 * len(peers)), "---", "---", "---"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        out.append("| " + " | ".join([*cells(row, peers), row.note]).replace("\n", " ") + " |")
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    """One table per section, under a `###` heading of its name."""
    return "\n\n".join(f"### {group[0].section}\n\n{_markdown_group(group)}" for group in by_section(rows))


def summary(rows: list[Row]) -> str:
    judged = [r for r in rows if r.target is not None]
    missed = [r for r in judged if r.result != "PASS"]
    lines = [f"{len(judged) - len(missed)} of {len(judged)} targets met."]
    lines += [f"- {r.result}: {r.section} / {r.metric} / {r.fs}: {r.target_text}" for r in missed]
    return "\n".join(lines)

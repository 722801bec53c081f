"""Result rows, targets, and the two renderings of the table: the console and bench/RESULTS.md."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from _peers import OURS, PEERS


@dataclass(frozen=True)
class Target:
    """Either a ratio against one peer (`peer` set) or an absolute bound on our figure (`peer` None)."""

    bound: float
    peer: str | None = None

    def describe(self, unit: str, higher_is_better: bool) -> str:
        op = ">=" if higher_is_better else "<"
        if self.peer is not None:
            return f"{op} {self.bound:g}x {self.peer}"
        return f"{op} {self.bound:g} {unit}"

    def passes(self, row: Row) -> bool | None:
        value = row.ours if self.peer is None else row.ratio(self.peer)
        if value is None or math.isnan(value):
            return None
        return value >= self.bound if row.higher_is_better else value < self.bound


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

    def ratio(self, peer: str) -> float | None:
        theirs = self.peers.get(peer)
        if not self.show_ratios or theirs is None or theirs == 0 or math.isnan(theirs) or math.isnan(self.ours):
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
    if unit == "ms":
        return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


HEADER = ["section", "metric", "fs", "better", OURS, *PEERS, *(f"ours/{p}" for p in PEERS), "target", "result"]


def cells(row: Row) -> list[str]:
    return [
        row.section,
        f"{row.metric} ({row.unit})",
        row.fs,
        row.better,
        fmt_value(row.ours, row.unit),
        *(fmt_value(row.peers.get(p), row.unit) for p in PEERS),
        *(fmt_ratio(row.ratio(p)) for p in PEERS),
        row.target_text,
        row.result,
    ]


def console_table(rows: list[Row]) -> str:
    body = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADER))]
    numeric = set(range(4, 4 + 1 + 2 * len(PEERS)))

    def line(values: list[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        padded = (v.rjust(w) if i in numeric else v.ljust(w) for i, (v, w) in pairs)
        return "  ".join(padded)

    out = [line(HEADER), "  ".join("-" * w for w in widths)]
    for row, values in zip(rows, body[1:], strict=True):
        out.append(line(values))
        if row.note:
            out.append(" " * (widths[0] + 2) + "note: " + row.note)
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    header = [*HEADER, "note"]
    align = ["---", "---", "---", "---", *["---:"] * (1 + 2 * len(PEERS)), "---", "---", "---"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        out.append("| " + " | ".join([*cells(row), row.note]).replace("\n", " ") + " |")
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    judged = [r for r in rows if r.target is not None]
    missed = [r for r in judged if r.result != "PASS"]
    lines = [f"{len(judged) - len(missed)} of {len(judged)} targets met."]
    lines += [f"- {r.result}: {r.section} / {r.metric} / {r.fs}: {r.target_text}" for r in missed]
    return "\n".join(lines)

"""Rows of the results table, their formatting, and bench/RESULTS.md.

RESULTS.md keeps one block per benchmark between `<!-- B1 begin -->` and `<!-- B1 end -->`
markers: `--write --only B5` replaces the B5 block and leaves the others, with their own dates.
Anything below `<!-- notes -->` is kept as written by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from measure import Samples, paired_ratio

PASS, FAIL, UNAVAILABLE = "PASS", "FAIL", "n/a"
TITLES = {
    "B1": "B1 cold start",
    "B2": "B2 overhead of trace() over a plain forward",
    "B3": "B3 peers",
    "B4": "B4 scale",
    "B5": "B5 sweep",
    "B6": "B6 render",
    "B7": "B7 sweep TARGET (issue 15)",
}
NOTES_MARKER = "<!-- notes -->"
PREAMBLE = """# shapetrace benchmark results

Written by `python bench/run.py --write` (targets from issue 6). Each block is replaced when its
benchmark is re-run; figures are medians over alternated rounds, ratios the median of per-round ratios.
"""


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    bench: str
    """"B1" ... "B6"."""
    measure: str
    figure: str
    target: str = ""
    verdict: str = ""
    """PASS, FAIL, n/a, or empty for a figure without a target."""


def verdict(value: float, limit: float, *, strict: bool = False) -> str:
    """PASS when value ≤ limit (< limit when strict)."""
    passed = value < limit if strict else value <= limit
    return PASS if passed else FAIL


def seconds_text(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def bytes_text(size: float) -> str:
    return f"{size / 1e6:.0f} MB"


def ratio_text(ratio: float) -> str:
    return f"{ratio:.2f}×"


def unavailable(bench: str, measure: str, reason: str, target: str = "") -> Row:
    return Row(bench, measure, f"n/a ({reason})", target, UNAVAILABLE)


def text_table(rows: Sequence[Row]) -> str:
    """A plain fixed-width table, one row per figure, a rule between benchmarks."""
    header = Row("bench", "measure", "figure", "target", "verdict")
    widths = [max(len(getattr(row, name)) for row in (header, *rows)) for name in _COLUMNS]
    lines = [_text_line(header, widths), "  ".join("-" * width for width in widths)]
    for previous, row in zip((None, *rows), rows, strict=False):
        if previous is not None and previous.bench != row.bench:
            lines.append("")
        lines.append(_text_line(row, widths))
    return "\n".join(lines)


_COLUMNS = ("bench", "measure", "figure", "target", "verdict")


def _text_line(row: Row, widths: Sequence[int]) -> str:
    cells = [getattr(row, name).ljust(width) for name, width in zip(_COLUMNS, widths, strict=True)]
    return "  ".join(cells).rstrip()


def markdown_block(bench: str, rows: Iterable[Row], machine_line: str) -> str:
    """One benchmark's block for RESULTS.md, between its markers."""
    lines = [f"<!-- {bench} begin -->", f"## {TITLES[bench]}", "", machine_line, ""]
    lines += ["| measure | figure | target | verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {_cell(row.measure)} | {_cell(row.figure)} | {_cell(row.target)} | {row.verdict} |" for row in rows]
    lines.append(f"<!-- {bench} end -->")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_results(path: Path, rows: Sequence[Row], machine_line: str) -> None:
    """Replace the blocks of the benchmarks in `rows` and keep every other block and the notes."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    blocks = _existing_blocks(existing)
    for bench in dict.fromkeys(row.bench for row in rows):
        blocks[bench] = markdown_block(bench, [row for row in rows if row.bench == bench], machine_line)
    notes = existing[existing.index(NOTES_MARKER) :] if NOTES_MARKER in existing else NOTES_MARKER + "\n"
    ordered = [blocks[bench] for bench in TITLES if bench in blocks]
    path.write_text("\n\n".join([PREAMBLE.rstrip(), *ordered, notes.rstrip()]) + "\n", encoding="utf-8")


def _existing_blocks(text: str) -> dict[str, str]:
    pattern = re.compile(r"<!-- (B\d) begin -->.*?<!-- \1 end -->", re.DOTALL)
    return {match.group(1): match.group(0) for match in pattern.finditer(text)}


def seconds_row(bench: str, measure: str, samples: Samples, target: str = "", limit: float | None = None) -> Row:
    """The median seconds of one contender, checked against `limit` (strictly below) when given."""
    if not samples.ok:
        return Row(bench, measure, f"failed: {samples.failure}", target, FAIL if limit is not None else UNAVAILABLE)
    median = samples.median
    checked = verdict(median, limit, strict=True) if limit is not None else ""
    return Row(bench, measure, seconds_text(median), target, checked)


def ratio_row(
    bench: str,
    measure: str,
    numerator: Samples,
    denominator: Samples,
    limit: float | None,
    target: str = "",
    unit: Callable[[float], str] = seconds_text,
) -> Row:
    """The paired ratio of two contenders of the same rounds, with both medians, checked against `limit`."""
    if not (numerator.ok and denominator.ok):
        return Row(bench, measure, "n/a (a contender failed)", target, FAIL if limit is not None else UNAVAILABLE)
    ratio = paired_ratio(numerator, denominator)
    medians = f"{unit(numerator.median)} / {unit(denominator.median)}"
    checked = verdict(ratio, limit) if limit is not None else ""
    return Row(bench, measure, f"{ratio_text(ratio)} ({medians})", target, checked)

"""Sweep outcomes -> a compact rich grid, or JSON. Pure functions: nothing runs or prints."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from shapetrace.records import Outcome, SweepResult

CELLS_PER_LINE = 64
_KIND_MARKS = {"": ("█", "green"), "size": ("s", "red"), "channels": ("c", "magenta"), "error": ("e", "yellow")}


def sweep_grid(results: Sequence[SweepResult]) -> Group:
    """Per configuration: a strip with one mark per size, then each outcome with its sizes."""
    parts: list[Table | Text] = []
    for result in results:
        parts.append(Text(f"{result.label}: {_count_line(result.outcomes)}", style="bold"))
        parts.append(_strip(result.outcomes))
        parts.append(_outcome_table(result.outcomes))
    parts.append(Text("█ aligned · s size break · c channel break · e other error", style="dim"))
    return Group(*parts)


def _count_line(outcomes: Sequence[Outcome]) -> str:
    aligned = sum(outcome.ok for outcome in outcomes)
    return f"{aligned} of {len(outcomes)} sizes aligned"


def _strip(outcomes: Sequence[Outcome]) -> Text:
    text = Text()
    for start in range(0, len(outcomes), CELLS_PER_LINE):
        line = outcomes[start : start + CELLS_PER_LINE]
        text.append(f"{_size_label(line[0].size):>9} ", style="dim")
        for outcome in line:
            mark, style = _KIND_MARKS.get(outcome.kind or "", ("?", ""))
            text.append(mark, style=style)
        text.append("\n")
    return text


def _outcome_table(outcomes: Sequence[Outcome]) -> Table:
    groups: dict[tuple[str, str], list[tuple[int, ...]]] = {}
    for outcome in outcomes:
        groups.setdefault((outcome.kind or "", outcome.place), []).append(outcome.size)
    table = Table(show_edge=False, box=None, padding=(0, 2))
    table.add_column("outcome")
    table.add_column("sizes", justify="right")
    table.add_column("which")
    for (kind, place), sizes in sorted(groups.items(), key=lambda item: item[1][0]):
        label = Text("aligned", style="green") if not kind else Text(f"{kind} break at {place}", style="red")
        table.add_row(label, str(len(sizes)), compress_sizes(sizes))
    return table


def compress_sizes(sizes: Sequence[tuple[int, ...]], limit: int = 12) -> str:
    """Sizes as arithmetic runs: "224:1024:8" (start:stop:step, inclusive), then "…".

    Sizes of unequal extents (rectangles) are listed as they are.
    """
    runs: list[list[int]] = []
    squares = [size[0] for size in sizes if len(set(size)) == 1]
    if len(squares) != len(sizes):
        return ", ".join(_size_label(size) for size in sizes[:limit]) + (" …" if len(sizes) > limit else "")
    for size in squares:
        if runs and (len(runs[-1]) == 1 or size - runs[-1][-1] == runs[-1][1] - runs[-1][0]):
            runs[-1].append(size)
        else:
            runs.append([size])
    texts = [_run_text(run) for run in runs]
    return ", ".join(texts[:limit]) + (f", … ({len(texts) - limit} more runs)" if len(texts) > limit else "")


def _run_text(run: list[int]) -> str:
    if len(run) == 1:
        return str(run[0])
    if len(run) == 2:
        return f"{run[0]}, {run[1]}"
    step = run[1] - run[0]
    return f"{run[0]}:{run[-1]}" if step == 1 else f"{run[0]}:{run[-1]}:{step}"


def _size_label(size: tuple[int, ...]) -> str:
    """ "224" for a square, cube or 1-D length; "224x256" otherwise."""
    return str(size[0]) if len(set(size)) == 1 else "x".join(map(str, size))


def sweep_json(results: Sequence[SweepResult]) -> str:
    return json.dumps(
        {
            "schema": 1,
            "sweeps": [
                {
                    "config": result.label,
                    "results": [
                        {
                            "size": list(outcome.size),
                            "ok": outcome.ok,
                            "kind": outcome.kind or "",
                            "place": outcome.place,
                        }
                        for outcome in result.outcomes
                    ],
                }
                for result in results
            ],
        },
        indent=2,
    )

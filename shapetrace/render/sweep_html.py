"""Sweep outcomes -> one self-contained HTML page: a heat map of sizes per configuration.

Each size is a cell coloured by its outcome: aligned, or the kind and block of its first break
(one shade per block, so the sizes that break in the same place share a colour). Square sizes
wrap in rows of COLUMNS; sizes that fill an H×W grid are drawn as that grid. Hovering (or
focusing) a cell shows its size and first break in `#size-info`. Pure: returns text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from shapetrace.records import Outcome, SweepResult
from shapetrace.render.html_page import attribute, escape, json_script, page
from shapetrace.render.sweep_grid import compress_sizes, sweep_json

__all__ = ["sweep_html"]

COLUMNS = 32
_SHADES = {
    "size": ("#d73027", "#f4a259", "#a50026", "#f46d43", "#7f0000", "#e78ac3"),
    "channels": ("#8e44ad", "#c39bd3", "#5b2c6f", "#a569bd"),
}
_OTHER_SHADES = ("#d4a017", "#b7950b", "#f7dc6f", "#9c640c")


def sweep_html(results: Sequence[SweepResult]) -> str:
    """The outcomes of one or more configurations as an HTML heat map.

    Args:
        results: one SweepResult per configuration, as `sweep_reference` returns them.

    Returns:
        The page's text, its outcomes also embedded as the sweep JSON (`sweep_json`).
    """
    outcomes = [outcome for result in results for outcome in result.outcomes]
    colours = _colours(outcomes)
    aligned = sum(outcome.ok for outcome in outcomes)
    state = "ok" if aligned == len(outcomes) else "bad"
    sizes = len({outcome.size for outcome in outcomes})
    header = (
        "<header><h1>Sweep</h1>"
        f'<div class="facts">{sizes} sizes · {len(results)} configuration{"s" * (len(results) != 1)}</div>'
        f'<p class="verdict {state}" id="verdict">{aligned} of {len(outcomes)} sizes aligned</p></header>'
    )
    info = '<div id="size-info" aria-live="polite">Hover a size to see its first break.</div>'
    sections = [_section(number, result, colours) for number, result in enumerate(results)]
    data = json_script("sweep-data", json.loads(sweep_json(results)))
    body = f'{header}\n<main class="sweep">{info}\n{"".join(sections)}</main>\n{data}'
    style = "".join(f".c-{index} {{ background: {colour}; }}\n" for colour, index in colours.values())
    return page("shapetrace · sweep", body, style=style, scripts=("sweep.js",))


def _colours(outcomes: Sequence[Outcome]) -> dict[tuple[str, str], tuple[str, int]]:
    """(kind, place) -> (colour, class number) for each first break, in order of appearance."""
    colours: dict[tuple[str, str], tuple[str, int]] = {}
    used: dict[str, int] = {}
    for outcome in outcomes:
        key = (str(outcome.kind or ""), outcome.place)
        if outcome.ok or key in colours:
            continue
        shades = _SHADES.get(key[0], _OTHER_SHADES)
        colours[key] = (shades[used.get(key[0], 0) % len(shades)], len(colours))
        used[key[0]] = used.get(key[0], 0) + 1
    return colours


def _section(number: int, result: SweepResult, colours: dict[tuple[str, str], tuple[str, int]]) -> str:
    aligned = sum(outcome.ok for outcome in result.outcomes)
    grid = _grid(result.outcomes, [_cell(outcome, colours) for outcome in result.outcomes])
    return (
        f'<section class="config" id="config-{number}" data-config="{attribute(result.label)}">'
        f"<h2>{escape(result.label)}: {aligned} of {len(result.outcomes)} sizes aligned</h2>"
        f"{grid}{_legend(result.outcomes, colours)}</section>\n"
    )


def _cell(outcome: Outcome, colours: dict[tuple[str, str], tuple[str, int]]) -> str:
    size = _size_label(outcome.size)
    if outcome.ok:
        return f'<span class="cell aligned" tabindex="0" data-size="{size}" data-kind="" data-place=""></span>'
    _, index = colours[(str(outcome.kind), outcome.place)]
    return (
        f'<span class="cell c-{index}" tabindex="0" data-size="{size}" data-kind="{attribute(outcome.kind)}" '
        f'data-place="{attribute(outcome.place)}"></span>'
    )


def _grid(outcomes: Sequence[Outcome], ordered: Sequence[str]) -> str:
    """Rows of COLUMNS cells, or the H×W grid when the sizes fill one and are not all square."""
    cells = {outcome.size: cell for outcome, cell in zip(outcomes, ordered, strict=True)}
    heights = sorted({outcome.size[0] for outcome in outcomes if len(outcome.size) == 2})
    widths = sorted({outcome.size[1] for outcome in outcomes if len(outcome.size) == 2})
    rectangle = len(cells) == len(heights) * len(widths) == len(outcomes) and len(widths) > 1
    if rectangle and any(size[0] != size[1] for size in cells):
        header = '<span class="start">H \\ W</span>' + "".join(
            f'<span class="start" style="writing-mode:vertical-rl;text-align:left">{width}</span>' for width in widths
        )
        rows = [
            f'<span class="start">{height}</span>' + "".join(cells[(height, width)] for width in widths)
            for height in heights
        ]
        return f'<div class="heatmap" style="--columns:{len(widths)}">{header}{"".join(rows)}</div>'
    labels = [_size_label(outcome.size) for outcome in outcomes]
    rows = [
        f'<span class="start">{labels[start]}</span>' + "".join(ordered[start : start + COLUMNS])
        for start in range(0, len(ordered), COLUMNS)
    ]
    return f'<div class="heatmap" style="--columns:{min(COLUMNS, len(ordered))}">{"".join(rows)}</div>'


def _legend(outcomes: Sequence[Outcome], colours: dict[tuple[str, str], tuple[str, int]]) -> str:
    """Each outcome with its swatch, how many sizes had it, and which, as runs."""
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for outcome in outcomes:
        groups.setdefault((str(outcome.kind or ""), outcome.place), []).append(outcome.size)  # type: ignore[arg-type]
    rows = []
    for key, sizes in sorted(groups.items(), key=lambda item: item[1][0]):
        if key[0]:
            swatch, label = f"c-{colours[key][1]}", f"{key[0]} break at {key[1]}"
        else:
            swatch, label = "aligned", "aligned"
        rows.append(
            f'<tr><td><span class="swatch {swatch}"></span>{escape(label)}</td><td class="num">{len(sizes)}</td>'
            f'<td class="shape">{escape(compress_sizes(sizes))}</td></tr>'
        )
    return f'<table class="legend">{"".join(rows)}</table>'


def _size_label(size: tuple[int, ...]) -> str:
    return str(size[0]) if len(set(size)) == 1 else "×".join(map(str, size))

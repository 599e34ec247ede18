"""Regenerate every figure of the docs with shapetrace itself: `python docs/generate.py`.

Writes, into docs/figures/: the DOT source and SVG of each diagram, and each terminal output
as text and as SVG. tests/test_docs.py checks that the committed DOT and text files equal what
this produces now, so the docs cannot drift from the tool.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console, RenderableType

from shapetrace.models.reference import sweep_reference, trace_reference
from shapetrace.records import CostMode, CostOptions, Trace
from shapetrace.render.dot import trace_dot
from shapetrace.render.images import GraphvizMissingError, render_image
from shapetrace.render.sweep_grid import sweep_grid
from shapetrace.render.table import trace_report

FIGURES = Path(__file__).parent / "figures"
WIDTH = 140


def traces() -> dict[str, Trace]:
    """The traces the guide shows, by figure name."""
    return {
        "default-unet": trace_reference(size=(224, 224), chs=(1, 2, 4, 8)),
        "size-break-225": trace_reference(size=(225, 225), chs=(1, 2, 4, 8)),
        "as-written": trace_reference(size=(224, 224), chs=(1, 2, 4, 8), variant="as-written"),
        "cost-unet": trace_reference(
            size=(256, 256), chs=(1, 2, 4, 8), batch=8, cost=CostOptions(mode=CostMode.TRAIN, budget=24 * 10**9)
        ),
    }


def terminal(renderable: RenderableType) -> Console:
    """A recording console of fixed width, so the text is the same on every machine."""
    console = Console(record=True, width=WIDTH, file=io.StringIO(), color_system="truecolor", legacy_windows=False)
    console.print(renderable)
    return console


def outputs() -> tuple[dict[str, str], dict[str, RenderableType]]:
    """The DOT diagrams and the terminal outputs the guide shows, by figure name."""
    diagrams, screens = {}, {}
    for name, trace in traces().items():
        diagrams[name] = trace_dot(trace)
        screens[name] = trace_report(trace)
    screens["sweep"] = sweep_grid([sweep_reference([(size, size) for size in range(32, 129)], (1, 2, 4, 8))])
    return diagrams, screens


def sources() -> dict[str, str]:
    """Every text source the docs embed (DOT files and terminal outputs), by file name."""
    diagrams, screens = outputs()
    files = {f"{name}.dot": text for name, text in diagrams.items()}
    files.update({f"{name}.txt": terminal(screen).export_text(styles=False) for name, screen in screens.items()})
    return files


def write_all(folder: Path = FIGURES, say: Callable[[str], None] = print) -> None:
    """Write each DOT source with its SVG, and each terminal output as text and as SVG."""
    folder.mkdir(parents=True, exist_ok=True)
    diagrams, screens = outputs()
    for name, text in diagrams.items():
        (folder / f"{name}.dot").write_text(text, encoding="utf-8")
        try:
            render_image(text, folder / f"{name}.svg", "svg")
        except GraphvizMissingError as error:
            say(str(error))
    for name, screen in screens.items():
        console = terminal(screen)
        (folder / f"{name}.txt").write_text(console.export_text(styles=False, clear=False), encoding="utf-8")
        console.save_svg(str(folder / f"{name}-terminal.svg"), title=f"shapetrace: {name}")
    say(f"wrote {len(diagrams) * 2 + len(screens) * 2} files to {folder}")


if __name__ == "__main__":
    write_all()
    sys.exit(0)

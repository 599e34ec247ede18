"""DOT source -> SVG, PNG or PDF file, through the `graphviz` package and its `dot` binary.

A thin wrapper: `shapetrace.dot` makes the text, this writes the picture. When the binary is
missing the DOT source is still written, so nothing the trace showed is lost.
"""

from __future__ import annotations

import pathlib
import shutil

__all__ = ["FORMATS", "GraphvizMissingError", "render_image", "render_svg"]

FORMATS = ("svg", "png", "pdf")
INSTALL_HINT = "apt-get install graphviz, brew install graphviz or conda install graphviz"


class GraphvizMissingError(Exception):
    """The Graphviz `dot` binary is not on PATH; the DOT source was written instead."""

    def __init__(self, dot_path: pathlib.Path | None) -> None:
        written = f". DOT source written to {dot_path}" if dot_path is not None else ""
        super().__init__(f"Graphviz 'dot' was not found on PATH; install it ({INSTALL_HINT}){written}")
        self.dot_path = dot_path


def render_image(dot_source: str, path: pathlib.Path, format: str) -> pathlib.Path:
    """Render DOT source to an image file.

    Args:
        dot_source: DOT text, as `shapetrace.dot.trace_dot` returns it.
        path: the file to write; its suffix need not match `format`.
        format: "svg", "png" or "pdf".

    Returns:
        `path`, now holding the image.

    Raises:
        ValueError: if `format` is not one of FORMATS.
        GraphvizMissingError: if the `dot` binary is missing; the source is then written beside
            `path` with the suffix .dot.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}: format={format!r}")
    path = pathlib.Path(path)
    if shutil.which("dot") is None:
        raise GraphvizMissingError(_write_source(dot_source, path))
    # Imported here: the graphviz package is only needed when a picture is asked for.
    import graphviz  # type: ignore[import-untyped]

    try:
        image = graphviz.Source(dot_source).pipe(format=format)
    except graphviz.ExecutableNotFound as error:
        raise GraphvizMissingError(_write_source(dot_source, path)) from error
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image)
    return path


def render_svg(dot_source: str) -> str:
    """SVG text of DOT source, for notebooks; raises GraphvizMissingError without `dot`."""
    if shutil.which("dot") is None:
        raise GraphvizMissingError(None)
    import graphviz

    try:
        svg: bytes = graphviz.Source(dot_source).pipe(format="svg")
    except graphviz.ExecutableNotFound as error:
        raise GraphvizMissingError(None) from error
    return svg.decode("utf-8")


def _write_source(dot_source: str, path: pathlib.Path) -> pathlib.Path:
    dot_path = path.with_suffix(".dot")
    dot_path.parent.mkdir(parents=True, exist_ok=True)
    dot_path.write_text(dot_source, encoding="utf-8")
    return dot_path

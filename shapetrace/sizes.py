"""Sizes as users type them: `--sizes 32:512:8`, `224,225,230x232`, and `sizes=` in the helpers.

Torch-free, so the CLI parses them without torch and `shapetrace.testing` takes the same text.
A size is a tuple: one extent, `(n,)`, stands for every spatial axis (a square, a cube, or a
1-D length); two or three extents, `(h, w)` or `(d, h, w)`, give each axis its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shapetrace.records import MAX_EXTENT

MAX_SIZES = 100_000
"""More sizes than this is a typo, not a sweep."""

Size = tuple[int, ...]
"""`(n,)` for every spatial axis alike, or one extent per axis."""

_RANGE = re.compile(r"\s*([0-9]+)\s*:\s*([0-9]+)\s*(?::\s*([0-9]+)\s*)?")
_ITEM = re.compile(r"\s*[0-9]+\s*(?:[x×]\s*[0-9]+\s*){0,2}")  # ASCII digits: int() refuses "²"


def parse_sizes(text: str) -> list[Size]:
    """`START:STOP[:STEP]` (STOP included) or a comma-separated list whose items may be `HxW` or `DxHxW`.

    Raises:
        ValueError: the text is neither, an extent is out of 1..MAX_EXTENT, or it gives too many sizes.
    """
    match = _RANGE.fullmatch(text)
    if match is not None:
        start, stop, step = int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)
        if not 1 <= start <= stop <= MAX_EXTENT or step < 1:
            raise ValueError(
                f"{text!r} is not a valid range: expected START:STOP[:STEP] with 1 <= START <= STOP <= {MAX_EXTENT}"
            )
        count = (stop - start) // step + 1
        if count > MAX_SIZES:
            raise ValueError(f"{text!r} gives {count} sizes, expected at most {MAX_SIZES}")
        return [(size,) for size in range(start, stop + 1, step)]
    items = text.split(",")
    if len(items) > MAX_SIZES:
        raise ValueError(f"{text!r:.60} gives {len(items)} sizes, expected at most {MAX_SIZES}")
    return [parse_size(item) for item in items]


def parse_size(text: str) -> Size:
    """`224`, `224x256` or `16x64x64` as a Size.

    Raises:
        ValueError: not of that form, or an extent out of 1..MAX_EXTENT.
    """
    if _ITEM.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not a valid size: expected an integer like 224, or HxW like 224x256")
    size = tuple(int(part) for part in re.split(r"[x×]", text))
    if not all(1 <= extent <= MAX_EXTENT for extent in size):
        raise ValueError(f"{text!r} is not a valid size: expected each extent from 1 to {MAX_EXTENT}")
    return size


def as_sizes(sizes: str | int | Iterable[int | Iterable[int]]) -> list[Size]:
    """What `sizes=` accepts in the library: the `--sizes` text, an int, or a list of ints and tuples.

    Raises:
        ValueError: as parse_sizes, or an item that is not a positive int or tuple of them.
    """
    if isinstance(sizes, str):
        return parse_sizes(sizes)
    if isinstance(sizes, int):
        sizes = [sizes]
    parsed: list[Size] = []
    for item in sizes:
        size = (item,) if isinstance(item, int) else tuple(item)
        if not size or len(size) > 3 or not all(isinstance(e, int) and 1 <= e <= MAX_EXTENT for e in size):
            raise ValueError(f"{item!r} is not a valid size: expected an int or a tuple of 2 or 3 ints >= 1")
        parsed.append(size)
    return parsed


def spatial_extents(size: Size, axes: int) -> Size:
    """The extents of `size` for an input with `axes` spatial axes.

    Raises:
        ValueError: the size gives a different number of extents than the input has spatial axes.
    """
    if len(size) == 1:
        return size * axes
    if len(size) != axes:
        shown = "x".join(map(str, size))
        noun = "axis" if axes == 1 else "axes"
        raise ValueError(f"size {shown} has {len(size)} extents, but the input has {axes} spatial {noun}")
    return size

"""Whether one map is at another level of the U than another: the shape test of the pairing rule.

Pure functions of shapes, no recorder: `pairing` walks the calls and asks these.
"""

from __future__ import annotations

from shapetrace.records import Shape

UP, DOWN, NONE = 1, -1, 0
LEVEL_RATIO = 1.5
"""A size change by less than this factor (a crop, a pad, rounding) is no change of level."""


def direction(before: Shape, after: Shape) -> int:
    """UP when `after` is a finer map than `before` (it came up from a coarser level), DOWN the reverse."""
    if before == after or len(before) != len(after) or len(before) < 3 or before[0] != after[0]:
        return NONE
    if _flattened(before, after) or _flattened(after, before):
        return NONE
    finer = coarser = False
    ratio = 1.0
    for b, a in zip(before[2:], after[2:], strict=True):
        if a > b:
            finer = True
            ratio = max(ratio, a / max(b, 1))
        elif a < b:
            coarser = True
            ratio = max(ratio, b / max(a, 1))
    if finer == coarser or ratio < LEVEL_RATIO:  # unchanged, mixed (a reshape), or a crop or pad
        return NONE
    return UP if finer else DOWN


def _flattened(tokens: Shape, image: Shape) -> bool:
    """`tokens` is attention's (B, heads, H*W, d) of the (B, C, H, W) map `image` it came from or
    goes back to: the map's extents flattened into one axis, its channels split into heads × d.

    No level change, even where d happens to equal W and the heads look like a map H times
    narrower (lucidrains' Attention at a 32×32 level with 32-wide heads).
    """
    if len(tokens) != 4 or len(image) != 4:
        return False
    height, width = image[2:]
    return tokens[2] == height * width and image[1] % (tokens[1] * tokens[3]) == 0


def numel(shape: Shape) -> int:
    """The entries of a tensor of `shape`."""
    total = 1
    for extent in shape:
        total *= extent
    return total

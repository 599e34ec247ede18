"""The smallest size a derived size rule accepts, confirmed by running there.

The resampling records give each axis the smallest extent every op can take: the one where the
deepest level is 1 wide. Some layers refuse such a map though no resampling op does: an
InstanceNorm (nnU-Net's default norm) raises on a map of one element, as BatchNorm does while
training. So the smallest size the rule accepts is traced too, and where it breaks, the next
smallest, every axis moving together, until one runs: that size becomes the minimum.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from shapetrace.analysis.size_rules import nearest_sizes
from shapetrace.records import AxisRule, Shape, SizeRule

if TYPE_CHECKING:
    from shapetrace.size_search import Prober

MINIMUM_PROBES = 4
"""Sizes tried upward from the derived minimum before the rule is given up for probing."""


def smallest_confirmed(rule: SizeRule, requested: Shape, prober: Prober) -> SizeRule | None:
    """`rule` with its minimum raised to the smallest size that runs; None when none of the
    first few sizes above the derived minimum runs (the sizes are then probed one by one).

    The sizes tried grow every axis at once from a common floor (the smallest extent each axis
    accepts at or above it), as square and cubic inputs do: a norm that needs two elements at
    the deepest level is satisfied by any one axis being 2 wide there, which no per-axis rule
    can say, so the rule keeps the smallest such size that runs, per axis.

    Raises:
        KeyboardInterrupt: Ctrl-C stopped a probe.
    """
    floor = max(axis.minimum for axis in rule.axes)
    for _ in range(MINIMUM_PROBES):
        size = tuple(_smallest_at_or_above(axis, floor) for axis in rule.axes)
        if size == requested or prober.accepts(size):
            if floor == max(axis.minimum for axis in rule.axes):
                return rule  # the derived minimum runs
            axes = tuple(
                dataclasses.replace(axis, minimum=max(axis.minimum, extent))
                for axis, extent in zip(rule.axes, size, strict=True)
            )
            return dataclasses.replace(rule, axes=axes, nearest=nearest_sizes(axes, requested))
        floor = min(size) + 1
    return None


def _smallest_at_or_above(axis: AxisRule, floor: int) -> int:
    extent = max(floor, axis.minimum)
    while not axis.accepts(extent):
        extent += 1  # within one modulus: the residues repeat
    return extent

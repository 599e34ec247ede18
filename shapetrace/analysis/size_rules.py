"""The sizes a model accepts, per spatial axis, read from the resampling records of one trace.

Every resampling op maps an extent by a floor or a ceil of a linear function, so each node
of an axis's chain (`chains`) measures `scale * n` plus a correction that repeats with the
product of the strides. A size is valid when every op gets an input large enough and every
merge's two sides agree; beyond the smallest size that every op can take, validity repeats
with that period, so one period, evaluated without running anything, gives the exact rule:
a modulus, the residues it accepts, and a minimum. The tracer confirms it with a few probes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from shapetrace.analysis.chains import Axis, axes_of, image_input
from shapetrace.records import MAX_EXTENT, AxisRule, Shape, SizeRule, Trace

MAX_MODULUS = 1 << 12
"""Beyond this period the chain is not a UNet's; the probes decide instead."""


@dataclass(frozen=True, slots=True)
class Derived:
    """What the records say about the valid sizes."""

    rule: SizeRule | None
    """The exact rule, or None when no size aligns (a merge joins two resolutions)."""
    requested: Shape
    """The traced spatial size."""


def derive_size_rule(trace: Trace) -> Derived | None:
    """The per-axis rule read from the records; None when some size change was not recorded.

    Returns:
        Derived with the rule and the nearest valid sizes around the traced one, or with no
        rule when no size can align the merges; None when the records cannot tell (an op
        or a crop the tracer does not record), and the sizes must be probed.
    """
    image = image_input(trace)
    axes = axes_of(trace)
    if image is None or not axes or not all(axis.complete for axis in axes):
        return None
    rules = []
    for axis in axes:
        rule = axis_rule(axis)
        if rule is None:
            return None
        if not rule.residues:
            return Derived(None, image[2:])
        rules.append(rule)
    requested = image[2:]
    return Derived(SizeRule(tuple(rules), nearest_sizes(tuple(rules), requested)), requested)


def axis_rule(axis: Axis) -> AxisRule | None:
    """Modulus, residues and minimum of one axis; None when its validity does not repeat."""
    modulus = 1
    for index in range(len(axis.nodes)):
        modulus = math.lcm(modulus, axis.scale(index).denominator)
    if modulus > MAX_MODULUS:
        return None
    threshold = _large_enough_from(axis)
    if threshold is None:
        return None

    def valid(extent: int) -> bool:
        return _valid(axis, extent)

    first = [valid(extent) for extent in range(threshold, threshold + modulus)]
    second = [valid(extent) for extent in range(threshold + modulus, threshold + 2 * modulus)]
    if first != second:
        return None  # a merge of two resolutions met once, at one size: no period to read
    residues = {extent % modulus for extent, ok in zip(range(threshold, threshold + modulus), first, strict=True) if ok}
    modulus, residues = _smallest_period(modulus, residues)
    minimum = next((n for n in range(threshold, threshold + modulus) if n % modulus in residues), threshold)
    return AxisRule(axis.dim, modulus, tuple(sorted(residues)), minimum)


def _valid(axis: Axis, extent: int) -> bool:
    values = axis.evaluate(extent)
    if any(value is None for value in values):
        return False
    return all(values[constraint.skip] == values[constraint.main] for constraint in axis.constraints)


def _large_enough_from(axis: Axis) -> int | None:
    """The smallest extent from which every op's input is large enough (a monotone property)."""

    def large_enough(extent: int) -> bool:
        return all(value is not None for value in axis.evaluate(extent, divisible=False))

    if not large_enough(MAX_EXTENT):
        return None
    low, high = 1, MAX_EXTENT
    while low < high:
        middle = (low + high) // 2
        if large_enough(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _smallest_period(modulus: int, residues: set[int]) -> tuple[int, set[int]]:
    """The smallest divisor of `modulus` that describes the same residues (mod 8 {0, 4} is mod 4 {0})."""
    for divisor in range(1, modulus + 1):
        if modulus % divisor:
            continue
        reduced = {residue % divisor for residue in residues}
        if {r for r in range(modulus) if r % divisor in reduced} == residues:
            return divisor, reduced
    return modulus, residues


def nearest_sizes(rules: tuple[AxisRule, ...], requested: Shape) -> tuple[Shape, ...]:
    """The valid sizes nearest `requested`: every axis rounded down, and every axis rounded up.

    An axis that already fits keeps its extent; the requested size itself when it fits.
    """
    below = tuple(_nearest(rule, extent, -1) for rule, extent in zip(rules, requested, strict=True))
    above = tuple(_nearest(rule, extent, 1) for rule, extent in zip(rules, requested, strict=True))
    found: list[Shape] = []
    for size in (below, above):
        if all(extent is not None for extent in size):
            candidate = tuple(extent for extent in size if extent is not None)
            if candidate not in found:
                found.append(candidate)
    return tuple(found)


def _nearest(rule: AxisRule, extent: int, step: int) -> int | None:
    candidate = max(extent, rule.minimum) if step > 0 else extent
    if step < 0 and rule.maximum is not None:
        candidate = min(candidate, rule.maximum)
    for _ in range(rule.modulus + 1):
        if candidate < rule.minimum:
            return None
        if rule.accepts(candidate):
            return candidate
        candidate += step
    return None


def invalid_near(rules: tuple[AxisRule, ...], size: Shape) -> Shape | None:
    """A size next to `size` that the rule refuses, to confirm it refuses what it should."""
    for position, rule in enumerate(rules):
        for offset in (1, -1, 2, -2, 3):
            extent = size[position] + offset
            if extent >= 1 and not rule.accepts(extent):
                return (*size[:position], extent, *size[position + 1 :])
    below = tuple(rule.minimum - 1 for rule in rules)
    return below if min(below) >= 1 else None


def rule_text(rule: SizeRule, names: Callable[[int], str] | None = None) -> str:
    """ "H ≡ 0 (mod 8), at least 8; W ≡ 0 or 3 (mod 4), at least 3": the rule in words."""
    parts = []
    for axis in rule.axes:
        name = names(axis.axis) if names is not None else axis_name(axis.axis, len(rule.axes))
        bounds = _bounds(axis)
        if axis.modulus == 1:
            parts.append(f"{name} {bounds}")
            continue
        if axis.residues == (0,):
            parts.append(f"{name} multiples of {axis.modulus}, {bounds}")
            continue
        residues = " or ".join(str(residue) for residue in axis.residues)
        parts.append(f"{name} ≡ {residues} (mod {axis.modulus}), {bounds}")
    merged = _merged(parts, rule)
    return merged if merged is not None else "; ".join(parts)


def _bounds(axis: AxisRule) -> str:
    """ "at least 8", or "from 15 to 16" (a model built for one size), or "exactly 16"."""
    if axis.maximum is None:
        return f"at least {axis.minimum}"
    return f"exactly {axis.minimum}" if axis.maximum == axis.minimum else f"from {axis.minimum} to {axis.maximum}"


def _merged(parts: list[str], rule: SizeRule) -> str | None:
    """One clause for axes that share a rule ("H and W ≡ 0 (mod 8), at least 8")."""
    first = rule.axes[0]
    if len(rule.axes) < 2 or any(
        (a.modulus, a.residues, a.minimum, a.maximum) != (first.modulus, first.residues, first.minimum, first.maximum)
        for a in rule.axes
    ):
        return None
    names = [axis_name(axis.axis, len(rule.axes)) for axis in rule.axes]
    together = ", ".join(names[:-1]) + " and " + names[-1]
    return together + parts[0][len(names[0]) :]


def axis_name(dim: int, count: int) -> str:
    """ "H" and "W" for 2-D, "D", "H" and "W" for 3-D, "L" for 1-D."""
    names = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}.get(count)
    return names[dim - 2] if names is not None else f"dim {dim}"


def is_multiple_rule(rule: SizeRule) -> int | None:
    """The common multiple when every axis takes exactly the multiples of one number."""
    moduli = {axis.modulus for axis in rule.axes}
    if len(moduli) == 1 and all(axis.residues == (0,) and axis.maximum is None for axis in rule.axes):
        return moduli.pop()
    return None

"""Which resampling ops rounded a size between a skip and the up path it joins.

Reads the chains (`chains.Axis`): the skip's node and the main path's node share an
ancestor, the extent where they parted; every op on the way from there that did not scale
exactly (a floor, a ceil, a ConvTranspose one short) is part of the story of the mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

from shapetrace.analysis.chains import Axis
from shapetrace.extents import rounding, scale_of
from shapetrace.records import Resampling, ResamplingKind


@dataclass(frozen=True, slots=True)
class Rounded:
    """The inexact ops between a skip and its up path, in the order they ran."""

    down: tuple[Resampling, ...]
    """Downsamplers that floored or rounded up (and any other inexact op but the next)."""
    short_transposes: tuple[Resampling, ...]
    """ConvTransposes one short of undoing their stride, which output_padding would fix."""

    @property
    def any(self) -> bool:
        return bool(self.down or self.short_transposes)


def rounded_between(axes: list[Axis], pair: int) -> Rounded | None:
    """The inexact ops on every axis where pair `pair`'s sides differ; None when the chains cannot tell."""
    down: list[Resampling] = []
    short: list[Resampling] = []
    found = False
    for axis in axes:
        for constraint in axis.constraints:
            if constraint.pair != pair or axis.nodes[constraint.skip].value == axis.nodes[constraint.main].value:
                continue
            found = True
            for record in _path(axis, constraint.skip, constraint.main):
                offset = axis.dim - 2
                if rounding(record, offset) == 0:
                    continue
                target = short if missing_output_padding(record, offset) is not None else down
                if record not in target:
                    target.append(record)
    if not found:
        return None
    return Rounded(_ordered(down), _ordered(short))


def _path(axis: Axis, skip: int, main: int) -> list[Resampling]:
    """The ops from where the two nodes' chains part to each node."""
    skip_chain, main_chain = axis.chain(skip), axis.chain(main)
    common = next((node for node in main_chain if node in skip_chain), None)
    ops = []
    for chain in (skip_chain, main_chain):
        for node in chain:
            if node == common:
                break
            record = axis.nodes[node].record
            if record is not None:
                ops.append(record)
    return ops


def _ordered(records: list[Resampling]) -> tuple[Resampling, ...]:
    return tuple(sorted(records, key=lambda record: record.position))


def missing_output_padding(record: Resampling, axis: int) -> int | None:
    """The output_padding that makes a ConvTranspose exactly undo its stride on `axis`; None if none does."""
    if record.kind != ResamplingKind.CONV_TRANSPOSE or scale_of(record, axis) <= 1:
        return None
    k, s, p, d = record.kernel[axis], record.stride[axis], record.padding[axis], record.dilation[axis]
    needed = s + 2 * p - d * (k - 1) - 1
    current = record.output_padding[axis] if record.output_padding else 0
    if needed == current or not 0 <= needed < max(s, d):
        return None
    return needed

"""Each spatial axis as a chain of extents: the input's, and what every resampling op made of it.

Reads only the records. A node is one extent tensors had on one axis: the input's, or one
op's output; an op's input is the latest node of the extent it received. Evaluating the
nodes at another input extent says what every tensor would measure there, so a merge's two
sides can be compared at any size without running the model, and each node's exact scale
(1/4 two levels down) says which resolution, which level of the U, a tensor belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from shapetrace.extents import is_valid_geometry, resampled_extent, scale_of
from shapetrace.records import LayerRecord, Resampling, ResamplingKind, SkipPair, Trace

INPUT = -1
"""The parent of the input's node."""


@dataclass(slots=True)
class Node:
    """One extent on one axis."""

    parent: int
    """The node the op received; INPUT for the input's own extent."""
    record: Resampling | None
    """The op that made it; None for the input."""
    value: int
    """Its extent at the traced size."""
    position: int
    """How many calls had begun when it was made."""
    alias: int = -1
    """For a resize: the node whose extent it was resized to (found at the merge it feeds)."""


@dataclass(frozen=True, slots=True)
class Constraint:
    """Two nodes a merge needs equal: the skip's and the main path's."""

    skip: int
    main: int
    pair: int
    """Index of the SkipPair in Trace.skips."""


@dataclass(slots=True)
class Axis:
    """The chain of one spatial axis (tensor dimension `dim`)."""

    dim: int
    nodes: list[Node]
    constraints: list[Constraint] = field(default_factory=list)
    complete: bool = True
    """False when some op or merge saw an extent no recorded op explains (a crop, a pad, a slice)."""

    def find(self, value: int, position: int) -> int | None:
        """The latest node of extent `value` made by `position`."""
        for index in range(len(self.nodes) - 1, -1, -1):
            node = self.nodes[index]
            if node.value == value and node.position <= position:
                return index
        return None

    def evaluate(self, extent: int, *, divisible: bool = True) -> list[int | None]:
        """Every node's extent for an input extent; None where an op refuses its input.

        `divisible=False` treats a pixel-unshuffle of an extent its factor does not divide as
        flooring, so that only "too small" refusals remain (those are monotone in the size).
        """
        values: list[int | None] = []
        for node in self.nodes:
            if node.record is None:
                values.append(extent)
                continue
            source = values[node.parent]
            if source is None:
                values.append(None)
            elif node.record.kind == ResamplingKind.RESIZE:
                values.append(values[node.alias] if node.alias >= 0 else node.value)
            else:
                values.append(_extent(node.record, self.dim - 2, source, divisible))
        return values

    def scale(self, index: int) -> Fraction:
        """The node's exact scale against the input (1/4 two halvings down); 0 for a fixed size."""
        scale = Fraction(1)
        while index != INPUT:
            node = self.nodes[index]
            if node.record is None:
                return scale
            if node.record.kind == ResamplingKind.RESIZE:
                if node.alias < 0:
                    return Fraction(0)
                index = node.alias
                continue
            scale *= scale_of(node.record, self.dim - 2)
            index = node.parent
        return scale

    def chain(self, index: int) -> list[int]:
        """The node and its ancestors, input last (a resize continues through what it was resized from)."""
        found = []
        while index != INPUT:
            found.append(index)
            index = self.nodes[index].parent
        return found


def _extent(record: Resampling, axis: int, extent: int, divisible: bool) -> int | None:
    if not divisible and record.kind == ResamplingKind.PIXEL_UNSHUFFLE:
        output = extent // record.stride[axis]
        return output if output >= 1 else None
    return resampled_extent(record, axis, extent)


def image_input(trace: Trace) -> tuple[int, ...] | None:
    """The first input with spatial dimensions (B, C, *spatial), whose size the chains follow."""
    return next((shape for shape in trace.inputs if len(shape) >= 3), None)


def axes_of(trace: Trace) -> list[Axis]:
    """One chain per spatial axis of the image input, with the merges' constraints; [] without one."""
    image = image_input(trace)
    if image is None:
        return []
    spatial = len(image) - 2
    axes = [Axis(dim, [Node(INPUT, None, image[dim], 0)]) for dim in range(2, len(image))]
    ends = _subtree_ends(trace.layers)
    for record in trace.resamplings:
        if len(record.input_size) != spatial:
            continue  # an op on another tensor family (a 1-D conv over tokens, say)
        for axis in axes:
            axis.complete &= is_valid_geometry(record) and _add(axis, record)
    for number, pair in enumerate(trace.skips):
        for axis in axes:
            axis.complete &= _constrain(axis, number, pair, ends)
    return axes


def _add(axis: Axis, record: Resampling) -> bool:
    offset = axis.dim - 2
    parent = axis.find(record.input_size[offset], record.position)
    if parent is None:
        return False
    axis.nodes.append(Node(parent, record, record.output_size[offset], record.position))
    return True


def _constrain(axis: Axis, number: int, pair: SkipPair, ends: list[int]) -> bool:
    if pair.dim == axis.dim or len(pair.shape) != len(pair.main_shape) or len(pair.shape) <= axis.dim:
        return True  # joined along this axis (or not a map of this rank): nothing to agree on
    skip = axis.find(pair.shape[axis.dim], ends[pair.source])
    main_end = ends[pair.main_source] if pair.main_source >= 0 else 0
    main = axis.find(pair.main_shape[axis.dim], main_end)
    if main is None or main == skip:
        # The main input was resampled by a function after its producer returned, inside the
        # merging call (`F.interpolate(x, scale_factor=2)` then `cat`): the node made just
        # before the merge's target began. A node compared with itself constrains nothing.
        main = axis.find(pair.main_shape[axis.dim], pair.target)
    if skip is None or main is None:
        return False
    node = axis.nodes[main]
    if node.record is not None and node.record.kind == ResamplingKind.RESIZE and node.alias < 0 and main != skip:
        node.alias = skip  # `F.interpolate(x, size=skip.shape[2:])`: resized to the skip it joins
    axis.constraints.append(Constraint(skip, main, number))
    return True


def _subtree_ends(layers: tuple[LayerRecord, ...]) -> list[int]:
    """For each call, how many calls had begun when it returned (the end of its subtree)."""
    ends = [len(layers)] * len(layers)
    open_calls: list[int] = []
    for layer in layers:
        while open_calls and layers[open_calls[-1]].depth >= layer.depth:
            ends[open_calls.pop()] = layer.index
        open_calls.append(layer.index)
    return ends

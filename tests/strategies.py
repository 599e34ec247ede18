"""Hypothesis strategies for valid Traces: what any renderer and the JSON round trip must accept.

A valid Trace is what the tracer can produce, without assuming a UNet:
- `layers[i].index == i`; the layers are calls in pre-order: layer 0 is the model (depth 0,
  parent None), every other layer's parent is a call still running when it began (an
  ancestor of the previous layer, or that layer itself), and its depth is its parent's + 1;
- skips, breaks and warnings name layers by valid index (0 <= i < len(layers)); a skip's
  main source and a break side's producer may also be -1, a model input; a trace without
  layers (a forward stopped before its first call) has no skips or warnings, and at most a
  break naming layer -1;
- shapes have 0 to 5 dims and extents from 0 to 2**62 (the JSON schema's bound);
- text fields are any text: module names come from `add_module` and ModuleDict keys (any
  string without a dot), messages from exceptions, config values from the user's `--init`.
  Config keys are unique: the JSON schema writes config as an object.

Generation, not rendering, is what costs time in these tests, so values are drawn sparingly:
one integer draw per extent, and text mostly from a list of hostile strings.
"""

from __future__ import annotations

import dataclasses
import functools

from hypothesis import strategies as st

from shapetrace.records import (
    BROKEN,
    DOWNSTREAM,
    FAILED,
    OK,
    AxisRule,
    Break,
    BreakKind,
    BreakSide,
    Cause,
    CauseKind,
    Fix,
    LayerRecord,
    MergeOp,
    Resampling,
    ResamplingKind,
    Shape,
    ShapeWarning,
    SideRole,
    SizeRule,
    SkipPair,
    Trace,
    WarningKind,
)

MAX_EXTENT = 2**62
"""The largest extent or count a trace file may hold (`shapetrace.jsonio`)."""
STATUSES = (OK, BROKEN, DOWNSTREAM, FAILED)
BREAK_KINDS = tuple(BreakKind)
_HUGE = (2**31, 10**12, 4096 * 65536, MAX_EXTENT - 1, MAX_EXTENT)

HOSTILE_TEXTS = (
    "",
    " ",
    "x",
    "downs.1",
    "ups.9.conv1",
    "[bold red]not markup[/]",
    "[2, 64, 224, 224]",
    "<b>not html</b> & <br/>",
    '"quoted" \\ backslash',
    "{braces} -> edge; node [shape=box]",
    "line\nbreak\r\nand\ttab",
    "→ × é 中文 😀",
    "\x00\x1b[31mescape\x7f",
    "\u200b\u2028\ufeff",
    "]",
    "a]",
    "w" * 300,
    "two  spaces  and trailing ",
)
"""Strings that break markup, DOT, HTML labels, terminals or column widths when not escaped."""
_PRINTABLE_LABELS = ("Conv2d", "ResBlock", "UNet", "GroupNorm", "Upsample", "Identity", "ModuleList", "Attention")


def _count(number: int) -> int:
    return number if number <= 600 else _HUGE[number % len(_HUGE)]


# Mostly small numbers, sometimes the largest the schema allows, so that widths are exercised.
# One integer draw mapped, not st.one_of: every draw costs, and there are hundreds per trace.
counts = st.integers(0, 610).map(_count)
small_ints = st.integers(-1, 8)


# Built once: a strategy made afresh in every draw costs hypothesis more than the draw itself.
texts = st.one_of(st.sampled_from(HOSTILE_TEXTS), st.text(max_size=10))
"""Mostly HOSTILE_TEXTS, else arbitrary short text."""
labels = st.one_of(st.sampled_from(_PRINTABLE_LABELS), texts.filter(bool))
"""Class names: never empty; usual ones, else any text."""


COMMON_SHAPES: tuple[Shape, ...] = (
    (),
    (0,),
    (2,),
    (2, 256),
    (2, 3, 224, 224),
    (2, 64, 225, 225),
    (2, 0, 7, 7),
    (1, 77, 768),
    (4096, 3, 65536, 65536),
    (MAX_EXTENT, 1, MAX_EXTENT),
    (2, 8, 4, 16, 16),
)


@functools.cache
def shapes(max_dims: int = 5) -> st.SearchStrategy[Shape]:
    """0 to `max_dims` extents: often a common or extreme shape (two draws), else any."""
    common = st.sampled_from([shape for shape in COMMON_SHAPES if len(shape) <= max_dims])
    return st.one_of(common, st.lists(counts, max_size=max_dims).map(tuple))


@functools.cache
def shape_lists(max_size: int = 2) -> st.SearchStrategy[tuple[Shape, ...]]:
    return st.lists(shapes(), max_size=max_size).map(tuple)


@st.composite
def layer_records(draw: st.DrawFn, max_layers: int = 12, min_layers: int = 0) -> tuple[LayerRecord, ...]:
    """Calls in pre-order with consistent parents and depths."""
    count = draw(st.integers(min_layers, max_layers))
    layers: list[LayerRecord] = []
    running: list[int] = []  # the calls enclosing the next one, outermost first
    for index in range(count):
        if index == 0:
            parent, depth = None, 0
        else:
            # The new call starts inside one of the calls still running (the root never returns).
            level = draw(st.integers(0, len(running) - 1))
            running = running[: level + 1]
            parent, depth = running[level], level + 1
        running.append(index)
        layers.append(
            LayerRecord(
                index=index,
                name="" if parent is None else draw(texts),
                type=draw(labels),
                depth=depth,
                parent=parent,
                inputs=draw(shape_lists()),
                outputs=draw(shape_lists()),
                params=draw(counts),
                status=draw(st.sampled_from(STATUSES)),
            )
        )
    return tuple(layers)


@st.composite
def skip_pairs(draw: st.DrawFn, count: int) -> SkipPair:
    return SkipPair(
        source=draw(st.integers(0, count - 1)),
        target=draw(st.integers(0, count - 1)),
        op=draw(st.sampled_from(list(MergeOp))),
        dim=draw(small_ints),
        shape=draw(shapes()),
        main_source=draw(st.integers(-1, count - 1)),
        main_shape=draw(shapes()),
    )


@st.composite
def breaks(draw: st.DrawFn, count: int) -> Break:
    sides = [
        BreakSide(
            role=draw(st.sampled_from(list(SideRole))),
            shape=draw(shapes()),
            producer=draw(st.integers(-1, count - 1)),
            channels=draw(st.integers(-1, 600)),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    # Without layers (stopped before the first call) a break names no call: index -1.
    first = -1 if count == 0 else 0
    return Break(
        layer=draw(st.integers(first, count - 1)),
        leaf=draw(st.integers(first, count - 1)),
        kind=draw(st.sampled_from(BREAK_KINDS)),
        message=draw(texts),
        op=draw(st.sampled_from(("cat", "stack", "add", "conv2d", "group_norm", "", "ValueError"))),
        dim=draw(small_ints),
        cause=draw(texts),
        fix=draw(texts),
        sides=tuple(sides),
        expected=draw(shapes()),
    )


@st.composite
def shape_warnings(draw: st.DrawFn, count: int) -> ShapeWarning:
    return ShapeWarning(
        layer=draw(st.integers(0, count - 1)),
        kind=draw(st.sampled_from(list(WarningKind))),
        message=draw(texts),
        input_size=draw(shapes(3)),
        output_size=draw(shapes(3)),
        stride=draw(st.integers(1, 8)),
    )


@st.composite
def size_rules(draw: st.DrawFn) -> SizeRule:
    """One rule per spatial axis (1 to 3 of them), and nearest sizes with one extent per axis."""
    count = draw(st.integers(1, 3))
    axes = []
    for axis in range(2, 2 + count):
        modulus = draw(st.integers(1, 1024))
        residues = tuple(sorted(draw(st.sets(st.integers(0, modulus - 1), max_size=3))))
        axes.append(AxisRule(axis, modulus, residues, draw(counts)))
    nearest = draw(st.lists(st.lists(counts, min_size=count, max_size=count).map(tuple), max_size=3))
    return SizeRule(tuple(axes), tuple(nearest), exact=draw(st.booleans()))


@st.composite
def resamplings(draw: st.DrawFn, count: int) -> Resampling:
    axes = draw(st.integers(1, 3))
    per_axis = st.lists(small_ints.map(abs), min_size=axes, max_size=axes).map(tuple)
    return Resampling(
        layer=draw(st.integers(0, count - 1)),
        kind=draw(st.sampled_from(list(ResamplingKind))),
        op=draw(labels),
        input_size=draw(per_axis),
        output_size=draw(per_axis),
        position=draw(counts),
        kernel=draw(per_axis),
        stride=draw(per_axis),
        padding=draw(per_axis),
        dilation=draw(per_axis),
        output_padding=draw(st.just(()) | per_axis),
        ceil_mode=draw(st.booleans()),
        scale=draw(st.just(()) | st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), max_size=3).map(tuple)),
    )


@st.composite
def causes(draw: st.DrawFn, count: int, breaks: int) -> Cause:
    fixes = st.builds(Fix, texts, st.booleans(), st.lists(texts, max_size=2).map(tuple))
    return Cause(
        kind=draw(st.sampled_from(list(CauseKind))),
        layer=draw(st.integers(-1 if count == 0 else 0, max(count - 1, -1))),
        text=draw(texts),
        fixes=tuple(draw(st.lists(fixes, max_size=2))),
        breaks=tuple(draw(st.lists(st.integers(0, breaks - 1), max_size=3))) if breaks else (),
    )


@st.composite
def traces(draw: st.DrawFn, max_layers: int = 12, min_layers: int = 0) -> Trace:
    """Any valid Trace: empty, one layer, or up to `max_layers`, with any skips, breaks and warnings."""
    layers = draw(layer_records(max_layers, min_layers))
    count = len(layers)

    def some(strategy: st.SearchStrategy[object], most: int) -> tuple[object, ...]:
        """Up to `most` items; none without layers, which they would have to name."""
        return tuple(draw(st.lists(strategy, max_size=most))) if count else ()

    drawn_breaks = tuple(draw(st.lists(breaks(count), max_size=3 if count else 1)))
    return Trace(
        model=draw(labels),
        inputs=draw(shape_lists(3)),
        outputs=draw(shape_lists()),
        layers=layers,
        skips=some(skip_pairs(count), 5),  # type: ignore[arg-type]
        breaks=drawn_breaks,
        warnings=some(shape_warnings(count), 2),  # type: ignore[arg-type]
        size_rule=draw(st.none() | size_rules()),
        device=draw(st.sampled_from(("meta", "cpu", "cuda")) | texts),
        config=tuple(draw(st.dictionaries(texts, texts, max_size=3)).items()),
        resamplings=some(resamplings(count), 2),  # type: ignore[arg-type]
        causes=tuple(draw(st.lists(causes(count, len(drawn_breaks)), max_size=2))),
    )


@st.composite
def all_broken_traces(draw: st.DrawFn, max_layers: int = 12) -> Trace:
    """Every layer broken, with a break at each layer."""
    trace = draw(traces(max_layers, min_layers=1))
    layers = tuple(dataclasses.replace(layer, status=BROKEN) for layer in trace.layers)
    every = tuple(
        Break(
            layer=layer.index,
            leaf=layer.index,
            kind=BREAK_KINDS[layer.index % len(BREAK_KINDS)],
            message=draw(texts),
            cause=f"cause {layer.index}",
            fix=f"fix {layer.index}",
            expected=layer.outputs[0] if layer.outputs else (),
        )
        for layer in layers
    )
    # The causes name breaks by index: keep the indices the new breaks still have.
    causes = tuple(
        dataclasses.replace(cause, breaks=tuple(index for index in cause.breaks if index < len(every)))
        for cause in trace.causes
    )
    return dataclasses.replace(trace, layers=layers, breaks=every, causes=causes)

"""The fixes of each cause, each with the action a re-trace applies to verify it.

An action is a tuple of steps, each "verb:argument,argument" (module names as
`named_modules()` gives them); `shapetrace.verify` applies them on a meta copy:

    size:224,224                 trace at this spatial size
    resize:                      resize the up path to the skip at every merge whose sizes differ
    crop:                        centre-crop every input of a merge to the smallest size among them
    in_channels:ups.0,96,144     the module is built for 96 input channels instead of 144
    out_channels:up1,32,48       the module outputs 32 channels instead of 48
    output_padding:up1,1,1       the ConvTranspose gets this output_padding per axis
    reroute:enc0,enc1,0,cat      the first concatenation joining enc0's output joins enc1's instead
                                 (uses count per merge kind, cat or add; with no kind, every merge counts)
"""

from __future__ import annotations

from collections.abc import Callable

from shapetrace.analysis.order import Misorder
from shapetrace.analysis.placement import block_name, full_name
from shapetrace.analysis.size_rules import is_multiple_rule, rule_text
from shapetrace.formatting import format_shape, format_size
from shapetrace.records import Break, Fix, MergeOp, Resampling, SizeRule, SkipPair, Trace

RESIZE_TEXT = "pass the skip's size to the upsampler (F.interpolate(x, size=skip.shape[2:]))"


def step(verb: str, *arguments: object) -> str:
    return f"{verb}:" + ",".join(str(argument) for argument in arguments)


def merge_kind(pair: SkipPair) -> str:
    """The merges a reroute counts uses among: sums apart from concatenations (a residual sum is no skip)."""
    return "add" if pair.op == MergeOp.ADD else "cat"


def occurrence(trace: Trace, index: int) -> int:
    """How many earlier pairs join the same source's output by the same kind of merge (a reroute's use)."""
    pair = trace.skips[index]
    return sum(
        1
        for earlier in trace.skips[:index]
        if earlier.source == pair.source and merge_kind(earlier) == merge_kind(pair)
    )


def size_fixes(rule: SizeRule | None) -> list[Fix]:
    """Use one of the nearest sizes the rule offers, or pad to the larger one."""
    if rule is None or not rule.nearest:
        return [Fix("use an input size that every downsampling stride divides, or pad the input")]
    sizes = " or ".join(format_size(size) for size in rule.nearest)
    multiple = is_multiple_rule(rule)
    minimum = min(axis.minimum for axis in rule.axes)
    if multiple == 1:
        text = f"use an input size of at least {minimum}, e.g. {sizes}"
    elif multiple is not None:
        text = f"use an input size that is a multiple of {multiple} (at least {minimum}), e.g. {sizes}"
    else:
        text = f"use an input size the model accepts ({rule_text(rule)}), e.g. {sizes}"
    if all(axis.maximum is None for axis in rule.axes):  # a model built for one size: padding cannot reach it
        text += f"; or pad the input to {format_size(rule.nearest[-1])} and crop the output back"
    return [Fix(text, action=tuple(step("size", *size) for size in rule.nearest))]


CROP_TEXT = "centre-crop each skip to the up path's size before the merge, as valid-convolution UNets do"


def rounding_fixes(sizes: list[Fix], unpadded: bool = False) -> tuple[Fix, ...]:
    """Sizes the model takes, then resizing the up path; with unpadded convs in the way, cropping the skip first."""
    resize = Fix(RESIZE_TEXT, action=(step("resize"),))
    if unpadded:
        return (Fix(CROP_TEXT, action=(step("crop"),)), *sizes, resize)
    return (*sizes, resize)


def transpose_fixes(
    trace: Trace, transposes: tuple[Resampling, ...], needed: Callable[[Resampling, int], int | None]
) -> tuple[Fix, ...]:
    """Set output_padding on each ConvTranspose one short (one fix for all of them)."""
    steps, names = [], []
    for record in transposes:
        padding = tuple(needed(record, axis) or 0 for axis in range(len(record.input_size)))
        value = padding[0] if len(set(padding)) == 1 else padding
        if record.op == trace.layers[record.layer].type:
            name = full_name(trace, record.layer)
            names.append(f"{name} with output_padding={value}")
            steps.append(step("output_padding", name, *padding))
        else:
            names.append(f"pass output_padding={value} to {record.op} in {block_name(trace, record.layer)}")
    text = "build " + ", ".join(names) if steps else "; ".join(names)
    return (Fix(text, action=tuple(steps) if len(steps) == len(transposes) else ()),)


def level_fixes(trace: Trace, pair: SkipPair | None, occurrence: int, partner: int | None) -> tuple[Fix, ...]:
    """Take the skip from the down level at the up path's resolution (the mirror pairing's choice)."""
    if pair is None or partner is None:
        return (Fix("pair each up block with the skip saved at its own resolution"),)
    source, chosen = full_name(trace, pair.source), full_name(trace, partner)
    outputs = trace.layers[partner].outputs
    shape = f" (its output is {format_shape(outputs[0])})" if outputs else ""
    text = f"take the skip of {block_name(trace, pair.target)} from {chosen}{shape}, the down level at its resolution"
    return (Fix(text, action=(step("reroute", source, chosen, occurrence, merge_kind(pair)),)),)


def order_fixes(trace: Trace, order: Misorder) -> tuple[Fix, ...]:
    """Consume the skips last in, first out: each merge takes its mirror's source."""
    steps, moves = [], []
    for index, mirror in order.mirror.items():
        pair = trace.skips[index]
        if mirror == pair.source:
            continue
        uses = occurrence(trace, index)
        steps.append(step("reroute", full_name(trace, pair.source), full_name(trace, mirror), uses, merge_kind(pair)))
        moves.append(f"{block_name(trace, pair.target)} takes {block_name(trace, mirror)}")
    if not moves:
        return (Fix("consume the skips last in, first out (skips.pop(), not skips.pop(0))"),)
    text = f"consume the skips last in, first out (skips.pop(), not skips.pop(0)): {', '.join(moves)}"
    if order.resized:
        text += "; then the up path needs no resize to meet its skip"
    return (Fix(text, action=tuple(steps)),)


def channel_fixes(trace: Trace, brk: Break) -> tuple[Fix, ...]:
    """Build the consumer for what it receives, or (one input) make the producer give what it expects."""
    expected = brk.expected[0] if brk.expected else -1
    got = sum(side.channels for side in brk.sides)
    if brk.op == "add":
        return _additive_fixes(trace, brk)
    if len(brk.sides) > 1:
        consumer = full_name(trace, brk.layer)
        parts = " + ".join(str(side.channels) for side in brk.sides)
        text = f"build {consumer} for {got} input channels ({parts})"
        return (Fix(text, action=(step("in_channels", consumer, got, expected),)),)
    leaf = full_name(trace, brk.leaf)
    source = block_name(trace, brk.sides[0].producer) if brk.sides else "input"
    fixes = [Fix(f"build {leaf} for {got} input channels", action=(step("in_channels", leaf, got, expected),))]
    if brk.sides and brk.sides[0].producer >= 0:
        fixes.append(Fix(f"make {source} output {expected}", action=(step("out_channels", source, expected, got),)))
    return tuple(fixes)


def _additive_fixes(trace: Trace, brk: Break) -> tuple[Fix, ...]:
    """`up(x) + skip` with two channel counts: the up path's producer gives the skip's count."""
    main = next((side for side in brk.sides if side.role == "up path"), brk.sides[0])
    skip = next((side for side in brk.sides if side.role == "skip"), brk.sides[-1])
    producer = full_name(trace, main.producer)
    build = Fix(
        f"build {producer} for {skip.channels} output channels, the skip's",
        action=(step("out_channels", producer, skip.channels, main.channels),),
    )
    project = Fix(f"project the skip to {main.channels} channels (a 1×1 convolution) before the +")
    return (build, project)

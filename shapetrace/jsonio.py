"""Trace <-> JSON, schema 2: the public contract of `--format json` and `shapetrace diff`.

Schema 2 adds `causes` (each root cause once, with its fixes and the breaks it explains),
`resamplings` (the geometry of every op that changed a spatial size), a per-axis
`size_rule` and the cost of a `--cost` trace (`jsoncost`); files of schema 1 are still read.

Reading validates every field and raises TraceFileError naming the bad value, so a
truncated, foreign or hostile file gives one clear line, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from typing import Any

from shapetrace import jsoncost
from shapetrace.errors import TraceFileError
from shapetrace.records import (
    AxisRule,
    Break,
    BreakKind,
    BreakSide,
    Cause,
    CauseKind,
    Fix,
    LayerRecord,
    LayerStatus,
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

SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
_MAX_INT = 2**62  # larger than any real extent or parameter count; rejects hostile numbers
_MAX_FILE = 50_000_000  # characters: a 10,000-layer trace is a few MB
_MAX_STRING = 10_000  # characters in one name or message


def dumps(trace: Trace, indent: int | None = 2) -> str:
    data = to_dict(trace)
    if trace.cost is not None:
        jsoncost.add_cost(data, trace.cost)
    return json.dumps(data, indent=indent)


def to_dict(trace: Trace) -> dict[str, Any]:
    def name(index: int) -> str:
        return "input" if index < 0 else trace.layers[index].name

    return {
        "schema": SCHEMA,
        "model": trace.model,
        "device": trace.device,
        "config": [list(pair) for pair in trace.config],  # pairs: a key may repeat
        "inputs": [list(shape) for shape in trace.inputs],
        "outputs": [list(shape) for shape in trace.outputs],
        "ok": trace.ok,
        "layers": [
            {
                "index": layer.index,
                "name": layer.name,
                "type": layer.type,
                "depth": layer.depth,
                "parent": layer.parent,
                "inputs": [list(shape) for shape in layer.inputs],
                "outputs": [list(shape) for shape in layer.outputs],
                "params": layer.params,
                "status": layer.status,
            }
            for layer in trace.layers
        ],
        "skips": [
            {
                "source": name(skip.source),
                "source_index": skip.source,
                "target": name(skip.target),
                "target_index": skip.target,
                "op": skip.op,
                "dim": skip.dim,
                "shape": list(skip.shape),
                "main_source": name(skip.main_source),
                "main_source_index": skip.main_source,
                "main_shape": list(skip.main_shape),
            }
            for skip in trace.skips
        ],
        "breaks": [
            {
                "layer": name(brk.layer),
                "layer_index": brk.layer,
                "leaf": name(brk.leaf),
                "leaf_index": brk.leaf,
                "kind": brk.kind,
                "op": brk.op,
                "dim": brk.dim,
                "message": brk.message,
                "cause": brk.cause,
                "fix": brk.fix,
                "expected": list(brk.expected),
                "sides": [
                    {
                        "role": side.role,
                        "shape": list(side.shape),
                        "producer": name(side.producer),
                        "producer_index": side.producer,
                        "channels": side.channels,
                    }
                    for side in brk.sides
                ],
            }
            for brk in trace.breaks
        ],
        "warnings": [
            {
                "layer": name(warning.layer),
                "layer_index": warning.layer,
                "kind": warning.kind,
                "message": warning.message,
                "input_size": list(warning.input_size),
                "output_size": list(warning.output_size),
                "stride": warning.stride,
            }
            for warning in trace.warnings
        ],
        "size_rule": _size_rule_dict(trace.size_rule),
        "causes": [_cause_dict(cause, name) for cause in trace.causes],
        "resamplings": [_resampling_dict(record, name) for record in trace.resamplings],
    }


def loads(text: str) -> Trace:
    if len(text) > _MAX_FILE:
        raise TraceFileError(f"trace file too large: {len(text)} characters, expected at most {_MAX_FILE}")
    try:
        data = json.loads(text)
    except RecursionError:
        raise TraceFileError("trace file is nested too deeply to be a shapetrace trace") from None
    except json.JSONDecodeError as error:
        raise TraceFileError(f"trace file is not valid JSON: {error.msg} at line {error.lineno}") from None
    except ValueError as error:  # e.g. an integer beyond Python's digit limit
        raise TraceFileError(f"trace file holds a value shapetrace cannot read: {str(error)[:80]}") from None
    return from_dict(data)


def from_dict(data: Any) -> Trace:
    reader = _Reader(data, "trace")
    schema = reader.get("schema", int)
    if schema not in READABLE_SCHEMAS:
        expected = " or ".join(str(number) for number in READABLE_SCHEMAS)
        raise TraceFileError(f"trace file has schema {schema}, expected {expected}")
    layers = tuple(_layer(item) for item in reader.items("layers"))
    count = len(layers)
    trace = Trace(
        model=reader.get("model", str),
        inputs=reader.shapes("inputs"),
        outputs=reader.shapes("outputs"),
        layers=layers,
        skips=tuple(_skip(item, count) for item in reader.items("skips")),
        breaks=tuple(_break(item, count) for item in reader.items("breaks")),
        warnings=tuple(_warning(item, count) for item in reader.items("warnings", required=False)),
        size_rule=_size_rule(data.get("size_rule"), reader.shapes("inputs")),
        device=reader.get("device", str, default="meta"),
        config=_config(reader.get("config", list, default=[])),
        resamplings=tuple(_resampling(item, count) for item in reader.items("resamplings", required=False)),
        cost=jsoncost.read_cost(data, _Reader),
    )
    trace = dataclasses.replace(
        trace, causes=tuple(_cause(item, count, len(trace.breaks)) for item in reader.items("causes", required=False))
    )
    _check_tree(layers)
    return trace


def _check_tree(layers: tuple[LayerRecord, ...]) -> None:
    """Layers in call order: index = position, a parent before its child, depth = parent's + 1."""
    for position, layer in enumerate(layers):
        if layer.index != position:
            raise TraceFileError(f"layer at position {position} has index {layer.index}, expected {position}")
        if layer.parent is None:
            if layer.depth != 0:
                raise TraceFileError(f"layer {position} has no parent but depth {layer.depth}, expected 0")
            continue
        if not 0 <= layer.parent < position:
            raise TraceFileError(f"layer {position} has parent {layer.parent}, expected an index below {position}")
        if layer.depth != layers[layer.parent].depth + 1:
            expected = layers[layer.parent].depth + 1
            raise TraceFileError(f"layer {position} has depth {layer.depth}, expected {expected} (its parent's + 1)")


def _layer(item: Any) -> LayerRecord:
    reader = _Reader(item, "layer")
    parent = item.get("parent") if isinstance(item, dict) else None
    return LayerRecord(
        index=reader.get("index", int),
        name=reader.get("name", str),
        type=reader.get("type", str),
        depth=reader.get("depth", int),
        parent=None if parent is None else reader.get("parent", int),
        inputs=reader.shapes("inputs"),
        outputs=reader.shapes("outputs"),
        params=reader.get("params", int),
        status=reader.choice("status", LayerStatus, default=LayerStatus.OK),
    )


def _skip(item: Any, count: int) -> SkipPair:
    reader = _Reader(item, "skip")
    return SkipPair(
        source=reader.index("source_index", count),
        target=reader.index("target_index", count),
        op=reader.choice("op", MergeOp),
        dim=reader.get("dim", int),
        shape=reader.shape("shape"),
        main_source=reader.index("main_source_index", count, default=-1),
        main_shape=reader.shape("main_shape", default=()),
    )


def _break(item: Any, count: int) -> Break:
    reader = _Reader(item, "break")
    sides = []
    for side in reader.items("sides", required=False):
        side_reader = _Reader(side, "break side")
        sides.append(
            BreakSide(
                role=side_reader.choice("role", SideRole),
                shape=side_reader.shape("shape"),
                producer=side_reader.index("producer_index", count),
                channels=side_reader.get("channels", int, default=-1),
            )
        )
    return Break(
        layer=reader.index("layer_index", count),
        leaf=reader.index("leaf_index", count, default=reader.index("layer_index", count)),
        kind=reader.choice("kind", BreakKind),
        message=reader.get("message", str),
        op=reader.get("op", str, default=""),
        dim=reader.get("dim", int, default=-1),
        cause=reader.get("cause", str, default=""),
        fix=reader.get("fix", str, default=""),
        sides=tuple(sides),
        expected=reader.shape("expected", default=()),
    )


def _warning(item: Any, count: int) -> ShapeWarning:
    reader = _Reader(item, "warning")
    input_size = reader.shape("input_size", default=())
    output_size = reader.shape("output_size", default=())
    stride = reader.get("stride", int, default=2)
    return ShapeWarning(
        layer=reader.index("layer_index", count),
        kind=reader.choice("kind", WarningKind, default=_warning_kind(input_size, output_size, stride)),
        message=reader.get("message", str),
        input_size=input_size,
        output_size=output_size,
        stride=stride,
    )


def _warning_kind(input_size: Shape, output_size: Shape, stride: int) -> WarningKind:
    """The kind of a warning written before warnings carried one."""
    if stride < 2:
        return WarningKind.CROPPED_OUTPUT
    odd = [(a, b) for a, b in zip(input_size, output_size, strict=False) if a % stride]
    if odd and all(b == -(-a // stride) for a, b in odd):
        return WarningKind.ROUNDED_UP
    return WarningKind.FLOORED


def _config(pairs: list[Any]) -> tuple[tuple[str, str], ...]:
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise TraceFileError(f"trace field 'config' has {pair!r:.40}, expected [key, value] pairs of strings")
    return tuple((key, value) for key, value in pairs)


def _size_rule_dict(rule: SizeRule | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {
        "axes": [_axis_rule_dict(axis) for axis in rule.axes],
        # One int where every axis has the same extent, else one extent per axis.
        "nearest": [size[0] if len(set(size)) == 1 else list(size) for size in rule.nearest],
        "exact": rule.exact,
    }


def _axis_rule_dict(axis: AxisRule) -> dict[str, Any]:
    item = {"axis": axis.axis, "modulus": axis.modulus, "residues": list(axis.residues), "minimum": axis.minimum}
    return item if axis.maximum is None else {**item, "maximum": axis.maximum}


def _size_rule(item: Any, inputs: tuple[Shape, ...]) -> SizeRule | None:
    if item is None:
        return None
    reader = _Reader(item, "size_rule")
    if "axes" not in item:
        return _size_rule_of_schema_1(reader, inputs)
    axes = []
    for axis_item in reader.items("axes"):
        axis = _Reader(axis_item, "size_rule axis")
        modulus = axis.get("modulus", int)
        if modulus < 1:
            raise TraceFileError(f"size_rule axis field 'modulus' is {modulus}, expected at least 1")
        minimum, maximum = axis.get("minimum", int), axis.get("maximum", int, default=None)
        rule = AxisRule(axis.get("axis", int), modulus, axis.shape("residues"), minimum, maximum)
        axes.append(rule)
    nearest = tuple(_extents(size, len(axes)) for size in reader.items("nearest", required=False))
    return SizeRule(axes=tuple(axes), nearest=nearest, exact=reader.get("exact", bool, default=True))


def _size_rule_of_schema_1(reader: _Reader, inputs: tuple[Shape, ...]) -> SizeRule:
    """`{multiple, minimum, nearest}`: the same multiple on every spatial axis of the first image input."""
    multiple, minimum = reader.get("multiple", int), reader.get("minimum", int)
    if multiple < 1:
        raise TraceFileError(f"size_rule field 'multiple' is {multiple}, expected at least 1")
    image = next((shape for shape in inputs if len(shape) >= 3), (0, 0, 0, 0))
    axes = tuple(AxisRule(axis, multiple, (0,), minimum) for axis in range(2, len(image)))
    nearest = tuple((size,) * len(axes) for size in reader.shape("nearest", default=()))
    return SizeRule(axes=axes, nearest=nearest, exact=reader.get("exact", bool, default=True))


def _extents(value: Any, count: int) -> Shape:
    """A nearest size: an int for every axis alike, or one extent per axis."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _shape([value] * count, "size_rule field 'nearest'")
    size = _shape(value, "size_rule field 'nearest'")
    if len(size) != count:
        raise TraceFileError(f"size_rule field 'nearest' has {list(size)}, expected {count} extents (one per axis)")
    return size


def _cause_dict(cause: Cause, name: Any) -> dict[str, Any]:
    return {
        "kind": cause.kind,
        "layer": name(cause.layer),
        "layer_index": cause.layer,
        "text": cause.text,
        "fixes": [{"text": fix.text, "verified": fix.verified, "action": list(fix.action)} for fix in cause.fixes],
        "breaks": list(cause.breaks),
    }


def _cause(item: Any, count: int, breaks: int) -> Cause:
    reader = _Reader(item, "cause")
    fixes = []
    for fix in reader.items("fixes", required=False):
        fix_reader = _Reader(fix, "fix")
        action = fix_reader.get("action", list, default=[])
        if not all(isinstance(word, str) and len(word) <= _MAX_STRING for word in action):
            raise TraceFileError(f"fix field 'action' is {action!r:.40}, expected a list of strings")
        fixes.append(Fix(fix_reader.get("text", str), fix_reader.get("verified", bool, default=False), tuple(action)))
    explained = reader.shape("breaks", default=())
    for index in explained:
        if index >= breaks:
            raise TraceFileError(f"cause field 'breaks' has {index}, expected a break index below {breaks}")
    return Cause(
        kind=reader.choice("kind", CauseKind),
        layer=reader.index("layer_index", count),
        text=reader.get("text", str),
        fixes=tuple(fixes),
        breaks=explained,
    )


def _resampling_dict(record: Resampling, name: Any) -> dict[str, Any]:
    return {
        "layer": name(record.layer),
        "layer_index": record.layer,
        "kind": record.kind,
        "op": record.op,
        "input_size": list(record.input_size),
        "output_size": list(record.output_size),
        "position": record.position,
        "kernel": list(record.kernel),
        "stride": list(record.stride),
        "padding": list(record.padding),
        "dilation": list(record.dilation),
        "output_padding": list(record.output_padding),
        "ceil_mode": record.ceil_mode,
        "scale": [list(ratio) for ratio in record.scale],
    }


def _resampling(item: Any, count: int) -> Resampling:
    reader = _Reader(item, "resampling")
    scale = reader.items("scale", required=False)
    ratios = tuple(_shape(ratio, "resampling field 'scale'") for ratio in scale)
    if not all(len(ratio) == 2 and ratio[1] > 0 for ratio in ratios):
        raise TraceFileError(f"resampling field 'scale' is {scale!r:.40}, expected [numerator, denominator] pairs")
    return Resampling(
        layer=reader.index("layer_index", count),
        kind=reader.choice("kind", ResamplingKind),
        op=reader.get("op", str),
        input_size=reader.shape("input_size"),
        output_size=reader.shape("output_size"),
        position=reader.get("position", int, default=0),
        kernel=reader.shape("kernel", default=()),
        stride=reader.shape("stride", default=()),
        padding=reader.shape("padding", default=()),
        dilation=reader.shape("dilation", default=()),
        output_padding=reader.shape("output_padding", default=()),
        ceil_mode=reader.get("ceil_mode", bool, default=False),
        scale=tuple((ratio[0], ratio[1]) for ratio in ratios),
    )


_MISSING = object()


class _Reader:
    """Typed access to one JSON object, with errors that name the field and the value."""

    def __init__(self, data: Any, what: str) -> None:
        if not isinstance(data, dict):
            raise TraceFileError(f"{what} must be a JSON object, got {type(data).__name__}")
        self.data, self.what = data, what

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise TraceFileError(f"{self.what} has no field {key!r}")
            return default
        value = self.data[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise TraceFileError(f"{self.what} field {key!r} is {value!r:.40}, expected an integer")
        if not isinstance(value, kind):
            article = "an" if kind.__name__[0] in "aeiou" else "a"
            raise TraceFileError(f"{self.what} field {key!r} is {value!r:.40}, expected {article} {kind.__name__}")
        if isinstance(value, str) and len(value) > _MAX_STRING:
            raise TraceFileError(
                f"{self.what} field {key!r} has {len(value)} characters, expected at most {_MAX_STRING}"
            )
        if isinstance(value, int) and abs(value) > _MAX_INT:
            raise TraceFileError(f"{self.what} field {key!r} is {value:.3e}, expected at most {_MAX_INT}")
        return value

    def choice(self, key: str, vocabulary: type[StrEnum], default: Any = _MISSING) -> Any:
        """A string that must be one of `vocabulary`'s values."""
        value = self.get(key, str, default)
        try:
            return vocabulary(value)
        except ValueError:
            expected = ", ".join(repr(member.value) for member in vocabulary)
            raise TraceFileError(f"{self.what} field {key!r} is {value!r:.40}, expected one of {expected}") from None

    def index(self, key: str, count: int, default: Any = _MISSING) -> int:
        value: int = self.get(key, int, default)
        if not -1 <= value < count:
            raise TraceFileError(f"{self.what} field {key!r} is {value}, expected a layer index below {count}")
        return value

    def items(self, key: str, required: bool = True) -> list[Any]:
        value: list[Any] = self.get(key, list, _MISSING if required else [])
        return value

    def shape(self, key: str, default: Any = _MISSING) -> Shape:
        value = self.get(key, list, default)
        return _shape(value, f"{self.what} field {key!r}")

    def shapes(self, key: str) -> tuple[Shape, ...]:
        return tuple(_shape(shape, f"{self.what} field {key!r}") for shape in self.items(key))


def _shape(value: Any, where: str) -> Shape:
    if not isinstance(value, (list, tuple)) or len(value) > 64:
        raise TraceFileError(f"{where} is {value!r:.40}, expected a shape (a list of at most 64 integers)")
    for extent in value:
        if isinstance(extent, bool) or not isinstance(extent, int) or not 0 <= extent <= _MAX_INT:
            raise TraceFileError(f"{where} has extent {extent!r:.40}, expected an integer from 0 to {_MAX_INT}")
    return tuple(value)

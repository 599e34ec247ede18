"""The cost part of the JSON contract (schema 2): per-layer fields and the top-level `cost` object.

Each layer of a `--cost` trace gets `flops`, `other_flops`, `macs`, `output_bytes`,
`saved_bytes`, `trainable_params`, `frozen_params`, `param_bytes`, `kernel`, `dtype`,
`attention_tokens` and `attention_flops`; the top level gets
`cost: {flops, other_flops, macs, params, param_bytes, inference_peak_bytes, train_peak_bytes,
levels: [{level, side, flops, activation_bytes, params, ...}], budget: {bytes, fits, max_batch,
max_size} | null, ...}`. Without a cost these fields are absent and `cost` is null.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from shapetrace.errors import TraceFileError
from shapetrace.records import (
    Budget,
    CostMode,
    CostOptions,
    CostSummary,
    LayerCost,
    LevelCost,
    Optimizer,
    Shape,
)

LAYER_FIELDS = (
    "flops",
    "other_flops",
    "macs",
    "output_bytes",
    "saved_bytes",
    "trainable_params",
    "frozen_params",
    "param_bytes",
    "kernel",
    "dtype",
    "attention_tokens",
    "attention_flops",
)
"""LayerCost's fields, in its order, as each layer of the JSON names them."""
_COUNTS = (
    "flops",
    "other_flops",
    "macs",
    "params",
    "trainable_params",
    "frozen_params",
    "param_bytes",
    "buffer_bytes",
    "input_bytes",
    "activation_peak_bytes",
    "inference_peak_bytes",
    "saved_bytes",
    "gradient_bytes",
    "optimizer_bytes",
    "transient_bytes",
    "train_peak_bytes",
)
_LEVEL_COUNTS = (
    "flops",
    "activation_bytes",
    "saved_bytes",
    "params",
    "skip_bytes",
    "attention_tokens",
    "attention_flops",
)
_SIDES = ("down", "mid", "up")


class Reader(Protocol):
    """jsonio's validating reader of one JSON object."""

    def get(self, key: str, kind: type, default: Any = ...) -> Any: ...

    def shape(self, key: str, default: Any = ...) -> Shape: ...

    def choice(self, key: str, vocabulary: Any, default: Any = ...) -> Any: ...

    def items(self, key: str, required: bool = True) -> list[Any]: ...


def add_cost(data: dict[str, Any], cost: CostSummary) -> None:
    """Write `cost` into a trace's JSON object: each layer's fields, and the top-level object."""
    for layer, layer_cost in zip(data["layers"], cost.layers, strict=False):
        for name in LAYER_FIELDS:
            value = getattr(layer_cost, name)
            layer[name] = list(value) if isinstance(value, tuple) else value
    summary: dict[str, Any] = {name: getattr(cost, name) for name in _COUNTS}
    summary["param_bytes_by_dtype"] = dict(cost.param_bytes_by_dtype)
    summary["mode"] = cost.options.mode.value
    summary["optimizer"] = cost.options.optimizer.value
    summary["checkpointing"] = cost.options.checkpointing
    summary["levels"] = [
        {"level": level.level, "side": level.side, "size": list(level.size)}
        | {name: getattr(level, name) for name in _LEVEL_COUNTS}
        for level in cost.levels
    ]
    budget = cost.budget
    summary["budget"] = (
        None
        if budget is None
        else {
            "bytes": budget.bytes,
            "mode": budget.mode.value,
            "fits": budget.fits,
            "max_batch": budget.max_batch,
            "max_size": budget.max_size,
        }
    )
    data["cost"] = summary


def read_cost(data: dict[str, Any], reader_type: Callable[[Any, str], Reader]) -> CostSummary | None:
    """The CostSummary of a trace's JSON object; None where it has none (schema 1, or no --cost).

    Raises:
        TraceFileError: naming the field, where a cost field is missing or of the wrong kind.
    """
    item = data.get("cost")
    if item is None:
        return None
    reader = reader_type(item, "cost")
    counts = {name: _count(reader, name) for name in _COUNTS}
    by_dtype = reader.get("param_bytes_by_dtype", dict, default={})
    for dtype, nbytes in by_dtype.items():
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise TraceFileError(f"cost field 'param_bytes_by_dtype' has {dtype}: {nbytes!r:.40}, expected bytes")
    budget = _budget(item.get("budget"), reader_type)
    options = CostOptions(
        mode=reader.choice("mode", CostMode, default=CostMode.INFERENCE),
        optimizer=reader.choice("optimizer", Optimizer, default=Optimizer.ADAM),
        checkpointing=reader.get("checkpointing", bool, default=False),
        budget=budget.bytes if budget is not None else None,
    )
    layers = tuple(_layer(reader_type(layer, "layer")) for layer in data.get("layers", []))
    levels = tuple(_level(reader_type(level, "cost level")) for level in reader.items("levels", required=False))
    return CostSummary(
        **counts,
        param_bytes_by_dtype=tuple(sorted(by_dtype.items(), key=lambda pair: (-pair[1], pair[0]))),
        options=options,
        layers=layers,
        levels=levels,
        budget=budget,
    )


def _count(reader: Reader, name: str, default: Any = ...) -> int:
    value: int = reader.get(name, int) if default is ... else reader.get(name, int, default)
    if value < 0:
        raise TraceFileError(f"{name!r} is {value}, expected a count of at least 0")
    return value


def _layer(reader: Reader) -> LayerCost:
    counts = {name: _count(reader, name) for name in LAYER_FIELDS[:8]}
    return LayerCost(
        **counts,
        kernel=reader.shape("kernel", default=()),
        dtype=reader.get("dtype", str, default=""),
        attention_tokens=_count(reader, "attention_tokens", 0),
        attention_flops=_count(reader, "attention_flops", 0),
    )


def _level(reader: Reader) -> LevelCost:
    side = reader.get("side", str)
    if side not in _SIDES:
        raise TraceFileError(f"cost level field 'side' is {side!r:.40}, expected one of {', '.join(_SIDES)}")
    return LevelCost(
        level=reader.get("level", int),
        side=side,
        size=reader.shape("size", default=()),
        flops=_count(reader, "flops"),
        activation_bytes=_count(reader, "activation_bytes"),
        saved_bytes=_count(reader, "saved_bytes", 0),
        params=_count(reader, "params"),
        skip_bytes=_count(reader, "skip_bytes", 0),
        attention_tokens=_count(reader, "attention_tokens", 0),
        attention_flops=_count(reader, "attention_flops", 0),
    )


def _budget(item: Any, reader_type: Callable[[Any, str], Reader]) -> Budget | None:
    if item is None:
        return None
    reader = reader_type(item, "cost budget")
    return Budget(
        bytes=_count(reader, "bytes"),
        mode=reader.choice("mode", CostMode, default=CostMode.INFERENCE),
        fits=reader.get("fits", bool),
        max_batch=_count(reader, "max_batch"),
        max_size=_count(reader, "max_size"),
    )

"""Pooling, adaptive pooling, interpolation and padding: output sizes from windows, requested sizes and scales."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from shapetrace.tracing.metashapes.arguments import (
    Shape,
    ShapeFunction,
    ShapeTable,
    bind,
    expand,
    floating,
    is_int,
    is_number,
    joined,
    meta,
    signature_of,
)
from shapetrace.tracing.metashapes.mismatch import ShapeMismatch

_AVERAGE_POOL_1D = signature_of(
    lambda input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True: None
)

# avg_pool2d and avg_pool3d take one more argument.
_AVERAGE_POOL = _AVERAGE_POOL_1D.replace(
    parameters=[
        *_AVERAGE_POOL_1D.parameters.values(),
        inspect.Parameter("divisor_override", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ]
)
_MAX_POOL = signature_of(F.max_pool2d_with_indices)  # the same for 1, 2 and 3 dimensions


def pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: in ceil mode the last window must start inside the input."""
    reach = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    output = reach // stride + 1
    if ceil_mode and (output - 1) * stride >= size + padding:
        output -= 1
    return output


def _pooling(spatial: int, maximum: bool, with_indices: bool = False) -> ShapeFunction:
    """F.avg_pool{1,2,3}d, F.max_pool{1,2,3}d and F.max_pool{1,2,3}d_with_indices."""
    signature = _MAX_POOL if maximum else _AVERAGE_POOL_1D if spatial == 1 else _AVERAGE_POOL

    def shape_function(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        bound = bind(signature, args, kwargs)
        window = _pooling_window(bound, spatial) if bound else None
        if bound is None or window is None:
            return NotImplemented
        input, (kernel, strides, paddings, dilations) = bound["input"], window
        sizes = input.shape[-spatial:]
        if not maximum and spatial == 3 and any(size < k for size, k in zip(sizes, kernel, strict=True)):
            raise ShapeMismatch(
                f"input image (T: {sizes[0]} H: {sizes[1]} W: {sizes[2]}) smaller than kernel size "
                f"(kT: {kernel[0]} kH: {kernel[1]} kW: {kernel[2]})"
            )
        outputs = tuple(
            pooled_size(size, k, stride, padding, dilation, bound["ceil_mode"])
            for size, k, stride, padding, dilation in zip(sizes, kernel, strides, paddings, dilations, strict=True)
        )
        if min(outputs) < 1:
            channels = input.shape[-spatial - 1]
            raise ShapeMismatch(
                f"Given input size: ({joined((channels, *sizes), 'x')}). "
                f"Calculated output size: ({joined((channels, *outputs), 'x')}). Output size is too small"
            )
        output = meta((*input.shape[:-spatial], *outputs), input.dtype)
        if with_indices or bound.get("return_indices"):
            return output, meta(output.shape, torch.int64)
        return output

    return shape_function


def _pooling_window(bound: dict[str, Any], spatial: int) -> tuple[Shape, Shape, Shape, Shape] | None:
    """Kernel, stride, padding and dilation per dimension, where torch accepts the call."""
    input, stride = bound["input"], bound["stride"]
    if not floating(input) or input.dim() not in (spatial + 1, spatial + 2) or 0 in input.shape[-spatial - 1 :]:
        return None
    if not isinstance(bound["ceil_mode"], bool) or not isinstance(bound.get("count_include_pad", True), bool):
        return None
    divisor = bound.get("divisor_override")
    if divisor is not None and (not is_int(divisor) or divisor == 0):
        return None
    kernel = expand(bound["kernel_size"], spatial)
    if stride is None or (isinstance(stride, (list, tuple)) and not stride):
        stride = kernel  # the default stride is the kernel
    strides, paddings = expand(stride, spatial), expand(bound["padding"], spatial)
    dilations = expand(bound.get("dilation", 1), spatial)
    if kernel is None or strides is None or paddings is None or dilations is None:
        return None
    for k, step, pad, dilation in zip(kernel, strides, paddings, dilations, strict=True):
        # Both of torch's padding limits: half the kernel, and half the dilated kernel.
        if k < 1 or step < 1 or dilation < 1 or pad < 0 or pad > k // 2 or pad > ((k - 1) * dilation + 1) // 2:
            return None
    return kernel, strides, paddings, dilations


_ADAPTIVE_POOL = signature_of(F.adaptive_avg_pool2d)


def _adaptive_average_pool(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_ADAPTIVE_POOL, args, kwargs)
    if bound is None or not floating(bound["input"]):
        return NotImplemented
    input, requested = bound["input"], bound["output_size"]
    if input.dim() not in (3, 4) or 0 in input.shape[-3:]:
        return NotImplemented
    requested = (requested, requested) if is_int(requested) else requested
    if not isinstance(requested, (list, tuple)) or len(requested) != 2:
        return NotImplemented
    # None keeps the input's size, as in F.adaptive_avg_pool2d.
    sizes = [input.shape[-2 + dim] if size is None else size for dim, size in enumerate(requested)]
    if not all(is_int(size) and size >= 0 for size in sizes):
        return NotImplemented
    return meta((*input.shape[:-2], *sizes), input.dtype)


# Each mode's input ranks; all of them size the output the same way.
_INTERPOLATION_RANKS = {
    "nearest": (3, 4, 5),
    "nearest-exact": (3, 4, 5),
    "linear": (3,),
    "bilinear": (4,),
    "bicubic": (4,),
    "trilinear": (5,),
}


_INTERPOLATE = signature_of(F.interpolate)


def _interpolate(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_INTERPOLATE, args, kwargs)
    if bound is None or not floating(bound["input"]) or 0 in bound["input"].shape or bound["antialias"]:
        return NotImplemented
    input, mode = bound["input"], bound["mode"]
    if not isinstance(mode, str) or input.dim() not in _INTERPOLATION_RANKS.get(mode, ()):
        return NotImplemented
    if mode.startswith("nearest") and bound["align_corners"] is not None:
        return NotImplemented  # F.interpolate's own ValueError
    sizes = _interpolated_sizes(input.shape[2:], bound["size"], bound["scale_factor"], bound["recompute_scale_factor"])
    if sizes is None or min(sizes) < 1:
        return NotImplemented
    return meta((*input.shape[:2], *sizes), input.dtype)


def _interpolated_sizes(sizes: Sequence[int], size: Any, scale_factor: Any, recompute: Any) -> list[int] | None:
    """F.interpolate's output sizes: `size`, or each input size times its scale, floored."""
    if (size is None) == (scale_factor is None):
        return None
    if size is not None:
        requested = [size] * len(sizes) if is_int(size) else size
        if recompute or not isinstance(requested, (list, tuple)) or len(requested) != len(sizes):
            return None
        return list(requested) if all(is_int(item) for item in requested) else None
    scales = [scale_factor] * len(sizes) if is_number(scale_factor) else scale_factor
    if not isinstance(scales, (list, tuple)) or len(scales) != len(sizes) or not all(is_number(s) for s in scales):
        return None
    # Both of torch's paths multiply in double precision and truncate, which for positive sizes floors.
    return [math.floor(size * float(scale)) for size, scale in zip(sizes, scales, strict=True)]


_PAD = signature_of(F.pad)
_PAD_LIMITS = {"reflect": 1, "circular": 0, "replicate": None}
"""How far a pad must stay below the size it pads: reflect `pad < size`, circular `pad <= size`."""


def _pad(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """F.pad in reflect, replicate or circular mode (Conv2d's padding_mode), non-negative pads.

    Constant mode is left to torch, which never reaches a Python meta kernel for it; so is
    every case torch refuses, with its own message.
    """
    bound = bind(_PAD, args, kwargs)
    if bound is None or bound["mode"] not in _PAD_LIMITS or bound["value"] is not None:
        return NotImplemented
    input, pad = bound["input"], bound["pad"]
    if not floating(input) or not isinstance(pad, (list, tuple)) or len(pad) not in (2, 4, 6):
        return NotImplemented
    padded = len(pad) // 2
    if not all(is_int(side) and side >= 0 for side in pad) or input.dim() not in (padded + 1, padded + 2):
        return NotImplemented
    if 0 in input.shape:
        return NotImplemented
    limit = _PAD_LIMITS[bound["mode"]]
    shape = list(input.shape)
    for position in range(padded):  # pad lists the last dimension first
        dim = input.dim() - 1 - position
        before, after = pad[2 * position], pad[2 * position + 1]
        if limit is not None and max(before, after) > shape[dim] - limit:
            return NotImplemented
        shape[dim] += before + after
    return meta(shape, input.dtype)


_PIXEL_UNSHUFFLE = signature_of(lambda input, downscale_factor: None)


def _pixel_unshuffle(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """(*, C, H, W) -> (*, C·r², H/r, W/r); torch refuses a height or width that r does not divide."""
    bound = bind(_PIXEL_UNSHUFFLE, args, kwargs)
    if bound is None or not is_int(bound["downscale_factor"]) or bound["downscale_factor"] < 1:
        return NotImplemented
    input, factor = bound["input"], bound["downscale_factor"]
    if input.dim() < 3:
        return NotImplemented
    for name, position in (("height", -2), ("width", -1)):
        if input.shape[position] % factor:
            raise ShapeMismatch(
                f"pixel_unshuffle expects {name} to be divisible by downscale_factor, but "
                f"input.size({position})={input.shape[position]} is not divisible by {factor}"
            )
    *batch, channels, height, width = input.shape
    return meta((*batch, channels * factor * factor, height // factor, width // factor), input.dtype)


def register(table: ShapeTable) -> None:
    """Add this module's shape functions to `table`, keyed as the ops arrive."""
    for spatial in (1, 2, 3):
        table[getattr(F, f"avg_pool{spatial}d")] = _pooling(spatial, maximum=False)
        table[getattr(F, f"max_pool{spatial}d")] = _pooling(spatial, maximum=True)
        table[getattr(F, f"max_pool{spatial}d_with_indices")] = _pooling(spatial, maximum=True, with_indices=True)
    table.update({F.adaptive_avg_pool2d: _adaptive_average_pool, F.interpolate: _interpolate, F.pad: _pad})
    table[F.pixel_unshuffle] = _pixel_unshuffle

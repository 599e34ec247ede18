"""The geometry of each op that changes a spatial size: kernel, stride, padding, ... per axis.

torch's resampling modules are read from their attributes once the forward is over (the
forward pays nothing for them); the resampling functions called outside those modules
(`F.max_pool2d`, `F.interpolate`, ...) are read by the function mode as they run. Either
way the result is a `Resampling` record, so the analysis can tell a floor from a ceil, and
a missing `output_padding` from a skip of another level, by reading instead of guessing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shapetrace.extents import windowed_extent
from shapetrace.records import Resampling, ResamplingKind, Shape

_CONV, _TRANSPOSE, _POOL = ResamplingKind.CONV, ResamplingKind.CONV_TRANSPOSE, ResamplingKind.POOL

_MODULES: dict[type[nn.Module], tuple[ResamplingKind, int]] = {
    nn.Conv1d: (_CONV, 1),
    nn.Conv2d: (_CONV, 2),
    nn.Conv3d: (_CONV, 3),
    nn.ConvTranspose1d: (_TRANSPOSE, 1),
    nn.ConvTranspose2d: (_TRANSPOSE, 2),
    nn.ConvTranspose3d: (_TRANSPOSE, 3),
    nn.MaxPool1d: (_POOL, 1),
    nn.MaxPool2d: (_POOL, 2),
    nn.MaxPool3d: (_POOL, 3),
    nn.AvgPool1d: (_POOL, 1),
    nn.AvgPool2d: (_POOL, 2),
    nn.AvgPool3d: (_POOL, 3),
    nn.Upsample: (ResamplingKind.INTERPOLATE, 0),
    nn.PixelShuffle: (ResamplingKind.PIXEL_SHUFFLE, 2),
    nn.PixelUnshuffle: (ResamplingKind.PIXEL_UNSHUFFLE, 2),
    # Adaptive pooling makes the size it was built for, whatever it receives.
    nn.AdaptiveAvgPool1d: (ResamplingKind.RESIZE, 1),
    nn.AdaptiveAvgPool2d: (ResamplingKind.RESIZE, 2),
    nn.AdaptiveAvgPool3d: (ResamplingKind.RESIZE, 3),
    nn.AdaptiveMaxPool1d: (ResamplingKind.RESIZE, 1),
    nn.AdaptiveMaxPool2d: (ResamplingKind.RESIZE, 2),
    nn.AdaptiveMaxPool3d: (ResamplingKind.RESIZE, 3),
}
RESAMPLING_MODULES = tuple(_MODULES)
"""Modules whose geometry is read from their attributes; the functions they call are not recorded again."""


def module_resampling(  # noqa: PLR0911 - one return per kind of module
    module: nn.Module, layer: int, position: int, before: Shape, after: Shape
) -> Resampling | None:
    """The record of one call of a resampling module, or None when it cannot change a size.

    Args:
        module: the called module; only instances of RESAMPLING_MODULES give a record.
        layer: its call index.
        position: the calls begun when it returned.
        before, after: its first input's and first output's shapes.
    """
    if not isinstance(module, RESAMPLING_MODULES) or len(before) < 3 or len(before) != len(after):
        return None
    found = next((known for kind, known in _MODULES.items() if isinstance(module, kind)), None)
    if found is None:
        return None
    kind, spatial = found
    spatial = spatial or len(before) - 2
    if len(before) < spatial + 1:
        return None
    size_in, size_out = tuple(before[-spatial:]), tuple(after[-spatial:])
    if kind == ResamplingKind.RESIZE:
        resized = Resampling(layer, kind, type(module).__name__, size_in, size_out, position)
        return None if size_in == size_out else resized
    if kind == ResamplingKind.INTERPOLATE:
        return _interpolation(layer, position, "Upsample", size_in, size_out, module.size, module.scale_factor)
    if kind in (ResamplingKind.PIXEL_SHUFFLE, ResamplingKind.PIXEL_UNSHUFFLE):
        factor: int = getattr(module, "upscale_factor" if kind == ResamplingKind.PIXEL_SHUFFLE else "downscale_factor")
        return Resampling(layer, kind, type(module).__name__, size_in, size_out, position, stride=(factor,) * spatial)
    geometry = {
        "kernel": _expand(module.kernel_size, spatial),
        "stride": _expand(module.stride or module.kernel_size, spatial),
        "padding": _padding(module.padding, spatial),
        "dilation": _expand(getattr(module, "dilation", 1), spatial),
        "output_padding": _expand(getattr(module, "output_padding", 0), spatial) if kind == _TRANSPOSE else (),
    }
    return _windowed(layer, position, kind, type(module).__name__, size_in, size_out, geometry, _ceil(module))


def _ceil(module: nn.Module) -> bool:
    return bool(getattr(module, "ceil_mode", False))


def _windowed(
    layer: int,
    position: int,
    kind: ResamplingKind,
    op: str,
    size_in: Shape,
    size_out: Shape,
    geometry: dict[str, Shape | None],
    ceil_mode: bool,
) -> Resampling | None:
    """A pool's or convolution's record: None at identity geometry; RESIZE when the formula disagrees."""
    kernel, stride, padding, dilation = (geometry[key] for key in ("kernel", "stride", "padding", "dilation"))
    output_padding = geometry.get("output_padding") or ()
    if kernel is None or stride is None or padding is None or dilation is None:
        return None
    record = Resampling(
        layer, kind, op, size_in, size_out, position, kernel, stride, padding, dilation, output_padding, ceil_mode
    )
    if all(_identity(record, axis) for axis in range(len(size_in))) and size_in == size_out:
        return None
    if tuple(windowed_extent(record, axis, extent) for axis, extent in enumerate(size_in)) != size_out:
        # Another size than the attributes give (ConvTranspose's output_size argument, say).
        return Resampling(layer, ResamplingKind.RESIZE, op, size_in, size_out, position)
    return record


def _identity(record: Resampling, axis: int) -> bool:
    k, s, p, d = record.kernel[axis], record.stride[axis], record.padding[axis], record.dilation[axis]
    extra = record.output_padding[axis] if record.output_padding else 0
    return s == 1 and d * (k - 1) == 2 * p - extra if record.kind == _TRANSPOSE else s == 1 and d * (k - 1) == 2 * p


def _interpolation(
    layer: int, position: int, op: str, size_in: Shape, size_out: Shape, size: Any, scale_factor: Any
) -> Resampling | None:
    if size is not None or scale_factor is None:
        return Resampling(layer, ResamplingKind.RESIZE, op, size_in, size_out, position)
    scales = scale_factor if isinstance(scale_factor, (list, tuple)) else (scale_factor,) * len(size_in)
    if len(scales) != len(size_in):
        return None
    fractions = tuple(Fraction(float(scale)).limit_denominator(1024) for scale in scales)
    if all(fraction == 1 for fraction in fractions):
        return None
    ratios = tuple((fraction.numerator, fraction.denominator) for fraction in fractions)
    return Resampling(layer, ResamplingKind.INTERPOLATE, op, size_in, size_out, position, scale=ratios)


def _expand(value: Any, spatial: int) -> Shape | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * spatial
    if isinstance(value, (list, tuple)) and len(value) in (1, spatial) and all(isinstance(v, int) for v in value):
        return tuple(value) * (spatial // len(value))
    return None


def _padding(value: Any, spatial: int) -> Shape | None:
    if value == "valid":
        return (0,) * spatial
    return None if isinstance(value, str) else _expand(value, spatial)  # "same": no size change


# --- functions the mode sees -------------------------------------------------------------

_Reader = Callable[[dict[str, Any], int], tuple[ResamplingKind, dict[str, Any]] | None]


def _pool_reader(maximum: bool) -> _Reader:
    def read(bound: dict[str, Any], spatial: int) -> tuple[ResamplingKind, dict[str, Any]] | None:
        kernel = bound["kernel_size"]
        stride = bound.get("stride") or kernel  # None or [] means the kernel
        geometry = {
            "kernel": _expand(kernel, spatial),
            "stride": _expand(stride, spatial),
            "padding": _expand(bound.get("padding", 0), spatial),
            "dilation": _expand(bound.get("dilation", 1) if maximum else 1, spatial),
            "ceil_mode": bool(bound.get("ceil_mode", False)),
        }
        return _POOL, geometry

    return read


def _convolution_reader(transposed: bool) -> _Reader:
    def read(bound: dict[str, Any], spatial: int) -> tuple[ResamplingKind, dict[str, Any]] | None:
        weight = bound["weight"]
        if not isinstance(weight, torch.Tensor) or weight.dim() != spatial + 2:
            return None
        geometry = {
            "kernel": tuple(weight.shape[2:]),
            "stride": _expand(bound.get("stride", 1), spatial),
            "padding": _padding(bound.get("padding", 0), spatial),
            "dilation": _expand(bound.get("dilation", 1), spatial),
            "output_padding": _expand(bound.get("output_padding", 0), spatial) if transposed else (),
        }
        return (_TRANSPOSE if transposed else _CONV), geometry

    return read


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


_POOL_SIGNATURE = _signature(
    lambda input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None: (
        None
    )
)
_MAX_POOL_SIGNATURE = _signature(F.max_pool2d_with_indices)
_CONVOLUTION_SIGNATURE = _signature(lambda input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1: None)
_TRANSPOSED_SIGNATURE = _signature(
    lambda input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1: None
)
_INTERPOLATE_SIGNATURE = _signature(F.interpolate)
_SHUFFLE_SIGNATURE = _signature(lambda input, factor: None)

_FUNCTIONS: dict[Callable[..., Any], tuple[str, int, inspect.Signature, _Reader | str]] = {}
"""function -> (name, spatial axes (0: the input's), signature, reader or the kind's name)."""
for _spatial in (1, 2, 3):
    for _function in (getattr(F, f"max_pool{_spatial}d"), getattr(F, f"max_pool{_spatial}d_with_indices")):
        _FUNCTIONS[_function] = (f"max_pool{_spatial}d", _spatial, _MAX_POOL_SIGNATURE, _pool_reader(True))
    _FUNCTIONS[getattr(F, f"avg_pool{_spatial}d")] = (
        f"avg_pool{_spatial}d",
        _spatial,
        _POOL_SIGNATURE,
        _pool_reader(False),
    )
    _FUNCTIONS[getattr(torch, f"conv{_spatial}d")] = (
        f"conv{_spatial}d",
        _spatial,
        _CONVOLUTION_SIGNATURE,
        _convolution_reader(False),
    )
    _FUNCTIONS[getattr(torch, f"conv_transpose{_spatial}d")] = (
        f"conv_transpose{_spatial}d",
        _spatial,
        _TRANSPOSED_SIGNATURE,
        _convolution_reader(True),
    )
    for _adaptive in ("adaptive_avg_pool", "adaptive_max_pool"):
        _FUNCTIONS[getattr(F, f"{_adaptive}{_spatial}d")] = (
            f"{_adaptive}{_spatial}d",
            _spatial,
            _SHUFFLE_SIGNATURE,
            "",
        )
_FUNCTIONS[F.interpolate] = ("interpolate", 0, _INTERPOLATE_SIGNATURE, "interpolate")
_FUNCTIONS[torch.pixel_shuffle] = ("pixel_shuffle", 2, _SHUFFLE_SIGNATURE, "pixel shuffle")
_FUNCTIONS[torch.pixel_unshuffle] = ("pixel_unshuffle", 2, _SHUFFLE_SIGNATURE, "pixel unshuffle")

RESAMPLING_FUNCTIONS = frozenset(_FUNCTIONS)
"""The functions whose calls the function mode records (as they arrive at the mode)."""


def function_resampling(  # noqa: PLR0911 - one return per kind of function
    func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], output: Any, layer: int, position: int
) -> Resampling | None:
    """The record of one call of a resampling function, or None when it changed no size it could change."""
    name, spatial, signature, reader = _FUNCTIONS[func]
    try:
        bound = signature.bind(*args, **kwargs).arguments
    except TypeError:
        return None
    sizes = _spatial_sizes(bound.get("input"), output, spatial)
    if sizes is None:
        return None
    size_in, size_out = sizes
    if reader == "interpolate":
        return _interpolation(layer, position, name, size_in, size_out, bound.get("size"), bound.get("scale_factor"))
    if reader == "":  # adaptive pooling: the size the caller asked for
        resized = Resampling(layer, ResamplingKind.RESIZE, name, size_in, size_out, position)
        return None if size_in == size_out else resized
    if isinstance(reader, str):
        stride = (bound["factor"],) * len(size_in)
        return Resampling(layer, ResamplingKind(reader), name, size_in, size_out, position, stride=stride)
    read = reader(bound, len(size_in))
    if read is None:
        return None
    kind, geometry = read
    ceil_mode = bool(geometry.pop("ceil_mode", False))
    return _windowed(layer, position, kind, name, size_in, size_out, geometry, ceil_mode)


def _spatial_sizes(input: Any, output: Any, spatial: int) -> tuple[Shape, Shape] | None:
    """The input's and output's spatial extents (the last `spatial`, or all after B and C for 0)."""
    result = output[0] if isinstance(output, (tuple, list)) and output else output
    if not isinstance(input, torch.Tensor) or not isinstance(result, torch.Tensor) or input.dim() < 3:
        return None
    spatial = spatial or input.dim() - 2
    if input.dim() < spatial + 1 or result.dim() != input.dim():
        return None
    return tuple(input.shape[-spatial:]), tuple(result.shape[-spatial:])

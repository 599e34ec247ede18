"""Convolutions, linear layers and normalization: the channel and size checks, with torch's messages."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from shapetrace.records import BreakKind
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
    same_dtype_or_none,
    signature_of,
)
from shapetrace.tracing.metashapes.mismatch import ShapeMismatch, ValueMismatch

# --- convolution and linear ---------------------------------------------------------------

_CONVOLUTION = signature_of(lambda input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1: None)
_TRANSPOSED_CONVOLUTION = signature_of(
    lambda input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1: None
)


def _convolution(spatial: int, transposed: bool) -> ShapeFunction:
    """torch.conv{1,2,3}d and torch.conv_transpose{1,2,3}d, batched or not."""
    signature = _TRANSPOSED_CONVOLUTION if transposed else _CONVOLUTION

    def shape_function(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        bound = bind(signature, args, kwargs)
        if bound is None or not floating(bound["input"], bound["weight"]):
            return NotImplemented
        input, weight, bias = bound["input"], bound["weight"], bound["bias"]
        if not same_dtype_or_none(input, bias) or weight.dim() != spatial + 2 or 0 in weight.shape:
            return NotImplemented
        parameters = _convolution_parameters(bound, spatial, transposed)
        if input.dim() not in (spatial + 1, spatial + 2) or parameters is None:
            return NotImplemented
        batched = input.shape if input.dim() == spatial + 2 else (1, *input.shape)
        _check_convolution_channels(batched, weight, bias, parameters["groups"], transposed)
        if transposed:
            if 0 in batched[2:]:
                return NotImplemented  # torch: "Only zero batch or zero channel inputs are supported"
            sizes = _transposed_convolution_sizes(batched[2:], weight.shape[2:], parameters)
            out_channels = weight.shape[1] * parameters["groups"]
        else:
            sizes = _convolution_sizes(batched[2:], weight.shape[2:], parameters)  # raises before the next check
            if 0 in batched[2:]:
                return NotImplemented
            out_channels = weight.shape[0]
        shape = (batched[0], out_channels, *sizes)
        return meta(shape if input.dim() == spatial + 2 else shape[1:], input.dtype)

    return shape_function


def _convolution_parameters(bound: dict[str, Any], spatial: int, transposed: bool) -> dict[str, Any] | None:
    """stride, padding, dilation and output_padding per dimension, and groups; None if torch refuses."""
    parameters: dict[str, Any] = {"groups": bound["groups"], "padding": bound["padding"]}
    for name in ("stride", "dilation", "output_padding"):
        parameters[name] = expand(bound.get(name, 0), spatial)
        if parameters[name] is None or min(parameters[name]) < (0 if name == "output_padding" else 1):
            return None
    if not is_int(parameters["groups"]) or parameters["groups"] < 1:
        return None
    if isinstance(bound["padding"], str):
        # Only convolution takes "same" and "valid", and "same" only with stride 1.
        if transposed or bound["padding"] not in ("same", "valid"):
            return None
        return None if bound["padding"] == "same" and max(parameters["stride"]) > 1 else parameters
    parameters["padding"] = expand(bound["padding"], spatial)
    return None if parameters["padding"] is None or min(parameters["padding"]) < 0 else parameters


def _check_convolution_channels(
    batched: Sequence[int], weight: torch.Tensor, bias: torch.Tensor | None, groups: int, transposed: bool
) -> None:
    """torch's channel checks, in torch's order: weight by groups, input channels, bias.

    Size breaks, not channel breaks: the tracers report a channel break, with its arithmetic,
    from `merges.EXPECTATIONS` before this runs, so what fails here is the weights' own shape.
    """
    weight_shape = list(weight.shape)
    if weight.shape[0] % groups != 0:
        raise ShapeMismatch(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
            f"but got weight of size [{weight_shape}] instead"
        )
    given = "Given transposed=1" if transposed else f"Given groups={groups}"
    expected = weight.shape[0] if transposed else weight.shape[1] * groups
    if batched[1] != expected:
        raise ShapeMismatch(
            f"{given}, weight of size {weight_shape}, expected input{list(batched)} to have {expected} channels, "
            f"but got {batched[1]} channels instead"
        )
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        given = "Given transposed=1, weight" if transposed else "Given weight"
        raise ShapeMismatch(
            f"{given} of size {weight_shape}, expected bias to be 1-dimensional with {out_channels} elements, "
            f"but got bias of size {list(bias.shape)} instead"
        )


def _convolution_sizes(sizes: Sequence[int], kernel: Sequence[int], parameters: dict[str, Any]) -> Shape:
    """A convolution's output sizes; raises like torch where the kernel outgrows the padded input."""
    if parameters["padding"] == "same":
        return tuple(sizes)
    padding = (0,) * len(sizes) if parameters["padding"] == "valid" else parameters["padding"]
    padded = [size + 2 * pad for size, pad in zip(sizes, padding, strict=True)]
    extents = [dilation * (k - 1) + 1 for k, dilation in zip(kernel, parameters["dilation"], strict=True)]
    if any(size < extent for size, extent in zip(padded, extents, strict=True)):
        raise ShapeMismatch(
            f"Calculated padded input size per channel: ({joined(padded)}). Kernel size: ({joined(extents)}). "
            "Kernel size can't be greater than actual input size"
        )
    return tuple(
        (size - extent) // stride + 1
        for size, extent, stride in zip(padded, extents, parameters["stride"], strict=True)
    )


def _transposed_convolution_sizes(sizes: Sequence[int], kernel: Sequence[int], parameters: dict[str, Any]) -> Shape:
    """A transposed convolution's output sizes; raises like torch's reference CPU path."""
    strides, paddings = parameters["stride"], parameters["padding"]
    dilations, extras = parameters["dilation"], parameters["output_padding"]
    if any(
        extra >= stride and extra >= dilation
        for extra, stride, dilation in zip(extras, strides, dilations, strict=True)
    ):
        raise ShapeMismatch(
            f"output padding must be smaller than either stride or dilation, but got output_padding={list(extras)}, "
            f"stride={list(strides)}, dilation={list(dilations)}",
            BreakKind.ERROR,  # the layer's own arguments, whatever the input
        )
    outputs = tuple(
        (size - 1) * stride - 2 * padding + dilation * (k - 1) + extra + 1
        for size, k, stride, padding, dilation, extra in zip(
            sizes, kernel, strides, paddings, dilations, extras, strict=True
        )
    )
    # float32 on CPU (oneDNN) gives an empty tensor for a size of 0; float64 and CUDA raise.
    if min(outputs) < 1:
        raise ShapeMismatch(
            f"Given input size per channel: ({joined(sizes)}). "
            f"Calculated output size per channel: ({joined(outputs)}). Output size is too small"
        )
    return outputs


_LINEAR = signature_of(lambda input, weight, bias=None: None)


def _linear(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_LINEAR, args, kwargs)
    if bound is None or not floating(bound["input"], bound["weight"]):
        return NotImplemented
    input, weight, bias = bound["input"], bound["weight"], bound["bias"]
    if (
        input.dim() == 0
        or weight.dim() != 2
        or not same_dtype_or_none(input, bias)
        or (bias is not None and bias.dim() > 1)
    ):
        return NotImplemented
    rows, (out_features, in_features) = math.prod(input.shape[:-1]), weight.shape
    if input.shape[-1] != in_features:
        raise ShapeMismatch(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{input.shape[-1]} and {in_features}x{out_features})"
        )
    # torch adds the bias to the (rows, out_features) product: it expands from () or (1,).
    if bias is not None and bias.dim() == 1 and bias.shape[0] not in (1, out_features):
        raise ShapeMismatch(
            f"The expanded size of the tensor ({out_features}) must match the existing size ({bias.shape[0]}) at "
            f"non-singleton dimension 1.  Target sizes: [{rows}, {out_features}].  Tensor sizes: [{bias.shape[0]}]"
        )
    return meta((*input.shape[:-1], out_features), input.dtype)


# --- normalization ------------------------------------------------------------------------

_PER_CHANNEL = ("running_mean", "running_var", "weight", "bias")


_GROUP_NORM = signature_of(F.group_norm)


def _group_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_GROUP_NORM, args, kwargs)
    if bound is None or not floating(bound["input"]) or bound["input"].dim() < 2:
        return NotImplemented
    input, groups, weight, bias = bound["input"], bound["num_groups"], bound["weight"], bound["bias"]
    if not is_int(groups) or groups < 1 or not same_dtype_or_none(input, weight, bias):
        return NotImplemented
    values = [input.shape[0] * input.shape[1] // groups, groups, *input.shape[2:]]
    if values[0] * math.prod(values[2:]) == 1:
        # F.group_norm's own check: a group of one value has no variance (a map shrunk to 1×1).
        raise ValueMismatch(f"Expected more than 1 value per channel when training, got input size {values}")
    channels = input.shape[1]
    if channels % groups != 0:
        raise ShapeMismatch(
            "Expected number of channels in input to be divisible by num_groups, "
            f"but got input of shape {list(input.shape)} and num_groups={groups}"
        )
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and (tensor.dim() != 1 or tensor.numel() != channels):
            raise ShapeMismatch(
                f"Expected {name} to be a vector of size equal to the number of channels in input, "
                f"but got {name} of shape {list(tensor.shape)} and input of shape {list(input.shape)}"
            )
    return meta(input.shape, input.dtype)


def _statistics_usable(input: torch.Tensor, bound: dict[str, Any], training: bool) -> bool:
    """Per-channel tensors torch takes without a message of its own: 1-D, input's dtype, paired."""
    tensors = [bound[name] for name in _PER_CHANNEL]
    if any(t is not None and (not isinstance(t, torch.Tensor) or t.dim() != 1) for t in tensors):
        return False
    if (bound["running_mean"] is None) != (bound["running_var"] is None):
        return False
    return (training or bound["running_mean"] is not None) and same_dtype_or_none(input, *tensors)


def _check_per_channel(bound: dict[str, Any], channels: int, repeat: int = 1) -> None:
    """torch's batch_norm check: each statistic and affine tensor holds one value per channel."""
    for name in _PER_CHANNEL:
        tensor = bound[name]
        if tensor is not None and tensor.numel() != channels:
            raise ShapeMismatch(f"{name} should contain {channels * repeat} elements not {tensor.numel() * repeat}")


_BATCH_NORM = signature_of(F.batch_norm)


def _batch_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_BATCH_NORM, args, kwargs)
    if bound is None or not floating(bound["input"]) or bound["input"].dim() < 2 or bound["input"].numel() == 0:
        return NotImplemented
    input, training, eps = bound["input"], bound["training"], bound["eps"]
    if not isinstance(training, bool) or not is_number(eps):
        return NotImplemented
    if training and input.shape[0] * math.prod(input.shape[2:]) == 1:
        # F.batch_norm's own check, before any other: one value per channel has no variance.
        raise ValueMismatch(f"Expected more than 1 value per channel when training, got input size {input.size()}")
    if not _statistics_usable(input, bound, training):
        return NotImplemented
    if (training and eps <= 0) or eps < 0:
        return NotImplemented  # F.batch_norm's own ValueError, about eps
    _check_per_channel(bound, input.shape[1])
    return meta(input.shape, input.dtype)


_INSTANCE_NORM = signature_of(F.instance_norm)


def _instance_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_INSTANCE_NORM, args, kwargs)
    if bound is None or not floating(bound["input"]) or bound["input"].dim() < 2 or bound["input"].numel() == 0:
        return NotImplemented
    input, use_input_stats = bound["input"], bound["use_input_stats"]
    if not isinstance(use_input_stats, bool):
        return NotImplemented
    if use_input_stats and math.prod(input.shape[2:]) == 1:
        # F.instance_norm's own check, before any other: one value per channel and sample has no variance.
        raise ValueMismatch(f"Expected more than 1 spatial element when training, got input size {input.size()}")
    if not _statistics_usable(input, bound, use_input_stats):
        return NotImplemented
    # torch folds the batch into the channels and repeats the per-channel tensors batch times.
    _check_per_channel(bound, input.shape[1], repeat=input.shape[0])
    return meta(input.shape, input.dtype)


_LAYER_NORM = signature_of(F.layer_norm)


def _layer_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_LAYER_NORM, args, kwargs)
    if bound is None or not floating(bound["input"]):
        return NotImplemented
    if not same_dtype_or_none(bound["input"], bound["weight"], bound["bias"]):
        return NotImplemented
    input, normalized = bound["input"], bound["normalized_shape"]
    if not isinstance(normalized, (list, tuple)) or not all(is_int(size) for size in normalized):
        return NotImplemented
    normalized = list(normalized)
    if not normalized:
        raise ShapeMismatch(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one element, "
            "but got normalized_shape = []"
        )
    for name in ("weight", "bias"):
        if bound[name] is not None and list(bound[name].shape) != normalized:
            raise ShapeMismatch(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                f"{list(bound[name].shape)} and normalized_shape = {normalized}"
            )
    if list(input.shape[-len(normalized) :]) != normalized or input.dim() < len(normalized):
        raise ShapeMismatch(
            f"Given normalized_shape={normalized}, expected input with shape [*, {joined(normalized, ', ')}], "
            f"but got input of size{list(input.shape)}"
        )
    return meta(input.shape, input.dtype)


def register(table: ShapeTable) -> None:
    """Add this module's shape functions to `table`, keyed as the ops arrive."""
    for spatial in (1, 2, 3):
        table[getattr(torch, f"conv{spatial}d")] = _convolution(spatial, transposed=False)
        table[getattr(torch, f"conv_transpose{spatial}d")] = _convolution(spatial, transposed=True)
    table.update(
        {
            F.linear: _linear,
            F.group_norm: _group_norm,
            F.batch_norm: _batch_norm,
            F.instance_norm: _instance_norm,
            F.layer_norm: _layer_norm,
        }
    )

"""Pad an input up to a size the model accepts, and crop the output back: the pad-and-crop recipe.

`pad_to_valid(x, rule)` pads each spatial axis to the smallest extent at or above its own that
the size rule accepts (or the next multiple of an int); `wrap(model, *example_inputs)` finds the
rule once and does it around every forward.

Where the padding goes: split over both sides of each axis, the odd pixel at the end (before =
pad // 2, after = pad - before), as milesial's Pytorch-UNet pads its up path and RAFT's
InputPadder its inputs. The content stays centred, so a convolution sees the same amount of
border on both sides. `crop` cuts the same window back out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from shapetrace.records import Shape, SizeRule

__all__ = ["PaddedModel", "pad_to_valid", "valid_extents", "wrap"]

PadMode = Literal["reflect", "replicate", "constant"]
MODES = ("reflect", "replicate", "constant")

Crop = Callable[[torch.Tensor], torch.Tensor]


SIMPLEST_SCALE = 8
"""The largest denominator of an output's scale to the padded input that is read as a scale."""


def pad_to_valid(x: torch.Tensor, rule: SizeRule | int, mode: PadMode = "reflect") -> tuple[torch.Tensor, Crop]:
    """Pad `x` (B, C, *spatial) so every spatial axis has the smallest valid extent at or above its own.

    Args:
        x: a 1-D (B, C, L), 2-D (B, C, H, W) or 3-D (B, C, D, H, W) input.
        rule: the size rule (`trace.size_rule`, `shapetrace.size_rule(...)`), or an int that every
            extent must be a multiple of.
        mode: "reflect" (mirror the border, numpy's "reflect": where a pad is as large as the
            extent, it mirrors again from the padded edge, and an axis of extent 1 is replicated),
            "replicate" (repeat the edge) or "constant" (zeros).

    Returns:
        (padded, crop): crop(y) cuts an output back to x's spatial size. It takes an output of the
        padded size, or of a fixed scale of it (a model returning half or twice the size, give or
        take the pixel a rounding adds): the window is scaled too, its length rounded up to whole
        pixels.

    Raises:
        ValueError: x has no spatial axes or an empty one, the rule has another number of axes, or a bad
            mode or multiple.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not a padding mode: expected one of {', '.join(MODES)}")
    if x.dim() < 3:
        raise ValueError(
            f"input of shape {list(x.shape)} has no spatial axes: expected (B, C, L), (B, C, H, W) or more"
        )
    size = tuple(x.shape[2:])
    if 0 in size:
        raise ValueError(f"input of shape {list(x.shape)} has an empty spatial axis: expected every extent >= 1")
    target = valid_extents(size, rule)
    pads = [
        ((goal - extent) // 2, goal - extent - (goal - extent) // 2) for extent, goal in zip(size, target, strict=True)
    ]
    padded = _pad(x, pads, mode) if any(before or after for before, after in pads) else x
    return padded, _cropper(size, target, [before for before, _ in pads])


def valid_extents(size: Shape, rule: SizeRule | int) -> Shape:
    """The smallest extents at or above `size`, axis by axis, that `rule` accepts.

    Raises:
        ValueError: the rule has another number of axes than `size`, or the multiple is below 1.
    """
    if isinstance(rule, int):
        if rule < 1:
            raise ValueError(f"multiple {rule} is not a valid size multiple: expected an int >= 1")
        return tuple(max(rule, math.ceil(extent / rule) * rule) for extent in size)
    if len(rule.axes) != len(size):
        raise ValueError(f"the size rule has {len(rule.axes)} spatial axes, but the input has {len(size)}")
    extents = []
    for axis, extent in zip(rule.axes, size, strict=True):
        start = max(extent, axis.minimum)
        # Some extent of every `modulus` consecutive ones is accepted, if any residue is.
        goal = next((e for e in range(start, start + axis.modulus) if axis.accepts(e)), None)
        if goal is None:
            raise ValueError(f"the size rule accepts no extent of axis {axis.axis}")
        extents.append(goal)
    return tuple(extents)


def _pad(x: torch.Tensor, pads: Sequence[tuple[int, int]], mode: PadMode) -> torch.Tensor:
    if mode != "reflect":
        return F.pad(x, _flat(pads), mode=mode)
    remaining = list(pads)
    while any(before or after for before, after in remaining):
        # Reflection needs a pad below the extent: pad in steps, each mirroring what is there.
        step = [
            (min(before, extent - 1), min(after, extent - 1))
            for (before, after), extent in zip(remaining, x.shape[2:], strict=True)
        ]
        if not any(before or after for before, after in step):
            return F.pad(x, _flat(remaining), mode="replicate")  # only axes of extent 1 are left
        x = F.pad(x, _flat(step), mode="reflect")
        remaining = [(b - sb, a - sa) for (b, a), (sb, sa) in zip(remaining, step, strict=True)]
    return x


def _flat(pads: Sequence[tuple[int, int]]) -> list[int]:
    """F.pad's order: the last axis first, (before, after) for each."""
    return [side for before_after in reversed(pads) for side in before_after]


def _cropper(size: Shape, padded: Shape, offsets: Sequence[int]) -> Crop:
    def crop(y: torch.Tensor) -> torch.Tensor:
        """Cut `y` back to the input's spatial size (its last axes; a scaled output scales the window).

        Raises:
            ValueError: y has fewer axes, or its spatial extents are no fixed scale of the padded ones.
        """
        axes = len(size)
        if y.dim() < axes:
            raise ValueError(f"output of shape {list(y.shape)} has fewer than the input's {axes} spatial axes")
        spatial = tuple(y.shape[y.dim() - axes :])
        if spatial == size:
            return y  # nothing was padded, or the model cropped already
        # A scale is a simple ratio (½, 2, 4); a pixel more or fewer on top (a model mapping 63
        # to 64, its strided convolutions rounding up) is rounding, not a scale of its own.
        scales = {
            Fraction(extent, goal).limit_denominator(SIMPLEST_SCALE)
            for extent, goal in zip(spatial, padded, strict=True)
        }
        if len(scales) != 1:
            raise ValueError(
                f"output of spatial size {list(spatial)} is no fixed scale of the padded size {list(padded)}"
            )
        (scale,) = scales
        for axis, (extent, offset, have) in enumerate(zip(size, offsets, spatial, strict=True)):
            # The window scaled; a fraction of a pixel rounds up, and the window stays inside y.
            length = min(max(1, math.ceil(extent * scale)), have)
            start = min(math.floor(offset * scale), have - length)
            y = y.narrow(y.dim() - axes + axis, start, length)
        return y

    return crop


class PaddedModel(nn.Module):
    """A model that pads its spatial input to a size it accepts and crops its output back.

    The wrapped model is the submodule `model`: `.to()`, `parameters()` and `train()` reach it,
    and the state_dict keys are the model's own behind "model." (`wrapped.model.state_dict()`
    gives them bare, for a checkpoint of the model alone).
    """

    def __init__(self, model: nn.Module, rule: SizeRule, mode: PadMode = "reflect") -> None:
        super().__init__()
        self.model = model
        self.rule = rule
        self.mode: PadMode = mode

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        image = _first_image(args, kwargs)
        if image is None or self.rule.accepts(tuple(image.shape[2:])):
            return self.model(*args, **kwargs)  # already valid: the model's own call, unchanged
        padded, crop = pad_to_valid(image, self.rule, self.mode)

        def pad(value: Any) -> Any:
            # The image, and any tensor of its shape but channels (a mask, a conditioning image):
            # the rule was found with those resized together.
            if isinstance(value, torch.Tensor) and _same_spatial(value, image):
                return value if value is image else pad_to_valid(value, self.rule, self.mode)[0]
            return value

        args = tuple(padded if arg is image else pad(arg) for arg in args)
        kwargs = {name: padded if value is image else pad(value) for name, value in kwargs.items()}
        return _map_tensors(self.model(*args, **kwargs), crop, image.dim())

    def extra_repr(self) -> str:
        axes = ", ".join(f"{axis.modulus}k+{'/'.join(map(str, axis.residues))}" for axis in self.rule.axes)
        return f"mode={self.mode!r}, sizes=({axes})"


def wrap(model: nn.Module, *example_inputs: Any, mode: PadMode = "reflect", **example_kwargs: Any) -> PaddedModel:
    """`model` padding its input to a size it accepts and cropping every output back, on every forward.

    The size rule is found once, from a call like `model(*example_inputs, **example_kwargs)`, on a
    meta copy (`shapetrace.size_rule`): the model itself is not run or changed. The first input of
    three or more dims is the image; it, and any tensor of its spatial size, is padded; others
    (a timestep t, an embedding) pass unchanged. At a size the model accepts, the call is the
    model's own. Outputs of the input's dims are cropped (tensors, in tuples, lists and dicts too).

    Args:
        model: any nn.Module; it becomes the wrapper's submodule `model`.
        example_inputs, example_kwargs: the forward's arguments (real or meta tensors, any size).
        mode: how to pad, as `pad_to_valid` takes it.

    Returns:
        The wrapping nn.Module.

    Raises:
        ValueError: no input has spatial axes, or no size within reach runs the model.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not a padding mode: expected one of {', '.join(MODES)}")
    from shapetrace.api import size_rule

    if _first_image(example_inputs, example_kwargs) is None:
        raise ValueError("no example input has spatial axes: expected a (B, C, L), (B, C, H, W) or larger tensor")
    rule = size_rule(model, *example_inputs, **example_kwargs)
    if rule is None:
        raise ValueError(
            f"{type(model).__name__} runs at no size near the example's on the meta device, or its forward "
            "reads tensor values there: trace it (shapetrace.trace) to see why"
        )
    return PaddedModel(model, rule, mode)


def _first_image(args: Sequence[Any], kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim() >= 3), None)


def _same_spatial(value: torch.Tensor, image: torch.Tensor) -> bool:
    return value.dim() == image.dim() and value.shape[2:] == image.shape[2:]


def _map_tensors(value: Any, crop: Crop, dims: int) -> Any:
    """`crop` applied to every tensor of `dims` dims in a model's output, kept in its containers."""
    if isinstance(value, torch.Tensor):
        return crop(value) if value.dim() == dims else value
    if isinstance(value, (list, tuple)):
        items = [_map_tensors(item, crop, dims) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, Mapping):
        cropped = {key: _map_tensors(item, crop, dims) for key, item in value.items()}
        try:
            return type(value)(**cropped)  # a dict, or a dataclass output (diffusers' UNet2DOutput)
        except TypeError:
            return cropped
    return value

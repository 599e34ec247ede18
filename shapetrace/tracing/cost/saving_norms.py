"""What a normalisation keeps for backward: its input (or the contiguous copy it made), and its statistics.

Read off torch 2.13: group and instance norm make a permuted input contiguous before the
kernel and keep that copy; layer and batch norm keep the input as it is. Each keeps a mean
and a reciprocal deviation per normalised row, of the input's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from shapetrace.tracing.metashapes.arguments import bind, signature_of

if TYPE_CHECKING:
    from shapetrace.tracing.cost.saving import Saver


_GROUP_NORM = signature_of(F.group_norm)
_LAYER_NORM = signature_of(F.layer_norm)
_BATCH_NORM = signature_of(F.batch_norm)


def statistics(saver: Saver, source: torch.Tensor, rows: int) -> None:
    """Mean and reciprocal standard deviation, one of each per normalised row, of the input's dtype."""
    saver.save_new(2 * rows * source.element_size())


def group_norm(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    if len(args) == 2:  # nn.GroupNorm's call, as F.group_norm hands it on: (input, num_groups), weight=...
        source, groups, weight = args[0], args[1], kwargs.get("weight")
    else:
        bound = bind(_GROUP_NORM, args, kwargs)
        if bound is None:
            return
        source, groups, weight = bound["input"], bound["num_groups"], bound["weight"]
    if not isinstance(source, torch.Tensor) or not isinstance(groups, int):
        return
    _save_laid_out(saver, source, suggested=True)  # at::group_norm: input.contiguous(its memory format)
    saver.save(weight)
    statistics(saver, source, (source.shape[0] if source.dim() else 1) * groups)


def _save_laid_out(saver: Saver, tensor: torch.Tensor, *, suggested: bool) -> None:
    """Keep `tensor` as a norm that makes it contiguous first keeps it: itself, or its copy.

    `suggested`: a channels-last tensor counts as laid out (torch's `suggest_memory_format`).
    """
    if tensor.is_contiguous() or (suggested and _channels_last(tensor)):
        saver.save(tensor)
    else:
        saver.save_new(tensor.numel() * tensor.element_size())


def _channels_last(tensor: torch.Tensor) -> bool:
    if tensor.dim() == 4:
        return tensor.is_contiguous(memory_format=torch.channels_last)
    return tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d)


def layer_norm(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    bound = bind(_LAYER_NORM, args, kwargs)
    if bound is None or not isinstance(bound["input"], torch.Tensor):
        return
    source = bound["input"]
    for name in ("input", "weight", "bias"):
        saver.save(bound[name])
    normalized = len(bound["normalized_shape"]) if isinstance(bound["normalized_shape"], (list, tuple)) else 1
    statistics(saver, source, math.prod(source.shape[: source.dim() - normalized]))


def batch_norm(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    bound = bind(_BATCH_NORM, args, kwargs)
    if bound is None or not isinstance(bound["input"], torch.Tensor):
        return
    for name in ("input", "running_mean", "running_var", "weight"):
        saver.save(bound[name])
    if bound["training"]:  # batch statistics; in evaluation they are empty
        statistics(saver, bound["input"], bound["input"].shape[1])


_INSTANCE_NORM = signature_of(F.instance_norm)


def instance_norm(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """Batch norm over (1, B·C, ...): the input, a mean and a reciprocal deviation per sample and
    channel, and the affine weight repeated per sample (torch 2.13, with running stats or without)."""
    bound = bind(_INSTANCE_NORM, args, kwargs)
    if bound is None or not isinstance(bound["input"], torch.Tensor) or bound["input"].dim() < 2:
        return
    source = bound["input"]
    _save_laid_out(saver, source, suggested=False)  # at::instance_norm: input.contiguous().view(...)
    rows = source.shape[0] * source.shape[1]
    statistics(saver, source, rows)
    weight = bound["weight"]
    if isinstance(weight, torch.Tensor):
        saver.save_new(rows * weight.element_size())

"""The tensors inside the values a forward takes and returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

__all__ = ["tensors_in"]


def tensors_in(value: Any, depth: int = 0) -> list[torch.Tensor]:
    """Every tensor in a value: tuples, lists, dicts, dataclasses (ModelOutput), nested."""
    if isinstance(value, torch.Tensor):
        return [value]
    found: list[torch.Tensor] = []
    if depth > 6:
        return found
    if isinstance(value, (list, tuple)):
        items: Any = value
    elif isinstance(value, dict):
        items = value.values()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = (getattr(value, field.name) for field in dataclasses.fields(value))
    else:
        return found
    for item in items:
        # Tensors straight away: a hook calls this for every module's arguments.
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif item is not None and not isinstance(item, (int, float, str, bool)):
            found.extend(tensors_in(item, depth + 1))
    return found

"""Output shapes of common ops on meta tensors, computed in Python without torch's meta kernels.

In this torch, the first Python-implemented meta kernel in a process (most elementwise ops,
convolutions, norms and pooling on meta) imports torch._dynamo and sympy, over a second:
more than a whole trace. For the ops listed here the tracer computes the output itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

ShapeFunction = Callable[[Sequence[Any], dict[str, Any]], Any]

META_SHAPES: dict[Callable[..., Any], ShapeFunction] = {}
"""Functions whose meta output this module computes; filled below."""


def call(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """`func(*args, **kwargs)`, computed here when every tensor argument is on meta."""
    shape_function = META_SHAPES.get(func)
    if shape_function is not None and _all_meta(args, kwargs):
        return shape_function(args, kwargs)
    return func(*args, **kwargs)


def _all_meta(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    found = False
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            if value.device.type != "meta":
                return False
            found = True
    return found

"""Every private torch API shapetrace uses, in one place.

Each name below reaches past torch's documented surface: a new torch release may rename or
remove it without notice, and this is the one module to adapt when one does. Each entry says
the torch versions it was checked on. So far that is only 2.13.0 (the version this package
is developed and tested against); pyproject.toml claims `torch>=2.1`, which no test here has
confirmed for these entries.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_globals
from torch.nn.parameter import is_lazy as _is_lazy

__all__ = [
    "C_LINEAR",
    "C_SCALED_DOT_PRODUCT_ATTENTION",
    "NoFunctionMode",
    "child_modules",
    "forget_global_forward_hook",
    "function_mode_depth",
    "has_children",
    "has_own_forward_hooks",
    "is_lazy",
    "own_buffers",
    "own_parameters",
    "pop_function_mode",
    "push_function_mode",
]

# --- the TorchFunctionMode stack ------------------------------------------------------------

NoFunctionMode = torch._C.DisableTorchFunction
"""Context manager: ops inside it skip every TorchFunctionMode (checked on torch 2.13.0).

The hooks run inside the forward, under the tracer's mode; without this, each `.shape`
they read would be one more trip through `__torch_function__`.
"""


def function_mode_depth() -> int:
    """How many TorchFunctionModes are on the stack (`torch._C._len_torch_function_stack`, checked on 2.13.0)."""
    return int(torch._C._len_torch_function_stack())


def pop_function_mode() -> Any:
    """Take the top mode off the stack and return it (`torch._C._pop_torch_function_stack`, checked on 2.13.0)."""
    return torch._C._pop_torch_function_stack()


def push_function_mode(mode: Any) -> None:
    """Put `mode` back on top of the stack (`torch._C._push_on_torch_function_stack`, checked on 2.13.0)."""
    torch._C._push_on_torch_function_stack(mode)


# --- global module hooks --------------------------------------------------------------------


def forget_global_forward_hook(handle_id: int) -> None:
    """Drop a removed global with_kwargs forward hook's id from torch's bookkeeping dict.

    torch's handle for a global with_kwargs hook forgets to remove its id from
    `torch.nn.modules.module._global_forward_hooks_with_kwargs` (checked on 2.13.0); left
    there, the ids of every trace would pile up for the rest of the process.
    """
    getattr(_module_globals, "_global_forward_hooks_with_kwargs", {}).pop(handle_id, None)


# --- the C entry points that F.linear and F.scaled_dot_product_attention are -----------------

C_LINEAR = torch._C._nn.linear
"""What `F.linear` is and what a TorchFunctionMode sees called (checked on torch 2.13.0)."""
C_SCALED_DOT_PRODUCT_ATTENTION = torch._C._nn.scaled_dot_product_attention
"""What `F.scaled_dot_product_attention` is and what a TorchFunctionMode sees (checked on 2.13.0)."""


# --- a module's own registries --------------------------------------------------------------
# `named_modules()`, `parameters()` and `module.weight` go through generators and
# nn.Module.__getattr__: for a model of a few hundred modules they cost more than a trace's
# own bookkeeping, so the registries are read directly.


def child_modules(module: nn.Module) -> dict[str, nn.Module | None]:
    """The module's direct children by name, None for a slot set to None (`module._modules`, checked on 2.13.0)."""
    return module._modules


def has_children(module: nn.Module) -> bool:
    """Whether the module has any child slot (`module._modules`, checked on 2.13.0)."""
    return bool(module._modules)


def own_parameters(module: nn.Module) -> dict[str, nn.Parameter | None]:
    """The module's own parameters by name, not its children's (`module._parameters`, checked on 2.13.0)."""
    return module._parameters


def own_buffers(module: nn.Module) -> dict[str, torch.Tensor | None]:
    """The module's own buffers by name, not its children's (`module._buffers`, checked on 2.13.0)."""
    return module._buffers


def has_own_forward_hooks(module: nn.Module) -> bool:
    """Whether forward hooks or pre-hooks are registered on this very module.

    Reads `module._forward_pre_hooks` and `module._forward_hooks` (checked on 2.13.0); the
    global hooks are not counted.
    """
    return bool(module._forward_pre_hooks or module._forward_hooks)


def is_lazy(parameter: torch.Tensor) -> bool:
    """Whether a lazy module's parameter is still unshaped (`torch.nn.parameter.is_lazy`, undocumented).

    Checked on 2.13.0.
    """
    return bool(_is_lazy(parameter))

"""A deep copy's closures pointed at the copy's own modules and tensors.

`copy.deepcopy` copies modules and tensors but treats functions, and classes, as atoms. A
module whose forward is a closure over other modules (a functional helper such as
`Module([conv], lambda x, y: conv(torch.cat([x, y], 1)))`, whose class is made per instance
and whose forward calls the `conv` it closed over) keeps calling the original's `conv` from
the copy: a meta copy of a CPU model then feeds meta tensors to CPU weights, and every probe
at another size, and every fix verified on the copy, fails. Here each such closure is rebuilt
with the copy's objects in its cells: a function stored on the module directly, and a method
of its class (the copy gets a subclass of the same name holding the rebuilt methods).
"""

from __future__ import annotations

import copy
import types
from typing import Any

from torch import nn

from shapetrace.tracing.walk import every_module


def deep_copy(model: nn.Module, memo: dict[int, Any] | None = None) -> nn.Module:
    """`copy.deepcopy(model, memo)` whose closures call the copy's layers, not the model's.

    Args:
        model: the user's model, left as it is.
        memo: deepcopy's memo, pre-filled where some tensors are to be replaced (meta copies).

    Returns:
        The copy: moving it, or casting it, leaves nothing of it behind on the model.
    """
    memo = {} if memo is None else memo
    copied: nn.Module = copy.deepcopy(model, memo)
    rebind_closures(copied, memo)
    return copied


def rebind_closures(copied: nn.Module, memo: dict[int, Any]) -> None:
    """Point every closure the copy's modules reach at the copy's objects instead of the original's.

    Args:
        copied: the deep copy, changed in place (never the original model).
        memo: the memo `copy.deepcopy` filled: id of each original object to its copy.
    """
    for module in every_module(copied):
        for attribute, value in list(vars(module).items()):
            if isinstance(value, types.FunctionType):
                rebound = _rebound(value, memo, set())
                if rebound is not value:
                    vars(module)[attribute] = rebound
        methods = {
            attribute: _rebound(value, memo, set())
            for attribute, value in vars(type(module)).items()
            if isinstance(value, types.FunctionType)
        }
        changed = {
            attribute: method for attribute, method in methods.items() if method is not vars(type(module))[attribute]
        }
        if changed:
            original = type(module)
            # Same name, module and qualified name: the record's kind and any isinstance check stay as they were.
            subclass = type(original.__name__, (original,), {**changed, "__module__": original.__module__})
            subclass.__qualname__ = original.__qualname__
            module.__class__ = subclass


def _rebound(function: types.FunctionType, memo: dict[int, Any], visiting: set[int]) -> types.FunctionType:
    """`function` with each closure cell holding the copy of what it held (nested closures too);
    `function` itself when none of its cells holds anything that was copied."""
    if not function.__closure__ or id(function) in visiting:
        return function
    visiting.add(id(function))
    cells: list[types.CellType] = []
    changed = False
    for cell in function.__closure__:
        try:
            value = cell.cell_contents
        except ValueError:  # a cell not yet filled (a name assigned later in the enclosing scope)
            cells.append(cell)
            continue
        if isinstance(value, types.FunctionType):
            replacement = _rebound(value, memo, visiting)
        else:
            replacement = memo.get(id(value), value) if id(value) != id(memo) else value
        changed = changed or replacement is not value
        cells.append(types.CellType(replacement) if replacement is not value else cell)
    visiting.discard(id(function))
    if not changed:
        return function
    rebuilt = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__, tuple(cells)
    )
    rebuilt.__kwdefaults__ = function.__kwdefaults__
    rebuilt.__qualname__ = function.__qualname__
    rebuilt.__dict__.update(function.__dict__)
    return rebuilt

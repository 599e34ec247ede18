"""Walks of a model's module tree that read torch's registries directly.

`named_modules()` and `parameters()` are generators over generators: for a model of a few
hundred modules they cost more than a trace's own bookkeeping.
"""

from __future__ import annotations

import torch
from torch import nn

from shapetrace.tracing._torch_compat import child_modules, is_lazy, own_buffers, own_parameters


def module_names(model: nn.Module) -> dict[int, str]:
    """Each module's canonical dotted name by id: the first path `named_modules()` yields.

    A module registered twice (a decoder keeping a reference to the encoder, a block shared
    by two containers) keeps its first name, and its children are named under that path only.
    A `torch.compile` wrapper gets no name of its own: the module it wraps takes the wrapper's
    name, so no name holds `_orig_mod`.
    """
    names: dict[int, str] = {}

    def visit(module: nn.Module, name: str) -> None:
        module = compiled_original(module)
        if id(module) in names:
            return
        names[id(module)] = name
        for child_name, child in child_modules(module).items():
            if child is not None:
                visit(child, f"{name}.{child_name}" if name else child_name)

    visit(model, "")
    return names


def compiled_original(module: nn.Module) -> nn.Module:
    """The module a `torch.compile` wrapper (OptimizedModule) wraps; any other module itself."""
    original = child_modules(module).get("_orig_mod") if type(module).__name__ == "OptimizedModule" else None
    return original if original is not None else module


def every_module(model: nn.Module) -> list[nn.Module]:
    """`list(model.modules())`: each module once, breadth first."""
    seen = {id(model)}
    found = [model]
    for module in found:  # grows while it is read
        for child in child_modules(module).values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                found.append(child)
    return found


def parameter_total(model: nn.Module) -> int:
    """Entries in `model.parameters()`: a parameter shared by two modules counts once."""
    unique = {
        id(parameter): parameter_size(parameter)
        for module in every_module(model)
        for parameter in own_parameters(module).values()
        if parameter is not None
    }
    return sum(unique.values())


def parameter_size(parameter: torch.Tensor) -> int:
    """Its entries; 0 for a lazy module's parameter that no call has shaped yet."""
    return 0 if is_lazy(parameter) else parameter.numel()


def name_in_call(module: nn.Module, canonical: str, parent: nn.Module, parent_name: str) -> str:
    """The name of one call of `module` made directly by its parent `parent` (named `parent_name`).

    A module with weights keeps its canonical name wherever it runs: its weights live there. A
    stateless module registered in several parents (Demucs builds one GLU and puts it in every
    encoder stage) is named under the parent that called it, `encoder.2.3` rather than
    `encoder.0.3` for each stage, so the calls of different stages tell their levels apart.
    """
    prefix = f"{parent_name}." if parent_name else ""
    if canonical.startswith(prefix) and "." not in canonical[len(prefix) :]:
        return canonical  # already its name under this parent
    child_name = next((name for name, child in child_modules(parent).items() if child is module), None)
    if child_name is None or any(_holds_tensors(part) for part in every_module(module)):
        return canonical  # called from a container's loop, or it has weights: its own name
    return f"{prefix}{child_name}"


def _holds_tensors(module: nn.Module) -> bool:
    return any(value is not None for value in (*own_parameters(module).values(), *own_buffers(module).values()))

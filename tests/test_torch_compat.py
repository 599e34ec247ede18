"""Private torch APIs are reached through shapetrace/tracing/_torch_compat.py only."""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

import torch
from torch import nn

from shapetrace.tracing import _torch_compat

PACKAGE = Path(__file__).resolve().parent.parent / "shapetrace"
# A private torch name: torch._anything, a module's registries, the global hook dicts, is_lazy.
PRIVATE = re.compile(
    r"\btorch\._|\._modules\b|\._parameters\b|\._buffers\b|\._forward_hooks|\._forward_pre_hooks|"
    r"\b_global_forward|nn\.parameter import is_lazy|parameter\.is_lazy"
)


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """Each line's code with its strings and comments left out: a docstring may name a private API."""
    lines: dict[int, str] = {}
    with path.open("rb") as source:
        for token in tokenize.tokenize(source.readline):
            if token.type in (tokenize.NAME, tokenize.OP):
                lines[token.start[0]] = lines.get(token.start[0], "") + " " + token.string
    return sorted((number, code.replace(" . ", ".")) for number, code in lines.items())


def test_no_module_but_the_compat_module_touches_private_torch_apis() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {code.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_torch_compat.py"
        for number, code in _code_lines(path)
        if PRIVATE.search(code)
    ]
    assert not offenders, "private torch APIs outside _torch_compat.py:\n" + "\n".join(offenders)


def test_the_scan_sees_a_private_api_when_there_is_one(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""Doc: torch._C is named here."""\n\nx = module._modules  # read\ny = "torch._C"  # torch._C\n')
    assert [number for number, code in _code_lines(sample) if PRIVATE.search(code)] == [3]


def test_the_function_mode_stack_round_trips() -> None:
    class Mode(torch.overrides.TorchFunctionMode):
        pass

    assert _torch_compat.function_mode_depth() == 0
    with Mode() as mode:
        assert _torch_compat.function_mode_depth() == 1
        assert _torch_compat.pop_function_mode() is mode
        assert _torch_compat.function_mode_depth() == 0
        _torch_compat.push_function_mode(mode)
    assert _torch_compat.function_mode_depth() == 0


def test_the_registries_are_the_modules_own() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert list(_torch_compat.child_modules(model)) == ["0", "1"]
    assert _torch_compat.has_children(model) and not _torch_compat.has_children(model[1])
    assert list(_torch_compat.own_parameters(model[0])) == ["weight", "bias"]
    assert not _torch_compat.has_own_forward_hooks(model[0])
    handle = model[0].register_forward_pre_hook(lambda module, args: None)
    assert _torch_compat.has_own_forward_hooks(model[0])
    handle.remove()
    assert _torch_compat.is_lazy(nn.LazyLinear(3).weight)
    assert not _torch_compat.is_lazy(nn.Linear(2, 3).weight)


def test_a_removed_global_kwargs_hook_leaves_no_id_behind() -> None:
    from torch.nn.modules import module as module_globals

    before = dict(module_globals._global_forward_hooks_with_kwargs)
    handle = nn.modules.module.register_module_forward_hook(lambda *args: None, with_kwargs=True)
    handle.remove()
    _torch_compat.forget_global_forward_hook(handle.id)
    assert module_globals._global_forward_hooks_with_kwargs == before


def test_a_storages_python_object_lives_exactly_as_long_as_the_storage() -> None:
    """The cost meter's liveness rests on this (PyObject preservation for storages, torch 2.1)."""
    import weakref

    base = torch.empty(4, 4, device="meta")
    collected: list[object] = []
    storage = weakref.ref(base.untyped_storage(), collected.append)
    view = base[:1]
    alias = view.detach()
    del base
    assert storage() is view.untyped_storage() is alias.untyped_storage()
    del view
    assert not collected  # the alias still holds the storage
    del alias
    assert storage() is None
    assert len(collected) == 1

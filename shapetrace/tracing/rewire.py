"""Change which tensors a model's merges join, on a copy, for one verifying forward.

A function mode entered when the copy's forward starts (after the tracer's own mode, so it
sees each merge first) swaps a skip for the output of another module, or resizes the up
path to the skip it joins; it leaves again when the forward ends, however it ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from shapetrace.tracing._torch_compat import function_mode_depth, pop_function_mode
from shapetrace.tracing.merges import broadcastable

_MERGES = {torch.cat, torch.concat, torch.concatenate, torch.stack}
_ADDITIONS = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__}
ANY = "any"
"""A route's merge kind when the action names none: every merge, sums and concatenations alike, counts a use."""


class Rewire(TorchFunctionMode):
    """Reroutes and resizes at the merges of one model copy's forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.routes: dict[tuple[str, str, int], str] = {}
        """(source, merge kind, use) -> the module whose output replaces that use of the source's output."""
        self.resize_to_skips = False
        self.crop_to_smallest = False
        """Centre-crop a merge's inputs to the smallest size among them (a valid-convolution UNet's crop)."""
        self.outputs: dict[str, torch.Tensor] = {}
        self.uses: dict[tuple[str, str], int] = {}
        """(source, merge kind) -> how many merges of that kind joined its output so far."""
        self.made: dict[int, tuple[torch.Tensor, int]] = {}
        """id(tensor) -> the tensor (kept alive, so its id is not reused) and the order modules returned it in."""

    def reroute(self, source: str, replacement: str, use: int, kind: str = ANY) -> None:
        """The `use`-th merge of `kind` ("cat", "add" or ANY) joining source's output joins replacement's.

        Counting concatenations apart from sums keeps a residual sum (`h + x` inside the block
        that follows the saved map) from taking the use a skip concatenation was meant to have.
        """
        self.model.get_submodule(source)
        self.model.get_submodule(replacement)  # both must exist: LookupError otherwise
        self.routes[(source, kind, use)] = replacement

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Hooks on the copy for the length of one forward; the mode rides the model's own call."""
        if not self.routes and not self.resize_to_skips and not self.crop_to_smallest:
            yield
            return
        names = {name for route, replacement in self.routes.items() for name in (route[0], replacement)}
        handles = [
            self.model.register_forward_pre_hook(lambda module, args: self._enter()),
            self.model.register_forward_hook(lambda module, args, output: self._leave(), always_call=True),
        ]
        for name, module in self.model.named_modules():
            handles.append(module.register_forward_hook(self._keeper(name, name in names)))
        depth = function_mode_depth()
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            # Ctrl-C skips the always-call hook that leaves this mode, and the tracer's mode
            # then pops this one in its stead: take off whatever is left above where we began.
            while function_mode_depth() > depth:
                pop_function_mode()

    def _enter(self) -> None:
        self.__enter__()  # type: ignore[no-untyped-call]

    def _leave(self) -> None:
        self.__exit__(None, None, None)  # type: ignore[no-untyped-call]

    def _keeper(self, name: str, named: bool) -> Callable[..., None]:
        def keep(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                self.made.setdefault(id(output), (output, len(self.made)))
                if named:
                    self.outputs[name] = output

        return keep

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _MERGES and args and isinstance(args[0], (list, tuple)):
            tensors = self._rewired(list(args[0]), "cat")
            return func(type(args[0])(tensors), *args[1:], **kwargs)
        if func in _ADDITIONS and len(args) >= 2 and not _broadcast(args[0], args[1]):
            left, right = self._rewired(list(args[:2]), "add")
            return func(left, right, *args[2:], **kwargs)
        if func is F.interpolate and self.routes and "size" in kwargs:
            kwargs = {**kwargs, "size": self._rerouted_size(kwargs["size"])}
        return func(*args, **kwargs)

    def _rerouted_size(self, size: Any) -> Any:
        """`F.interpolate(x, size=skip.shape[2:])` before a rerouted merge: the replacement's size.

        The up path is resized to the skip it is about to join; once that skip is rerouted,
        the resize must follow it, or the fix would be judged by the old skip's size.
        """
        wanted = tuple(size) if isinstance(size, (tuple, list, torch.Size)) else None
        for name, output in self.outputs.items():
            replacement = self._route(name, "cat")
            if replacement is None or replacement not in self.outputs or tuple(output.shape[2:]) != wanted:
                continue
            return tuple(self.outputs[replacement].shape[2:])
        return size

    def _route(self, name: str, kind: str) -> str | None:
        """The replacement for the next merge of `kind` joining name's output, if a route names one."""
        for counted in (kind, ANY):
            replacement = self.routes.get((name, counted, self.uses.get((name, counted), 0)))
            if replacement is not None:
                return replacement
        return None

    def _rewired(self, tensors: list[Any], kind: str) -> list[Any]:
        if not all(isinstance(tensor, torch.Tensor) for tensor in tensors):
            return tensors
        rerouted = [self._rerouted(tensor, kind) for tensor in tensors]
        if self.crop_to_smallest and kind == "cat":
            return _cropped(rerouted)
        return self._resized(rerouted) if self.resize_to_skips else rerouted

    def _rerouted(self, tensor: torch.Tensor, kind: str) -> torch.Tensor:
        for name, output in self.outputs.items():
            if output is not tensor:
                continue
            replacement = self._route(name, kind)
            for counted in (kind, ANY):
                self.uses[(name, counted)] = self.uses.get((name, counted), 0) + 1
            if replacement is not None and replacement in self.outputs:
                return self.outputs[replacement]
        return tensor

    def _age(self, tensor: torch.Tensor) -> int:
        """When a module returned it; tensors made by functions count as the newest."""
        made, order = self.made.get(id(tensor), (None, len(self.made)))
        return order if made is tensor else len(self.made)

    def _resized(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every input at the spatial size of the oldest (the skip), where sizes differ."""
        if len({tensor.dim() for tensor in tensors}) != 1 or tensors[0].dim() < 3:
            return tensors
        sizes = {tuple(tensor.shape[2:]) for tensor in tensors}
        if len(sizes) == 1:
            return tensors
        oldest = min(tensors, key=self._age)
        target = list(oldest.shape[2:])
        return [
            tensor if tuple(tensor.shape[2:]) == tuple(target) else F.interpolate(tensor, size=target)
            for tensor in tensors
        ]


def _cropped(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every input centre-cropped to the smallest extent on each spatial axis, where sizes differ."""
    if len({tensor.dim() for tensor in tensors}) != 1 or tensors[0].dim() < 3:
        return tensors
    smallest = [min(extents) for extents in zip(*(tensor.shape[2:] for tensor in tensors), strict=True)]
    cropped = []
    for tensor in tensors:
        window = tensor
        for axis, want in enumerate(smallest, start=2):
            window = window.narrow(axis, (window.shape[axis] - want) // 2, want)
        cropped.append(window)
    return cropped


def _broadcast(left: Any, right: Any) -> bool:
    """A bias or an embedding broadcast over a map (`h + t[:, :, None, None]`): no merge to resize."""
    if not (isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor)) or left.shape == right.shape:
        return False
    return broadcastable(left.shape, right.shape)

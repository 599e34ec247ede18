"""`shapetrace sweep`: trace one model at many sizes and report where each size first breaks.

A full trace per size would record every layer only to keep its first break; the sweep
runs a lighter pass instead: the forward on meta under a function mode that computes
shapes and raises at the first disagreement, and hooks that only track which block runs.
tests/test_sweep.py checks that its outcomes equal those of full traces.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from shapetrace.records import BreakKind, Outcome
from shapetrace.tracing import metashapes
from shapetrace.tracing.merges import EXPECTATIONS, meta_concatenate, resize_like
from shapetrace.tracing.tracer import observed

_SIZE_ERROR = re.compile(r"size|shape|dimension|broadcast|match|too small|divisible|multiple of", re.IGNORECASE)
_CONCATENATIONS = (torch.cat, torch.concat, torch.concatenate, torch.stack)


class _FirstBreak(Exception):  # noqa: N818 - a signal that unwinds the forward, not an error
    def __init__(self, kind: str, place: str) -> None:
        super().__init__(kind, place)
        self.kind, self.place = kind, place


class LightPass(TorchFunctionMode):
    """Shapes only; the first disagreement stops the forward with its kind and block."""

    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self.names = names
        self.stack: list[str] = []
        self.pending = ""  # a merge broke; its consumer is the next call to begin
        self.failed_in = ""  # the block an exception left first

    def reset(self) -> None:
        self.stack, self.pending, self.failed_in = [], "", ""

    def before(self, module: nn.Module, args: Any) -> None:
        if id(module) not in self.names:
            return  # global hooks see every module; only the swept model's count
        # Pushed before raising: the always-called post-hook of this module pops it again.
        self.stack.append(self.names[id(module)])
        if self.pending:
            raise _FirstBreak(self.pending, self.block())

    def after(self, module: nn.Module, args: Any, output: Any) -> None:
        if id(module) not in self.names:
            return
        # always_call: runs while an exception unwinds too; remember the block it left first.
        if output is None and not self.failed_in and sys.exc_info()[0] is not None:
            self.failed_in = self.block()
        self.stack.pop()

    def block(self) -> str:
        return self.stack[1] if len(self.stack) > 1 else (self.stack[0] if self.stack else "")

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _CONCATENATIONS:
            return self._concatenate(func, args, kwargs)
        expectation = EXPECTATIONS.get(func)
        if expectation is not None:
            found = expectation(args, kwargs)
            if found is not None and found.expected != found.got:
                raise _FirstBreak("channels", self.block())
        return metashapes.call(func, args, kwargs)

    def _concatenate(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        tensors = list(args[0] if args else kwargs.get("tensors", ()))
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        metas = all(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in tensors)
        if len(tensors) < 2 or not metas or len({t.dim() for t in tensors}) != 1 or not isinstance(dim, int):
            return func(*args, **kwargs)
        stack = func is torch.stack
        dim %= tensors[0].dim() + (1 if stack else 0)
        main = tensors[0].shape
        keep = None if stack else dim
        if any(size != main[d] for t in tensors for d, size in enumerate(t.shape) if d != keep):
            self.pending = "size"
            tensors = [resize_like(t, main, keep) for t in tensors]
        return meta_concatenate(tensors, dim, stack)


def first_break(light: LightPass, model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[str, str]:
    """The first break's (kind, block) of one forward on meta, or ("", "") when aligned."""
    light.reset()
    try:
        with torch.no_grad(), light:
            model(*args, **kwargs)
    except _FirstBreak as stop:
        return stop.kind, stop.place
    except Exception as error:  # noqa: BLE001 - any failure is this size's first break
        return ("size" if _SIZE_ERROR.search(str(error)) else "error"), light.failed_in or light.block()
    if light.pending:
        return light.pending, light.block()
    return "", ""


def sweep(
    model: nn.Module,
    sizes: Iterable[tuple[int, int]],
    arguments_at: Callable[[int, int], tuple[Sequence[Any], dict[str, Any]]],
    progress: Callable[[], None] | None = None,
    workers: int | None = None,
) -> list[Outcome]:
    """The outcome of every size, on one model built once (on meta).

    Long sweeps fork one worker per core (where the platform forks): each size is an
    independent forward, and the workers inherit the model instead of rebuilding it.
    """
    sizes = list(sizes)
    workers = workers or _worker_count(len(sizes))
    if workers == 1:
        return _sweep_serial(model, sizes, arguments_at, progress)
    global _INHERITED  # noqa: PLW0603 - handed to forked workers, which cannot unpickle closures
    _INHERITED = (model, arguments_at)
    chunks = [sizes[start : start + _CHUNK] for start in range(0, len(sizes), _CHUNK)]
    outcomes: list[Outcome] = []
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for chunk in pool.imap(_sweep_inherited, chunks):
                outcomes.extend(chunk)
                for _ in chunk if progress is not None else ():
                    progress()  # type: ignore[misc]
    finally:
        _INHERITED = None
    return outcomes


_CHUNK = 32  # sizes per task: small enough for a smooth progress bar, large enough to amortise
_INHERITED: tuple[nn.Module, Callable[[int, int], tuple[Sequence[Any], dict[str, Any]]]] | None = None


def _worker_count(sizes: int) -> int:
    if sizes < 4 * _CHUNK or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def _sweep_inherited(sizes: list[tuple[int, int]]) -> list[Outcome]:
    assert _INHERITED is not None
    model, arguments_at = _INHERITED
    return _sweep_serial(model, sizes, arguments_at, None)


def _sweep_serial(
    model: nn.Module,
    sizes: Sequence[tuple[int, int]],
    arguments_at: Callable[[int, int], tuple[Sequence[Any], dict[str, Any]]],
    progress: Callable[[], None] | None,
) -> list[Outcome]:
    """Every size in this process, the model hooked once."""
    light = LightPass({id(module): name for name, module in model.named_modules()})
    outcomes = []
    with observed(model, light.before, light.after):
        for height, width in sizes:
            args, kwargs = arguments_at(height, width)
            kind, place = first_break(light, model, args, kwargs)
            outcomes.append(Outcome((height, width), BreakKind(kind) if kind else None, place))
            if progress is not None:
                progress()
    return outcomes

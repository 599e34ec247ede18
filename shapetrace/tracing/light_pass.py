"""`shapetrace sweep`: trace one model at many sizes and report where each size first breaks.

A full trace per size would record every layer only to keep its first break; the sweep
runs a lighter pass instead: the forward on meta under a function mode that computes
shapes and raises at the first disagreement, and hooks that only track which block runs
and which call produced each tensor. What is a merge, which input is the main one, what a
channel demand is, and what kind a failure is are decided by the modules the full trace
uses (`merges`, `failures`), so both decide alike; tests/test_sweep.py checks that its
outcomes equal those of full traces.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from shapetrace.extents import has_channel_dim
from shapetrace.records import BreakKind
from shapetrace.tracing import broadcasts, metashapes
from shapetrace.tracing._torch_compat import has_children
from shapetrace.tracing.failures import FailedOp, failure_kind, internal_error, is_internal, noted
from shapetrace.tracing.leaves import TORCH_LEAVES
from shapetrace.tracing.merges import (
    ADDITIONS,
    CONCATENATIONS,
    EXPECTATIONS,
    addition_operands,
    channel_mismatch,
    concatenate,
    concatenation,
    main_input,
    merge_roles,
    mismatched,
    stand_ins,
)
from shapetrace.tracing.observer import provenance_rank
from shapetrace.tracing.tracer import image_rank
from shapetrace.tracing.values import tensors_in

MODEL_INPUT = -1  # the producer of the model's own inputs, as in the Recorder


class _FirstBreak(Exception):  # noqa: N818 - a signal that unwinds the forward, not an error
    def __init__(self, kind: BreakKind, place: str) -> None:
        super().__init__(kind, place)
        self.kind, self.place = kind, place


class LightPass(TorchFunctionMode):
    """Shapes only; the first disagreement stops the forward with its kind and block.

    Of the Observer's bookkeeping it keeps just what the shared merge rules (`merges`) need to
    decide as the Observer does: which call produced each tensor (the main input of a merge
    is the latest call's) and which calls each call's inputs came from (a skip feeds the main
    input). Calls are numbered as they begin, as the Recorder numbers them; a call's outputs
    carry its number, a function's output the number of its input `provenance_rank` ranks first. The
    tracked tensors are held until the forward ends (on meta they cost nothing), so an id is
    never reused meanwhile.
    """

    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self.names = names
        self.reset()

    def reset(self) -> None:
        self.stack: list[str] = []
        self.image_rank: int | None = None  # dims of the model's image input (`tracer.image_rank`)
        self.root = ""  # the model's class name: the block of a failure in its own forward, as `block_name`
        self.pending: BreakKind | None = None  # a merge broke; its consumer is the next call to begin
        self.merged_in = ""  # the block that merge ran in: the break's place if no call receives it
        self.failed_in = ""  # the block an exception left first
        self.failure: FailedOp | None = None
        self.calls = 0
        self.events = 0
        self.running: list[tuple[int, int, bool]] = []  # (number, event it began at, leaf) per open call
        self.producers: dict[int, tuple[torch.Tensor, int, int, bool]] = {}
        """By id: (tensor, producer, event it was tracked at, returned by a call)."""
        self.inputs: list[list[int]] = []
        """By call number: the producers of the call's tensor arguments."""

    def before(self, module: nn.Module, args: Any) -> None:
        if id(module) not in self.names:
            return  # global hooks see every module; only the swept model's count
        # As the Recorder: only torch's own leaves are opaque; a custom leaf's tensors keep producers.
        leaf = type(module).forward in TORCH_LEAVES and not has_children(module)
        if not self.stack:
            self.root = type(module).__name__
        # Pushed before raising: the always-called post-hook of this module pops both again.
        self.events += 1
        self.stack.append(self.names[id(module)])
        self.running.append((self.calls, self.events, leaf))
        self.inputs.append(self._producers_of(args))
        self.calls += 1
        if self.pending is not None:
            raise _FirstBreak(self.pending, self.block())

    def after(self, module: nn.Module, args: Any, *rest: Any) -> None:
        if id(module) not in self.names:
            return
        # (kwargs, output); (output) alone on torch's exception path, as for the Observer.
        kwargs, output = rest if len(rest) == 2 else ({}, rest[-1])
        # always_call: runs while an exception unwinds too; remember the block it left first.
        if output is None and not self.failed_in and sys.exc_info()[0] is not None:
            self.failed_in = self.block()
        self.stack.pop()
        number, began, _ = self.running.pop()
        if output is None:
            return
        if kwargs:
            self.inputs[number] += self._producers_of(tensors_in(kwargs))
        # The Recorder's rule at a call's end: an output made inside the call, not returned by
        # a child, is this call's; one a child returned, or an input passed through, stays.
        producers = self.producers
        for tensor in (output,) if isinstance(output, torch.Tensor) else tensors_in(output):
            known = producers.get(id(tensor))
            if known is None or known[0] is not tensor:
                self.events += 1
                producers[id(tensor)] = (tensor, number, self.events, True)
            elif known[2] > began and not known[3]:
                producers[id(tensor)] = (tensor, number, known[2], True)

    def producer_of(self, tensor: torch.Tensor) -> int:
        known = self.producers.get(id(tensor))
        return known[1] if known is not None and known[0] is tensor else MODEL_INPUT

    def _producers_of(self, values: Sequence[Any]) -> list[int]:
        """The producers of the tensors among a call's arguments (producer_of, inlined: once per call)."""
        producers = self.producers
        found = []
        for value in values:
            for tensor in (value,) if isinstance(value, torch.Tensor) else tensors_in(value):
                known = producers.get(id(tensor))
                found.append(known[1] if known is not None and known[0] is tensor else MODEL_INPUT)
        return found

    def inputs_of(self, call: int) -> list[int]:
        return self.inputs[call]

    def block(self) -> str:
        """The running block at the display depth; the model's class for its own forward, as the full trace names it."""
        if len(self.stack) > 1:
            return self.stack[1]
        return (self.stack[0] or self.root) if self.stack else ""

    def track_inputs(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Track the model's own inputs, as the Recorder tags them: their sums break as merges do."""
        inputs = tensors_in(args) + tensors_in(kwargs)
        for tensor in inputs:
            self.producers[id(tensor)] = (tensor, MODEL_INPUT, 0, True)
        self.image_rank = image_rank(inputs)

    def tracked(self, tensor: torch.Tensor) -> bool:
        """Whether the tensor came from the model's inputs (the Recorder's tags), not a parameter or a constant."""
        known = self.producers.get(id(tensor))
        return known is not None and known[0] is tensor

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        try:
            if func in CONCATENATIONS:
                merge = concatenation(func, args, kwargs)
                if merge is not None:
                    return self._concatenate(func, merge.op, merge.tensors, merge.dim, merge.keep)
            elif func in ADDITIONS:
                operands = addition_operands(args, kwargs)
                output = None if operands is None else self._add(func, operands, args, kwargs)
                if output is not None:
                    return output
            elif func in EXPECTATIONS and channel_mismatch(func, args, kwargs) is not None:
                raise _FirstBreak(BreakKind.CHANNELS, self.block())
            output = metashapes.call(func, args, kwargs)
        except _FirstBreak:
            raise
        except Exception as error:
            self.failure = noted(self.failure, func, args, kwargs, error)
            if isinstance(error, RuntimeError):
                self._broadcast_break(func, args)
            raise
        if not (self.running and self.running[-1][2]):  # inside a leaf, its outputs are the leaf's anyway
            for item in output if isinstance(output, (tuple, list)) else (output,):
                if isinstance(item, torch.Tensor):
                    self._derive(item, args)
        return output

    def _derive(self, output: torch.Tensor, args: Sequence[Any]) -> None:
        """As the Observer: a function's output keeps the producer of its input ranked first by `provenance_rank`."""
        if id(output) in self.producers and self.producers[id(output)][0] is output:
            return  # in place, or a view returned as the same object
        best, best_rank = MODEL_INPUT, (False, -1)
        for argument in args:
            for tensor in argument if isinstance(argument, (list, tuple)) else (argument,):
                if isinstance(tensor, torch.Tensor) and (rank := provenance_rank(tensor, output)) > best_rank:
                    known = self.producers.get(id(tensor))
                    if known is not None and known[0] is tensor:
                        best, best_rank = known[1], rank
        if best_rank[1] >= 0:
            self.events += 1
            self.producers[id(output)] = (output, best, self.events, False)

    def _broadcast_break(self, func: Callable[..., Any], args: Sequence[Any]) -> None:
        """As the Observer: a tracked feature map that does not broadcast with the other operand breaks here.

        Only dim 1 of a map of rank four or more differing: a channel break; else a size break.

        Raises:
            _FirstBreak: the op is such a mismatch; otherwise nothing happens.
        """
        found = broadcasts.mismatch(func, args)
        if found is None:
            return
        first, second = args[found.first], args[found.second]
        received = first if self.tracked(first) else second if self.tracked(second) else None
        if received is None or received.dim() != found.rank:
            return
        raise _FirstBreak(BreakKind.CHANNELS if found.channels(self.image_rank) else BreakKind.SIZE, self.block())

    def _merge_broke(self, kind: BreakKind) -> None:
        if self.pending is None:
            self.pending, self.merged_in = kind, self.block()

    def _add(
        self,
        func: Callable[..., Any],
        operands: tuple[torch.Tensor, torch.Tensor],
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        """As the Observer: an addition that joins a skip to the main path is a merge; None if it is none."""
        producers = [self.producer_of(t) for t in operands]
        roles, main = merge_roles(producers, self.inputs_of)
        broken = operands[0].shape != operands[1].shape and any(self.tracked(t) for t in operands)
        if roles[1 - main] != "skip" and not broken:
            return None
        if not broken:
            output = metashapes.call(func, args, kwargs)
        else:
            # As the Observer's: any sum of two maps that disagree breaks, at the call that receives it.
            self._merge_broke(_addition_kind(operands, self.image_rank))
            resized = stand_ins(operands, operands[main].shape, None)
            rest = {key: value for key, value in kwargs.items() if key not in ("input", "other")}
            output = metashapes.call(func, (*resized, *args[2:]), rest)
        # A residual sum continues the main path, whichever side of the + it was written on.
        if output is not operands[main]:
            self.events += 1
            self.producers[id(output)] = (output, producers[main], self.events, False)
        return output

    def _concatenate(
        self, func: Callable[..., Any], op: str, tensors: Sequence[torch.Tensor], dim: int, keep: int | None
    ) -> torch.Tensor:
        producers = [self.producer_of(t) for t in tensors]
        main = main_input(producers)
        if mismatched(tensors, main, keep):
            self._merge_broke(BreakKind.SIZE)
            tensors = stand_ins(tensors, tensors[main].shape, keep)
        output = concatenate(func, op, tensors, dim)
        self.events += 1
        self.producers[id(output)] = (output, producers[main], self.events, False)
        return output


def _addition_kind(operands: tuple[torch.Tensor, torch.Tensor], image_rank: int | None) -> BreakKind:
    """As the full trace's analysis: feature maps whose channel counts differ.

    A channel break whatever else differs (the diagnosis reads a sum's sides so); a size break
    otherwise, and in token sequences (B, N, C), whose dim 1 is no channel count (`has_channel_dim`).
    """
    left, right = (tuple(t.shape) for t in operands)
    channels = has_channel_dim(len(left), image_rank) and left[1] != right[1] and 1 not in (left[1], right[1])
    return BreakKind.CHANNELS if channels else BreakKind.SIZE


def first_break(light: LightPass, model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[str, str]:
    """The first break's (kind, block) of one forward on meta, or ("", "") when aligned.

    Raises:
        InternalError: shapetrace's own code failed (`failures.is_internal`), not the model.
    """
    light.reset()
    light.track_inputs(args, kwargs)
    try:
        with torch.no_grad(), light:
            model(*args, **kwargs)
    except _FirstBreak as stop:
        return stop.kind, stop.place
    except Exception as error:
        if is_internal(error):
            raise internal_error(error) from error
        return failure_kind(error, light.failure), light.failed_in or light.block()
    finally:
        light.producers.clear()  # the tensors of this forward go now, not at the next one
    if light.pending is not None:
        return light.pending, light.merged_in  # no call received the merged tensor
    return "", ""

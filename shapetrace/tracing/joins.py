"""The function mode's merges: `torch.cat`/`stack` and `+` between feature maps.

Each merge's inputs are classified by `pairing` (main input, skips, other inputs) and recorded
as a Merge; the merged tensor carries the merge on until a call receives it, which becomes its
target. Inputs that disagree become breaks, and the merge goes on with stand-ins of the main
input's shape, so one trace reports every independent break.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from shapetrace.extents import has_channel_dim
from shapetrace.records import BreakSide, SideRole
from shapetrace.tracing import pairing
from shapetrace.tracing.merges import (
    Concatenation,
    addition_operands,
    concatenate,
    mismatched,
    stand_ins,
)
from shapetrace.tracing.pairing import Operand
from shapetrace.tracing.recorder import MODEL_INPUT, Merge, Part, PendingBreak, Recorder


class Joins:
    """The merge half of `observer.Observer` (a mixin: it shares the observer's recorder and call)."""

    recorder: Recorder
    first_break: bool
    stop_pending: bool
    call: Callable[[Callable[..., Any], Sequence[Any], dict[str, Any]], Any]

    def _plain(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError  # the observer's

    def _concatenate(self, func: Callable[..., Any], merge: Concatenation) -> Any:
        op, dim, tensors = merge.op, merge.dim, merge.tensors
        parts, main = self._parts(tensors, op)
        pending = _pending(self.recorder, tensors)
        broken = mismatched(tensors, main, merge.keep)
        merge_id = len(self.recorder.merges)
        self.recorder.merges.append(Merge(op, dim, self.recorder.current, parts))
        if broken:
            self._size_break(op, dim, parts, tensors[main].shape, merge_id)
            tensors = tuple(stand_ins(tensors, tensors[main].shape, merge.keep))
        output = concatenate(func, op, tensors, dim)
        downstream = bool(broken) or any(
            (tag := self.recorder.tag_of(t)) is not None and (tag.downstream or tag.bad >= 0) for t in tensors
        )
        self.recorder.set_tag(
            output, parts[main].producer, merge=merge_id, downstream=downstream, pending=(*pending, merge_id)
        )
        return output

    def _parts(self, tensors: Sequence[torch.Tensor], op: str) -> tuple[tuple[Part, ...], int]:
        """Each input's producer and role (`pairing.classify`); a skip's producer is where it left the main path."""
        recorder = self.recorder
        operands = []
        for tensor in tensors:
            tag = recorder.tag_of(tensor)
            shape = tuple(tensor.shape)
            if tag is None:
                operands.append(Operand(MODEL_INPUT, shape, tagged=False))
            else:
                operands.append(Operand(tag.producer, shape, tagged=True, input_index=tag.input_index))
        roles, main = pairing.classify(recorder, operands, op)
        parts = []
        for operand, role in zip(operands, roles, strict=True):
            producer = operand.producer
            if role == pairing.SKIP:
                producer, prepared = pairing.skip_source(recorder, producer, operands[main].producer)
                recorder.preparations.update(prepared)
            parts.append(Part(producer, operand.shape, role))
        return tuple(parts), main

    def _size_break(self, op: str, dim: int, parts: Sequence[Part], expected: Any, merge_id: int) -> None:
        sides = tuple(BreakSide(side_role(part, parts), part.shape, part.producer) for part in parts)
        brk = PendingBreak(self.recorder.current, "size", op, dim, sides, tuple(expected), merge=merge_id)
        self.recorder.breaks.append(brk)
        # With --first-break, stop once the call that consumes the merge has begun.
        self.stop_pending = self.first_break

    def _add(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        operands = addition_operands(args, kwargs)  # two maps, not a bias broadcast over one
        if operands is None:
            return self._plain(func, args, kwargs)
        left, right = operands
        recorder = self.recorder
        tags = (recorder.tag_of(left), recorder.tag_of(right))
        if tags[0] is None and tags[1] is None:
            return self._plain(func, args, kwargs)
        parts, main = self._parts((left, right), "add")
        if left.shape != right.shape:
            return self._broken_add(func, (left, right), args, kwargs, parts, main)
        pending = _pending(recorder, (left, right))
        skip = any(part.role == pairing.SKIP for part in parts)
        if skip:
            pending = (*pending, len(recorder.merges))
            recorder.merges.append(Merge("add", -1, recorder.current, parts))
        elif not _residual(recorder, parts, main):
            return self._plain(func, args, kwargs)  # two inputs, neither made from the other
        output = self.call(func, args, kwargs)
        # A skip merge or a residual sum continues the main path, whichever side of the + it
        # was written on (`x + attn(x)` and `attn(x) + x` alike, in place too).
        main_tag = tags[main]
        if isinstance(output, torch.Tensor) and main_tag is not None:
            if output is (left, right)[main]:
                main_tag.pending = pending
            else:
                recorder.inherit(output, main_tag, pending=pending)
        return output

    def _broken_add(
        self,
        func: Callable[..., Any],
        operands: tuple[torch.Tensor, torch.Tensor],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        parts: tuple[Part, ...],
        main: int,
    ) -> Any:
        """Operands that do not broadcast: a channel break where only dim 1 differs, else a size break."""
        recorder = self.recorder
        merge_id = len(recorder.merges)
        recorder.merges.append(Merge("add", -1, recorder.current, parts))
        main_shape = operands[main].shape
        pairs = enumerate(zip(*(t.shape for t in operands), strict=True))
        differing = [d for d, (a, b) in pairs if a != b and 1 not in (a, b)]
        if _stand_in_meets_original(recorder, operands):
            pass  # the break that made the stand-in is the cause: one break, not two
        elif differing == [1] and has_channel_dim(len(main_shape), recorder.image_rank):  # not (B, N, C) tokens
            sides = tuple(BreakSide(side_role(p, parts), p.shape, p.producer, p.shape[1]) for p in parts)
            expected = (main_shape[1],)
            recorder.breaks.append(
                PendingBreak(recorder.current, "channels", "add", 1, sides, expected, merge=merge_id)
            )
            self.stop_pending = self.first_break
        else:
            self._size_break("add", -1, parts, main_shape, merge_id)
        resized = stand_ins(operands, main_shape, None)
        rest = {key: value for key, value in kwargs.items() if key not in ("input", "other")}
        output = self.call(func, (*resized, *args[2:]), rest)
        pending = (*_pending(recorder, operands), merge_id)
        recorder.set_tag(output, parts[main].producer, merge=merge_id, downstream=True, pending=pending)
        return output


def _pending(recorder: Recorder, tensors: Sequence[torch.Tensor]) -> tuple[int, ...]:
    """The merges still waiting for a target among the tensors joined: the merged tensor carries them on."""
    pending: tuple[int, ...] = ()
    for tensor in tensors:
        tag = recorder.tag_of(tensor)
        if tag is not None and tag.pending:
            pending += tag.pending
    return pending


def _stand_in_meets_original(recorder: Recorder, operands: Sequence[torch.Tensor]) -> bool:
    """Whether one side was made from a stand-in and the other is the tensor it stood in for.

    A block that received too many channels runs on, on a stand-in; its residual
    `skip_connection(x) + h` then meets the original `x` again, a consequence of the same break.
    """
    tags = [recorder.tag_of(tensor) for tensor in operands]
    made_from_stand_in = [tag is not None and tag.downstream for tag in tags]
    stood_in_for = [tag is not None and tag.bad >= 0 for tag in tags]
    return any(made_from_stand_in[i] and stood_in_for[1 - i] for i in (0, 1))


def _residual(recorder: Recorder, parts: Sequence[Part], main: int) -> bool:
    """Whether the other input of an add feeds the main one (`x + f(x)`)."""
    other = parts[1 - main]
    return pairing.ancestry(recorder, other.producer, parts[main].producer) is not None


def side_role(part: Part, parts: Sequence[Part]) -> SideRole:
    """The main input is the up path where the merge joins a skip; otherwise it is just an input."""
    if part.role == pairing.MAIN:
        return SideRole.UP_PATH if any(p.role == pairing.SKIP for p in parts) else SideRole.INPUT
    return SideRole.SKIP if part.role == pairing.SKIP else SideRole.INPUT

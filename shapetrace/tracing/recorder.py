"""The tracer's private, mutable state, frozen into records once the forward is over.

Tensors are tagged by `id()`, each tag holding a weak reference to its tensor: a reused id
(a tensor freed and another allocated at the same address) is told apart, the user's
tensors are never modified, and no intermediate tensor is kept alive by the trace.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

from shapetrace.records import (
    DOWNSTREAM,
    FAILED,
    OK,
    BreakSide,
    LayerStatus,
    Resampling,
    Shape,
)
from shapetrace.tracing._torch_compat import has_children
from shapetrace.tracing.leaves import TORCH_LEAVES
from shapetrace.tracing.walk import name_in_call

MODEL_INPUT = -1  # producer of the tensors handed to the model


@dataclass(slots=True)
class Tag:
    """What the trace knows of one live tensor."""

    ref: weakref.ref[torch.Tensor]
    producer: int
    """The innermost call that returned it, or whose output it was derived from."""
    made_at: int
    """Event number when the tag was made; tells tensors made inside a call from inputs."""
    returned_by: int = -1
    """The outermost call that returned this very object (the block of an additive merge)."""
    merge: int = -1
    """The last merge that made it (or its source): a channel break on it splits into the merge's parts."""
    bad: int = -1
    """The break reported on this tensor; further uses are the same break, not a new one."""
    downstream: bool = False
    """Computed from a stand-in that replaced a broken tensor."""
    pending: tuple[int, ...] = ()
    """Merges it was made by (or from) whose target is not known yet: the first call that receives it."""
    input_index: int = -1
    """For a model input, or a tensor made from one by functions: the input's position."""


@dataclass(slots=True)
class Call:
    """One module call while it is being recorded."""

    index: int
    module: torch.nn.Module
    depth: int
    parent: int | None
    started_at: int
    inputs: tuple[Shape, ...]
    producers: tuple[int, ...]
    """Producers of the tensor arguments: the call-level data flow into this call."""
    status: LayerStatus = OK
    opaque: bool = False
    """One of torch's own leaves (Conv2d, GroupNorm): its functions make no merges, so they go untagged."""
    outputs: tuple[Shape, ...] = ()
    children: int = 0
    inner: int = -2
    """For an output made inside the call by functions: the producer of the tensor it was made from
    (a child, or an input's producer); -2 when unknown."""


@dataclass(frozen=True, slots=True)
class Part:
    """One input of a merge."""

    producer: int
    shape: Shape
    role: str
    """"main" (the input from the latest call), "skip", or "input" (neither)."""


@dataclass(slots=True)
class Merge:
    """One torch.cat or stack, or an addition that joins a skip to the main path."""

    op: str
    dim: int
    origin: int
    """The innermost call running when the merge happened."""
    parts: tuple[Part, ...]
    target: int = -1
    """The first call that received the merged tensor."""

    @property
    def main(self) -> Part:
        return next(part for part in self.parts if part.role == "main")


@dataclass(slots=True)
class PendingBreak:
    """A break before its merge's target is known."""

    leaf: int
    kind: str
    op: str
    dim: int
    sides: tuple[BreakSide, ...]
    expected: Shape = ()
    merge: int = -1
    layer: int = -1
    detail: str = ""
    """The exception text, for kind "error"."""


class Recorder:
    """Calls, tensor tags, merges and breaks of one forward."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.calls: list[Call] = []
        self.stack: list[int] = []
        self.tags: dict[int, Tag] = {}
        self.merges: list[Merge] = []
        self.breaks: list[PendingBreak] = []
        self.events = 0
        self.resamplings: list[Resampling] = []
        """The resampling functions seen outside resampling modules, as they ran (see `geometry`)."""
        self.image_rank: int | None = None
        """Dims of the model's first input with spatial dims: 3 makes (B, C, L) signals feature maps."""
        self.received_inputs: set[int] = set()
        """Model inputs some call below the model received (an unreceived one feeds nothing yet)."""
        self.arrivals: dict[int, tuple[int, int]] = {}
        """pairing.call_arrival's cache."""
        self.preparations: set[int] = set()
        """Calls that prepared a skip for its merge (a gate, a norm): merges inside them are no skips."""
        self.call_names: dict[int, str] = {}
        """name_of's answers by call index."""

    def name_of(self, call: Call) -> str:
        """The module's dotted name in the model, looked up once the forward is over (a stateless
        module shared by several parents: its name under the parent that called it)."""
        known = self.call_names.get(call.index)
        if known is not None:
            return known
        name = self.names.get(id(call.module), type(call.module).__name__)
        if call.parent is not None and call.parent >= 0 and id(call.module) in self.names:
            parent = self.calls[call.parent]
            name = name_in_call(call.module, name, parent.module, self.name_of(parent))
        self.call_names[call.index] = name
        return name

    # --- tags -------------------------------------------------------------------------

    def tag_of(self, tensor: torch.Tensor) -> Tag | None:
        tag = self.tags.get(id(tensor))
        if tag is not None and tag.ref() is tensor:
            return tag
        return None

    def producer_of(self, tensor: torch.Tensor) -> int:
        tag = self.tag_of(tensor)
        return MODEL_INPUT if tag is None else tag.producer

    def set_tag(self, tensor: torch.Tensor, producer: int, **fields: Any) -> Tag:
        self.events += 1
        tag = Tag(weakref.ref(tensor), producer, self.events, **fields)
        self.tags[id(tensor)] = tag
        return tag

    def inherit(self, tensor: torch.Tensor, source: Tag, **overrides: Any) -> Tag:
        """Tag a tensor derived by plain functions from `source`'s tensor: same producer."""
        self.events += 1
        tag = Tag(
            weakref.ref(tensor),
            source.producer,
            self.events,
            -1,
            source.merge,
            source.bad,
            source.downstream,
            source.pending,
            source.input_index,
        )
        for field, value in overrides.items():
            setattr(tag, field, value)
        self.tags[id(tensor)] = tag
        return tag

    # --- calls ------------------------------------------------------------------------

    @property
    def current(self) -> int:
        return self.stack[-1] if self.stack else MODEL_INPUT

    @property
    def in_opaque_leaf(self) -> bool:
        """One of torch's own leaves is running: its intermediate tensors need no tags (its output gets one).

        A custom leaf's do: a merge module's `cat([a * 0.5, b * 0.5])` must know where a and b came from.
        """
        return bool(self.stack) and self.calls[self.stack[-1]].opaque

    def begin(self, module: torch.nn.Module, tensors: list[torch.Tensor]) -> None:
        # Runs before every module call: plain loops and positional fields, since on a real
        # device every microsecond here is added to each layer's kernels.
        stack, calls = self.stack, self.calls
        parent = stack[-1] if stack else None
        if parent is not None:
            calls[parent].children += 1
        index = len(calls)
        self.events += 1
        shapes = []
        producers = []
        downstream = False
        for tensor in tensors:
            shapes.append(tuple(tensor.shape))
            tag = self.tag_of(tensor)
            if tag is None:
                producers.append(MODEL_INPUT)
                continue
            producers.append(tag.producer)
            downstream = downstream or tag.downstream or tag.bad >= 0
            if tag.pending:
                self._receive(tag, index)
            if tag.producer < 0 and parent is not None:
                self.received_inputs.add(tag.input_index)
        status = DOWNSTREAM if downstream else OK
        calls.append(
            Call(
                index,
                module,
                len(stack),
                parent,
                self.events,
                tuple(shapes),
                tuple(producers),
                status,
                type(module).forward in TORCH_LEAVES and not has_children(module),
            )
        )
        stack.append(index)

    def _receive(self, tag: Tag, index: int) -> None:
        """Call `index` receives a merged tensor: the first such call is each pending merge's target."""
        for merge in tag.pending:
            if self.merges[merge].target < 0:
                self.merges[merge].target = index
        tag.pending = ()

    def add_inputs(self, tensors: list[torch.Tensor]) -> None:
        """Keyword tensors of the running call, known only when it ends."""
        call = self.calls[self.stack[-1]]
        call.inputs += tuple(tuple(t.shape) for t in tensors)
        call.producers += tuple(self.producer_of(t) for t in tensors)

    def end(self, outputs: list[torch.Tensor], raised: bool) -> None:
        index = self.stack.pop()
        call = self.calls[index]
        if raised:
            call.status = FAILED
            return
        call.outputs = tuple([tuple(tensor.shape) for tensor in outputs])
        for tensor in outputs:
            tag = self.tag_of(tensor)
            if tag is None:
                # Made inside a leaf, where functions are not tagged: it inherits the call's state.
                self.set_tag(tensor, index, returned_by=index, downstream=call.status == DOWNSTREAM)
            elif tag.made_at > call.started_at:
                if tag.returned_by < 0:
                    # Made inside this call by functions, not returned by a child: this
                    # call is the innermost one that returned it.
                    if call.inner == -2:
                        call.inner = tag.producer
                    tag.producer = index
                tag.returned_by = index
            # Otherwise the call passed its input through (nn.Identity): the tag stays.

    def unwind(self) -> int:
        """Mark the calls still running as failed; returns the innermost, or -1."""
        innermost = self.stack[-1] if self.stack else MODEL_INPUT
        while self.stack:
            self.calls[self.stack.pop()].status = FAILED
        return innermost

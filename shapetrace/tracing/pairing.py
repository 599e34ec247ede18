"""Which inputs of a merge are skips, and where each skip comes from: provenance, not call order.

The rule (ARCHITECTURE.md, "The pairing rule", says it in words):

- Every tensor carries a producer: the innermost call that returned it, or, for a tensor made
  by functions (`x * 0.5`, slicing, a reshape), the producer of its largest tagged input of its
  own shape, else of its largest tagged input.
- A tensor's *arrival* is how it reached its resolution, read backwards along that chain:
  from a coarser level (UP: the last size change on the way was an upsampling), from a finer
  one (DOWN), or neither (NONE, since the model's input). The call where that last change
  happened is its *entry*.
- A stack joins no skips: it collects maps (deep supervision heads) along a new dimension.
- In a merge, the main input is the one that arrived UP most recently (the up path). A cat's
  other inputs are skips when they entered their level elsewhere; an add's other input is a
  skip only when it did not arrive UP (two sides from different levels of the U). Without an
  UP input the old call-order rule applies to cats (the latest producer is the main input,
  and inputs that feed it are skips); an add then joins a skip only when one side came into
  the merging call from outside, independently of the other (a residual from another network).
- A skip's source is where it left the main path's history: preparations applied to it inside
  the merging call (a gate, a norm, a projection, a crop) are walked back over.

Everything here reads the Recorder after the calls involved have finished; results per call
are cached, so a whole trace costs one walk of its calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from shapetrace.records import Shape
from shapetrace.tracing import merges
from shapetrace.tracing.levels import DOWN, NONE, UP, direction, numel
from shapetrace.tracing.recorder import MODEL_INPUT, Recorder

MAIN, SKIP, INPUT = "main", "skip", "input"


@dataclass(frozen=True, slots=True)
class Operand:
    """One input of a merge, as the observer saw it."""

    producer: int
    shape: Shape
    tagged: bool
    """False for tensors the trace never saw made: parameters, buffers, constants."""
    input_index: int = -1
    """For a model input (or a tensor made from one by functions): its position among them."""


def arrival(recorder: Recorder, shape: Shape, producer: int) -> tuple[int, int]:
    """(direction, entry call) of a tensor of `shape` made from `producer`'s output by functions."""
    if producer < 0:
        return NONE, MODEL_INPUT
    found = _between(recorder, producer, shape)
    return (found, producer) if found != NONE else call_arrival(recorder, producer)


def call_arrival(recorder: Recorder, index: int) -> tuple[int, int]:
    """How the output of call `index` reached its resolution; cached per call."""
    cache = recorder.arrivals
    path: list[int] = []
    result = (NONE, MODEL_INPUT)
    while index >= 0:
        if index in cache:
            result = cache[index]
            break
        path.append(index)
        output = _first_map(recorder.calls[index].outputs)
        source, source_shape = primary_input(recorder, index)
        linear = _is_linear(recorder, index)
        if source_shape is not None and not linear and (found := direction(source_shape, output)) != NONE:
            result = (found, index)
            break
        if source >= 0 and (found := _between(recorder, source, source_shape or output)) != NONE:
            result = (found, source)
            break
        index = source
    for visited in path:
        cache[visited] = result
    return result


def _between(recorder: Recorder, source: int, shape: Shape) -> int:
    """A level change made by functions between call `source`'s output and a tensor of `shape`.

    Not after a Linear, nor in 3-D tensors: there the last dim may be channels, (B, N, C) tokens
    split or joined (GEGLU's chunk), not a length; 1-D models resample in calls of their own.
    """
    if len(shape) < 4 or _is_linear(recorder, source):
        return NONE
    return direction(_output_like(recorder, source, shape), shape)


def primary_input(recorder: Recorder, index: int) -> tuple[int, Shape | None]:
    """The call whose output this call's output was made from, and that input's shape here.

    A child when the output was made inside from a child's output (shape unknown here: the
    child's own output is compared next); else the producer of the input it was made from, the
    largest such input (or the largest input at all, when the output's origin is unknown).
    """
    call = recorder.calls[index]
    if len(call.producers) > 1 and (like := _input_like_output(call.inputs, call.outputs)) >= 0:
        # Several inputs, and the output has the shape of one: made like it, as attention's
        # output is like its queries (keys with memory tokens are longer, and no map either).
        return call.producers[like], call.inputs[like]
    inner = call.inner
    if inner > index:
        return inner, None
    best, best_size = -1, -1
    for matching in (True, False):
        for position, producer in enumerate(call.producers):
            if matching and producer != inner:
                continue
            size = numel(call.inputs[position])
            if size > best_size:
                best, best_size = position, size
        if best >= 0:
            return call.producers[best], call.inputs[best]
    return MODEL_INPUT, None


def _input_like_output(inputs: tuple[Shape, ...], outputs: tuple[Shape, ...]) -> int:
    """The position of the one input whose shape the call's output has; -1 when none or several do."""
    output = _first_map(outputs)
    matching = [position for position, shape in enumerate(inputs) if shape == output]
    return matching[0] if len(matching) == 1 else -1


def classify(recorder: Recorder, operands: Sequence[Operand], op: str) -> tuple[list[str], int]:
    """Each operand's role (MAIN, SKIP or INPUT) in a merge, and the index of the main one."""
    if op == "stack":
        # A stack adds a dimension: it collects maps (deep supervision heads, as MONAI's DynUNet
        # returns them), where a UNet's skip joins the up path along the channels.
        main = max(range(len(operands)), key=lambda i: operands[i].producer)
        return [MAIN if i == main else INPUT for i in range(len(operands))], main
    arrivals = [arrival(recorder, o.shape, o.producer) if o.tagged else (NONE, MODEL_INPUT) for o in operands]
    ups = [i for i, (found, _) in enumerate(arrivals) if found == UP]
    if ups:
        main = max(ups, key=lambda i: (arrivals[i][1], operands[i].producer))
        roles = [_role_beside_up_path(recorder, operands, arrivals, i, main, op) for i in range(len(operands))]
        return roles, main
    main = max(range(len(operands)), key=lambda i: operands[i].producer)
    if op == "add":
        roles = [MAIN if i == main else _residual_from_outside(recorder, operands[i], operands[main]) for i in (0, 1)]
        roles = [
            SKIP if role == INPUT and _stage_added_back(recorder, operands[i], operands[main]) else role
            for i, role in enumerate(roles)
        ]
        return [
            INPUT if role == SKIP and _from_vector(recorder, o) else role
            for role, o in zip(roles, operands, strict=True)
        ], main
    roles = [
        MAIN if i == main else (SKIP if ancestry(recorder, o.producer, operands[main].producer) is not None else INPUT)
        for i, o in enumerate(operands)
    ]
    return roles, main


def _role_beside_up_path(
    recorder: Recorder, operands: Sequence[Operand], arrivals: list[tuple[int, int]], i: int, main: int, op: str
) -> str:
    if i == main:
        return MAIN
    operand = operands[i]
    if not operand.tagged:
        return INPUT
    found, entry = arrivals[i]
    if op == "add":
        return SKIP if found != UP else INPUT  # both came up: two up paths, or a residual after an upsampling
    if entry != arrivals[main][1]:
        return SKIP
    # Both at the level the up path entered: a dense connection when one feeds the other.
    return SKIP if ancestry(recorder, operand.producer, operands[main].producer) is not None else INPUT


def _from_vector(recorder: Recorder, operand: Operand) -> bool:
    """A map reshaped from a vector: a time embedding's scale or shift, (B, C) made (B, C, 1, 1).

    At a 1×1 level it has the map's own shape, so nothing broadcasts, yet it is no skip.
    """
    if operand.producer < 0 or not operand.tagged:
        return False
    outputs = recorder.calls[operand.producer].outputs
    return bool(outputs) and all(len(output) < len(operand.shape) for output in outputs)


def _residual_from_outside(recorder: Recorder, side: Operand, main: Operand) -> str:
    """SKIP for a tensor from outside the merging call added to one made inside it, independently.

    ControlNet's residuals handed to a UNet, an adapter's features: they come into the call
    that adds them (as its arguments, or from a network that ran before), while the tensor
    they join was made inside it from other inputs.
    """
    current = recorder.current
    if current < 0 or not side.tagged or not _inside(recorder, main.producer, current):
        return INPUT
    if side.producer < 0:
        independent = side.input_index >= 0 and side.input_index not in recorder.received_inputs
    else:
        independent = not _inside(recorder, side.producer, current)
        independent = independent and ancestry(recorder, side.producer, main.producer) is None
    return SKIP if independent else INPUT


def _stage_added_back(recorder: Recorder, side: Operand, main: Operand) -> bool:
    """A down stage's output added back to what the bottleneck made of it: a skip, not a residual.

    CleanUNet's `x += skip_connections[0]` after its transformer, Demucs's `decode(x + skip)`
    after its LSTM: the side is the output of a stage that brought the map down to this level
    itself (its entry lies inside it), and the main side was made from it by other calls of
    the merging call. `x + attn(x)` after a block (the side entered its level elsewhere) stays
    a residual, and so does `x + x`.
    """
    if side.producer < 0 or not side.tagged or main.producer == side.producer:
        return False
    stage = _child_of(recorder, side.producer, recorder.current)
    if stage < 0 or _child_of(recorder, main.producer, recorder.current) == stage:
        return False
    found, entry = arrival(recorder, side.shape, side.producer)
    if found != DOWN or not (entry == stage or _inside(recorder, entry, stage)):
        return False
    return ancestry(recorder, side.producer, main.producer) is not None


def _child_of(recorder: Recorder, index: int, ancestor: int) -> int:
    """The call among `ancestor`'s direct children that call `index` ran in (or is); -1 if none."""
    while index >= 0:
        parent = recorder.calls[index].parent
        if parent == ancestor or (parent is None and ancestor < 0):
            return index
        if parent is None:
            return -1
        index = parent
    return -1


def skip_source(recorder: Recorder, producer: int, main_producer: int) -> tuple[int, tuple[int, ...]]:
    """Where a skip left the main path, and the preparation calls walked over to get there.

    Walks back from the skip's producer through calls made inside the merging call that the
    main input does not descend from. If the walk leaves the merging call, the skip came in
    from outside and everything walked was preparation. If it meets the main input's history
    inside the call (the U's own forward merging), only calls made after the main input are
    preparation (a gate called after the upsampler): a branch computed before it is the source.
    """
    current = recorder.current
    chain: list[int] = []
    index = producer
    while (
        index >= 0
        and _inside(recorder, index, current)
        and index != main_producer
        and ancestry(recorder, index, main_producer) is None
    ):
        chain.append(index)
        index = primary_input(recorder, index)[0]
    if not chain:
        return producer, ()
    if index < 0 or not _inside(recorder, index, current):
        return index, tuple(chain)
    for position, call in enumerate(chain):
        if call < main_producer:
            return call, tuple(chain[:position])
    return index, tuple(chain)


def ancestry(recorder: Recorder, source: int, main: int) -> set[int] | None:
    """Calls on paths from `source` to `main` (exclusive), or None if `source` does not feed it.

    A call's predecessors are the producers of its inputs and, for an output it made from a
    child's output by functions, that child (`inputs_of`).
    """
    return merges.ancestry(source, main, lambda call: inputs_of(recorder, call))


def inputs_of(recorder: Recorder, call: int) -> tuple[int, ...]:
    """The calls a call's output comes from: its inputs' producers, and the child it made its output from."""
    found = recorder.calls[call]
    inner = found.inner
    return (*found.producers, inner) if inner > call else found.producers


def _inside(recorder: Recorder, index: int, ancestor: int) -> bool:
    """Whether call `index` ran inside call `ancestor` (strictly); every call runs inside "no call"."""
    if index < 0:
        return False
    if ancestor < 0:
        return True
    if index <= ancestor:
        return False
    parent = recorder.calls[index].parent
    while parent is not None and parent > ancestor:
        parent = recorder.calls[parent].parent
    return parent == ancestor


def _is_linear(recorder: Recorder, index: int) -> bool:
    """A Linear changes the last dim, which in a token or channels-last layout is channels, not size;
    so does a recurrent layer (a bidirectional LSTM's (T, B, 2H) is no map twice as fine)."""
    return isinstance(recorder.calls[index].module, (nn.Linear, nn.RNNBase))


def _output_like(recorder: Recorder, index: int, shape: Shape) -> Shape:
    """The output of call `index` that `shape` was made from: an equal one, else the first of its rank."""
    outputs = recorder.calls[index].outputs
    if shape in outputs:
        return shape
    return next((output for output in outputs if len(output) == len(shape)), ())


def _first_map(outputs: tuple[Shape, ...]) -> Shape:
    return next((output for output in outputs if len(output) >= 3), outputs[0] if outputs else ())

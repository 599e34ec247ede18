"""The cost of torch's recurrent layers (nn.RNN, nn.GRU, nn.LSTM): FLOPs and what backward keeps.

nn.LSTM hands the whole sequence to one function, `torch.lstm(input, hx, params, has_biases,
num_layers, dropout, train, bidirectional, batch_first)` (`torch.gru`, `torch.rnn_tanh`,
`torch.rnn_relu` alike; a packed sequence passes `(data, batch_sizes, hx, params, ...)`), which
ATen runs layer by layer and step by step.

FLOPs are what FlopCounterMode counts when the layer runs on ATen's own cells (as on meta):
every weight matrix meets every step of every sequence once, 2 FLOPs per multiply-add. The
gates' elementwise work goes in `other_flops`.

What backward keeps is what those cells keep, read off ATen's RNN.cpp (torch 2.13):
- each layer's input for its input projection: itself, or a copy per direction where its rows
  do not flatten as a view (batch_first over several sequences);
- the initial states;
- per step, a simple cell its new state; a GRU cell its hidden gates, new gate and two copies
  an in-place product keeps (6 states' worth), plus its new state for the next step; an LSTM
  cell its gates and the cell state's tanh (5 states' worth), plus its new hidden and cell
  states for the next step (and, with proj_size, the unprojected state).

tests/test_cost_recurrent.py checks this against saved_tensors_hooks on the CPU. The CPU's
oneDNN LSTM (torch's default there for float32) keeps a workspace of its own layout instead,
and cuDNN a reserve: those differ from this estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from shapetrace.tracing.cost.batched import mergeable

if TYPE_CHECKING:
    from shapetrace.tracing.cost.saving import Saver

GATES: dict[Callable[..., Any], int] = {torch.rnn_tanh: 1, torch.rnn_relu: 1, torch.gru: 3, torch.lstm: 4}
"""Gates per cell: rows of each weight matrix, in units of the hidden size."""
RECURRENT: tuple[Callable[..., Any], ...] = tuple(GATES)


@dataclass(frozen=True)
class _Call:
    """One call of a recurrent function, its arguments read by position."""

    source: torch.Tensor
    """The input: (T, B, in), (B, T, in) with batch_first, (T, in) unbatched, or packed data (rows, in)."""
    states: tuple[torch.Tensor, ...]
    """h0 (and c0 for an LSTM), each (layers × directions, B, size)."""
    weights: tuple[torch.Tensor, ...]
    """The weight matrices, in order, per layer and direction: w_ih, w_hh (and w_hr with proj_size)."""
    layers: int
    directions: int
    batch_first: bool
    packed: bool


def _read(args: Sequence[Any]) -> _Call | None:
    """The call's arguments, or None where they are not laid out as nn.RNNBase passes them."""
    if len(args) < 9 or not isinstance(args[0], torch.Tensor):
        return None
    packed = isinstance(args[3], (list, tuple))  # (data, batch_sizes, hx, params, ...)
    hx, params = (args[2], args[3]) if packed else (args[1], args[2])
    states = tuple(hx) if isinstance(hx, (list, tuple)) else (hx,)
    if not all(isinstance(state, torch.Tensor) for state in states) or not isinstance(params, (list, tuple)):
        return None
    weights = tuple(param for param in params if isinstance(param, torch.Tensor) and param.dim() == 2)
    offset = 1 if packed else 0
    layers, bidirectional = args[4 + offset], args[7 + offset]
    batch_first = not packed and bool(args[8])
    return _Call(args[0], states, weights, int(layers), 2 if bidirectional else 1, batch_first, packed)


def _rows(source: torch.Tensor) -> int:
    """Steps times sequences: every position of every sequence in the batch."""
    return source.numel() // source.shape[-1] if source.dim() and source.shape[-1] else 0


def recurrent_flops(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    """2 FLOPs per multiply-add of every weight matrix with every position of the sequence."""
    call = _read(args)
    if call is None:
        return 0
    return 2 * _rows(call.source) * sum(weight.numel() for weight in call.weights)


def recurrent_other_flops(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    """The gates' elementwise work: about 5 FLOPs per gate entry, per position, layer and direction."""
    call = _read(args)
    if call is None or not call.weights:
        return 0
    gate_rows = call.weights[0].shape[0]  # w_ih: (gates × hidden, input)
    return 5 * _rows(call.source) * gate_rows * call.layers * call.directions


def make_rule(function: Callable[..., Any]) -> Callable[[Saver, Sequence[Any], dict[str, Any], Any], None]:
    """The saving rule of one recurrent function (GATES names which)."""
    gates = GATES[function]

    def rule(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
        call = _read(args)
        if call is None or not call.weights or call.source.dim() == 0:
            return
        source, element = call.source, call.source.element_size()
        rows = _rows(source)
        batch = call.states[0].shape[-2] if call.states[0].dim() >= 2 else 1
        steps = rows // batch if batch else 0
        hidden = call.weights[0].shape[0] // gates  # w_ih: (gates × hidden, input)
        state = call.weights[1].shape[1]  # w_hh's columns: the hidden size, or proj_size
        projected = state != hidden
        time_major = source.transpose(0, 1) if call.batch_first and source.dim() == 3 else source
        for state_tensor in call.states:
            saver.save(state_tensor)
        # The first layer's input, its rows flattened for the input projection (a matmul that
        # folds them): kept as it is when they flatten as a view, else copied by each direction.
        if mergeable(time_major, range(time_major.dim() - 1)):
            saver.save(source)
        else:
            for _ in range(call.directions):
                saver.save_new(rows * source.shape[-1] * element)
        # Each later layer's input: the layer before's output, its directions joined.
        for _ in range(call.layers - 1):
            saver.save_new(rows * state * call.directions * element)
        per_step = {1: hidden, 3: 6 * hidden, 4: 5 * hidden + (hidden if projected else 0)}[gates]
        carried = {1: 0, 3: hidden, 4: state + hidden}[gates]  # the states the next step keeps
        for _ in range(call.layers * call.directions):
            saver.save_new(batch * element * (per_step * steps + carried * max(steps - 1, 0)))

    return rule

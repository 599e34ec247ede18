"""The meter's handlers for the common functions (tracing/cost/fast.py) charge what its generic path does.

Each model of tests/test_cost.py is traced with `--cost` twice, with the handlers and without
them; every layer's cost and the summary must be the same, in each mode the meter simulates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from shapetrace.records import CostMode, CostOptions, Trace
from shapetrace.tracing._torch_compat import C_LINEAR, C_SCALED_DOT_PRODUCT_ATTENTION
from shapetrace.tracing.cost import fast, meter
from tests.test_cost import _all_cases, _cases, _cost_trace

OPTIONS = (
    CostOptions(),
    CostOptions(mode=CostMode.TRAIN),
    CostOptions(mode=CostMode.TRAIN, checkpointing=True),
)


def _costs(trace: Trace) -> Any:
    return trace.cost  # the summary, with every layer's LayerCost in `layers`


@pytest.mark.parametrize("which", _all_cases())
@pytest.mark.parametrize("options", OPTIONS, ids=["inference", "train", "checkpointing"])
def test_handlers_charge_what_the_generic_path_charges(
    which: Any, options: CostOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    for case in _cases(which):
        handled = _costs(_cost_trace(case, options))
        with monkeypatch.context() as patched:
            patched.setattr(meter, "_HANDLERS", {})
            generic = _costs(_cost_trace(case, options))
        assert handled is not None
        assert handled.layers
        assert handled == generic, case.name


def test_the_handlers_run_on_a_diffusers_unet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above is not empty: each kind of handler charges ops of a diffusers UNet."""
    charged: Counter[Any] = Counter()

    def counting(function: Any, handler: fast.Handler) -> fast.Handler:
        def wrapper(costs: Any, args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> bool:
            done = handler(costs, args, kwargs, output, call)
            charged[function] += done
            return done

        return wrapper

    monkeypatch.setattr(
        meter, "_HANDLERS", {function: counting(function, handler) for function, handler in fast.HANDLERS.items()}
    )
    for case in _cases("diffusers"):
        _cost_trace(case)
    for function in (torch.conv2d, C_LINEAR, F.group_norm, F.layer_norm, C_SCALED_DOT_PRODUCT_ATTENTION, F.silu):
        assert charged[function] > 0, function
    assert charged[torch.Tensor.add] + charged[torch.Tensor.__add__] > 0

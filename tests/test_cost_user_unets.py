"""`--cost` on the user-style UNets (tests/fixtures/user_unets*.py) against torch's own measurements.

FLOPs equal FlopCounterMode's on meta, saved bytes equal what saved_tensors_hooks records in a
real CPU forward, and the inference peak is within 10% of the profiler's at op boundaries.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from shapetrace import run_trace
from shapetrace.records import CostOptions
from tests import test_user_unets, test_user_unets2
from tests.fixtures.cost_oracles import profiled_peak, saved_bytes
from tests.fixtures.user_cases import Case

CASES = {**test_user_unets.CASES, **test_user_unets2.CASES}


def _on_meta(value: Any) -> Any:
    return torch.empty_like(value, device="meta") if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_cost_of_a_user_unet_is_what_torch_measures(case: Case) -> None:
    torch.manual_seed(0)
    model = case.build().eval()
    args, kwargs = case.inputs(case.size, "cpu")
    meta_model = copy.deepcopy(model).to("meta")
    meta_args = tuple(_on_meta(value) for value in args)
    meta_kwargs = {key: _on_meta(value) for key, value in kwargs.items()}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model(*meta_args, **meta_kwargs)
    cost = run_trace(meta_model, meta_args, meta_kwargs, cost=CostOptions()).cost
    assert cost is not None
    assert cost.flops == counter.get_total_flops() > 0
    assert cost.saved_bytes == saved_bytes(model, args, kwargs)
    at_boundaries, _ = profiled_peak(model, args, kwargs)
    assert abs(cost.activation_peak_bytes - at_boundaries) <= 0.1 * at_boundaries

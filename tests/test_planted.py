"""Random small UNets with one bug planted: the diagnosis names its kind, and its verified fix works.

The models are tests/fixtures/planted.py's, drawn over dimensionality, depth, width, pooling
style and merge; the bug (or an odd input size) is drawn too. For each, the trace must have
exactly one kind of cause, the planted one, with a fix that re-tracing verified; that fix,
applied to the real model on the CPU, must make the real forward run at full resolution.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from shapetrace import trace
from shapetrace.records import CauseKind
from shapetrace.verify import applied, parse_action
from tests.fixtures.planted import DOWNS, PlantedUNet, aligned_extent, odd_extent

EXAMPLES = 40 if os.environ.get("SHAPETRACE_LONG_PROPERTIES", "") not in ("", "0") else 5
"""Examples per planted bug; SHAPETRACE_LONG_PROPERTIES=1 explores fresh ones, and more."""
EXPECTED = {
    "fifo": CauseKind.ORDER,
    "wrong level": CauseKind.WRONG_LEVEL,
    "odd size": CauseKind.ROUNDING,
    "missing output_padding": CauseKind.OUTPUT_PADDING,
    "wrong in_channels": CauseKind.CHANNELS,
    "additive mismatch": CauseKind.CHANNELS,
}


@dataclass(frozen=True)
class Planted:
    dims: int
    levels: int
    width: int
    bug: str
    merge: str
    down: str
    multiple: int

    def model(self) -> PlantedUNet:
        torch.manual_seed(0)
        bug = None if self.bug == "odd size" else self.bug
        return PlantedUNet(self.dims, self.levels, self.width, bug, self.merge, self.down)

    def input(self) -> torch.Tensor:
        extent = (odd_extent if self.bug == "odd size" else aligned_extent)(self.levels, self.multiple)
        return torch.randn(1, 1, *([extent] * self.dims))


@st.composite
def planted(draw: st.DrawFn, bug: str) -> Planted:
    dims = draw(st.integers(1, 3))
    # Reordering or mixing up levels needs two of them.
    levels = draw(st.integers(2 if bug in ("fifo", "wrong level") else 1, 3 if dims < 3 else 2))
    merge = {"additive mismatch": "add", "fifo": "cat", "wrong in_channels": "cat"}.get(bug)
    if merge is None:
        merge = draw(st.sampled_from(["cat", "add"]))
    return Planted(
        dims=dims,
        levels=levels,
        width=draw(st.integers(1, 3)),
        bug=bug,
        merge=merge,
        down=draw(st.sampled_from(DOWNS)),
        # At least 2 at the bottom: a 1-wide map broadcasts in `+` and hides a mismatch from torch too.
        multiple=draw(st.integers(2, 3)),
    )


@pytest.mark.parametrize("bug", sorted(EXPECTED))
@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_the_planted_bug_is_the_cause_and_its_verified_fix_makes_the_real_forward_run(
    bug: str, data: st.DataObject
) -> None:
    case = data.draw(planted(bug))
    model, x = case.model(), case.input()
    event(f"{case.dims}-D, {case.levels} levels, {case.merge}, {case.down}")
    traced = trace(model, x)
    kinds = {cause.kind for cause in traced.causes}
    assert kinds == {EXPECTED[case.bug]}, [cause.text for cause in traced.causes]
    explained = sorted(index for cause in traced.causes for index in cause.breaks)
    assert explained == list(range(len(traced.breaks)))
    for cause in traced.causes:
        fix = next((fix for fix in cause.fixes if fix.verified), None)
        assert fix is not None, [f.text for f in cause.fixes]
        steps = parse_action(fix.action)
        sizes = [tuple(int(word) for word in words) for verb, words in steps if verb == "size"]
        for given_x in [torch.randn(1, 1, *size) for size in sizes] or [x]:
            with applied(model, steps), torch.no_grad():
                output = model(given_x)
            assert output.shape[2:] == given_x.shape[2:], fix.text

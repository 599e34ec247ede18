"""Patterns of third-party UNets (tests/fixtures/third_party_patterns.py), against the truth.

Each replica stands for a library bench/third_party.py runs (a-unet, nnU-Net, Demucs); the
truth is the replica's forward: which sizes run on the CPU, and whether a verified fix, applied
to the real model, makes it run. Skip pairs are read from the forward as in test_user_unets2.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from shapetrace import size_rule, trace, trace_sizes
from shapetrace.cli import main
from shapetrace.records import CauseKind
from tests.fixtures import third_party_patterns as patterns
from tests.fixtures.user_cases import Case, PlantedCase, check_planted, image, meta_trace, pairs_of, runs

CASES = {
    # ClosureLevel.forward: merge(x, up(inner(down(x)))); the merge module's closure feeds its conv.
    "closures": Case(
        patterns.ClosureUNet1d,
        image(2, dims=1),
        16,
        (("net.down", "net.inner.merge.blocks.0"), ("stem", "net.merge.blocks.0")),
    ),
    # decoder(cat(up(x), skip)) for the outputs of stages 2, 1, 0; the inplace LeakyReLU returns the norm's tensor.
    "instance_norm": Case(
        patterns.InstanceNormUNet,
        image(1),
        32,
        (("stages.2.1", "decoders.0"), ("stages.1.1", "decoders.1"), ("stages.0.1", "decoders.2")),
    ),
    # decode(x) + skip: the shared GLU ends each stage, and the sum feeds the next decoder, then the head.
    "shared_activation": Case(
        patterns.SharedActivationUNet1d, image(1, dims=1), 32, (("encoder.1.3", "decoder.1"), ("encoder.0.3", "head"))
    ),
    # decode(x + saved.pop()) for stages 2, 1, 0: the first after the bottleneck, at its level.
    "bottleneck_skip": Case(
        patterns.BottleneckSkipUNet1d,
        image(1, dims=1),
        32,
        (("encoder.2.1", "decoder.0"), ("encoder.1.1", "decoder.1"), ("encoder.0.1", "decoder.2")),
    ),
    # Without a bottleneck the first sum is x + x: no skip.
    "no_bottleneck": Case(
        lambda: patterns.BottleneckSkipUNet1d(bottleneck=False),
        image(1, dims=1),
        32,
        (("encoder.1.1", "decoder.1"), ("encoder.0.1", "decoder.2")),
    ),
    # head(cat([up(...), skip])): the only skip; `x + lstm(x)` inside the bottleneck is a residual.
    "lstm_residual": Case(patterns.LSTMBottleneckUNet1d, image(1, dims=1), 32, (("stem", "head"),)),
    # out(cat([x, skip])): the only skip; both `attn(x) + x` are residuals.
    "residual_attention": Case(patterns.ResidualAttentionUNet, image(3), 16, (("stem", "out"),)),
}
SIZES = {
    "closures": range(3, 30),
    "instance_norm": range(4, 41),
    "shared_activation": range(4, 36),
    "residual_attention": range(2, 20),
    "bottleneck_skip": range(4, 30),
    "no_bottleneck": range(4, 30),
    "lstm_residual": range(2, 30),
}


@pytest.mark.parametrize("name", list(CASES))
def test_skip_pairs_are_the_ones_the_forward_makes(name: str) -> None:
    case = CASES[name]
    assert runs(case.build().eval(), case.inputs, case.size)
    traced = meta_trace(case)
    assert traced.ok, [brk.message for brk in traced.breaks]
    assert pairs_of(traced) == list(case.pairs)


@pytest.mark.parametrize("name", list(CASES))
def test_the_size_rule_of_a_model_on_the_cpu_accepts_the_sizes_that_run(name: str) -> None:
    """The rule comes from a meta copy of the CPU model; the truth from the CPU model itself."""
    case = CASES[name]
    torch.manual_seed(0)
    model = case.build().eval()
    args, kwargs = case.inputs(case.size, "cpu")
    rule = size_rule(model, *args, **kwargs)
    assert rule is not None
    wrong = [size for size in SIZES[name] if rule.accepts((size,) * len(rule.axes)) != runs(model, case.inputs, size)]
    assert not wrong, (wrong, rule)


def test_a_copy_of_a_model_whose_forward_closes_over_its_layers_runs_its_own_layers() -> None:
    """a-unet: the meta copy's closures must call the copy's conv; the user's model stays on the CPU."""
    model = patterns.ClosureUNet1d().eval()
    merge_type = type(model.net.merge)
    traced = trace(model, torch.randn(1, 2, 14))
    assert traced.size_rule is not None and traced.size_rule.accepts((16,))
    assert all(fix.verified for cause in traced.causes for fix in cause.fixes), [c.text for c in traced.causes]
    assert type(model.net.merge) is merge_type
    assert all(parameter.device.type == "cpu" for parameter in model.parameters())


def test_each_verified_fix_of_the_closure_model_makes_its_forward_run() -> None:
    check_planted(PlantedCase(patterns.ClosureUNet1d, image(2, dims=1), 14, CauseKind.ROUNDING))


def test_the_smallest_size_is_where_the_deepest_norm_still_has_two_elements() -> None:
    """At 8 the deepest map is 1×1: a clean trace at 32 and a broken one at 8 name the same minimum."""
    case = CASES["instance_norm"]
    assert not runs(case.build().eval(), case.inputs, 8)
    for size in (32, 8):
        traced = meta_trace(case, size)
        rule = traced.size_rule if size == 8 else size_rule(case.build(), *case.inputs(size, "cpu")[0])
        assert rule is not None
        assert [axis.minimum for axis in rule.axes] == [16, 16]


@pytest.mark.parametrize("command", ["trace", "sweep"])
def test_an_instance_target_whose_forward_closes_over_its_layers_traces_on_meta(
    command: str, runner: CliRunner, tmp_path: Path
) -> None:
    """The CLI copies an instance TARGET before moving it to meta: the copy's closures must move too."""
    target = tmp_path / "closures.py"
    target.write_text("from tests.fixtures.third_party_patterns import ClosureUNet1d\nmodel = ClosureUNet1d()\n")
    sizes = ["--sizes", "12:16"] if command == "sweep" else []
    result = runner.invoke(main, [command, f"{target}:model", "--input", "1,2,16", *sizes])
    assert "raised" not in result.output and "error break" not in result.output, result.output
    if command == "sweep":
        assert result.exit_code == 1 and "2 of 5 sizes aligned" in result.output  # 12 and 16: multiples of 4
    else:
        assert result.exit_code == 0, result.output


def test_trace_sizes_on_the_cpu_finds_the_rule_and_verifies_fixes_as_trace_does() -> None:
    """trace_sizes(device="cpu") runs the real forward; its probes and fixes run on a meta copy."""
    model = patterns.InstanceNormUNet().eval()
    by_sizes = trace_sizes(model, [(1, 1, 30, 30)], device="cpu")
    by_trace = trace(model, torch.randn(1, 1, 30, 30))
    assert by_sizes.size_rule == by_trace.size_rule
    assert by_sizes.size_rule is not None and [axis.minimum for axis in by_sizes.size_rule.axes] == [16, 16]
    assert [fix.verified for cause in by_sizes.causes for fix in cause.fixes] == [
        fix.verified for cause in by_trace.causes for fix in cause.fixes
    ]
    assert all(fix.verified for cause in by_sizes.causes for fix in cause.fixes)
    assert all(parameter.device.type == "cpu" for parameter in model.parameters())

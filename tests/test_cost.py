"""The cost of a trace against torch's own accounts: FLOPs, saved tensors, memory, torchinfo's MACs.

Each oracle runs the model for real on the CPU and counts with torch's tools; shapetrace
traces the same model built on meta. FLOPs and saved bytes must be equal, the inference
peak within 10% of the profiler's (here it is equal at op boundaries), MACs equal torchinfo's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from shapetrace import run_trace
from shapetrace.records import CostMode, CostOptions, CostSummary, Optimizer, Trace
from shapetrace.tracing.cost import products
from shapetrace.tracing.tracer import observe
from tests.fixtures.cost_models import CASES, CostCase, image, image_and_time
from tests.fixtures.cost_oracles import profiled_peak, saved_bytes

CPU, META = torch.device("cpu"), torch.device("meta")


def _cost_trace(case: CostCase, options: CostOptions | None = None) -> Trace:
    return run_trace(case.model("meta"), case.inputs(META), cost=options or CostOptions())


def _diffusers_cases() -> list[CostCase]:
    diffusers = pytest.importorskip("diffusers")
    from diffusers.models.attention_processor import Attention

    def attention() -> nn.Module:
        # The self-attention of diffusers' AttnDownBlock2D, on (B, C, H, W).
        return Attention(
            query_dim=32,
            heads=4,
            dim_head=8,
            norm_num_groups=8,
            residual_connection=True,
            upcast_softmax=True,
            _from_deprecated_attn_block=True,
        )

    def unet() -> nn.Module:
        model: nn.Module = diffusers.UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            cross_attention_dim=32,
            attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        )
        return model

    def conditioned(device: torch.device) -> tuple[torch.Tensor, ...]:
        (x, t), (context,) = image_and_time(2, 4, 16, 16)(device), image(2, 7, 32)(device)
        return x, t, context

    return [
        CostCase("diffusers attention", attention, image(2, 32, 8, 8)),
        CostCase("diffusers UNet", unet, conditioned),
    ]


def _all_cases() -> list[Any]:
    return [*(pytest.param(case, id=case.name) for case in CASES), pytest.param("diffusers", id="diffusers")]


def _cases(which: Any) -> list[CostCase]:
    return _diffusers_cases() if which == "diffusers" else [which]


# --- FLOPs ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", _all_cases())
def test_flops_equal_flop_counter_modes(which: Any) -> None:
    for case in _cases(which):
        model = case.model("cpu")
        # The math kernel: FlopCounterMode has no formula for the CPU flash kernel, and
        # counts attention on meta and CUDA as it counts the math path's products.
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.enable_grad():
            model(*case.inputs(CPU))
        trace = _cost_trace(case)
        assert trace.cost is not None
        assert trace.cost.flops == counter.get_total_flops() > 0, case.name


def _counted(function: Callable[..., Any], *args: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        function(*args)
    total: int = counter.get_total_flops()
    return total


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(shape)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ((5, 7), (7, 4)),
        ((7,), (7, 4)),
        ((4, 7), (7,)),
        ((7,), (7,)),
        ((3, 5, 7), (7, 4)),
        ((3, 5, 7), (7,)),
        ((7,), (3, 7, 4)),
        ((2, 1, 5, 7), (3, 7, 4)),
        ((2, 3, 5, 7), (2, 3, 7, 4)),
        ((5, 7), (3, 7, 4)),
    ],
)
def test_matmul_flops_follow_atens_lowering(left: tuple[int, ...], right: tuple[int, ...]) -> None:
    assert products.matmul_flops(left, right) == _counted(torch.matmul, _randn(*left), _randn(*right))


@pytest.mark.parametrize(
    ("equation", "shapes"),
    [
        ("bid,bjd->bij", [(2, 5, 7), (2, 6, 7)]),
        ("bhij,bhjd->bhid", [(2, 3, 5, 6), (2, 3, 6, 4)]),
        ("b h i d, b h j d -> b h i j", [(2, 3, 5, 4), (2, 3, 6, 4)]),
        ("ij,jk", [(5, 7), (7, 4)]),
        ("bi,bj->bij", [(2, 5), (2, 6)]),
        ("i,i->", [(5,), (5,)]),
        ("...ij,...jk->...ik", [(2, 3, 5, 7), (7, 4)]),
        ("bchw,bcd->bdhw", [(2, 3, 4, 5), (2, 3, 6)]),
        ("ij,jk,kl->il", [(5, 7), (7, 4), (4, 3)]),
        ("bij,bjk->bik", [(1, 5, 7), (3, 7, 4)]),
    ],
)
def test_einsum_flops_follow_atens_contraction(equation: str, shapes: list[tuple[int, ...]]) -> None:
    operands = [_randn(*shape) for shape in shapes]
    assert products.einsum_flops(equation, shapes) == _counted(torch.einsum, equation, *operands)


@pytest.mark.parametrize(
    ("name", "function", "shapes"),
    [
        ("linear 1-D", F.linear, [(7,), (4, 7), (4,)]),
        ("linear 3-D", F.linear, [(2, 5, 7), (4, 7), (4,)]),
        ("linear 4-D no bias", F.linear, [(2, 3, 5, 7), (4, 7)]),
        (
            "grouped strided conv",
            lambda x, w: F.conv2d(x, w, groups=2, stride=2, padding=1),
            [(2, 4, 9, 9), (6, 2, 3, 3)],
        ),
        ("transposed conv", lambda x, w: F.conv_transpose2d(x, w, stride=2), [(2, 4, 5, 5), (4, 6, 3, 3)]),
        ("unbatched conv", F.conv1d, [(4, 9), (6, 4, 3)]),
        ("conv 3-D", F.conv3d, [(1, 2, 4, 5, 6), (3, 2, 2, 2, 2)]),
        ("bmm", torch.bmm, [(3, 5, 7), (3, 7, 4)]),
        ("baddbmm", torch.baddbmm, [(3, 5, 4), (3, 5, 7), (3, 7, 4)]),
        ("addmm", torch.addmm, [(5, 4), (5, 7), (7, 4)]),
        ("tensordot", lambda a, b: torch.tensordot(a, b, dims=([1, 2], [0, 1])), [(3, 4, 5), (4, 5, 6)]),
        ("attention 3-D", F.scaled_dot_product_attention, [(2, 5, 8), (2, 6, 8), (2, 6, 4)]),
        ("attention 4-D", F.scaled_dot_product_attention, [(2, 3, 5, 8), (2, 3, 6, 8), (2, 3, 6, 8)]),
    ],
)
def test_function_flops_equal_flop_counter_modes(
    name: str, function: Callable[..., Any], shapes: list[tuple[int, ...]]
) -> None:
    with sdpa_kernel(SDPBackend.MATH):
        expected = _counted(function, *(_randn(*shape) for shape in shapes))

    class Call(nn.Module):
        def forward(self, *tensors: torch.Tensor) -> Any:
            return function(*tensors)

    trace = observe(Call(), [torch.empty(shape, device="meta") for shape in shapes], cost=CostOptions())
    assert trace.cost is not None
    assert trace.cost.flops == expected, name


# --- saved for backward -------------------------------------------------------------------


@pytest.mark.parametrize("which", _all_cases())
def test_saved_bytes_equal_what_saved_tensors_hooks_see(which: Any) -> None:
    for case in _cases(which):
        expected = saved_bytes(case.model("cpu"), case.inputs(CPU))
        trace = _cost_trace(case)
        assert trace.cost is not None
        assert trace.cost.saved_bytes == expected > 0, case.name


def test_saved_bytes_are_the_same_traced_on_the_cpu() -> None:
    case = CASES[0]
    model, inputs = case.model("cpu"), case.inputs(CPU)
    trace = run_trace(model, inputs, cost=CostOptions())
    assert trace.cost is not None
    assert trace.cost.saved_bytes == saved_bytes(model, inputs)


def test_frozen_layers_save_less_and_have_no_gradients() -> None:
    whole, frozen = (_cost_trace(case) for case in CASES[:2])
    assert whole.cost is not None and frozen.cost is not None
    assert frozen.cost.saved_bytes < whole.cost.saved_bytes
    assert (
        frozen.cost.frozen_params > 0 and frozen.cost.trainable_params + frozen.cost.frozen_params == whole.cost.params
    )
    assert frozen.cost.gradient_bytes == 4 * frozen.cost.trainable_params  # float32


# --- the inference peak ---------------------------------------------------------------------


@pytest.mark.parametrize("which", _all_cases())
def test_inference_peak_is_within_ten_percent_of_the_profiler(which: Any) -> None:
    for case in _cases(which):
        model = case.model("cpu")
        at_boundaries, anywhere = profiled_peak(model, case.inputs(CPU))
        cost = _cost_trace(case).cost
        assert cost is not None
        assert abs(cost.activation_peak_bytes - at_boundaries) <= 0.1 * at_boundaries, case.name
        assert cost.activation_peak_bytes <= anywhere  # kernel workspaces come on top
        state = sum(tensor.numel() * tensor.element_size() for tensor in (*model.parameters(), *model.buffers()))
        assert cost.inference_peak_bytes == cost.activation_peak_bytes + state


class _KeepsAView(nn.Module):
    """Keeps one channel of a wide map, as a view or as a detached alias, while the next map is made."""

    def __init__(self, detached: bool) -> None:
        super().__init__()
        self.detached = detached
        self.wide = nn.Conv2d(1, 16, 1, bias=False)
        self.narrow = nn.Conv2d(1, 4, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = self.wide(x)
        kept = (wide.detach() if self.detached else wide)[:, :1]
        del wide  # only `kept` refers to the wide map's memory now
        narrowed: torch.Tensor = self.narrow(kept)
        return narrowed


@pytest.mark.parametrize("detached", [False, True])
def test_a_kept_view_keeps_its_whole_storage_live(detached: bool) -> None:
    image_bytes = 8 * 8 * 4
    model = _KeepsAView(detached)
    inputs = (torch.randn(1, 1, 8, 8),)
    at_boundaries, _ = profiled_peak(model, inputs)
    cost = run_trace(model, (torch.empty(1, 1, 8, 8, device="meta"),), cost=CostOptions()).cost
    assert cost is not None
    # The input, all 16 channels of the wide map (one channel is kept), and the 4-channel output.
    assert cost.activation_peak_bytes == (1 + 16 + 4) * image_bytes == at_boundaries


ACTIVATIONS = [
    nn.PReLU(4),
    nn.ReLU6(),
    nn.Hardtanh(),
    nn.SELU(),
    nn.CELU(),
    nn.Hardsigmoid(),
    nn.Softsign(),
    nn.LogSigmoid(),
    nn.GLU(dim=1),
    nn.Mish(),
    nn.Hardswish(),
]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda module: type(module).__name__)
def test_every_activation_saves_what_autograd_saves(activation: nn.Module) -> None:
    def build(device: str) -> nn.Module:
        torch.manual_seed(0)
        channels = 2 if isinstance(activation, nn.GLU) else 4  # GLU halves the channels
        with torch.device(device):
            return nn.Sequential(nn.Conv2d(3, 4, 3), copy.deepcopy(activation), nn.Conv2d(channels, 2, 1)).eval()

    expected = saved_bytes(build("cpu"), (torch.randn(1, 3, 8, 8),))
    cost = run_trace(build("meta"), (torch.empty(1, 3, 8, 8, device="meta"),), cost=CostOptions()).cost
    assert cost is not None
    assert cost.saved_bytes == expected
    assert cost.other_flops > 0  # the activation's elementwise work


class _Then(nn.Module):
    """A convolution (so that its output needs a gradient), then `function` of its output."""

    def __init__(self, function: Callable[[nn.Module, torch.Tensor], torch.Tensor], channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 1)
        self.norm = nn.GroupNorm(2, channels)
        self.instance = nn.InstanceNorm2d(channels, affine=True)
        self.linear = nn.Linear(channels, 5)
        self.frozen = nn.Linear(channels, 5).requires_grad_(False)
        self.register_buffer("index", torch.tensor([2, 0, 1, 1]))
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(self, self.conv(x))


SAVED_BY_FUNCTIONS = {
    # torch's group and instance norms copy a permuted input to contiguous and keep the copy;
    # layer norm keeps the input itself (the product keeps the map again: a copy counts apart).
    "group norm of a permuted map": lambda m, h: m.norm(h.permute(0, 1, 3, 2)) * h.permute(0, 1, 3, 2),
    "instance norm of a permuted map": lambda m, h: m.instance(h.permute(0, 1, 3, 2)) * h.permute(0, 1, 3, 2),
    "layer norm of a transposed map": lambda m, h: F.layer_norm(h.transpose(1, 3), (4,)) * h.transpose(1, 3),
    # An elementwise op keeps the transposed layout, so contiguous() copies after it, or not.
    "a residual stream kept transposed": lambda m, h: _kept_transposed(h.flatten(2).transpose(1, 2) * 2),
    "a transpose that undoes it": lambda m, h: _kept_transposed((h.flatten(2).transpose(1, 2) * 2).transpose(1, 2)),
    # F.linear on rows that do not merge into a matrix: a copy when the weight needs a gradient,
    # else a batched product that keeps the input as it is; rows of one map merge either way.
    "linear of transposed maps": lambda m, h: m.linear(h.flatten(2).transpose(1, 2)),
    "linear of one transposed map": lambda m, h: m.linear(h[:1].flatten(2).transpose(1, 2)),
    "frozen linear of transposed maps": lambda m, h: m.frozen(h.flatten(2).transpose(1, 2)) * 2,
    # Norms and extrema over a dim keep their input and their reduced result.
    "F.normalize": lambda m, h: F.normalize(h, dim=1),
    "norm": lambda m, h: h.norm(2, 1, True) * 2,
    "std": lambda m, h: h.std(1, keepdim=True) * 2,
    "amax": lambda m, h: h - h.amax(1, keepdim=True),
    "clamp_min": lambda m, h: h.clamp_min(0.1) * 2,
    "masked_fill": lambda m, h: h.masked_fill(h > 0, 0.0) * 2,
    # Indexing keeps its index tensors.
    "x[index]": lambda m, h: h[:, m.index] * h,
    "index_select": lambda m, h: torch.index_select(h, 1, m.index) * h,
    "gather": lambda m, h: torch.gather(h, 1, m.index[None, :, None, None].expand_as(h)) * h,
}


def _kept_transposed(stream: torch.Tensor) -> torch.Tensor:
    """`stream` and its contiguous form multiplied: two storages kept if contiguous() copied, one if not."""
    return stream.contiguous() * stream


@pytest.mark.parametrize("function", SAVED_BY_FUNCTIONS.values(), ids=SAVED_BY_FUNCTIONS.keys())
def test_layouts_reductions_and_indexing_save_what_autograd_saves(
    function: Callable[[nn.Module, torch.Tensor], torch.Tensor],
) -> None:
    def build(device: str) -> nn.Module:
        torch.manual_seed(0)
        with torch.device(device):
            return _Then(function).eval()

    expected = saved_bytes(build("cpu"), (torch.randn(2, 3, 5, 6),))
    cost = run_trace(build("meta"), (torch.empty(2, 3, 5, 6, device="meta"),), cost=CostOptions()).cost
    assert cost is not None
    assert cost.saved_bytes == expected


# --- MACs -------------------------------------------------------------------------------------


def test_conv_and_linear_macs_equal_torchinfos() -> None:
    torchinfo = pytest.importorskip("torchinfo")
    case = CASES[0]
    model = case.model("cpu")
    statistics = torchinfo.summary(model, input_data=list(case.inputs(CPU)), depth=16, verbose=0)
    expected: dict[int, list[int]] = {}
    for layer in statistics.summary_list:
        expected.setdefault(id(layer.module), []).append(layer.macs)
    trace = run_trace(model, case.inputs(CPU), cost=CostOptions())
    assert trace.cost is not None
    modules = dict(model.named_modules())
    checked = 0
    seen: dict[str, int] = {}
    for layer, cost in zip(trace.layers, trace.cost.layers, strict=True):
        module = modules[layer.name]
        call = seen[layer.name] = seen.get(layer.name, -1) + 1
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            assert cost.macs == expected[id(module)][call] > 0, layer.name
            checked += 1
    assert checked > 20
    assert trace.cost.macs == statistics.total_mult_adds


# --- per call, per container --------------------------------------------------------------------


def test_a_container_includes_its_children() -> None:
    trace = _cost_trace(CASES[0])
    assert trace.cost is not None
    costs = trace.cost.layers
    children: dict[int, list[int]] = {}
    for layer in trace.layers[1:]:
        children.setdefault(layer.parent or 0, []).append(layer.index)
    for parent, indices in children.items():
        for field in ("flops", "other_flops", "macs", "saved_bytes"):
            assert getattr(costs[parent], field) >= sum(getattr(costs[index], field) for index in indices), field
    assert costs[0].flops == trace.cost.flops
    leaves = [layer.index for layer in trace.layers if layer.index not in children]
    assert sum(costs[index].macs for index in leaves) == trace.cost.macs


def test_each_call_has_its_own_record() -> None:
    trace = _cost_trace(CASES[0])
    assert trace.cost is not None
    activations = [index for index, layer in enumerate(trace.layers) if layer.name == "downs.0.act"]
    assert len(activations) == 2  # one SiLU module, called twice
    first, second = (trace.cost.layers[index] for index in activations)
    assert first.output_bytes == second.output_bytes == math.prod(trace.layers[activations[0]].outputs[0]) * 4


def test_layers_carry_kernel_dtype_and_parameter_split() -> None:
    trace = _cost_trace(CASES[1])
    assert trace.cost is not None
    by_name = {layer.name: cost for layer, cost in zip(trace.layers, trace.cost.layers, strict=True)}
    assert by_name["conv_in"].kernel == (3, 3) and by_name["conv_out"].kernel == (1, 1)
    assert by_name["conv_in"].dtype == "float32"
    assert by_name["conv_in"].frozen_params == 3 * 8 * 9 + 8 and by_name["conv_in"].trainable_params == 0
    assert by_name["conv_out"].trainable_params == 8 * 3 + 3
    assert trace.cost.param_bytes_by_dtype == (("float32", 4 * trace.cost.params),)


def test_without_cost_nothing_is_counted() -> None:
    case = CASES[0]
    trace = run_trace(case.model("meta"), case.inputs(META))
    assert trace.cost is None
    text = trace.to_json()
    assert '"flops"' not in text and '"cost"' not in text


def test_a_trace_without_cost_never_loads_the_meter() -> None:
    """Without --cost, cost adds nothing: the plain Observer runs, and the meter is not even imported."""
    import subprocess
    import sys

    script = (
        "import sys, torch, shapetrace\n"
        "from shapetrace.models.unet import UNet\n"
        "with torch.device('meta'):\n"
        "    model = UNet(3, 8, (1, 2))\n"
        "x, t = torch.empty(2, 3, 32, 32, device='meta'), torch.zeros(2, dtype=torch.long, device='meta')\n"
        "assert shapetrace.trace(model, x, t).cost is None\n"
        "print(sorted(name for name in sys.modules if name.startswith('shapetrace.tracing.cost')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the training estimate --------------------------------------------------------------------


def test_train_peak_adds_gradients_optimizer_state_and_saved_activations() -> None:
    adam = _cost_trace(CASES[0], CostOptions(optimizer=Optimizer.ADAM)).cost
    sgd = _cost_trace(CASES[0], CostOptions(optimizer=Optimizer.SGD)).cost
    assert adam is not None and sgd is not None
    assert adam.optimizer_bytes == 2 * adam.gradient_bytes and sgd.optimizer_bytes == 0
    assert adam.train_peak_bytes - sgd.train_peak_bytes == adam.optimizer_bytes
    parts = (adam.param_bytes, adam.buffer_bytes, adam.gradient_bytes, adam.optimizer_bytes, adam.saved_bytes)
    assert adam.train_peak_bytes == sum(parts) + adam.transient_bytes


def test_checkpointing_keeps_the_blocks_inputs_and_one_block() -> None:
    plain = _cost_trace(CASES[0]).cost
    checkpointed = _cost_trace(CASES[0], CostOptions(checkpointing=True)).cost
    assert plain is not None and checkpointed is not None
    assert checkpointed.saved_bytes < plain.saved_bytes
    assert checkpointed.train_peak_bytes < plain.train_peak_bytes
    assert checkpointed.inference_peak_bytes == plain.inference_peak_bytes


# --- levels of the U ----------------------------------------------------------------------------


def test_levels_follow_the_u_and_hold_the_skips() -> None:
    trace = run_trace(
        CASES[0].model("meta"), image_and_time(2, 3, 32, 32)(META), cost=CostOptions()
    )  # UNet(3, 8, (1, 2))
    assert trace.cost is not None
    names = [(level.side, level.level, level.size) for level in trace.cost.levels]
    assert names == [
        ("down", 0, (32, 32)),
        ("down", 1, (16, 16)),
        ("mid", 1, (16, 16)),
        ("up", 1, (16, 16)),
        ("up", 0, (32, 32)),
    ]
    down = {level.level: level for level in trace.cost.levels if level.side == "down"}
    # Two ResBlock outputs of 8 channels are held at 32², two of 8 channels at 16².
    assert down[0].skip_bytes == 2 * (2 * 8 * 32 * 32 * 4)
    assert down[1].skip_bytes == 2 * (2 * 8 * 16 * 16 * 4)
    assert sum(level.flops for level in trace.cost.levels) <= trace.cost.flops
    assert all(level.flops > 0 and level.activation_bytes > 0 and level.params > 0 for level in trace.cost.levels)


def test_attention_levels_count_tokens_and_their_quadratic_cost() -> None:
    cases = _diffusers_cases()
    trace = _cost_trace(cases[1])
    assert trace.cost is not None
    attended = [level for level in trace.cost.levels if level.attention_tokens]
    assert attended, "the cross-attention blocks sit on levels"
    for level in attended:
        assert level.attention_tokens == math.prod(level.size)  # one token per pixel
        assert 0 < level.attention_flops <= level.flops


# --- budgets ----------------------------------------------------------------------------------


def _reference(batch: int = 2, size: int = 32, **options: Any) -> Trace:
    from shapetrace.models.reference import trace_reference

    return trace_reference(size=(size, size), chs=(1, 2), n_channels=8, batch=batch, cost=CostOptions(**options))


@pytest.mark.parametrize("mode", list(CostMode))
def test_budget_verdict_has_no_margin(mode: CostMode) -> None:
    cost = _reference().cost
    assert cost is not None
    needed = cost.train_peak_bytes if mode == CostMode.TRAIN else cost.inference_peak_bytes
    exact, short = (_reference(mode=mode, budget=budget).cost for budget in (needed, needed - 1))
    assert exact is not None and exact.budget is not None and exact.budget.fits
    assert short is not None and short.budget is not None and not short.budget.fits


@pytest.mark.parametrize("mode", list(CostMode))
def test_budget_finds_the_largest_batch_and_size(mode: CostMode) -> None:
    budget = 50_000_000
    cost = _reference(mode=mode, budget=budget).cost
    assert cost is not None and cost.budget is not None
    found = cost.budget

    def needs(batch: int, size: int) -> int:
        traced = _reference(batch, size, mode=mode).cost
        assert traced is not None
        return traced.train_peak_bytes if mode == CostMode.TRAIN else traced.inference_peak_bytes

    assert found.max_batch > 2 and needs(found.max_batch, 32) <= budget < needs(found.max_batch + 1, 32)
    # UNet(3, 8, (1, 2)) takes even sizes only: the next one the model accepts is 2 larger.
    assert found.max_size % 2 == 0 and found.max_size > 32
    assert needs(2, found.max_size) <= budget < needs(2, found.max_size + 2)


def test_a_budget_too_small_for_anything_gives_zeros() -> None:
    cost = _reference(budget=1000).cost
    assert cost is not None and cost.budget is not None
    assert (cost.budget.fits, cost.budget.max_batch, cost.budget.max_size) == (False, 0, 0)


# --- the JSON contract --------------------------------------------------------------------------


def test_json_round_trip_keeps_the_cost() -> None:
    trace = _reference(budget=10**9, mode=CostMode.TRAIN, checkpointing=True)
    again = Trace.from_json(trace.to_json())
    assert again.cost == trace.cost
    import json

    data = json.loads(trace.to_json())
    assert data["schema"] == 2
    for name in ("flops", "macs", "output_bytes", "saved_bytes", "trainable_params", "frozen_params"):
        assert all(isinstance(layer[name], int) for layer in data["layers"]), name
    cost = data["cost"]
    for name in ("flops", "other_flops", "macs", "params", "param_bytes", "inference_peak_bytes", "train_peak_bytes"):
        assert isinstance(cost[name], int), name
    assert {level["side"] for level in cost["levels"]} == {"down", "mid", "up"}
    assert set(cost["levels"][0]) >= {"level", "side", "flops", "activation_bytes", "params"}
    assert set(cost["budget"]) >= {"bytes", "fits", "max_batch", "max_size"}
    assert cost["macs"] == sum(
        layer["macs"]
        for layer in data["layers"]
        if not any(other["parent"] == layer["index"] for other in data["layers"])
    )


def test_a_schema_1_file_still_reads() -> None:
    import json

    trace = run_trace(CASES[0].model("meta"), CASES[0].inputs(META))
    data = json.loads(trace.to_json())
    data["schema"] = 1
    assert Trace.from_json(json.dumps(data)) == trace


class _Signal(nn.Module):
    """A 1-D UNet of one level: its memory grows with the batch and the length."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(2, 8, 3, padding=1)
        self.down = nn.Conv1d(8, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose1d(8, 8, 2, stride=2)
        self.head = nn.Conv1d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.stem(x)
        output: torch.Tensor = self.head(torch.cat([self.up(self.down(skip)), skip], 1))
        return output


def test_a_budget_for_a_1d_model_grows_its_batch_and_length() -> None:
    """The search resizes the (B, C, L) signal: the largest batch fits and one more does not."""
    with torch.device("meta"):
        model = _Signal()

    def needs(batch: int, length: int, budget: int | None = None) -> CostSummary:
        traced = run_trace(model, (torch.empty(batch, 2, length, device="meta"),), cost=CostOptions(budget=budget))
        assert traced.cost is not None
        return traced.cost

    budget = 200_000
    found = needs(1, 64, budget).budget
    assert found is not None and found.max_batch > 1
    assert (
        needs(found.max_batch, 64).inference_peak_bytes <= budget < needs(found.max_batch + 1, 64).inference_peak_bytes
    )
    assert found.max_size % 2 == 0
    assert needs(1, found.max_size).inference_peak_bytes <= budget < needs(1, found.max_size + 2).inference_peak_bytes

"""The records of one trace: frozen, torch-free data that every renderer reads.

Records hold only ints, strings, tuples and None, so renderers, their tests and the JSON
round trip need no torch. The tracer fills a private builder and freezes these once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

Shape = tuple[int, ...]

MAX_EXTENT = 1 << 20
"""Sizes and batches beyond this are typos, not models (meta traces any size)."""


class LayerStatus(StrEnum):
    """How one call fared."""

    OK = "ok"
    BROKEN = "broken"
    """A break happened in this call."""
    DOWNSTREAM = "downstream"
    """Ran on a stand-in that replaced a broken tensor."""
    FAILED = "failed"
    """Raised, or was still running when the forward stopped."""


OK, BROKEN, DOWNSTREAM, FAILED = LayerStatus.OK, LayerStatus.BROKEN, LayerStatus.DOWNSTREAM, LayerStatus.FAILED


class BreakKind(StrEnum):
    """What went wrong at a break."""

    SIZE = "size"
    """Spatial (or other non-merge) extents disagree, or a size the model cannot use."""
    CHANNELS = "channels"
    """A layer's weights expect another channel count than it receives."""
    ERROR = "error"
    """The forward raised something that is not a shape mismatch."""
    META = "meta"
    """The forward read tensor values (.item(), .tolist(), `if tensor:`), which meta tensors lack."""
    INTERRUPTED = "interrupted"
    """Ctrl-C stopped the forward; the trace holds what ran before."""
    ORDER = "order"
    """Skips paired against mirror order (first in, first out; a level fed by another resolution)."""


class SideRole(StrEnum):
    """Which input of a break a BreakSide is."""

    UP_PATH = "up path"
    """The merge's main input: the one from the latest call."""
    SKIP = "skip"
    """An input saved earlier on the path that feeds the main input."""
    INPUT = "input"
    """Any other input (a layer's own argument, or a merge input from elsewhere)."""


class MergeOp(StrEnum):
    """The operation that joins a skip to the main path."""

    CAT = "cat"
    STACK = "stack"
    ADD = "add"


class WarningKind(StrEnum):
    """What a ShapeWarning says."""

    FLOORED = "floored"
    """A strided leaf dropped the rows or columns its stride does not divide (225 → 112)."""
    ROUNDED_UP = "rounded up"
    """A padded strided leaf rounded an odd size up (65 → 33)."""
    CROPPED_OUTPUT = "cropped output"
    """The model's output is smaller than its input (unpadded convolutions)."""
    OUTPUT_RESOLUTION = "output resolution"
    """The model's output is at another resolution than its input, and nothing crops or pads on purpose."""


class ResamplingKind(StrEnum):
    """Which kind of op changed a spatial size."""

    POOL = "pool"
    CONV = "conv"
    """A strided, dilated or unpadded convolution."""
    CONV_TRANSPOSE = "conv transpose"
    INTERPOLATE = "interpolate"
    """Interpolation by a scale factor (F.interpolate, nn.Upsample)."""
    RESIZE = "resize"
    """Interpolation to a given size: the output's size is whatever the caller asked for."""
    PIXEL_UNSHUFFLE = "pixel unshuffle"
    PIXEL_SHUFFLE = "pixel shuffle"


class CauseKind(StrEnum):
    """What one root cause of one or more breaks is."""

    ROUNDING = "rounding"
    """A resampling op floored or rounded up a size its stride does not divide."""
    OUTPUT_PADDING = "output padding"
    """A ConvTranspose without the output_padding that would make it undo its downsampler."""
    WRONG_LEVEL = "wrong level"
    """A skip taken from a down level of another resolution than the up level it joins."""
    ORDER = "order"
    """Skips consumed against mirror order (first in, first out, or resized to fit another level)."""
    CHANNELS = "channels"
    """A layer built for another channel count than it receives."""
    TOO_SMALL = "too small"
    """The size shrank below what a layer can take."""
    INPUT_SIZE = "input size"
    """An input size the model refuses away from any skip: a layer that needs divisible extents,
    a map of fixed size, the model's own check."""
    OTHER = "other"
    """A failure that is not about shapes (an error, a value read on meta, Ctrl-C)."""


class CostMode(StrEnum):
    """Which whole-model estimate a memory budget is checked against."""

    INFERENCE = "inference"
    """Evaluation mode under no_grad: the peak of live tensors, plus the parameters."""
    TRAIN = "train"
    """Parameters, gradients, optimizer state, saved activations and the largest transient."""


class Optimizer(StrEnum):
    """The optimizer whose state a training estimate holds."""

    ADAM = "adam"
    """Two tensors per trainable parameter (exp_avg, exp_avg_sq), of its dtype."""
    SGD = "sgd"
    """torch.optim.SGD's default (momentum 0): no state."""


@dataclass(frozen=True, slots=True)
class CostOptions:
    """What a cost trace estimates: the mode its verdict uses, the optimizer, checkpointing, a budget."""

    mode: CostMode = CostMode.INFERENCE
    optimizer: Optimizer = Optimizer.ADAM
    checkpointing: bool = False
    """Model per-block activation checkpointing: each block keeps only its inputs for backward."""
    budget: int | None = None
    """Bytes available (GB = 10**9); None for no verdict."""


class LayerCost(NamedTuple):
    """The cost of one call. Values are per call; a container's include its children's.

    A NamedTuple rather than a frozen dataclass: a trace makes one per call, and a frozen
    dataclass costs five times as much to build, which a `--cost` trace would pay per layer.
    """

    flops: int
    """Forward FLOPs, as torch.utils.flop_counter.FlopCounterMode counts them (a multiply-add is 2)."""
    other_flops: int
    """Estimated FLOPs of the ops FlopCounterMode has no formula for (norms, elementwise, resampling)."""
    macs: int
    """Mult-adds as torchinfo counts them, summed over the leaf layers."""
    output_bytes: int
    """Bytes of this call's own outputs."""
    saved_bytes: int
    """Bytes autograd would save for backward in training, once per storage, parameters excluded."""
    trainable_params: int
    frozen_params: int
    param_bytes: int
    kernel: Shape = ()
    """The module's kernel_size, where it has one."""
    dtype: str = ""
    """The dtype of the first output ("float32")."""
    attention_tokens: int = 0
    """The longest query sequence of an attention op (scaled dot-product, multi-head) in this call."""
    attention_flops: int = 0
    """The FLOPs of attention's two quadratic products (scores and weighted values)."""


@dataclass(frozen=True, slots=True)
class LevelCost:
    """The cost of one level of the U: the display rows at one resolution on one side."""

    level: int
    """0 for the input resolution, growing as the size shrinks."""
    side: str
    """"down", "mid" or "up"."""
    size: Shape
    """The spatial size the level works at."""
    flops: int
    activation_bytes: int
    """Bytes of the outputs of the level's leaf calls."""
    saved_bytes: int
    params: int
    skip_bytes: int = 0
    """Bytes of the skips this down level holds across the bottleneck until its up level uses them."""
    attention_tokens: int = 0
    attention_flops: int = 0


@dataclass(frozen=True, slots=True)
class Budget:
    """Whether the model fits a memory budget, and the largest batch and size that do."""

    bytes: int
    mode: CostMode
    fits: bool
    """The estimate of `mode` at the traced batch and size is at most `bytes` (no safety margin)."""
    max_batch: int
    """The largest batch that fits at the traced size; 0 when none does."""
    max_size: int
    """The largest square size the model accepts that fits at the traced batch; 0 when none does."""


@dataclass(frozen=True, slots=True)
class CostSummary:
    """Whole-model FLOPs and memory at the traced size, batch and dtype."""

    flops: int
    other_flops: int
    macs: int
    params: int
    trainable_params: int
    frozen_params: int
    param_bytes: int
    param_bytes_by_dtype: tuple[tuple[str, int], ...]
    """(dtype, bytes) of the parameters, largest first."""
    buffer_bytes: int
    input_bytes: int
    activation_peak_bytes: int
    """The peak of live tensors (inputs included) at op boundaries, in evaluation under no_grad."""
    inference_peak_bytes: int
    """Parameters and buffers plus the activation peak."""
    saved_bytes: int
    """Bytes kept for backward: every call's saved tensors, or with checkpointing the blocks' inputs
    plus the largest block's own."""
    gradient_bytes: int
    optimizer_bytes: int
    transient_bytes: int
    """The largest short-lived tensors of training: an op's output gradient and its input gradient."""
    train_peak_bytes: int
    options: CostOptions = CostOptions()
    layers: tuple[LayerCost, ...] = ()
    """One per layer of the trace, in the same order: `trace.cost.layers[layer.index]`."""
    levels: tuple[LevelCost, ...] = ()
    """Filled by the analysis (`shapetrace.analysis.cost`)."""
    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """One module call seen by the hooks."""

    index: int
    """Call order, starting at 0 for the model itself; also the DOT node id."""
    name: str
    """Qualified module name from `named_modules()` ("ups.3.conv1"); "" for the model."""
    type: str
    """The module's class name ("ResBlock")."""
    depth: int
    """Call nesting: 0 for the model, 1 for the calls its forward makes, and so on."""
    parent: int | None
    """Index of the enclosing call; None for the model."""
    inputs: tuple[Shape, ...]
    """Shapes of every tensor argument, positional then keyword, in order."""
    outputs: tuple[Shape, ...]
    """Shapes of every tensor returned, flattened from tuples, lists, dicts and dataclasses."""
    params: int
    """Parameters of the module and its children, each counted once."""
    status: LayerStatus = LayerStatus.OK


@dataclass(frozen=True, slots=True)
class SkipPair:
    """A tensor that jumped over calls of the main path to reach a merge."""

    source: int
    """Index of the call that produced the skipped tensor."""
    target: int
    """Index of the call the merge feeds."""
    op: MergeOp
    dim: int
    """The merge dimension (1 for a channel concatenation; -1 for "add")."""
    shape: Shape
    """Shape of the skipped tensor."""
    main_source: int
    """Index of the call that produced the main-path input of the merge (-1: a model input)."""
    main_shape: Shape
    """Shape of the main-path input."""


@dataclass(frozen=True, slots=True)
class BreakSide:
    """One input of a break: what arrived, and who made it."""

    role: SideRole
    shape: Shape
    producer: int
    """Index of the producing call; -1 for a model input or the layer's own weights."""
    channels: int = -1
    """The channel count this side contributes, where the break is about channels."""


@dataclass(frozen=True, slots=True)
class Break:
    """A place where alignment fails: a merge whose inputs disagree, or weights that do."""

    layer: int
    """Index of the call that consumes the bad tensor (the merge's target, or the layer)."""
    leaf: int
    """Index of the innermost call running when it happened (the leaf that would raise)."""
    kind: BreakKind
    message: str
    """One line: where, and both sides (the exception text until the analysis explains it)."""
    op: str = ""
    """The operation that met the bad shapes: "cat", "add", "conv2d", "group_norm", ..."""
    dim: int = -1
    """The merge dimension, or the checked dimension of a layer's input."""
    cause: str = ""
    """Why the shapes disagree (the odd size a downsample floored; the channel arithmetic)."""
    fix: str = ""
    """One concrete change that makes them agree."""
    sides: tuple[BreakSide, ...] = ()
    expected: Shape = ()
    """What the consumer expects (channels for kind "channels", the main shape for "size")."""


@dataclass(frozen=True, slots=True)
class ShapeWarning:
    """A size that does not break this model but loses information (an odd size floored)."""

    layer: int
    """Index of the call where it happened (the pooling or strided leaf; 0 for the model)."""
    kind: WarningKind
    message: str = ""
    """One line, written by the analysis from the fields below."""
    input_size: Shape = ()
    output_size: Shape = ()
    stride: int = 2


@dataclass(frozen=True, slots=True)
class Resampling:
    """One op that changes a spatial size, with its geometry per spatial axis.

    Recorded for torch's resampling modules (from their attributes) and for the functions the
    function mode sees outside them (F.max_pool2d, F.interpolate, ...), so the analysis can read
    each floor and ceil instead of guessing it.
    """

    layer: int
    """Index of the call it ran in: the module itself, or the call whose forward called the function."""
    kind: ResamplingKind
    op: str
    """The module's class name ("ConvTranspose2d") or the function's name ("max_pool2d")."""
    input_size: Shape
    """The spatial extents it received."""
    output_size: Shape
    """The spatial extents it returned."""
    position: int
    """How many calls had begun when it ran: orders it among the calls and the other ops."""
    kernel: Shape = ()
    stride: Shape = ()
    """Per axis; for pixel (un)shuffle the factor."""
    padding: Shape = ()
    dilation: Shape = ()
    output_padding: Shape = ()
    ceil_mode: bool = False
    scale: tuple[tuple[int, int], ...] = ()
    """Interpolation scale per axis as (numerator, denominator): output = floor(input * n / d)."""


@dataclass(frozen=True, slots=True)
class Fix:
    """One concrete change, and whether a re-trace with it applied came out clean."""

    text: str
    verified: bool = False
    """True only when a re-trace with the fix applied was clean and paired the skips in mirror order."""
    action: tuple[str, ...] = ()
    """What a re-trace applies to check it, as words: ("size", "224", "224"), ("in_channels", "ups.0", "96")."""


@dataclass(frozen=True, slots=True)
class Cause:
    """The one root of one or more breaks."""

    kind: CauseKind
    layer: int
    """Index of the call the cause is at (the rounding op, the block built wrong, the merge)."""
    text: str
    fixes: tuple[Fix, ...] = ()
    breaks: tuple[int, ...] = ()
    """Indices into Trace.breaks of the breaks it explains."""


@dataclass(frozen=True, slots=True)
class AxisRule:
    """The extents one spatial axis accepts: `extent % modulus in residues and extent >= minimum`."""

    axis: int
    """The tensor dimension (2 for H of a (B, C, H, W) input, 2 for the length of (B, C, L))."""
    modulus: int
    residues: tuple[int, ...]
    minimum: int
    maximum: int | None = None
    """The largest extent accepted, where there is one (a model built for one size: a fixed positional map)."""

    def accepts(self, extent: int) -> bool:
        return (
            extent >= self.minimum
            and (self.maximum is None or extent <= self.maximum)
            and extent % self.modulus in self.residues
        )


@dataclass(frozen=True, slots=True)
class SizeRule:
    """The spatial sizes this model accepts, per axis."""

    axes: tuple[AxisRule, ...]
    nearest: tuple[Shape, ...] = ()
    """Sizes (one extent per axis) nearest the requested one that the model was traced at and accepts."""
    exact: bool = True
    """True when read from the resampling records and confirmed by probes; False for a probed guess."""

    def accepts(self, size: Shape) -> bool:
        """Whether every axis accepts its extent of `size` (the spatial extents, in axis order)."""
        return len(size) == len(self.axes) and all(
            rule.accepts(extent) for rule, extent in zip(self.axes, size, strict=True)
        )


@dataclass(frozen=True, slots=True, repr=False)
class Trace:
    """Everything one traced forward showed, ready for any renderer."""

    model: str
    """The model's class name."""
    inputs: tuple[Shape, ...]
    """Shapes of the tensors given to the model, positional then keyword."""
    outputs: tuple[Shape, ...]
    """Shapes of the tensors the model returned (empty when the forward stopped)."""
    layers: tuple[LayerRecord, ...]
    skips: tuple[SkipPair, ...] = ()
    breaks: tuple[Break, ...] = ()
    warnings: tuple[ShapeWarning, ...] = ()
    size_rule: SizeRule | None = None
    device: str = "meta"
    config: tuple[tuple[str, str], ...] = ()
    """Free-form key/value pairs shown in titles ("chs", "1,2,4,8")."""
    resamplings: tuple[Resampling, ...] = ()
    """Every op that changed a spatial size, in the order they ran."""
    causes: tuple[Cause, ...] = ()
    """The root causes of the breaks, each once, written by the analysis."""
    cost: CostSummary | None = None
    """Whole-model FLOPs and memory, with `--cost`; None otherwise."""

    @property
    def ok(self) -> bool:
        """True when the forward ran and nothing broke."""
        return not self.breaks

    @property
    def total_params(self) -> int:
        return self.layers[0].params if self.layers else 0

    def __str__(self) -> str:
        """The table and break explanations as plain text, as `print(trace)` shows them."""
        return str(_VIEWS["text"](self))

    def __repr__(self) -> str:
        state = "aligned" if self.ok else f"{len(self.breaks)} breaks"
        return f"<Trace {self.model}: {len(self.layers)} calls, {len(self.skips)} skips, {state}>"

    def __rich__(self) -> object:
        """The table and break explanations, when a rich console prints a Trace."""
        return _VIEWS["rich"](self)

    def _repr_svg_(self) -> str | None:
        """The U-shaped diagram, when Jupyter displays a Trace (None without Graphviz's dot)."""
        return _VIEWS["svg"](self)  # type: ignore[no-any-return]

    def _repr_html_(self) -> str:
        """The interactive HTML report, framed to the width of a notebook cell."""
        return _VIEWS["html"](self)  # type: ignore[no-any-return]

    def to_json(self, *, indent: int | None = 2) -> str:
        """The trace as JSON text (the public schema; see `shapetrace.jsonio`)."""
        return _VIEWS["json"](self, indent=indent)  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, text: str) -> Trace:
        """Rebuild a Trace from `to_json` text; raises TraceFileError on bad input."""
        return _VIEWS["from_json"](text)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one size of a sweep fared: aligned, or its first break's kind and block."""

    size: tuple[int, ...]
    """The spatial extents swept (H, W)."""
    kind: BreakKind | None = None
    """None when aligned."""
    place: str = ""
    """The block (a call of the model's own forward) where it first broke."""

    @property
    def ok(self) -> bool:
        return self.kind is None


@dataclass(frozen=True, slots=True)
class SweepResult:
    """The outcomes of one model configuration over many sizes."""

    label: str
    """The configuration, e.g. "chs 1,2,4,8"."""
    outcomes: tuple[Outcome, ...]


_VIEWS: dict[str, Callable[..., Any]] = {}
"""How a Trace shows and serialises itself, by name: "text", "rich", "svg", "html", "json", "from_json".

Records sit below every layer that reads them and import none of them: the package root
(`shapetrace/__init__.py`), always imported before this module, registers the views, each
of which imports its renderer only when called.
"""


def register_view(name: str, view: Callable[..., Any]) -> None:
    """Make `view` the one a Trace uses for `name` (see _VIEWS)."""
    _VIEWS[name] = view

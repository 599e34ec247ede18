"""The records of one trace: frozen, torch-free data that every renderer reads.

Records hold only ints, strings, tuples and None, so renderers, their tests and the JSON
round trip need no torch. The tracer fills a private builder and freezes these once.
"""

from __future__ import annotations

from dataclasses import dataclass

Shape = tuple[int, ...]

# LayerRecord.status values.
OK = "ok"
BROKEN = "broken"  # a break happened in this call
DOWNSTREAM = "downstream"  # ran on a stand-in that replaced a broken tensor
FAILED = "failed"  # raised, or was still running when the forward stopped


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
    status: str = OK
    """OK, BROKEN, DOWNSTREAM or FAILED."""


@dataclass(frozen=True, slots=True)
class SkipPair:
    """A tensor that jumped over calls of the main path to reach a merge."""

    source: int
    """Index of the call that produced the skipped tensor."""
    target: int
    """Index of the call the merge feeds."""
    op: str
    """The merge: "cat", "stack" or "add"."""
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

    role: str
    """"up path", "skip", "input" or "weights"."""
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
    kind: str
    """"size", "channels" or "error" (an exception that is not a shape mismatch)."""
    message: str
    """One line: where, and both sides."""
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
    """Index of the call where it happened (the pooling or strided leaf)."""
    message: str
    input_size: Shape = ()
    output_size: Shape = ()
    stride: int = 2


@dataclass(frozen=True, slots=True)
class SizeRule:
    """The spatial sizes this model accepts, found by tracing it at other sizes."""

    multiple: int
    """H and W must be multiples of this."""
    minimum: int
    """The smallest size that traces cleanly."""
    nearest: tuple[int, ...] = ()
    """The valid sizes nearest the requested one, below and above."""
    exact: bool = True
    """False when the valid sizes follow no single multiple in the searched window."""


@dataclass(frozen=True, slots=True)
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

    @property
    def ok(self) -> bool:
        """True when the forward ran and nothing broke."""
        return not self.breaks

    @property
    def total_params(self) -> int:
        return self.layers[0].params if self.layers else 0

    def __rich__(self) -> object:
        """The table and break explanations, when a rich console prints a Trace."""
        from shapetrace.render.table import trace_report

        return trace_report(self)

    def _repr_svg_(self) -> str | None:
        """The U-shaped diagram, when Jupyter displays a Trace (None without Graphviz's dot)."""
        from shapetrace.render.dot import trace_dot
        from shapetrace.render.images import GraphvizMissingError, render_svg

        try:
            return render_svg(trace_dot(self))
        except GraphvizMissingError:
            return None

    def to_json(self, *, indent: int | None = 2) -> str:
        """The trace as JSON text (the public schema 1; see `shapetrace.jsonio`)."""
        from shapetrace import jsonio

        return jsonio.dumps(self, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Trace:
        """Rebuild a Trace from `to_json` text; raises TraceFileError on bad input."""
        from shapetrace import jsonio

        return jsonio.loads(text)

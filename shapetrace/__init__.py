"""shapetrace: the tensor shapes inside a diffusion UNet, and where its down and up paths break."""

from shapetrace.api import trace_sizes
from shapetrace.models.unet import UNet
from shapetrace.records import Break, LayerRecord, ShapeWarning, SizeRule, SkipPair, Trace
from shapetrace.tracing.tracer import run_trace, trace

__version__ = "0.1.0"
__all__ = [
    "Break",
    "LayerRecord",
    "ShapeWarning",
    "SizeRule",
    "SkipPair",
    "Trace",
    "UNet",
    "__version__",
    "run_trace",
    "trace",
    "trace_sizes",
]

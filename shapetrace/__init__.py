"""shapetrace: the tensor shapes inside a diffusion UNet, and where its down and up paths break."""

from shapetrace.records import Break, LayerRecord, ShapeWarning, SizeRule, SkipPair, Trace
from shapetrace.sized import trace_sizes
from shapetrace.tracer import run_trace, trace
from shapetrace.unet import UNet

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

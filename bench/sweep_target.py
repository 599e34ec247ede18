"""B7 sweep TARGET (issue 15): 993 sizes of a diffusers UNet2DModel and of the reference UNet, on 2 cores.

Whole processes, pinned to two cores with `taskset -c 0,1` where it exists, beside their floors:
`import torch` (every torch tool pays it) and `import torch; from diffusers import UNet2DModel`
(what any script using the model pays). The sweep's own seconds, in-process after the imports,
show what shapetrace adds.

    python bench/run.py --only B7 [--write]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from measure import Samples, compare_processes, python_command
from report import Row, ratio_row, seconds_row
from startup import BREAK_EXIT_CODE, shapetrace_command

SIZES = "32:1024"
"""993 sizes."""
DIFFUSERS_INIT = {"block_out_channels": [32, 64, 64, 128], "layers_per_block": 1, "norm_num_groups": 8}
"""A small UNet2DModel: four levels (three downsamplers), DownBlock2D/AttnDownBlock2D as diffusers' defaults."""
DIFFUSERS_LIMIT_SECONDS, REFERENCE_LIMIT_SECONDS = 10.0, 2.0
TIMEOUT_SECONDS = 120.0
ROOT = Path(__file__).resolve().parent.parent


def pinned(command: list[str]) -> list[str]:
    """`command` on cores 0 and 1, as issue 15's targets are stated."""
    return ["taskset", "-c", "0,1", *command] if shutil.which("taskset") else command


def diffusers_sweep_command() -> list[str]:
    init = json.dumps(DIFFUSERS_INIT)
    target = ["diffusers:UNet2DModel", "--init", init, "--input", "1,3,64,64", "--timestep"]
    return pinned(shapetrace_command("sweep", *target, "--sizes", SIZES))


def sweep_target(rounds: int) -> list[Row]:
    """B7: both sweeps as whole processes against their import floors, then the sweeps in-process."""
    diffusers, reference = "sweep diffusers UNet2DModel", "sweep reference UNet --chs 1,2,4,8"
    torch_floor, diffusers_floor = 'python -c "import torch"', "import torch + diffusers.UNet2DModel"
    commands = {
        diffusers: diffusers_sweep_command(),
        diffusers_floor: pinned(python_command("-c", "import torch; from diffusers import UNet2DModel")),
        reference: pinned(shapetrace_command("sweep", "--sizes", SIZES, "--chs", "1,2,4,8")),
        torch_floor: pinned(python_command("-c", "import torch")),
    }
    samples = compare_processes(commands, rounds, TIMEOUT_SECONDS, (0, BREAK_EXIT_CODE))
    in_process = _in_process(rounds)
    return [
        seconds_row("B7", f"{diffusers} ({SIZES}, 993 sizes), whole process", samples[diffusers], "< 10 s", 10.0),
        seconds_row("B7", diffusers_floor, samples[diffusers_floor]),
        ratio_row("B7", "diffusers sweep / its imports", samples[diffusers], samples[diffusers_floor], None),
        seconds_row("B7", f"{reference} ({SIZES}), whole process", samples[reference], "< 2 s", 2.0),
        seconds_row("B7", torch_floor, samples[torch_floor]),
        ratio_row("B7", "reference sweep / import torch", samples[reference], samples[torch_floor], None),
        *in_process,
    ]


def _in_process(rounds: int) -> list[Row]:
    """The sweeps alone, the model built and torch and diffusers imported (one core's worth of each)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 2:
        os.sched_setaffinity(0, {0, 1})  # the same two cores as the whole processes
    # This checkout's shapetrace, as `python -m shapetrace` run from its root gets it.
    sys.path.insert(0, str(ROOT))
    import torch
    from diffusers import UNet2DModel

    from shapetrace.models.reference import sweep_reference
    from shapetrace.sweep import sweep_model
    from shapetrace.tracing.inputs import SizedInputs

    with torch.device("meta"):
        model = UNet2DModel(**DIFFUSERS_INIT)
    inputs = SizedInputs([((1, 3, 64, 64), torch.float32)], timestep=True)
    sizes = [(n,) for n in range(32, 1025)]
    squares = [(n, n) for n in range(32, 1025)]
    timings: dict[str, Samples] = {"diffusers": Samples(), "reference": Samples()}
    for _ in range(rounds):
        started = time.perf_counter()
        sweep_model(model, inputs, sizes)
        timings["diffusers"].values.append(time.perf_counter() - started)
        started = time.perf_counter()
        sweep_reference(squares, (1, 2, 4, 8))
        timings["reference"].values.append(time.perf_counter() - started)
    return [
        seconds_row("B7", "in-process sweep_model, diffusers UNet2DModel (993 sizes)", timings["diffusers"]),
        seconds_row("B7", "in-process sweep_reference --chs 1,2,4,8 (993 sizes)", timings["reference"], "< 2 s", 2.0),
    ]


if __name__ == "__main__":
    from report import text_table

    rows = sweep_target(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    print(text_table(rows))

"""Benchmarks B1–B8: B1–B6 of issue 6 (start-up, overhead, peers, scale, sweep, rendering), B7 cost, B8 sweep TARGET.

    python bench/run.py                  every benchmark, 5 alternated rounds (about 10 minutes)
    python bench/run.py --quick          3 rounds
    python bench/run.py --only B1,B5     a selection
    python bench/run.py --write          also write the figures to bench/RESULTS.md

Run by hand on an otherwise idle machine, not by the test suite. Peers that are not installed
show as n/a. Each benchmark imports what it needs when it runs, so `--only B1,B5` never
imports torch in this process.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The checkout this file is in is the one measured, in this process and in the children, even
# where another checkout is installed (an editable install points at one checkout only).
CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(CHECKOUT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(CHECKOUT), os.environ.get("PYTHONPATH"))))

from cost import cost  # noqa: E402 - after the path above
from overhead import overhead  # noqa: E402
from peers import peer_comparison  # noqa: E402
from render import render  # noqa: E402
from report import Row, text_table, write_results  # noqa: E402
from scale import scale  # noqa: E402
from startup import cold_start, sweep  # noqa: E402
from sweep_target import sweep_target  # noqa: E402

BENCHMARKS: dict[str, Callable[[int], list[Row]]] = {
    "B1": cold_start,
    "B2": overhead,
    "B3": peer_comparison,
    "B4": scale,
    "B5": sweep,
    "B6": render,
    "B7": cost,
    "B8": sweep_target,
}
FULL_ROUNDS, QUICK_ROUNDS = 5, 3
RESULTS = Path(__file__).with_name("RESULTS.md")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmarks B1–B8.")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds instead of {FULL_ROUNDS}.")
    parser.add_argument("--only", type=_selection, default=list(BENCHMARKS), help="Comma-separated, e.g. B1,B5.")
    parser.add_argument("--write", action="store_true", help=f"Write the figures to {RESULTS.name}.")
    return parser.parse_args(argv)


def _selection(text: str) -> list[str]:
    chosen = [name.strip().upper() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of {', '.join(BENCHMARKS)}")
    return [name for name in BENCHMARKS if name in chosen]


def machine_line(rounds: int) -> str:
    """Date, cores, CPU, versions and load: what a figure needs to be compared with another."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    return (
        f"{now} · {os.cpu_count()} cores ({_processor()}) · torch {_version('torch')} · "
        f"Python {platform.python_version()} · {rounds} rounds · load average {load:.1f} at start"
    )


def peer_versions() -> str:
    return " · ".join(f"{name} {_version(name)}" for name in ("torchinfo", "torchview", "torchlens", "diffusers"))


def _version(distribution: str) -> str:
    # From the installed metadata: importing torch just for its version would cost seconds.
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def compile_shapetrace() -> None:
    """Write shapetrace's bytecode once, as pip does on install.

    An editable install has none, and with PYTHONDONTWRITEBYTECODE (set on some machines) every
    child process would compile the package from source, a cost no installed user pays.
    """
    package = importlib.util.find_spec("shapetrace")
    if package is not None and package.origin is not None:
        compileall.compile_dir(Path(package.origin).parent, quiet=1)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    rounds = QUICK_ROUNDS if arguments.quick else FULL_ROUNDS
    header = f"{machine_line(rounds)} · {peer_versions()}"
    print(header)
    compile_shapetrace()
    rows: list[Row] = []
    for name in arguments.only:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        rows += BENCHMARKS[name](rounds)
        print(f"{name} took {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print()
    print(text_table(rows))
    if arguments.write:
        write_results(RESULTS, rows, header)
        print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Shared fixtures: meta-device reference UNets, a plain console, golden files."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import settings
from rich.console import Console, RenderableType

from shapetrace import Trace, UNet, run_trace
from shapetrace.models.reference import reference_config

GOLDEN = Path(__file__).parent / "golden"

# The default suite draws the same hypothesis examples on every run, so a run fails only on a
# change to the code; SHAPETRACE_LONG_PROPERTIES=1 explores fresh random examples (and more).
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(
    "explore" if os.environ.get("SHAPETRACE_LONG_PROPERTIES", "") not in ("", "0") else "reproducible"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", help="Rewrite golden files from the current output.")


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour and width settings of the developer's terminal must not reach the output."""
    for name in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "TERM"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Compare text with tests/golden/<name>, or rewrite it under --update-goldens."""
    update = request.config.getoption("--update-goldens") or os.environ.get("SHAPETRACE_UPDATE_GOLDENS") == "1"

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if update or not path.exists():
            path.write_text(text, encoding="utf-8")
        assert text == path.read_text(encoding="utf-8"), f"{name} differs; review, then run pytest --update-goldens"

    return check


def render(renderable: RenderableType, width: int = 120) -> str:
    """Plain text of a rich renderable, as a fixed-width console without colour prints it."""
    buffer = io.StringIO()
    console = Console(width=width, file=buffer, color_system=None, legacy_windows=False, force_terminal=False)
    console.print(renderable)
    return buffer.getvalue()


def meta_unet(
    chs: tuple[int, ...] = (1, 2, 4, 8), n_channels: int = 64, img_channels: int = 3, variant: str = "fixed"
) -> UNet:
    with torch.device("meta"):
        return UNet(img_channels, n_channels, chs, variant)  # type: ignore[arg-type]


def unet_inputs(
    height: int, width: int | None = None, batch: int = 2, img_channels: int = 3
) -> tuple[torch.Tensor, ...]:
    x = torch.empty(batch, img_channels, height, width or height, device="meta")
    t = torch.empty(batch, dtype=torch.long, device="meta")
    return x, t


def trace_unet(
    size: int | tuple[int, int] = 224,
    chs: tuple[int, ...] = (1, 2, 4, 8),
    n_channels: int = 64,
    variant: str = "fixed",
    batch: int = 2,
    verify: bool = True,
) -> Trace:
    height, width = (size, size) if isinstance(size, int) else size
    model = meta_unet(chs, n_channels, variant=variant)
    config = reference_config(chs, n_channels, variant)
    return run_trace(model, unet_inputs(height, width, batch), config=config, verify=verify)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()

"""The docs' figures are made by the tool: the committed sources equal what it generates now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).parent.parent / "docs"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_figure_sources_equal_fresh_ones() -> None:
    fresh = _generator().sources()
    committed_names = {path.name for path in (DOCS / "figures").iterdir() if path.suffix in (".dot", ".txt")}
    assert set(fresh) == committed_names
    for name, text in fresh.items():
        committed = (DOCS / "figures" / name).read_text(encoding="utf-8")
        assert committed == text, f"docs/figures/{name} is stale: run `python docs/generate.py`"


@pytest.mark.parametrize("name", ["default-unet", "size-break-225", "as-written", "cost-unet"])
def test_guide_embeds_each_diagram(name: str) -> None:
    guide = (DOCS / "guide.md").read_text(encoding="utf-8")
    assert f"figures/{name}.svg" in guide

"""`shapetrace.testing` and its pytest plugin: assert_aligned, golden-trace snapshots, the fixture.

assert_aligned is checked against real CPU forwards of small 1-D, 2-D and 3-D UNets at every
size in a range; the plugin runs for real in pytest's pytester.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.analysis.placement import block_name
from shapetrace.testing import assert_aligned, assert_trace_matches
from shapetrace.verify import meta_copy
from tests.fixtures.tiny_unets import TinyUNet

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent


def breaks_on_cpu(model: nn.Module, size: tuple[int, ...], *extra: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            model(torch.randn(1, 1, *size), *extra)
    except RuntimeError:
        return True
    return False


def listed_sizes(message: str) -> list[str]:
    (line,) = [line for line in message.splitlines() if line.startswith("  breaks at")]
    return line.split(": ", 1)[1].split(", ")


def untouched(model: nn.Module) -> Callable[[], None]:
    """A check that the model kept its weights, its device, and got no hooks."""
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    def check() -> None:
        assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
        assert all(tensor.device.type == "cpu" for tensor in model.state_dict().values())
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())

    return check


@pytest.mark.parametrize(("dims", "sizes"), [(1, range(4, 17)), (2, range(4, 15)), (3, range(4, 11))])
def test_assert_aligned_fails_at_the_sizes_a_real_forward_breaks(dims: int, sizes: range) -> None:
    torch.manual_seed(0)
    model = TinyUNet(dims)
    check = untouched(model)
    t = torch.tensor([5])
    broken = [size for size in sizes if breaks_on_cpu(model, (size,) * dims, t)]
    assert broken and len(broken) < len(sizes)  # some sizes break, some do not
    with pytest.raises(AssertionError) as failed:
        assert_aligned(model, torch.randn(1, 1, *[8] * dims), t, sizes=f"{sizes.start}:{sizes.stop - 1}")
    message = str(failed.value)
    assert listed_sizes(message) == ["×".join([str(size)] * dims) for size in broken]
    # The first failing size, the block of its first break and the cause, as a trace of it names them.
    first = (broken[0],) * dims
    trace = shapetrace.trace(meta_copy(model), torch.empty(1, 1, *first, device="meta"), t.to("meta"))
    block, cause = block_name(trace, trace.breaks[0].layer), trace.causes[0].text
    assert message.startswith(f"TinyUNet does not align at size {'×'.join(map(str, first))}: first break in {block}\n")
    assert f"\n  cause: {cause}\n" in message
    check()
    # Every size that runs on CPU passes on its own, and returns its trace.
    passing = [size for size in sizes if size not in broken]
    aligned = assert_aligned(model, torch.randn(1, 1, *[5] * dims), t, sizes=passing)
    assert aligned.ok and aligned.inputs[0] == (1, 1, *[passing[0]] * dims)
    check()


def test_assert_aligned_at_the_inputs_own_size() -> None:
    model = TinyUNet(2)
    check = untouched(model)
    trace = assert_aligned(model, torch.randn(2, 1, 16, 12))
    assert trace.ok and trace.inputs == ((2, 1, 16, 12),) and trace.device == "meta"
    with pytest.raises(AssertionError, match=r"^TinyUNet does not align at size 16×10: first break in merges\.1\n"):
        assert_aligned(model, torch.randn(2, 1, 16, 10))
    check()


def test_a_channel_break_fails_at_every_size_and_names_its_block() -> None:
    model = TinyUNet(3, wrong_channels=True)
    assert breaks_on_cpu(model, (8, 8, 8))
    with pytest.raises(AssertionError) as failed:
        assert_aligned(model, torch.randn(1, 1, 8, 8, 8), sizes=[8, 16, (8, 12, 16)])
    lines = str(failed.value).splitlines()
    assert lines[0] == "TinyUNet does not align at size 8×8×8: first break in merges.0"
    assert lines[2].startswith("  cause: merges.0 was built for 7 input channels")
    assert lines[-1] == "  breaks at every size: 8×8×8, 16×16×16, 8×12×16"


def test_assert_aligned_takes_a_factory_and_every_form_of_sizes() -> None:
    built = []

    def factory() -> nn.Module:
        model = TinyUNet(2)
        built.append(next(model.parameters()).device.type)
        return model

    trace = assert_aligned(factory, torch.empty(1, 1, 4, 4, device="meta"), sizes="8x12,16")
    assert trace.inputs == ((1, 1, 8, 12),) and built == ["meta"]  # built on meta: no weights allocated
    assert_aligned(factory, torch.empty(1, 1, 4, 4), sizes=12)
    with pytest.raises(AssertionError, match="breaks at 1 of 2 sizes: 8×10"):
        assert_aligned(factory, torch.empty(1, 1, 4, 4), sizes=[(8, 8), (8, 10)])


def test_assert_aligned_says_what_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="'8:x' is not a valid size"):
        assert_aligned(TinyUNet(2), torch.randn(1, 1, 8, 8), sizes="8:x")
    with pytest.raises(ValueError, match="size 8x8 has 2 extents, but the input has 1 spatial axis"):
        assert_aligned(TinyUNet(1), torch.randn(1, 1, 8), sizes="8x8")
    with pytest.raises(ValueError, match="sizes given, but no input has spatial axes"):
        assert_aligned(nn.Linear(3, 3), torch.randn(2, 3), sizes=8)
    with pytest.raises(TypeError, match=r"the factory returned int, not an nn\.Module"):
        assert_aligned(lambda: 3, torch.randn(2, 3))  # type: ignore[arg-type, return-value]


# --- golden traces --------------------------------------------------------------------------


def test_a_golden_trace_is_written_then_matched(tmp_path: Path) -> None:
    golden = tmp_path / "golden" / "unet.json"
    trace = assert_aligned(TinyUNet(2), torch.randn(1, 1, 8, 8))
    with pytest.raises(AssertionError, match=r"no golden trace at .*unet\.json: run pytest with --shapetrace-update"):
        assert_trace_matches(trace, golden)
    assert_trace_matches(trace, golden, update=True)
    assert shapetrace.Trace.from_json(golden.read_text(encoding="utf-8")).layers == trace.layers
    assert_trace_matches(trace, golden)
    assert_trace_matches(assert_aligned(TinyUNet(2), torch.randn(1, 1, 8, 8)), str(golden))  # a fresh trace


def test_changed_shapes_fail_with_the_diff_table(tmp_path: Path) -> None:
    golden = tmp_path / "unet.json"
    assert_trace_matches(assert_aligned(TinyUNet(2), torch.randn(1, 1, 8, 8)), golden, update=True)
    with pytest.raises(AssertionError) as failed:
        assert_trace_matches(assert_aligned(TinyUNet(2), torch.randn(1, 1, 16, 8)), golden)
    message = str(failed.value)
    first, table = message.split("\n", 1)
    assert first.startswith(f"TinyUNet differs from its golden trace {golden} (")
    assert "run pytest with --shapetrace-update to rewrite it" in first
    assert "golden → now" in table and "\x1b[" not in table  # plain text, as `shapetrace diff` lays it out
    inc = next(line for line in table.splitlines() if "│ inc " in line)
    assert "Conv2d [1, 1, 8, 8] → [1, 4, 8, 8]" in inc and "Conv2d [1, 1, 16, 8] → [1, 4, 16, 8]" in inc
    assert "skip pairings" in first  # the skips' shapes changed too: they are listed


def test_changed_pairings_fail(tmp_path: Path) -> None:
    golden = tmp_path / "unet.json"
    assert_trace_matches(assert_aligned(TinyUNet(2, levels=2), torch.randn(1, 1, 8, 8)), golden, update=True)
    with pytest.raises(AssertionError) as failed:
        assert_trace_matches(assert_aligned(TinyUNet(2, levels=1), torch.randn(1, 1, 8, 8)), golden)
    skips = [line for line in str(failed.value).splitlines() if line.startswith("│ skip")]
    # The skip of the level the golden had and now lacks.
    assert len(skips) == 1 and "downs.0.1 → merges.1 cat [1, 8, 4, 4]" in skips[0]


def test_an_unreadable_golden_says_how_to_rewrite_it(tmp_path: Path) -> None:
    golden = tmp_path / "unet.json"
    golden.write_text("{not json", encoding="utf-8")
    trace = assert_aligned(TinyUNet(1), torch.randn(1, 1, 8))
    with pytest.raises(AssertionError, match=r"cannot be read .*: run pytest with --shapetrace-update to write it"):
        assert_trace_matches(trace, golden)


def test_the_environment_variable_rewrites_goldens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHAPETRACE_UPDATE", "1")
    assert_trace_matches(assert_aligned(TinyUNet(1), torch.randn(1, 1, 8)), tmp_path / "a.json")
    assert (tmp_path / "a.json").is_file()


# --- the pytest plugin ----------------------------------------------------------------------

USER_TESTS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.out = nn.Conv2d(5, 1, 1)

    def forward(self, x):
        return self.out(torch.cat([self.up(self.down(x)), x], dim=1))


def test_aligns(shapetrace):
    shapetrace.assert_aligned(Net(), torch.randn(1, 1, 8, 8), sizes="8:16:2")


def test_odd_sizes(shapetrace):
    shapetrace.assert_aligned(Net(), torch.randn(1, 1, 8, 8), sizes="8:11")


def test_golden(shapetrace):
    shapetrace.assert_trace_matches(shapetrace.assert_aligned(Net(), torch.randn(1, 1, SIZE, SIZE)), "golden/net.json")
"""


def run_user_tests(pytester: pytest.Pytester, size: int, *arguments: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=USER_TESTS.replace("SIZE", str(size)))
    return pytester.runpytest("-p", "shapetrace.pytest_plugin", "-p", "no:cacheprovider", *arguments)


def test_the_fixture_passes_and_fails_as_it_should(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, 8)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: Net does not align at size 9×9: first break in out",
            "*breaks at 2 of 4 sizes: 9×9, 11×11",
            "*AssertionError: no golden trace at golden/net.json: run pytest with --shapetrace-update to write it*",
        ]
    )
    assert not (pytester.path / "golden").exists()


def test_shapetrace_update_writes_the_golden_then_it_guards_the_shapes(pytester: pytest.Pytester) -> None:
    run_user_tests(pytester, 8, "--shapetrace-update", "-k", "golden").assert_outcomes(passed=1)
    written = shapetrace.Trace.from_json((pytester.path / "golden" / "net.json").read_text(encoding="utf-8"))
    assert written.inputs[0] == (1, 1, 8, 8)
    run_user_tests(pytester, 8, "-k", "golden").assert_outcomes(passed=1)
    changed = run_user_tests(pytester, 16, "-k", "golden")
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(["*Net differs from its golden trace golden/net.json*", "*golden → now*"])
    run_user_tests(pytester, 16, "-k", "golden", "--shapetrace-update").assert_outcomes(passed=1)
    run_user_tests(pytester, 16, "-k", "golden").assert_outcomes(passed=1)


def declared_plugins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return dict(project["entry-points"]["pytest11"])


def test_pyproject_declares_the_plugin_under_its_module_name() -> None:
    assert declared_plugins() == {"shapetrace.pytest_plugin": "shapetrace.pytest_plugin"}


def test_the_entry_point_and_p_load_the_plugin_once(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed distribution declaring the entry point as pyproject.toml does, as pip would write it.
    site = pytester.mkdir("site")
    info = site / "shapetrace_plugin_check-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shapetrace-plugin-check\nVersion: 0.1\n")
    lines = [f"{name} = {target}" for name, target in declared_plugins().items()]
    (info / "entry_points.txt").write_text("[pytest11]\n" + "\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(
        test_fixture="def test_fixture(shapetrace):\n    assert shapetrace.__name__ == 'shapetrace.testing'\n"
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)  # the entry point alone
    both = pytester.runpytest("-p", "shapetrace.pytest_plugin", "-p", "no:cacheprovider")
    both.assert_outcomes(passed=1)  # and with -p too: no "Plugin already registered"
    off = pytester.runpytest("-p", "no:shapetrace.pytest_plugin", "-p", "no:cacheprovider")
    off.assert_outcomes(errors=1)
    off.stdout.fnmatch_lines(["*fixture 'shapetrace' not found*"])


def test_the_plugin_and_the_package_import_no_torch_until_used() -> None:
    code = (
        "import sys, pytest, shapetrace.pytest_plugin\n"
        "assert 'torch' not in sys.modules and 'shapetrace.testing' not in sys.modules\n"
        "import shapetrace\n"
        "assert 'torch' not in sys.modules\n"
        "assert callable(shapetrace.testing.assert_aligned)  # the submodule, imported on first use\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr

"""The HTML report in a real headless Chromium (Debian's chromium and chromium-driver, via selenium).

What a reader of the report does: open it offline, click a block, read its record, follow a
cause to its node, filter the table, hover a size of a sweep. The page must load nothing and
log no error. Skipped, saying why, only where no Chromium is installed (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shapetrace.cli import main
from shapetrace.formatting import format_shape

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium here: apt-get install chromium chromium-driver (.ci/run installs them when absent)",
)
ARGUMENTS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    profile = tempfile.TemporaryDirectory(prefix="shapetrace-chromium-")
    for argument in (*ARGUMENTS, f"--user-data-dir={profile.name}"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()
    profile.cleanup()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The CLI's reports: the reference UNet at 225 (and its JSON), and a sweep around 224."""
    folder = tmp_path_factory.mktemp("reports")
    runner = CliRunner()
    commands = {
        "unet.html": ["unet", "--size", "225", "-o"],
        "unet.json": ["unet", "--size", "225", "-o"],
        "sweep.html": ["sweep", "--sizes", "220:232", "--n-channels", "8", "-o"],
    }
    for name, arguments in commands.items():
        result = runner.invoke(main, [*arguments, str(folder / name)])
        assert result.exit_code == 1, result.output  # both break: the exit status is the verdict's
    return {name: folder / name for name in commands}


def _open(browser: Any, path: Path) -> None:
    for log in ("browser", "performance"):
        browser.get_log(log)  # drain what earlier pages left
    browser.get(path.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"


def _console_problems(browser: Any) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def _requested_urls(browser: Any) -> list[str]:
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _visible_rows(browser: Any) -> list[Any]:
    return [row for row in browser.find_elements(By.CSS_SELECTOR, "#layers tbody tr") if row.is_displayed()]


def _classes(element: Any) -> set[str]:
    return set((element.get_attribute("class") or "").split())


def test_report_loads_offline_with_no_console_error_and_no_request(browser: Any, reports: dict[str, Path]) -> None:
    for name in ("unet.html", "sweep.html"):
        text = reports[name].read_text(encoding="utf-8")
        loaded = re.findall(
            r"""(?:\b(?:src|href|action|data)\s*=\s*["']?|url\(\s*["']?|@import\s+["']?)https?://""", text
        )
        assert loaded == [], name
        _open(browser, reports[name])
        assert _console_problems(browser) == [], name
        assert _requested_urls(browser) == [reports[name].as_uri()], name  # the file itself, nothing else
        if name == "unet.html":
            drawn = browser.find_elements(By.CSS_SELECTOR, "#diagram svg g[data-layer]")
            assert len(drawn) == 28 and all(node.is_displayed() for node in drawn)


def test_clicking_ups9_shows_its_shapes_and_outlines_downs1(browser: Any, reports: dict[str, Path]) -> None:
    layers = json.loads(reports["unet.json"].read_text(encoding="utf-8"))["layers"]
    ups9 = next(layer for layer in layers if layer["name"] == "ups.9")
    _open(browser, reports["unet.html"])
    node = browser.find_element(By.CSS_SELECTOR, 'g[data-layer="ups.9"]')
    node.click()
    details = browser.find_element(By.ID, "details").text
    for shape in [*ups9["inputs"], *ups9["outputs"]]:
        assert format_shape(shape) in details
    assert f"{ups9['params']:,}" in details
    assert "selected" in _classes(node)
    partners = browser.find_elements(By.CSS_SELECTOR, "g.partner")
    assert [partner.get_attribute("data-layer") for partner in partners] == ["downs.1"]
    browser.find_element(By.CSS_SELECTOR, 'g[data-layer="downs.5"]').click()  # a block with no skip
    assert browser.find_elements(By.CSS_SELECTOR, "g.partner") == []
    assert _console_problems(browser) == []


def test_causes_list_the_pooling_floor_and_lead_to_the_break(browser: Any, reports: dict[str, Path]) -> None:
    _open(browser, reports["unet.html"])
    causes = browser.find_element(By.ID, "causes")
    assert "downs.2 (Downsample) floored an odd size: 225 → 112" in causes.text
    assert "224 or 232" in causes.text  # the fix
    causes.find_element(By.XPATH, ".//button[text()='ups.10']").click()
    assert "selected" in _classes(browser.find_element(By.CSS_SELECTOR, 'g[data-layer="ups.10"]'))
    assert "partner" in _classes(browser.find_element(By.CSS_SELECTOR, 'g[data-layer="downs.0"]'))
    assert "torch.cat(dim=1)" in browser.find_element(By.ID, "details").text


def test_filter_and_depth_choose_the_rows(browser: Any, reports: dict[str, Path]) -> None:
    _open(browser, reports["unet.html"])
    blocks = _visible_rows(browser)
    assert len(blocks) == 28  # time_embedding, conv_in, 12 downs, conv_mid, 12 ups, conv_out
    browser.find_element(By.ID, "filter").send_keys("downs")
    shown = _visible_rows(browser)
    assert 0 < len(shown) < len(blocks)
    assert all("downs." in row.get_attribute("data-name") for row in shown)
    browser.find_element(By.ID, "filter").clear()
    browser.find_element(By.ID, "filter").send_keys("Downsample")  # a type matches too
    assert [row.get_attribute("data-name") for row in _visible_rows(browser)] == ["downs.2", "downs.5", "downs.8"]
    browser.find_element(By.ID, "filter").clear()
    browser.execute_script("document.getElementById('filter').dispatchEvent(new Event('input'))")
    Select(browser.find_element(By.ID, "depth")).select_by_value("2")
    deeper = _visible_rows(browser)
    assert len(deeper) > len(blocks)
    assert {row.get_attribute("data-depth") for row in deeper} == {"1", "2"}
    deeper[3].click()  # a row selects its layer too
    assert "selected" in _classes(deeper[3])
    assert deeper[3].get_attribute("data-name") in browser.find_element(By.ID, "details").text


def test_sweep_heat_map_shows_the_first_break_of_the_hovered_size(browser: Any, reports: dict[str, Path]) -> None:
    _open(browser, reports["sweep.html"])
    cells = {cell.get_attribute("data-size"): cell for cell in browser.find_elements(By.CSS_SELECTOR, ".cell")}
    assert sorted(cells, key=int) == [str(size) for size in range(220, 233)]
    ActionChains(browser).move_to_element(cells["225"]).perform()
    assert "size break at ups.9" in browser.find_element(By.ID, "size-info").text
    ActionChains(browser).move_to_element(cells["224"]).perform()
    assert "aligned" in browser.find_element(By.ID, "size-info").text
    colour = {size: cells[size].value_of_css_property("background-color") for size in ("224", "232", "225")}
    assert colour["224"] == colour["232"] != colour["225"]
    assert _console_problems(browser) == []


def test_colours_follow_the_preferred_scheme(browser: Any, reports: dict[str, Path]) -> None:
    _open(browser, reports["unet.html"])
    backgrounds = {}
    for scheme in ("light", "dark"):
        features = [{"name": "prefers-color-scheme", "value": scheme}]
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})
        backgrounds[scheme] = _brightness(
            browser.find_element(By.TAG_NAME, "body").value_of_css_property("background-color")
        )
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert backgrounds["light"] > 200
    assert backgrounds["dark"] < 60


def test_notebook_frame_holds_the_same_working_report(browser: Any, reports: dict[str, Path], tmp_path: Path) -> None:
    from shapetrace.records import Trace

    trace = Trace.from_json(reports["unet.json"].read_text(encoding="utf-8"))
    page = tmp_path / "notebook.html"
    page.write_text(f"<!DOCTYPE html><html><body><div style='width:900px'>{trace._repr_html_()}</div></body></html>")
    _open(browser, page)
    frame = browser.find_element(By.TAG_NAME, "iframe")
    assert frame.size["width"] == 900
    browser.switch_to.frame(frame)
    try:
        assert _fits_its_panel(browser)
        # A frame may be laid out (or the cell resized) after the report's script ran: it follows.
        browser.switch_to.default_content()
        browser.execute_script("document.querySelector('div').style.width = '760px'")
        browser.switch_to.frame(frame)
        WebDriverWait(browser, 5).until(_fits_its_panel)
        browser.find_element(By.CSS_SELECTOR, 'g[data-layer="ups.3"]').click()
        assert "selected" in _classes(browser.find_element(By.CSS_SELECTOR, 'g[data-layer="ups.3"]'))
        assert "partner" in _classes(browser.find_element(By.CSS_SELECTOR, 'g[data-layer="downs.7"]'))
        assert "ups.3" in browser.find_element(By.ID, "details").text
    finally:
        browser.switch_to.default_content()
    assert _console_problems(browser) == []


def test_without_graphviz_the_rest_of_the_report_works(
    browser: Any, reports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shapetrace.records import Trace
    from shapetrace.render.html import trace_html

    trace = Trace.from_json(reports["unet.json"].read_text(encoding="utf-8"))
    with monkeypatch.context() as patch:
        patch.setenv("PATH", "")
        page = trace_html(trace)
    (tmp_path / "no-dot.html").write_text(page, encoding="utf-8")
    _open(browser, tmp_path / "no-dot.html")
    assert "No diagram" in browser.find_element(By.ID, "no-diagram").text
    browser.find_element(By.ID, "causes").find_element(By.XPATH, ".//button[text()='ups.10']").click()
    assert "selected" in _classes(browser.find_element(By.CSS_SELECTOR, '#layers tr[data-name="ups.10"]'))
    assert "ups.10" in browser.find_element(By.ID, "details").text
    assert _console_problems(browser) == []


def test_details_show_the_cost_fields_a_trace_has(
    browser: Any, reports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shapetrace import jsonio
    from shapetrace.records import Trace
    from shapetrace.render.html import trace_html

    plain = jsonio.to_dict

    def with_cost(trace: Trace) -> dict[str, Any]:
        data = plain(trace)
        for layer in data["layers"]:
            layer.update(flops=3_500_000_000, macs=1_750_000_000, output_bytes=12_845_056, saved_bytes=25_690_112)
        return data

    monkeypatch.setattr(jsonio, "to_dict", with_cost)
    (tmp_path / "cost.html").write_text(trace_html(Trace.from_json(reports["unet.json"].read_text())), encoding="utf-8")
    _open(browser, tmp_path / "cost.html")
    browser.find_element(By.CSS_SELECTOR, 'g[data-layer="ups.9"]').click()
    details = browser.find_element(By.ID, "details").text
    for line in ("flops 3.50 G", "macs 1.75 G", "output bytes 12.85 MB", "saved bytes 25.69 MB"):
        assert line in details.replace("\n", " ")
    assert _console_problems(browser) == []


def test_screenshot_is_not_blank(browser: Any, reports: dict[str, Path]) -> None:
    _open(browser, reports["unet.html"])
    width, height, pixels = _decode_png(browser.get_screenshot_as_png())
    assert width > 600 and height > 400
    brightness = [sum(pixel[:3]) / 3 for pixel in pixels[:: max(1, len(pixels) // 20_000)]]
    mean = sum(brightness) / len(brightness)
    variance = sum((value - mean) ** 2 for value in brightness) / len(brightness)
    assert variance > 100, f"a near-uniform screenshot: variance {variance:.1f}"
    assert len({pixel[:3] for pixel in pixels}) > 50  # text, fills and borders: many colours


def _fits_its_panel(browser: Any) -> bool:
    """The drawing is as wide as its panel allows, and never wider than 1:1."""
    natural, panel, drawn = browser.execute_script(
        "const svg = document.querySelector('#diagram svg');"
        "return [svg.viewBox.baseVal.width * 4 / 3, document.getElementById('diagram').clientWidth,"
        " svg.getBoundingClientRect().width];"
    )
    return bool(abs(drawn - min(natural, panel - 20)) <= 2)


def _brightness(css_colour: str) -> float:
    red, green, blue = (int(value) for value in re.findall(r"\d+", css_colour)[:3])
    return (red + green + blue) / 3


def _decode_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, compressed, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        header = body if kind == b"IHDR" else header
        compressed += body if kind == b"IDAT" else b""
        position += 12 + length
    width, height, bits, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert bits == 8 and colour_type in (2, 6) and interlace == 0
    channels = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(compressed), width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, channels)
        rows.append(line)
        previous = line
    pixels = [tuple(line[offset : offset + channels]) for line in rows for offset in range(0, stride, channels)]
    return width, height, pixels


def _unfilter(kind: int, line: bytearray, previous: bytearray, channels: int) -> bytearray:
    for index in range(len(line)):
        left = line[index - channels] if index >= channels else 0
        up, up_left = previous[index], previous[index - channels] if index >= channels else 0
        if kind == 1:
            line[index] = (line[index] + left) & 0xFF
        elif kind == 2:
            line[index] = (line[index] + up) & 0xFF
        elif kind == 3:
            line[index] = (line[index] + (left + up) // 2) & 0xFF
        elif kind == 4:
            estimate = left + up - up_left
            distances = (abs(estimate - left), abs(estimate - up), abs(estimate - up_left))
            line[index] = (line[index] + (left, up, up_left)[distances.index(min(distances))]) & 0xFF
    return line

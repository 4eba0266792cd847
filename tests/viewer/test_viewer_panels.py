"""Each panel grabbed to a PNG and checked, the exports read back, on a finished SNEM run."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from PySide6 import QtCore
from scipy.stats import spearmanr

from emlive.stream.client import PipelineClient
from emlive.stream.replay import replay
from emlive.viewer.colors import UNFILLED, auto_levels, render_rgba
from emlive.viewer.model import PipelineModel
from emlive.viewer.window import ViewerWindow

from viewer_pipeline import SCAN, Serving


@pytest.fixture(scope="module")
def finished(recording, tmp_path_factory):
    """A pipeline that has analysed the recording, and the results it holds."""
    s = Serving(tmp_path_factory.mktemp("data"))
    try:
        end = replay(recording, s.server.data_address)
        s.wait_closed()
        with PipelineClient(s.server.query_address, timeout=10) as client:
            results = {k: client.result("snem", k, run=end.run_uid) for k in ("r_max", "iq_mean", "q", "iq")}
        yield s, results
    finally:
        s.stop()


@pytest.fixture
def window(qtbot, finished):
    model = PipelineModel(finished[0].server.query_address)
    win = ViewerWindow(model, result="snem/r_max")
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitUntil(lambda: win.map_key == ("snem", "r_max") and win.map_panel.shown is not None, timeout=15_000)
    yield win
    win.close()


def grab(widget, path) -> np.ndarray:
    """The widget as the user sees it, through a PNG file (RGB array)."""
    assert widget.grab().save(str(path))
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(float)


def not_blank(img: np.ndarray) -> bool:
    return img.std() > 5 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20


def test_map_panel_pixels_follow_the_result(window, finished, tmp_path):
    _, results = finished
    r_max = results["r_max"]
    panel = window.map_panel
    panel.set_colormap("gray")
    lo, hi = np.nanmin(r_max), np.nanmax(r_max)
    panel.set_levels(lo, hi)
    img = grab(panel.graphics, tmp_path / "map.png")
    size = panel.graphics.size()
    assert img.shape == (size.height(), size.width(), 3) and not_blank(img)
    grey, values = [], []
    for y in range(SCAN[0]):
        for x in range(SCAN[1]):
            p = panel.graphics.mapFromScene(panel.image.mapToScene(QtCore.QPointF(x + 0.5, y + 0.5)))
            grey.append(img[p.y(), p.x()].mean())
            values.append(r_max[y, x])
    ok = np.isfinite(values)
    assert ok.sum() > 0.8 * len(values)
    assert spearmanr(np.asarray(grey)[ok], np.asarray(values)[ok]).statistic > 0.95
    np.testing.assert_allclose(np.asarray(grey)[ok], 255 * (np.asarray(values)[ok] - lo) / (hi - lo), atol=2.5)
    assert "r_max" in panel.title.text() and "Å" in panel.title.text()


def test_every_panel_renders_something(window, tmp_path, qtbot):
    window.select(("snem", "iq"))  # a stack: its planes along q in the slice view
    qtbot.waitUntil(lambda: window.slice_view.key == ("snem", "iq"), timeout=10_000)
    window.map_panel.click((3, 8))
    qtbot.waitUntil(lambda: window.last_inspection is not None, timeout=10_000)
    for name, widget in (("slices", window.slice_view), ("inspect", window.inspect_panel)):
        img = grab(widget, tmp_path / f"{name}.png")
        assert img.shape[:2] == (widget.height(), widget.width()) and not_blank(img), name
    window.tabs.setCurrentWidget(window.curve_panel)
    img = grab(window.curve_panel, tmp_path / "curves.png")
    assert not_blank(img)
    whole = grab(window, tmp_path / "window.png")
    assert whole.shape[:2] == (900, 1400)
    assert "/" in window.progress_label.text() and window.status_label.text() == "complete"


def test_exports_png_tiff_csv(window, finished, tmp_path):
    _, results = finished
    png = window.export_map_png(tmp_path / "map.png")
    tif = window.export_map_tiff(tmp_path / "map.tif")
    with Image.open(png) as im:
        rgba = np.asarray(im)
    scale = rgba.shape[0] // SCAN[0]
    assert rgba.shape == (SCAN[0] * scale, SCAN[1] * scale, 4) and scale * max(SCAN) >= 512
    expected = render_rgba(results["r_max"], window.map_panel.cmap, auto_levels(results["r_max"]))
    np.testing.assert_array_equal(rgba[::scale, ::scale], expected)
    with Image.open(tif) as im:
        values = np.asarray(im)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, results["r_max"].astype(np.float32))  # NaN where no peak was found
    assert window.curve_keys == [("snem", "iq_mean")]  # the first curve not an axis of another
    path = window.export_curves_csv(tmp_path / "curves.csv")
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows[0] == ["snem/iq_mean x", "snem/iq_mean"]
    table = np.array([[float(v) for v in row] for row in rows[1:]])
    np.testing.assert_array_equal(table[:, 0], results["q"])
    np.testing.assert_array_equal(table[:, 1], results["iq_mean"])


def test_unfilled_pixels_are_drawn_in_their_own_colour(qtbot):
    from emlive.viewer.mappanel import MapPanel

    panel = MapPanel()
    qtbot.addWidget(panel)
    panel.resize(500, 300)
    arr = np.arange(12, dtype=float).reshape(3, 4)
    arr[2, 1:] = np.nan
    panel.set_colormap("gray")
    panel.set_map(("a", "m"), arr)
    panel.show()
    img = panel.graphics.grab().toImage()
    colours = {}
    for y in range(3):
        for x in range(4):
            c = img.pixelColor(panel.graphics.mapFromScene(panel.image.mapToScene(QtCore.QPointF(x + .5, y + .5))))
            colours[y, x] = (c.red(), c.green(), c.blue())
    assert all(colours[2, x] == UNFILLED for x in (1, 2, 3))
    assert all(len(set(colours[y, x])) == 1 for y in range(2) for x in range(4))  # measured: grey
    assert panel.rgba()[2, 1].tolist() == [*UNFILLED, 255]

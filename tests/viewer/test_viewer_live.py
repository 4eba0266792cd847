"""The viewer on a live pipeline fed by the SNEM laminate: the map fills, a click shows the recorded pattern."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PySide6 import QtCore

from emlive.stream.client import PipelineClient
from emlive.stream.publisher import FramePublisher
from emlive.stream.recorder import Recording
from emlive.viewer.colors import UNFILLED
from emlive.viewer.model import PipelineModel
from emlive.viewer.window import ViewerWindow

from viewer_pipeline import SCAN, laminate_calibration


def pixel_point(panel, y: int, x: int) -> QtCore.QPoint:
    """Where scan pixel (y, x) of the map panel is on its view's viewport."""
    scene = panel.image.mapToScene(QtCore.QPointF(x + 0.5, y + 0.5))
    return panel.graphics.mapFromScene(scene)


def feed_in_two_halves(address: str, sim, resume: threading.Event, chunk: int = 16) -> threading.Thread:
    """A live source: half the scan, then (once ``resume`` is set) the rest, so the test sees the map half full."""
    def run():
        with FramePublisher(address) as pub:
            pub.start(sim.frame_shape, "uint16", SCAN, chunk_frames=chunk,
                      calibration=laminate_calibration(sim), run_uid="viewer-live")
            for first in range(0, sim.n_frames, chunk):
                if first == sim.n_frames // 2:
                    resume.wait(60)
                pub.send(sim.frames(first, chunk), first)
                time.sleep(0.05)
            pub.end()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def window(qtbot, serving):
    model = PipelineModel(serving.server.query_address, retry=0.5)
    win = ViewerWindow(model, result="virtual/vbf")
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitUntil(lambda: model.connected, timeout=10_000)
    yield win
    win.close()


def test_map_fills_live_then_a_click_shows_the_recorded_pattern_and_a_ctrl_click_the_pearson_map(
        qtbot, serving, window, laminate):
    sim = laminate
    model = window.model
    time.sleep(0.3)  # the subscription reaches the publisher before the run starts
    resume = threading.Event()
    feeder = feed_in_two_halves(serving.server.data_address, sim, resume)

    # the map fills as the scan proceeds: seen partly measured, unmeasured pixels in the unfilled colour
    def partly_filled():
        shown = window.map_panel.shown
        return shown is not None and 0 < np.isfinite(shown).sum() < shown.size
    qtbot.waitUntil(partly_filled, timeout=60_000)
    shown = window.map_panel.shown.copy()
    image = window.map_panel.graphics.grab().toImage()
    y, x = np.argwhere(~np.isfinite(shown))[-1]
    c = image.pixelColor(pixel_point(window.map_panel, y, x))
    assert (c.red(), c.green(), c.blue()) == UNFILLED
    assert "frames" in window.progress_label.text() and "%" in window.progress_label.text()
    assert "running" in window.status_label.text() + window.message_label.text()
    resume.set()

    feeder.join(60)
    run = serving.wait_closed()
    qtbot.waitUntil(lambda: model.final and np.isfinite(window.map_panel.shown).all(), timeout=30_000)
    with PipelineClient(serving.server.query_address, timeout=10) as client:
        vbf = client.result("virtual", "vbf", run=run.uid)
        gr_at = client.pixel("snem", "gr", position=[3, 11], run=run.uid)
        rho = client.query("snem", "pearson", run=run.uid, position=[2, 5])["pearson"]
    np.testing.assert_array_equal(window.map_panel.shown, vbf.astype(np.float32))
    assert window.progress_label.text().startswith(f"{sim.n_frames} / {sim.n_frames}")
    assert "complete" in window.message_label.text() and "missing 0" in window.missing_label.text()

    # a plain click on pixel (3, 11): the raw pattern of frame 3*16+11 from the recording, its I(Q), G(r)
    qtbot.mouseClick(window.map_panel.graphics.viewport(), QtCore.Qt.MouseButton.LeftButton,
                     pos=pixel_point(window.map_panel, 3, 11))
    qtbot.waitUntil(lambda: window.last_inspection is not None, timeout=10_000)
    insp = window.last_inspection
    assert insp.position == (3, 11) and insp.indices == [3 * SCAN[1] + 11]
    with Recording(run.recording) as rec:
        recorded = rec.frame(3 * SCAN[1] + 11)
    np.testing.assert_array_equal(insp.frame, recorded)
    np.testing.assert_array_equal(recorded, sim.frames(3 * SCAN[1] + 11, 1)[0])
    np.testing.assert_array_equal(window.inspect_panel.frame, recorded)
    np.testing.assert_array_equal(insp.curves[("snem", "gr")], gr_at)
    assert ("snem", "iq") in insp.curves
    labels = [item.name() for item in window.inspect_panel.overlay_items[("snem", "gr")]]
    assert any(lab.startswith("Gaussian 1") for lab in labels) and "sum of Gaussians" in labels

    # a Ctrl-click sets the Pearson reference: the similarity map becomes the map shown
    qtbot.mouseClick(window.map_panel.graphics.viewport(), QtCore.Qt.MouseButton.LeftButton,
                     QtCore.Qt.KeyboardModifier.ControlModifier, pixel_point(window.map_panel, 2, 5))
    qtbot.waitUntil(lambda: window.map_key == ("snem", "pearson@(2,5)"), timeout=10_000)
    np.testing.assert_allclose(window.map_panel.shown, rho, rtol=1e-6)
    assert window.map_panel.shown[2, 5] == pytest.approx(1.0, abs=1e-5)
    assert window._item(("snem", "pearson@(2,5)")) is not None  # listed with the other maps

    # an ROI averages the patterns under it
    window.map_panel.roi.setPos((0, 0))
    window.map_panel.roi.setSize((2, 2))
    window.map_panel.roi_button.setChecked(True)
    qtbot.waitUntil(lambda: len(window.last_inspection.positions) == 4, timeout=10_000)
    with Recording(run.recording) as rec:
        mean = np.mean([rec.frame(i) for i in (0, 1, 16, 17)], axis=0)
    np.testing.assert_allclose(window.last_inspection.frame, mean)

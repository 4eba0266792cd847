"""Input-to-inspect latency while a replay streams at full speed, and the pipeline's rate with and without a viewer.

Times are printed (run with ``-s``), not asserted: they depend on the machine. What is asserted
is what must hold on any machine: every frame analysed, none missing, every click answered with
the recorded pattern.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from PySide6 import QtCore

from emlive.service.config import AnalyzerConfig
from emlive.simulators import SyntheticScan
from emlive.stream.publisher import FramePublisher
from emlive.stream.recorder import Recording
from emlive.viewer.model import PipelineModel
from emlive.viewer.window import ViewerWindow

from viewer_pipeline import Serving

SCAN = (128, 256)  # 32 768 frames of 32 x 32 per run
CHUNK = 256


def stream(address: str, frames: np.ndarray, rate: float | None = None) -> dict:
    """Send a whole scan (the same 256 frames over and over), as fast as taken or at ``rate`` frames/s."""
    t0 = time.perf_counter()
    with FramePublisher(address) as pub:
        pub.start(frames.shape[1:], "uint16", SCAN, chunk_frames=CHUNK)
        for first in range(0, SCAN[0] * SCAN[1], CHUNK):
            if rate:
                delay = t0 + first / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            pub.send_chunk(frames, first)
        end = pub.end()
    return {"seconds": time.perf_counter() - t0, "end": end}


def pixel_point(panel, y: int, x: int) -> QtCore.QPoint:
    return panel.graphics.mapFromScene(panel.image.mapToScene(QtCore.QPointF(x + 0.5, y + 0.5)))


def test_clicks_are_answered_while_a_scan_streams_at_10k_frames_per_s(qtbot, tmp_path):
    frames = SyntheticScan(scan_shape=(1, CHUNK), frame_shape=(32, 32), dose=300, seed=2).frames(0, CHUNK)
    frames = frames.astype(np.uint16)
    n = SCAN[0] * SCAN[1]
    s = Serving(tmp_path / "data", executor="processes", analyzers=[AnalyzerConfig("virtual")])
    try:
        stream(s.server.data_address, frames)  # warm-up: the workers compile their kernels
        stream(s.server.data_address, frames)  # the pipeline at full speed, no viewer
        alone = s.wait_closed(2)
        model = PipelineModel(s.server.query_address)
        win = ViewerWindow(model, result="virtual/vbf")
        qtbot.addWidget(win)
        win.resize(1400, 900)
        win.show()
        qtbot.waitUntil(lambda: model.connected and win.map_panel.shown is not None, timeout=15_000)
        feeder = threading.Thread(target=stream, args=(s.server.data_address, frames), daemon=True)
        feeder.start()  # full speed again, the viewer watching
        while feeder.is_alive():
            qtbot.wait(20)
        watched = s.wait_closed(3)
        qtbot.waitUntil(lambda: model.final and model.run_uid == watched.uid, timeout=20_000)

        win.tick_seconds.clear()
        snapshots0, sent0 = model.snapshots, s.server.snapshots_sent
        feeder = threading.Thread(target=stream, args=(s.server.data_address, frames, 10_000.0), daemon=True)
        feeder.start()
        qtbot.waitUntil(lambda: model.run_uid != watched.uid and model.progress.get("frames_analyzed", 0)
                        > 4 * SCAN[1], timeout=30_000)
        clicks, answers = [], []
        rng = np.random.default_rng(0)
        while feeder.is_alive() and len(clicks) < 40:
            rows = model.progress.get("frames_analyzed", 0) // SCAN[1]
            y, x = int(rng.integers(0, max(1, rows - 2))), int(rng.integers(0, SCAN[1]))
            before = win.inspected_at
            t0 = time.perf_counter()
            qtbot.mouseClick(win.map_panel.graphics.viewport(), QtCore.Qt.MouseButton.LeftButton,
                             pos=pixel_point(win.map_panel, y, x))
            qtbot.waitUntil(lambda: win.inspected_at != before, timeout=10_000)
            clicks.append(win.inspected_at - t0)
            insp = win.last_inspection
            answers.append((insp.indices[0], insp.frame, insp.errors))
            qtbot.wait(50)
        feeder.join(120)
        paced = s.wait_closed(4)
        qtbot.waitUntil(lambda: model.final and model.run_uid == paced.uid, timeout=20_000)
        received, sent = model.snapshots - snapshots0, s.server.snapshots_sent - sent0
        ticks = np.asarray(win.tick_seconds)
        win.close()
    finally:
        s.stop()
    for run in (alone, watched, paced):
        assert run.frames_analyzed == n and run.summary()["frames_missing"] == 0
    assert len(clicks) >= 5, "the scan ended before the clicks could be made"
    with Recording(paced.recording) as rec:
        for index, frame, errors in answers:
            assert not errors
            np.testing.assert_array_equal(frame, rec.frame(index))
    lat = np.asarray(clicks) * 1000
    rate = {k: r.summary()["frames_per_s"] for k, r in (("alone", alone), ("watched", watched), ("paced", paced))}
    print(f"\n[viewer latency] {n} frames of 32x32 per run, virtual analyzer, 2 worker processes, recorded")
    print(f"  full speed: {rate['alone']:,.0f} frames/s without a viewer, {rate['watched']:,.0f} frames/s "
          f"with the viewer open")
    print(f"  paced at 10 000 frames/s with the viewer clicked: {rate['paced']:,.0f} frames/s")
    print(f"  click -> pattern drawn: n={lat.size}, median {np.median(lat):.1f} ms, 90th percentile "
          f"{np.percentile(lat, 90):.1f} ms, max {lat.max():.1f} ms")
    print(f"  GUI tick (poll + redraw): median {np.median(ticks) * 1000:.2f} ms, max {ticks.max() * 1000:.1f} ms "
          f"over {ticks.size} ticks")
    print(f"  snapshots: {sent} sent by the pipeline, {received} received by the viewer")

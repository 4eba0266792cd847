"""Nothing there, a pipeline appearing, restarting; ``emlive view --screenshot`` from the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emlive.service.cli import build_parser
from emlive.stream.replay import replay
from emlive.viewer.model import PipelineModel, snapshot_address_for
from emlive.viewer.window import ViewerWindow

from viewer_pipeline import Serving

EMLIVE = [sys.executable, "-m", "emlive.service.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_snapshot_address_takes_the_host_of_the_query_address():
    assert snapshot_address_for("tcp://10.0.0.5:5556", "tcp://127.0.0.1:5557") == "tcp://10.0.0.5:5557"
    assert snapshot_address_for("tcp://127.0.0.1:6000", "tcp://127.0.0.1:6001") == "tcp://127.0.0.1:6001"
    assert snapshot_address_for("ipc:///tmp/q", "ipc:///tmp/s") == "ipc:///tmp/s"


def test_no_pipeline_then_one_appears_then_it_restarts(qtbot, recording, tmp_path):
    query = f"tcp://127.0.0.1:{free_port()}"
    model = PipelineModel(query, retry=0.3)
    win = ViewerWindow(model)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: "no pipeline at" in win.message_label.text(), timeout=10_000)
    assert query in win.message_label.text() and "retrying" in win.message_label.text()
    assert not model.connected and win.map_panel.shown is None

    first = Serving(tmp_path / "a", query_address=query)
    try:
        qtbot.waitUntil(lambda: "waiting for a run" in win.message_label.text(), timeout=10_000)
        end = replay(recording, first.server.data_address)
        first.wait_closed()
        qtbot.waitUntil(lambda: model.run_uid == end.run_uid and win.map_panel.shown is not None
                        and np.isfinite(win.map_panel.shown).all(), timeout=20_000)
    finally:
        first.stop()
    qtbot.waitUntil(lambda: "no pipeline at" in win.message_label.text(), timeout=10_000)

    second = Serving(tmp_path / "b", query_address=query)  # same query port, a new snapshot port
    try:
        qtbot.waitUntil(lambda: model.connected, timeout=10_000)
        assert model.snapshot_address == second.server.snapshot_address
        again = replay(recording, second.server.data_address)
        second.wait_closed()
        qtbot.waitUntil(lambda: model.run_uid == again.run_uid and model.final, timeout=20_000)
        assert "complete" in win.message_label.text()
        assert np.isfinite(win.map_panel.shown).all()
    finally:
        second.stop()
        win.close()


def test_view_screenshot_says_clearly_when_nothing_is_there(tmp_path):
    out = subprocess.run(EMLIVE + ["view", "--connect", f"tcp://127.0.0.1:{free_port()}", "--screenshot",
                                   str(tmp_path / "shot.png"), "--timeout", "1.5"],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2 and "no pipeline at" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "shot.png").exists()


def test_view_screenshot_renders_a_connected_viewer(recording, tmp_path):
    s = Serving(tmp_path / "data")
    try:
        replay(recording, s.server.data_address)
        s.wait_closed()
        shot = tmp_path / "shot.png"
        out = subprocess.run(EMLIVE + ["view", "--connect", s.server.query_address, "--screenshot", str(shot),
                                       "--result", "snem/r_max"],
                             capture_output=True, text=True, env=ENV, timeout=120)
    finally:
        s.stop()
    assert out.returncode == 0, out.stderr[-2000:]
    with Image.open(shot) as im:
        img = np.asarray(im.convert("RGB"))
    assert img.shape == (900, 1400, 3) and img.std() > 10


def test_view_and_demo_view_are_on_the_command_line():
    parser = build_parser()
    args = parser.parse_args(["view", "--connect", "tcp://127.0.0.1:7000", "--result", "snem/gr_mean"])
    assert args.connect == "tcp://127.0.0.1:7000" and args.result == "snem/gr_mean" and args.screenshot is None
    assert parser.parse_args(["demo", "--view"]).view and not parser.parse_args(["demo"]).view
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["view", "--help"])
    assert exit_info.value.code == 0


def test_a_result_that_is_not_analyzer_slash_name_is_refused(qtbot):
    model = PipelineModel(f"tcp://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ValueError, match="analyzer/name"):
            ViewerWindow(model, result="r_max")
    finally:
        model.close()

"""Fixtures of the viewer tests: the SNEM laminate, a small recording of it, a pipeline serving in a thread."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from emlive.simulators import SnemLaminate
from emlive.stream.protocol import PROTOCOL_VERSION, Start
from emlive.stream.recorder import Recorder

sys.path.insert(0, str(Path(__file__).parent))  # the helpers module, as tests/stream does
from viewer_pipeline import SCAN, Serving, laminate_calibration  # noqa: E402


@pytest.fixture(scope="session")
def laminate():
    return SnemLaminate(scan_shape=SCAN, seed=4, dose=2e5)


@pytest.fixture(scope="session")
def recording(laminate, tmp_path_factory):
    sim = laminate
    start = Start(version=PROTOCOL_VERSION, run_uid="viewer-rec", frame_shape=sim.frame_shape, dtype="uint16",
                  scan_shape=SCAN, chunk_frames=16, calibration=laminate_calibration(sim))
    path = tmp_path_factory.mktemp("rec") / "raw.h5"
    with Recorder(path, start) as rec:
        for first in range(0, sim.n_frames, 16):
            rec.write(first, sim.frames(first, 16))
    return path


@pytest.fixture
def serving(tmp_path):
    s = Serving(tmp_path / "data")
    yield s
    s.stop()

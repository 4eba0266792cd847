"""AETProjectionSource: one ADF-STEM image per tilt, through aet_tilt_series into the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from ophyd_async.core import init_devices

from emlive.devices import (AETProjectionSource, Camera, FrameSource, ScanGenerator, SimCameraDriver,
                            SimScanGeneratorDriver, SimStageDriver, Stage, aet_tilt_series)
from emlive.simulators import AETParticle
from emlive.stream.recorder import Recording

ANGLES = [-45.0, -15.0, 15.0, 45.0]


@pytest.fixture(scope="module")
def particle():
    return AETParticle(radius_A=10.0, image_shape=(48, 48), pixel_A=0.5, seed=3)


def test_source_gives_the_projection_of_each_tilt(particle):
    source = AETProjectionSource(particle, ANGLES)
    assert isinstance(source, FrameSource) and source.frame_shape == (48, 48) and source.n_frames == 4
    np.testing.assert_array_equal(source.frames(1, 2), particle.tilt_series(ANGLES[1:3]).astype(np.float32))
    with pytest.raises(ValueError, match="outside"):
        source.frames(3, 2)
    with pytest.raises(TypeError, match="AETParticle"):
        AETProjectionSource(object(), ANGLES)


def test_aet_tilt_series_records_one_image_per_tilt(plain_RE, pipeline, particle, workdir):
    source = AETProjectionSource(particle, ANGLES)
    stage_driver = SimStageDriver()
    cam_driver = SimCameraDriver(source, pipeline.data_address, query_address=pipeline.query_address,
                                 position_sources={"tilt": lambda: stage_driver.position("tilt")})
    with init_devices():
        camera = Camera(cam_driver, workdir / "data")
        scan = ScanGenerator(SimScanGeneratorDriver(cam_driver))
        stage = Stage(stage_driver)
    plain_RE(aet_tilt_series(camera, scan, stage, angles=ANGLES, shape=(1, 1), step=0.5, dwell=1e-3))
    run = pipeline.pipeline.runs[camera.run_uid]
    assert run.status == "complete" and run.start.scan_shape == (4, 1, 1)
    with Recording(camera.recording) as rec:
        frames, _, positions = rec.read(0, 4)
    # each frame is the particle's projection at the stage's tilt: atoms, Z-contrast, shifts, noise
    np.testing.assert_array_equal(frames, particle.tilt_series(ANGLES).astype(np.float32))
    np.testing.assert_array_equal(positions["tilt"], ANGLES)

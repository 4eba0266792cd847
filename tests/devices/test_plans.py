"""Each plan against the simulated devices, a real pipeline host and an embedded Tiled catalog."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from emlive.devices import aet_tilt_series, ecm_series, eds_tilt_series, fem_map, snem_map
from emlive.stream import Calibration

CAL = Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.02, camera_length_m=0.3)
SAMPLE = {"name": "Ni/MG/Ni laminate", "composition": {"Ni": 0.8, "Zr": 0.2}}


def pipeline_run(pipeline, uid):
    runs = pipeline.pipeline.runs
    assert uid in runs, f"the pipeline has no run {uid}: {list(runs)}"
    return runs[uid]


def stream_datum_frames(docs):
    return sum(d["indices"]["stop"] - d["indices"]["start"] for d in docs.named("stream_datum"))


def check_one_run(docs):
    assert len(docs.named("start")) == 1 and len(docs.named("stop")) == 1
    assert docs.named("stop")[0]["exit_status"] == "success"


def test_snem_map_records_every_frame_and_reads_back_through_tiled(RE, devices, pipeline, catalog, phantom):
    d = devices
    (uid,) = RE(snem_map(d["camera"], d["scan"], d["precession"], d["stage"], shape=(8, 8), step=2.0, dwell=1e-3,
                         calibration=CAL, sample=SAMPLE, md={"operator": "test"}))
    docs = RE.docs
    check_one_run(docs)
    (start,) = docs.named("start")
    assert start["plan_name"] == "snem_map" and start["operator"] == "test"
    assert start["shape"] == [8, 8] and start["extents"] == [[0.0, 14.0], [0.0, 14.0]]
    assert start["hints"]["gridding"] == "rectilinear"
    assert start["calibration"]["beam_energy_kev"] == 200.0
    assert start["calibration"]["precession_angle_deg"] == 0.5  # precession on: added from the unit
    assert start["sample"] == SAMPLE
    (resource,) = docs.named("stream_resource")
    camera = d["camera"]
    assert resource["uri"] == camera.recording.resolve().as_uri()
    assert resource["parameters"]["dataset"] == "/entry/data/data"
    assert list(resource["parameters"]["chunk_shape"]) == [1, 32, 32]
    assert stream_datum_frames(docs) == 64
    assert all("camera" not in e["data"] for e in docs.named("event"))  # frames never pass through the RE

    # the frame stream got the same metadata, and the pipeline recorded the whole scan
    rec = pipeline_run(pipeline, camera.run_uid)
    assert rec.status == "complete" and rec.frames_recorded == 64 == rec.frames_sent
    assert rec.start.scan_shape == (8, 8)
    assert rec.start.calibration.beam_energy_kev == 200.0 and rec.start.calibration.precession_angle_deg == 0.5
    assert rec.start.sample == SAMPLE

    run = catalog[uid]
    assert run.metadata["start"]["shape"] == [8, 8]
    assert set(run) >= {"primary", "baseline"}
    assert run["baseline"]["stage-tilt"].read().shape == (2,)
    frames = run["primary"]["camera"]
    assert frames.shape == (64, 32, 32)
    np.testing.assert_array_equal(frames.read(), phantom.frames(0, 64))


def test_fem_map_is_a_raster_with_fem_metadata(RE, devices, pipeline):
    d = devices
    (uid,) = RE(fem_map(d["camera"], d["scan"], d["precession"], d["stage"], shape=(4, 8), step=5.0, dwell=1e-3))
    (start,) = RE.docs.named("start")
    assert start["plan_name"] == "fem_map" and start["technique"] == "fem" and start["num_points"] == 32
    assert stream_datum_frames(RE.docs) == 32
    assert pipeline_run(pipeline, d["camera"].run_uid).frames_recorded == 32


def test_ecm_series_sets_temperature_then_records_a_time_series(RE, devices, pipeline, catalog, phantom):
    d = devices
    (uid,) = RE(ecm_series(d["camera"], d["heater"], n_frames=20, frame_time=1e-3, temperature=420.0,
                           sample={"name": "nanowire"}))
    check_one_run(RE.docs)
    (start,) = RE.docs.named("start")
    assert start["plan_name"] == "ecm_series" and start["temperature_K"] == 420.0 and start["shape"] == [20]
    rec = pipeline_run(pipeline, d["camera"].run_uid)
    assert rec.status == "complete" and rec.frames_recorded == 20 and rec.start.scan_shape == (20,)
    assert rec.start.plan["temperature_K"] == 420.0
    run = catalog[uid]
    np.testing.assert_allclose(run["baseline"]["heater-readback"].read(), [420.0, 420.0])
    np.testing.assert_array_equal(run["primary"]["camera"].read(), phantom.frames(0, 20))


@pytest.mark.parametrize("plan, kind", [(eds_tilt_series, "eds"), (aet_tilt_series, "aet")])
def test_tilt_series_is_one_run_with_a_tilt_stream_and_one_raster_per_tilt(RE, devices, pipeline, catalog,
                                                                             phantom, plan, kind):
    d = devices
    angles = [-30.0, 0.0, 45.0]
    (uid,) = RE(plan(d["camera"], d["scan"], d["stage"], angles=angles, shape=(8, 8), step=2.0, dwell=1e-3,
                     calibration=CAL))
    docs = RE.docs
    check_one_run(docs)
    (start,) = docs.named("start")
    assert start["tomo"]["type"] == f"{kind}_tilt" and start["tomo"]["shape"] == [3, 8, 8]
    assert start["tomo"]["angles"] == angles
    assert len(docs.named("stream_resource")) == 1
    assert stream_datum_frames(docs) == 3 * 64
    # stream_datum ranges tile the frames in order
    ranges = [(s["indices"]["start"], s["indices"]["stop"]) for s in docs.named("stream_datum")]
    assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))

    camera = d["camera"]
    rec = pipeline_run(pipeline, camera.run_uid)
    assert rec.status == "complete" and rec.frames_recorded == 192
    assert rec.start.boundary_frames == 64 and rec.start.positions == ["tilt"]
    assert rec.start.scan_shape == (3, 8, 8)
    with h5py.File(camera.recording, "r") as f:
        tilt = f["/entry/data/positions/tilt"][()]
        start_json = json.loads(f["/entry"].attrs["start_json"])
    np.testing.assert_array_equal(tilt, np.repeat(angles, 64))
    assert start_json["calibration"]["beam_energy_kev"] == 200.0

    run = catalog[uid]
    np.testing.assert_array_equal(run["tilt"]["stage-tilt"].read(), angles)
    frames = run["primary"]["camera"]
    assert frames.shape == (192, 32, 32)
    expected = phantom.frames(0, 64)
    np.testing.assert_array_equal(frames[64:128], expected)  # the phantom repeats at every tilt
    np.testing.assert_array_equal(frames[128:], expected)


def test_a_failed_tilt_aborts_the_stream_run_and_the_bluesky_run(RE, devices, pipeline):
    from bluesky.utils import FailedStatus

    d = devices
    with pytest.raises(FailedStatus):
        RE(eds_tilt_series(d["camera"], d["scan"], d["stage"], angles=[0.0, 80.0], shape=(8, 8), step=2.0,
                           dwell=1e-3))  # 80° is beyond the holder's ±70°
    (stop,) = RE.docs.named("stop")
    assert stop["exit_status"] == "fail"
    assert stream_datum_frames(RE.docs) == 64  # the first tilt was collected
    camera = d["camera"]
    assert camera.driver.wait_recorded(timeout=30)["status"] == "aborted"
    rec = pipeline_run(pipeline, camera.run_uid)
    assert rec.frames_recorded == 64

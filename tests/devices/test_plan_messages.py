"""Plans checked at the message level: no RunEngine, no pipeline (bluesky style: list(plan(...)))."""

from __future__ import annotations

import pytest
from bluesky import RunEngine
from ophyd_async.core import init_devices

from emlive.devices import (
    Camera,
    CameraTriggerInfo,
    Heater,
    PrecessionUnit,
    Raster,
    ScanGenerator,
    SimCameraDriver,
    SimHeaterDriver,
    SimPrecessionDriver,
    SimScanGeneratorDriver,
    SimStageDriver,
    Stage,
    aet_tilt_series,
    ecm_series,
    eds_tilt_series,
    fem_map,
    snem_map,
)
from emlive.simulators import SyntheticScan


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    RunEngine({})  # owns the event loop the devices are connected in
    # a data address nobody listens on: these tests never send a frame
    driver = SimCameraDriver(SyntheticScan((2, 2), (16, 16)), "tcp://127.0.0.1:1")
    with init_devices():
        camera = Camera(driver, tmp_path_factory.mktemp("data"))
        scan = ScanGenerator(SimScanGeneratorDriver(driver))
        precession = PrecessionUnit(SimPrecessionDriver())
        stage = Stage(SimStageDriver())
        heater = Heater(SimHeaterDriver())
    yield camera, scan, precession, stage, heater
    driver.close()


def messages(plan, limit: int = 10_000) -> list:
    """The plan's messages, answering ``wait`` with "done" (``collect_while_completing``
    loops until a wait says its group is done; ``list(plan)`` would answer None forever)."""
    out, reply = [], None
    while True:
        try:
            msg = plan.send(reply)
        except StopIteration:
            return out
        out.append(msg)
        reply = True if msg.command == "wait" else None
        assert len(out) < limit, "the plan does not end"


def test_ecm_series_moves_the_heater_then_prepares_after_stage_and_open_run(dev):
    camera, _, _, _, heater = dev
    msgs = messages(ecm_series(camera, heater, n_frames=10, frame_time=0.01, temperature=400.0))
    names = [m.command for m in msgs]
    assert names.index("set") < names.index("stage") < names.index("open_run") < names.index("prepare")
    assert msgs[0].obj is heater and msgs[0].args == (400.0,)
    (prep,) = [m for m in msgs if m.command == "prepare"]
    info = prep.args[0]
    assert isinstance(info, CameraTriggerInfo)
    assert info.number_of_events == 10 and info.livetime == 0.01 and info.scan_shape == (10,)
    assert names.index("kickoff") < names.index("complete") < names.index("close_run") < names.index("unstage")


def test_tilt_series_tilts_reads_and_flies_once_per_angle(dev):
    camera, scan, _, stage, _ = dev
    msgs = messages(eds_tilt_series(camera, scan, stage, angles=[-10, 0, 10], shape=(2, 3), step=1.0, dwell=0.01))
    names = [m.command for m in msgs]
    assert names.count("open_run") == 1
    cam_prep = [m for m in msgs if m.command == "prepare" and m.obj is camera]
    assert len(cam_prep) == 1  # one stream run for the whole series
    info = cam_prep[0].args[0]
    assert info.number_of_events == 18 and info.boundary_frames == 6 and info.positions == ("tilt",)
    assert info.scan_shape == (3, 2, 3)
    (scan_prep,) = [m for m in msgs if m.command == "prepare" and m.obj is scan]
    assert scan_prep.args[0] == Raster((2, 3), 1.0, 0.01)
    tilt_sets = [m.args[0] for m in msgs if m.command == "set" and m.obj is stage.tilt]
    assert tilt_sets == [-10.0, 0.0, 10.0]
    assert [m.kwargs.get("name") for m in msgs if m.command == "create"] == ["tilt"] * 3
    assert sum(1 for m in msgs if m.command == "kickoff" and m.obj is scan) == 3
    assert names.index("open_run") < names.index("prepare")


def test_snem_map_prepares_the_camera_for_external_triggers_from_the_scan(dev):
    camera, scan, precession, stage, _ = dev
    msgs = messages(snem_map(camera, scan, precession, stage, shape=(3, 4), step=2.0, dwell=0.001))
    (prep,) = [m for m in msgs if m.command == "prepare" and m.obj is camera]
    assert prep.args[0].number_of_events == 12 and prep.args[0].trigger.name == "EXTERNAL_EDGE"
    (open_run,) = [m for m in msgs if m.command == "open_run"]
    assert open_run.kwargs["shape"] == [3, 4] and open_run.kwargs["hints"]["gridding"] == "rectilinear"
    names = [m.command for m in msgs]
    assert names.index("open_run") < names.index("prepare")


@pytest.mark.parametrize("plan", [snem_map, fem_map])
@pytest.mark.parametrize("kwargs, error, match", [
    ({"shape": (0, 4)}, ValueError, "shape"),
    ({"shape": (4,)}, ValueError, "shape"),
    ({"shape": (4.0, 4)}, ValueError, "shape"),
    ({"step": 0}, ValueError, "step"),
    ({"dwell": float("nan")}, ValueError, "dwell"),
    ({"calibration": {"beam_energy_kev": -1}}, ValueError, "calibration"),
    ({"calibration": 300}, TypeError, "calibration"),
    ({"sample": "Ni"}, TypeError, "sample"),
    ({"md": ["x"]}, TypeError, "md"),
])
def test_raster_maps_reject_bad_arguments_before_any_message(dev, plan, kwargs, error, match):
    camera, scan, precession, stage, _ = dev
    args = {"shape": (2, 2), "step": 1.0, "dwell": 0.01, **kwargs}
    gen = plan(camera, scan, precession, stage, **args)
    with pytest.raises(error, match=match):
        next(gen)


def test_raster_map_rejects_a_wrong_device(dev):
    camera, scan, precession, stage, _ = dev
    with pytest.raises(TypeError, match="scan must be a ScanGenerator"):
        next(snem_map(camera, stage, precession, stage, shape=(2, 2), step=1.0, dwell=0.01))


@pytest.mark.parametrize("kwargs, match", [
    ({"n_frames": 0}, "n_frames"), ({"n_frames": 2.5}, "n_frames"), ({"frame_time": -1}, "frame_time"),
    ({"temperature": 0}, "temperature"), ({"settle_time": -1}, "settle_time"),
])
def test_ecm_series_rejects_bad_arguments(dev, kwargs, match):
    camera, _, _, _, heater = dev
    args = {"n_frames": 4, "frame_time": 0.01, "temperature": 300.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        next(ecm_series(camera, heater, **args))


@pytest.mark.parametrize("plan", [eds_tilt_series, aet_tilt_series])
@pytest.mark.parametrize("angles", [[], "0,10", [0, float("inf")], 5])
def test_tilt_series_reject_bad_angles(dev, plan, angles):
    camera, scan, _, stage, _ = dev
    with pytest.raises(ValueError, match="angles"):
        next(plan(camera, scan, stage, angles=angles, shape=(2, 2), step=1.0, dwell=0.01))

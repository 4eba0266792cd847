"""The simple devices and the simulated drivers behind them."""

from __future__ import annotations

import math

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.utils import FailedStatus
from ophyd_async.core import init_devices

from emlive.devices import (
    EDSDetector,
    HAADFDetector,
    Heater,
    PrecessionUnit,
    SimCameraDriver,
    SimHeaterDriver,
    SimPointDriver,
    SimPrecessionDriver,
    SimStageDriver,
    Stage,
)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def RE():
    re = RunEngine({})
    re.docs = []
    re.subscribe(lambda name, doc: re.docs.append((name, doc)))
    return re


def test_stage_moves_within_limits_and_refuses_beyond(RE):
    driver = SimStageDriver(limits={"tilt": (-60, 60)})
    with init_devices():
        stage = Stage(driver)
    RE(bps.mv(stage.tilt, 45.0, stage.x, -12.5))
    assert driver.position("tilt") == 45.0 and driver.position("x") == -12.5
    with pytest.raises(FailedStatus) as info:
        RE(bps.mv(stage.tilt, 61.0))
    assert isinstance(info.value.__cause__, ValueError) and "outside its limits" in str(info.value.__cause__)
    assert driver.position("tilt") == 45.0
    with pytest.raises(ValueError, match="unknown stage axis"):
        driver.move("phi", 1.0)


def test_stage_reads_where_the_hardware_is_not_where_it_was_sent(RE):
    driver = SimStageDriver()
    with init_devices():
        stage = Stage(driver)
    driver.move("x", 5.0)  # moved outside bluesky (hand set, vendor GUI)
    RE(bp.count([stage]))
    (event,) = [d for n, d in RE.docs if n == "event"]
    assert event["data"]["stage-x"] == 5.0


def test_precession_unit_writes_through_to_the_driver(RE):
    driver = SimPrecessionDriver()
    with init_devices():
        prec = PrecessionUnit(driver)
    RE(bps.mv(prec.angle, 0.8, prec.frequency, 250.0, prec.enabled, True))
    assert (driver.angle, driver.frequency, driver.enabled) == (0.8, 250.0, True)
    RE(bp.count([prec]))
    (desc,) = [d for n, d in RE.docs if n == "descriptor"]
    assert desc["configuration"]["prec"]["data"]["prec-frequency"] == 250.0
    (event,) = [d for n, d in RE.docs if n == "event"]
    assert event["data"]["prec-angle"] == 0.8


def test_sim_heater_approaches_the_set_point_to_first_order():
    clock = Clock()
    heater = SimHeaterDriver(temperature=300.0, tau=2.0, clock=clock)
    heater.setpoint = 400.0
    clock.t = 2.0
    assert heater.readback() == pytest.approx(400.0 - 100.0 * math.exp(-1.0))
    clock.t = 40.0
    assert heater.readback() == pytest.approx(400.0, abs=1e-6)


def test_sim_heater_ramps_the_set_point_then_follows():
    clock = Clock()
    heater = SimHeaterDriver(temperature=300.0, tau=0.0, ramp_rate=10.0, clock=clock)
    heater.setpoint = 400.0
    clock.t = 5.0
    assert heater.readback() == pytest.approx(350.0)
    clock.t = 20.0
    assert heater.readback() == pytest.approx(400.0)
    lagging = SimHeaterDriver(temperature=300.0, tau=1.0, ramp_rate=10.0, clock=clock)
    lagging.setpoint = 400.0
    clock.t += 5.0
    assert 300.0 < lagging.readback() < 350.0  # behind the ramp by about rate * tau


def test_heater_move_waits_until_settled(RE):
    driver = SimHeaterDriver(temperature=300.0, tau=0.0)
    with init_devices():
        heater = Heater(driver, tolerance=0.1)
    RE(bps.mv(heater, 500.0))
    assert driver.readback() == 500.0 and driver.setpoint == 500.0


def test_heater_move_times_out_when_the_holder_never_gets_there(RE):
    clock = Clock()  # frozen: the read-back never moves
    with init_devices():
        heater = Heater(SimHeaterDriver(temperature=300.0, tau=1.0, clock=clock), timeout=0.05, poll_period=0.01)
    with pytest.raises(FailedStatus) as info:
        RE(bps.mv(heater, 500.0))
    assert isinstance(info.value.__cause__, TimeoutError)


def test_point_detectors_read_their_callables(RE):
    calls = []

    def haadf_value():  # e.g. a phantom's HAADF map at the probe position
        calls.append(1)
        return 10.0 * len(calls)

    with init_devices():
        haadf = HAADFDetector(SimPointDriver(haadf_value))
        eds = EDSDetector({"Ag_L": SimPointDriver(lambda: 3.0), "Au_M": SimPointDriver(lambda: 4.0)})
    RE(bp.count([haadf, eds], num=2))
    events = [d["data"] for n, d in RE.docs if n == "event"]
    counts = [e["haadf-counts"] for e in events]
    assert counts[0] > 0 and counts[1] > counts[0]  # read afresh from the callable at every event
    assert events[0]["eds-Ag_L"] == 3.0 and events[0]["eds-Au_M"] == 4.0
    with pytest.raises(ValueError, match="lines"):
        EDSDetector({"Ag L": SimPointDriver(lambda: 0.0)})


def test_camera_driver_needs_a_frame_source():
    with pytest.raises(TypeError, match="frames"):
        SimCameraDriver(np.zeros((4, 4)), "tcp://127.0.0.1:1")


def test_camera_driver_refuses_triggers_beyond_what_was_armed():
    from emlive.devices import ArmSettings
    from emlive.simulators import SyntheticScan

    import zmq

    sink = zmq.Context.instance().socket(zmq.PULL)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    driver = SimCameraDriver(SyntheticScan((2, 2), (8, 8)), f"tcp://127.0.0.1:{port}")
    try:
        with pytest.raises(RuntimeError, match="not armed"):
            driver.trigger(1).result(timeout=10)
        driver.arm(ArmSettings(n_frames=4, scan_shape=(2, 2), run_uid="r1"))
        assert driver.trigger(3).result(timeout=10) == 3
        with pytest.raises(ValueError, match="exceed"):
            driver.trigger(2).result(timeout=10)
    finally:
        driver.close()
        sink.close(linger=0)

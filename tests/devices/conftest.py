"""Fixtures: a real pipeline host (inline executor), an embedded Tiled catalog, simulated devices."""

from __future__ import annotations

import threading

import event_model
import pytest
from bluesky import RunEngine
from ophyd_async.core import init_devices

from emlive.devices import (
    Camera,
    Heater,
    PrecessionUnit,
    ScanGenerator,
    SimCameraDriver,
    SimHeaterDriver,
    SimPrecessionDriver,
    SimScanGeneratorDriver,
    SimStageDriver,
    Stage,
    start_catalog,
    subscribe_catalog,
)
from emlive.service.app import make_server, shutdown
from emlive.service.config import AnalyzerConfig, ServiceConfig
from emlive.simulators import SyntheticScan

# bluesky 1.15.1's TiledWriter calls tiled 0.2.20's append_partition with the old argument order
# (bluesky/callbacks/tiled_writer.py); harmless, and not ours to fix.
TILED_ARG_ORDER = "ignore:The order of arguments has changed:DeprecationWarning"


def pytest_collection_modifyitems(config, items):
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.filterwarnings(TILED_ARG_ORDER))


SCAN = (8, 8)
FRAME = (32, 32)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("devices")


@pytest.fixture(scope="module")
def pipeline(workdir):
    """A pipeline host on free loopback ports, recording to workdir/data, served in a thread."""
    cfg = ServiceConfig(data_address="tcp://127.0.0.1:0", query_address="tcp://127.0.0.1:0",
                        snapshot_address="tcp://127.0.0.1:0", data_dir=str(workdir / "data"), executor="inline",
                        analyzers=[AnalyzerConfig("virtual", {"bf_radius": 3, "adf_inner": 6, "adf_outer": 14})])
    server = make_server(cfg)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    server.stop()
    thread.join()
    shutdown(server)


@pytest.fixture(scope="module")
def catalog(workdir):
    """An embedded Tiled server (module-scoped: it takes seconds to start)."""
    client, server = start_catalog(workdir / "catalog", readable_storage=[workdir / "data"])
    yield client
    client.context.close()
    server.close()


class Documents(list):
    """Every document the RunEngine emitted, validated against event-model's schemas."""

    __hash__ = object.__hash__  # the RunEngine keeps callbacks in a dict

    def __call__(self, name, doc):
        event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
        self.append((name, doc))

    def named(self, name):
        return [d for n, d in self if n == name]


@pytest.fixture
def RE(catalog):
    re = RunEngine({})
    re.docs = Documents()
    re.subscribe(re.docs)
    subscribe_catalog(re, catalog)
    yield re
    if re.state != "idle":
        re.halt()


@pytest.fixture
def phantom():
    return SyntheticScan(scan_shape=SCAN, frame_shape=FRAME, dose=200, seed=3)


@pytest.fixture
def devices(RE, pipeline, phantom, workdir):
    stage_driver = SimStageDriver()
    cam_driver = SimCameraDriver(phantom, pipeline.data_address, query_address=pipeline.query_address,
                                 chunk_frames=16, frame_time=0.0,
                                 position_sources={"tilt": lambda: stage_driver.position("tilt")})
    with init_devices():
        camera = Camera(cam_driver, workdir / "data")
        scan = ScanGenerator(SimScanGeneratorDriver(cam_driver))
        precession = PrecessionUnit(SimPrecessionDriver(angle=0.5, frequency=100.0, enabled=True))
        stage = Stage(stage_driver)
        heater = Heater(SimHeaterDriver(temperature=295.0, tau=0.0))
    yield {"camera": camera, "scan": scan, "precession": precession, "stage": stage, "heater": heater}
    cam_driver.close()


@pytest.fixture
def plain_RE():
    """A RunEngine without the Tiled catalog (which takes seconds to start): documents kept by name."""
    re = RunEngine({})
    re.docs = {}
    re.subscribe(lambda name, doc: re.docs.setdefault(name, []).append(doc))
    yield re
    if re.state != "idle":
        re.halt()

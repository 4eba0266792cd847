"""ophyd-async devices and Bluesky plans of the instrument, with simulated drivers.

Imports only ``emlive.stream`` and ``emlive.simulators`` of emlive (tests/test_layers.py).
"""

from .camera import DATASET, CamAcquireLogic, Camera, CamDataLogic, CameraTriggerInfo, CamTriggerLogic
from .catalog import connect_catalog, start_catalog, subscribe_catalog
from .drivers import (
    ArmSettings,
    CameraDriver,
    FrameSource,
    HeaterDriver,
    PointDriver,
    PrecessionDriver,
    ScanGeneratorDriver,
    SimCameraDriver,
    SimHeaterDriver,
    SimPointDriver,
    SimPrecessionDriver,
    SimScanGeneratorDriver,
    SimStageDriver,
    StageDriver,
)
from .aet_source import AETProjectionSource
from .eds_source import EDSSpectrumSource
from .heater import Heater
from .plans import aet_tilt_series, ecm_series, eds_tilt_series, fem_map, snem_map
from .point_detectors import EDSDetector, HAADFDetector
from .precession import PrecessionUnit
from .scan import Raster, ScanGenerator
from .stage import Stage

__all__ = [
    "DATASET", "Camera", "CameraTriggerInfo", "CamAcquireLogic", "CamDataLogic", "CamTriggerLogic",
    "Stage", "PrecessionUnit", "ScanGenerator", "Raster", "Heater", "HAADFDetector", "EDSDetector",
    "ArmSettings", "CameraDriver", "FrameSource", "StageDriver", "PrecessionDriver", "ScanGeneratorDriver",
    "HeaterDriver", "PointDriver", "SimCameraDriver", "SimStageDriver", "SimPrecessionDriver",
    "SimScanGeneratorDriver", "SimHeaterDriver", "SimPointDriver", "EDSSpectrumSource", "AETProjectionSource",
    "snem_map", "fem_map", "ecm_series", "eds_tilt_series", "aet_tilt_series",
    "start_catalog", "connect_catalog", "subscribe_catalog",
]

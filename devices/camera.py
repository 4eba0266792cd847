"""The pixelated camera: an ophyd-async ``StandardDetector`` around a :class:`CameraDriver`.

Frames never pass through the RunEngine: the driver publishes them into the pipeline's
frame stream, the pipeline's recorder writes ``data_dir/<run_uid>/raw.h5``, and the
camera only emits ``stream_resource``/``stream_datum`` documents that point into that
file (``/entry/data/data``, one HDF5 chunk per frame), advancing as frames are sent.

Three logic objects share one driver and one :class:`_Acquisition` record, as the
ophyd-async ``SimBlobDetector`` shares its ``PatternGenerator``:

* :class:`CamTriggerLogic` takes the frame count and frame time from ``prepare``;
* :class:`CamDataLogic` chooses the run uid (hence the file) and describes the dataset;
* :class:`CamAcquireLogic` arms the driver, starts it (internal trigger), waits for idle.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ophyd_async.core import (
    AsyncStatus,
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTriggerLogic,
    SignalDict,
    StandardDetector,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StreamResourceInfo,
    TriggerInfo,
    soft_signal_r_and_setter,
)
from pydantic import Field

from .drivers import ArmSettings, CameraDriver

__all__ = ["DATASET", "Camera", "CameraTriggerInfo", "CamAcquireLogic", "CamDataLogic", "CamTriggerLogic"]

logger = logging.getLogger(__name__)

#: Where the pipeline's recorder puts the frame stack (N, qy, qx) in ``raw.h5``.
DATASET = "/entry/data/data"


class CameraTriggerInfo(TriggerInfo):
    """A :class:`TriggerInfo` that also says what goes into the frame stream's ``start`` header.

    Plans pass it to ``bps.prepare(camera, ...)``; a plain ``TriggerInfo`` works too and
    gives a 1D scan of ``number_of_events`` frames with no metadata.
    """

    scan_shape: tuple[int, ...] | None = None
    """Scan geometry, e.g. (ny, nx) or (n_tilt, ny, nx); default (number of frames,)."""
    boundary_frames: int = Field(default=0, ge=0)
    """A segment (one tilt, one repeat) is complete every that many frames; 0: none."""
    positions: tuple[str, ...] = ()
    """Per-frame readbacks the stream carries (e.g. ("tilt",))."""
    calibration: dict[str, Any] = Field(default_factory=dict)
    """Fields of :class:`emlive.stream.Calibration`."""
    sample: dict[str, Any] = Field(default_factory=dict)
    plan: dict[str, Any] = Field(default_factory=dict)


@dataclass
class _Acquisition:
    """State shared by the three logics between ``prepare`` and ``unstage``."""

    n_frames: int = 0
    frame_time: float = 0.0
    external: bool = False
    run_uid: str = ""
    info: CameraTriggerInfo | None = None
    armed: bool = False
    pending: list = field(default_factory=list)


class CamTriggerLogic(DetectorTriggerLogic):
    """Internal trigger (the camera's own clock) and external edge (the scan generator)."""

    def __init__(self, acq: _Acquisition) -> None:
        self.acq = acq

    def get_deadtime(self, config_values: SignalDict) -> float:
        return 0.0  # event-driven counting cameras read out without dead time

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        self.acq.n_frames, self.acq.frame_time, self.acq.external = num, livetime + deadtime, False

    async def prepare_edge(self, num: int, livetime: float) -> None:
        self.acq.n_frames, self.acq.frame_time, self.acq.external = num, livetime, True

    async def default_trigger_info(self) -> TriggerInfo:
        return CameraTriggerInfo()


class CamDataLogic(DetectorDataLogic):
    """Describes the recording the pipeline will write for the run the camera opens."""

    def __init__(self, acq: _Acquisition, driver: CameraDriver, data_dir: Path, frames_written,
                 set_frames_written) -> None:
        self.acq = acq
        self.driver = driver
        self.data_dir = data_dir
        self.frames_written = frames_written
        self.set_frames_written = set_frames_written

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        # The device picks the run uid so that it knows the file before the first frame.
        self.acq.run_uid = uuid.uuid4().hex
        self.set_frames_written(0)
        path = (self.data_dir / self.acq.run_uid / "raw.h5").resolve()
        qy, qx = self.driver.frame_shape
        resource = StreamResourceInfo(data_key=datakey_name, shape=(qy, qx), chunk_shape=(1, qy, qx),
                                      dtype_numpy=np.dtype(self.driver.dtype).str,
                                      parameters={"dataset": DATASET})
        logger.info("camera %s will be recorded to %s", datakey_name, path)
        return StreamResourceDataProvider(uri=path.as_uri(), resources=[resource], mimetype="application/x-hdf5",
                                          collections_written_signal=self.frames_written)

    def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
        return [datakey_name]


class CamAcquireLogic(DetectorAcquireLogic):
    """Arms the driver once per prepare; internal trigger starts every remaining frame at once."""

    def __init__(self, acq: _Acquisition, driver: CameraDriver, set_frames_written,
                 record_timeout: float = 60.0) -> None:
        self.acq = acq
        self.driver = driver
        self.set_frames_written = set_frames_written
        self.record_timeout = record_timeout

    async def start_acquiring(self) -> None:
        acq = self.acq
        if not acq.armed:
            info = acq.info or CameraTriggerInfo(number_of_events=acq.n_frames)
            settings = ArmSettings(
                n_frames=acq.n_frames, scan_shape=tuple(info.scan_shape or (acq.n_frames,)), run_uid=acq.run_uid,
                frame_time=acq.frame_time, boundary_frames=info.boundary_frames, positions=tuple(info.positions),
                calibration=dict(info.calibration), sample=dict(info.sample), plan=dict(info.plan))
            loop = asyncio.get_running_loop()
            # The driver reports from its own thread; signals may only be set in the event loop.
            await asyncio.to_thread(self.driver.arm, settings,
                                    lambda n: loop.call_soon_threadsafe(self.set_frames_written, n))
            acq.armed = True
        if not acq.external:
            remaining = acq.n_frames - self.driver.frames_sent
            if remaining > 0:
                acq.pending.append(asyncio.wrap_future(self.driver.trigger(remaining)))

    async def wait_for_idle(self) -> None:
        # Errors of the driver thread surface here, then the camera waits for the
        # pipeline to close the run, so that when the plan ends the recording is complete.
        pending, self.acq.pending = self.acq.pending, []
        await asyncio.gather(*pending)
        summary = await asyncio.to_thread(self.driver.wait_recorded, self.record_timeout)
        if summary is not None:
            logger.info("run %s recorded: %s, %s frames", summary.get("run_uid"), summary.get("status"),
                        summary.get("frames_recorded"))
            if summary.get("status") != "complete":
                raise RuntimeError(f"the pipeline did not record run {self.acq.run_uid} completely: {summary}")

    async def ensure_stopped(self) -> None:
        if self.acq.armed:
            await asyncio.to_thread(self.driver.disarm)
        self.acq.armed = False
        self.acq.pending = []


class Camera(StandardDetector):
    """A pixelated camera whose frames stream into the emlive pipeline.

    Parameters
    ----------
    driver : CameraDriver
        E.g. :class:`~emlive.devices.drivers.SimCameraDriver`.
    data_dir : path
        The pipeline host's data directory as seen from here: runs are recorded to
        ``data_dir/<run_uid>/raw.h5``, which the ``stream_resource`` documents point at.
    name : str
    record_timeout : float
        How long the camera waits, at the end of an acquisition, for the pipeline to
        report the run recorded (only with a driver that knows the query address).

    Examples
    --------
    >>> cam = Camera(SimCameraDriver(SyntheticScan((8, 8), (32, 32)), "tcp://127.0.0.1:5555"),
    ...              "data", name="camera")                                    # doctest: +SKIP
    >>> yield from bps.prepare(cam, CameraTriggerInfo(number_of_events=64, scan_shape=(8, 8)))  # doctest: +SKIP
    """

    def __init__(self, driver: CameraDriver, data_dir: str | Path, name: str = "",
                 record_timeout: float = 60.0) -> None:
        self.driver = driver
        self.data_dir = Path(data_dir)
        self._acq = _Acquisition()
        self.frames_written, set_written = soft_signal_r_and_setter(int, 0)
        self.add_detector_logics(
            CamTriggerLogic(self._acq),
            CamAcquireLogic(self._acq, driver, set_written, record_timeout),
            CamDataLogic(self._acq, driver, self.data_dir, self.frames_written, set_written),
        )
        super().__init__(name=name)

    @property
    def run_uid(self) -> str:
        """The frame-stream run uid of the last ``prepare`` (names the recording folder)."""
        return self._acq.run_uid

    @property
    def recording(self) -> Path:
        """The recording file of the last ``prepare``."""
        return self.data_dir / self._acq.run_uid / "raw.h5"

    @AsyncStatus.wrap
    async def prepare(self, value: TriggerInfo) -> None:
        """Prepare for ``value.number_of_events`` frames; a :class:`CameraTriggerInfo` adds the stream metadata."""
        self._acq.info = value if isinstance(value, CameraTriggerInfo) else None
        self._acq.armed = False
        # Every prepare is a new stream run with its own recording file: drop the
        # previous providers so that the data logic picks a new run uid.
        self._prepare_ctx = None
        await super().prepare(value)

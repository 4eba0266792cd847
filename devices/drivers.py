"""Driver interfaces of the instrument, and their simulated implementations.

A driver is the thin layer between an ophyd-async device and the hardware SDK: the
devices in this package only ever call the methods of the Protocols below, so a real
microscope needs one class per Protocol and nothing else changes. The simulated
drivers are small wrappers around :mod:`emlive.simulators` and the frame stream of
:mod:`emlive.stream`; they hold no ophyd-async objects (the devices wrap their state
in signals), so they can be driven from plain Python too.

Units follow DESIGN.md where it is natural: angles in degrees, times in s, scan steps
in Å, temperatures in K. Stage translations are in µm (a stage travels millimetres;
Å would make every number unreadable).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import msgspec
import numpy as np

from emlive.stream import Calibration, FramePublisher, PipelineClient

__all__ = [
    "ArmSettings", "CameraDriver", "FrameSource", "HeaterDriver", "PointDriver", "PrecessionDriver",
    "ScanGeneratorDriver", "SimCameraDriver", "SimHeaterDriver", "SimPointDriver", "SimPrecessionDriver",
    "SimScanGeneratorDriver", "SimStageDriver", "StageDriver",
]

logger = logging.getLogger(__name__)


# -- interfaces ---------------------------------------------------------------------------------
@runtime_checkable
class FrameSource(Protocol):
    """What the simulated camera streams: any phantom with ``frame_shape`` and ``frames``.

    :class:`emlive.simulators.SyntheticScan` is one.
    """

    frame_shape: tuple[int, int]

    def frames(self, first: int, count: int) -> np.ndarray:
        """Frames ``first .. first + count - 1`` as a (count, qy, qx) array."""


@dataclass(frozen=True)
class ArmSettings:
    """Everything a camera needs to open one run of the frame stream.

    ``run_uid`` is chosen by the device, not the driver, so that the device knows the
    recording path (``data_dir/<run_uid>/raw.h5``) before the first frame is sent.
    """

    n_frames: int
    scan_shape: tuple[int, ...]
    run_uid: str
    frame_time: float = 0.0
    boundary_frames: int = 0
    positions: tuple[str, ...] = ()
    calibration: Mapping[str, Any] = field(default_factory=dict)
    sample: Mapping[str, Any] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)


class CameraDriver(Protocol):
    """A pixelated camera that publishes its frames into the pipeline's frame stream.

    ``arm`` opens the stream run; frames then come in batches on ``trigger`` (internal
    trigger, or the scan generator's trigger line in simulation), and the stream is
    ended when the last frame is sent or on ``disarm``.
    """

    frame_shape: tuple[int, int]
    dtype: np.dtype

    @property
    def frames_sent(self) -> int:
        """Frames of the armed run sent so far."""

    def arm(self, settings: ArmSettings, on_progress: Callable[[int], None] | None = None) -> None:
        """Open a run; ``on_progress(frames_sent)`` is called from the driver's thread."""

    def trigger(self, n_frames: int) -> concurrent.futures.Future:
        """Acquire the next ``n_frames``; the future resolves with ``frames_sent`` when sent."""

    def wait_recorded(self, timeout: float) -> dict | None:
        """Block until the pipeline has closed the run; its summary (None: not known)."""

    def disarm(self) -> None:
        """Stop; end the stream run (``abort`` if frames are missing)."""


class StageDriver(Protocol):
    """Specimen stage: ``x``, ``y``, ``z`` in µm and ``tilt`` (alpha) in degrees."""

    def position(self, axis: str) -> float: ...

    def move(self, axis: str, value: float) -> None:
        """Move and return when there; ValueError outside the axis limits."""


class PrecessionDriver(Protocol):
    """Beam precession unit: cone semi-angle (deg), frequency (Hz), on/off."""

    angle: float
    frequency: float
    enabled: bool


class ScanGeneratorDriver(Protocol):
    """Beam scan generator: a raster of ``shape`` (ny, nx) with ``step`` (Å), ``dwell`` (s)
    and scan ``rotation`` (deg); each probe position sends one camera trigger."""

    shape: tuple[int, int]
    step: float
    dwell: float
    rotation: float

    def start(self) -> concurrent.futures.Future:
        """Run one raster; the future resolves when the last position was triggered."""

    def stop(self) -> None: ...


class HeaterDriver(Protocol):
    """Heating holder: set-point and read-back in K, ramp rate in K/s."""

    setpoint: float
    ramp_rate: float

    def readback(self) -> float: ...


class PointDriver(Protocol):
    """A detector that gives one number per read (HAADF counts, an EDS line's counts)."""

    def read(self) -> float: ...


# -- simulated camera ---------------------------------------------------------------------------
_STOP = object()


class SimCameraDriver:
    """Streams a phantom's frames into the pipeline, as a camera's acquisition software would.

    A background thread owns the :class:`~emlive.stream.FramePublisher` (ZeroMQ sockets
    are not thread-safe) and executes commands from a queue, so ``trigger`` returns at
    once, the RunEngine's event loop never blocks on sending, and back-pressure from the
    pipeline only slows the thread. While armed and idle it sends heartbeats, so a
    pipeline does not time the run out while a stage tilts between rasters.

    Parameters
    ----------
    source : FrameSource
        The phantom; frame ``i`` of a run is ``source.frames(i % n, 1)`` with ``n`` the
        source's frame count (when it has ``n_frames``), so a tilt series repeats it.
    data_address : str
        The pipeline's data (PULL) address, e.g. ``tcp://127.0.0.1:5555``.
    query_address : str, optional
        The pipeline's query address; with it :meth:`wait_recorded` confirms the run was
        closed (recorded) before the camera reports idle.
    chunk_frames : int
        Frames per stream chunk (small frames must be batched).
    frame_time : float or None
        Seconds per frame; 0 sends as fast as possible, None uses the frame time given
        at ``arm`` (livetime + deadtime of the plan's ``TriggerInfo``).
    position_sources : mapping of str to callable, optional
        Per-chunk readbacks (e.g. ``{"tilt": stage.position_getter("tilt")}``) sent for
        the names the run declares in ``positions``.
    encoding : str
        Stream encoding (``raw``, ``lz4``, ``bslz4``).
    heartbeat_s : float
        Idle time after which a heartbeat is sent.
    """

    def __init__(self, source: FrameSource, data_address: str, *, query_address: str | None = None,
                 chunk_frames: int = 64, frame_time: float | None = 0.0,
                 position_sources: Mapping[str, Callable[[], float]] | None = None, encoding: str = "raw",
                 heartbeat_s: float = 1.0) -> None:
        if not callable(getattr(source, "frames", None)):
            raise TypeError(f"source must have a frames(first, count) method, got {type(source).__name__}")
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.source = source
        self.frame_shape = tuple(int(v) for v in source.frame_shape)
        self.dtype = np.asarray(source.frames(0, 1)).dtype
        self.data_address = data_address
        self.query_address = query_address
        self.chunk_frames = int(chunk_frames)
        self.frame_time = frame_time
        self.position_sources = dict(position_sources or {})
        self.encoding = encoding
        self.heartbeat_s = heartbeat_s
        self.settings: ArmSettings | None = None
        self.last_run_uid: str | None = None
        self._frames_sent = 0
        self._commands: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="SimCameraDriver", daemon=True)
        self._thread.start()

    @property
    def frames_sent(self) -> int:
        return self._frames_sent

    # -- commands (any thread) ---------------------------------------------------------------
    def arm(self, settings: ArmSettings, on_progress: Callable[[int], None] | None = None) -> None:
        self._call("arm", settings, on_progress).result()

    def trigger(self, n_frames: int) -> concurrent.futures.Future:
        return self._call("trigger", int(n_frames))

    def disarm(self) -> None:
        if self._thread.is_alive():
            self._call("disarm").result()

    def wait_recorded(self, timeout: float = 30.0) -> dict | None:
        """Poll the pipeline until the last run is closed; None without a query address."""
        uid = self.last_run_uid
        if self.query_address is None or uid is None:
            return None
        deadline = time.monotonic() + timeout
        delay = 0.005
        with PipelineClient(self.query_address, timeout=timeout) as client:
            while True:
                runs = {r["run_uid"]: r for r in client.runs()}
                run = runs.get(uid)
                if run is not None and run.get("closed"):  # results and summary are on disk
                    return run
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the pipeline did not close run {uid} within {timeout} s")
                time.sleep(delay)  # waiting on another process; back off to 0.1 s
                delay = min(0.1, delay * 2)

    def close(self) -> None:
        """End any open run and stop the thread (idempotent)."""
        if self._thread.is_alive():
            self._commands.put((_STOP, None, ()))
            self._thread.join()

    # -- the thread --------------------------------------------------------------------------
    def _call(self, name: str, *args) -> concurrent.futures.Future:
        if not self._thread.is_alive():
            raise RuntimeError("the camera driver is closed")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((name, fut, args))
        return fut

    def _loop(self) -> None:
        pub = FramePublisher(self.data_address)
        self._pub = pub
        self._progress: Callable[[int], None] | None = None
        try:
            while True:
                try:
                    name, fut, args = self._commands.get(timeout=self.heartbeat_s)
                except queue.Empty:
                    if pub.start_msg is not None:
                        pub.heartbeat()
                    continue
                if name is _STOP:
                    self._end("abort", "camera driver closed")
                    return
                try:
                    fut.set_result(getattr(self, f"_do_{name}")(*args))
                except Exception as exc:
                    logger.exception("camera driver %s failed", name)
                    self._end("fail", f"{name}: {exc!r}")
                    fut.set_exception(exc)
        finally:
            pub.close()

    def _do_arm(self, settings: ArmSettings, on_progress) -> None:
        if self._pub.start_msg is not None:
            self._end("abort", "re-armed before the run was complete")
        cal = msgspec.convert(dict(settings.calibration), Calibration)
        self._pub.start(self.frame_shape, str(self.dtype), settings.scan_shape, run_uid=settings.run_uid,
                        chunk_frames=self.chunk_frames, encoding=self.encoding, calibration=cal,
                        boundary_frames=settings.boundary_frames, sample=settings.sample,
                        plan=settings.plan, positions=list(settings.positions))
        self.settings, self.last_run_uid, self._progress = settings, settings.run_uid, on_progress
        self._frames_sent = 0
        logger.info("camera armed: run %s, %d frames of %s, scan %s", settings.run_uid, settings.n_frames,
                    self.frame_shape, settings.scan_shape)

    def _do_trigger(self, n_frames: int) -> int:
        s = self.settings
        if s is None or self._pub.start_msg is None:
            raise RuntimeError("camera triggered while not armed: arm() first")
        first, stop = self._frames_sent, self._frames_sent + n_frames
        if stop > s.n_frames:
            raise ValueError(f"{n_frames} triggers after frame {first} exceed the {s.n_frames} frames armed")
        frame_time = s.frame_time if self.frame_time is None else self.frame_time
        n_src = getattr(self.source, "n_frames", None)
        t0, begin = time.monotonic(), first
        while first < stop:
            count = min(self.chunk_frames, stop - first)
            local = first
            if n_src:  # wrap around the phantom, never straddling its end
                local = first % n_src
                count = min(count, n_src - local)
            frames = np.ascontiguousarray(self.source.frames(local, count))
            if frame_time > 0:  # pace like the hardware: the k-th frame after the trigger is ready at t0 + k·frame_time
                ready = t0 + (first + count - begin) * frame_time
                time.sleep(max(0.0, ready - time.monotonic()))
            # per-frame values the source knows (e.g. HAADF per probe), then readbacks of other
            # devices (e.g. the stage's tilt), which hold for the whole chunk
            per_frame = self.source.positions(local, count) if callable(getattr(self.source, "positions", None)) \
                else {}
            positions = {name: np.asarray(per_frame[name], dtype=float) for name in s.positions if name in per_frame}
            positions.update({name: np.full(count, float(self.position_sources[name]()))
                              for name in s.positions if name in self.position_sources})
            self._pub.send(frames, first, positions=positions)
            first += count
            self._frames_sent = first
            if self._progress is not None:
                self._progress(first)
        if self._frames_sent == s.n_frames:
            self._end("success")
        return self._frames_sent

    def _do_disarm(self) -> None:
        self._end("abort", "disarmed before all frames were sent")

    def _end(self, status: str, reason: str = "") -> None:
        if self._pub.start_msg is None:
            return
        end = self._pub.end(status, reason)
        logger.info("camera run %s ended: %s, %d frames sent %s", end.run_uid, end.status, end.frames_sent,
                    reason)


# -- simulated motion and scan hardware ---------------------------------------------------------
class SimStageDriver:
    """A stage that moves instantly and refuses targets outside its limits.

    Parameters
    ----------
    limits : mapping of axis to (low, high), optional
        Default ±1000 µm for x, y; ±500 µm for z; ±70° tilt (a typical tomography holder).
    """

    AXES = ("x", "y", "z", "tilt")

    def __init__(self, limits: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.limits = {"x": (-1000.0, 1000.0), "y": (-1000.0, 1000.0), "z": (-500.0, 500.0),
                       "tilt": (-70.0, 70.0)}
        self.limits.update({k: (float(a), float(b)) for k, (a, b) in (limits or {}).items()})
        self._pos = dict.fromkeys(self.AXES, 0.0)

    def position(self, axis: str) -> float:
        return self._pos[self._axis(axis)]

    def move(self, axis: str, value: float) -> None:
        low, high = self.limits[self._axis(axis)]
        value = float(value)
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"stage {axis} target {value} is outside its limits [{low}, {high}]")
        self._pos[axis] = value

    def _axis(self, axis: str) -> str:
        if axis not in self.AXES:
            raise ValueError(f"unknown stage axis {axis!r}; expected one of {self.AXES}")
        return axis


@dataclass
class SimPrecessionDriver:
    """A precession unit that just remembers its settings."""

    angle: float = 0.0
    frequency: float = 0.0
    enabled: bool = False


class SimScanGeneratorDriver:
    """A scan generator whose trigger line is wired to a simulated camera.

    ``start`` sends one trigger per probe position, i.e. asks the camera driver for
    ``ny * nx`` frames; the raster is done when they are sent.
    """

    def __init__(self, camera: SimCameraDriver | None = None) -> None:
        self.camera = camera
        self.shape: tuple[int, int] = (1, 1)
        self.step = 1.0
        self.dwell = 1e-3
        self.rotation = 0.0

    def start(self) -> concurrent.futures.Future:
        if self.camera is None:
            raise RuntimeError("the scan generator's trigger line is not connected to a camera")
        return self.camera.trigger(self.shape[0] * self.shape[1])

    def stop(self) -> None:
        """Nothing to stop: the simulated raster ends with its last trigger."""


class SimHeaterDriver:
    """A heating holder: the set-point ramps at ``ramp_rate``, the sample follows it to first order.

    Read-back ``T(t)`` obeys ``dT/dt = (S(t) - T) / tau`` with ``S(t)`` the ramping
    set-point; it is evaluated in closed form on each read, so no thread is needed.

    Parameters
    ----------
    temperature : float
        Initial temperature, K.
    tau : float
        Thermal time constant, s (0: the sample follows the set-point at once).
    ramp_rate : float
        Set-point ramp, K/s (0: a step).
    clock : callable
        Seconds, monotonic; injected so tests need no sleeping.
    """

    def __init__(self, temperature: float = 295.0, tau: float = 2.0, ramp_rate: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tau = float(tau)
        self.ramp_rate = float(ramp_rate)
        self._clock = clock
        self._t0 = clock()
        self._from = self._target = self._T0 = float(temperature)

    @property
    def setpoint(self) -> float:
        return self._target

    @setpoint.setter
    def setpoint(self, value: float) -> None:
        now = self._clock()
        self._T0, self._from, self._t0 = self.readback(), self._ramped(now), now
        self._target = float(value)

    def _ramped(self, now: float) -> float:
        if self.ramp_rate <= 0:
            return self._target
        dt = now - self._t0
        span = self._target - self._from
        if abs(span) <= self.ramp_rate * dt:
            return self._target
        return self._from + math.copysign(self.ramp_rate * dt, span)

    def readback(self) -> float:
        now = self._clock()
        dt = now - self._t0
        if self.tau <= 0:
            return self._ramped(now)
        if self.ramp_rate <= 0 or self._target == self._from:
            return self._target + (self._T0 - self._target) * math.exp(-dt / self.tau)
        # A ramp followed by a first-order lag has a piecewise closed form; 64 exact
        # exponential steps against the midpoint set-point are simpler and close
        # enough for a simulated holder.
        n = 64
        T = self._T0
        h = dt / n
        for k in range(n):
            S = self._ramped(self._t0 + (k + 0.5) * h)
            T = S + (T - S) * math.exp(-h / self.tau)
        return T


class SimPointDriver:
    """A point detector whose value comes from a callable (e.g. a phantom's map at the probe)."""

    def __init__(self, value: Callable[[], float]) -> None:
        self._value = value

    def read(self) -> float:
        return float(self._value())

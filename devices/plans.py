"""Bluesky plans of the instrument: raster maps, time series and tilt series as fly scans.

Every plan is one run whose frames stream camera → pipeline and whose documents hold
only ``stream_resource``/``stream_datum`` for them. The same calibration and sample
metadata go into the run's start document and into the frame stream's ``start``
header, so the Tiled catalog and the recording agree. Arguments are checked before
the first message, so a mistyped plan fails at the prompt, not mid-run.

Shapes and units: raster ``shape`` (ny, nx), ``step`` in Å, ``dwell`` and
``frame_time`` in s, tilt ``angles`` in degrees, ``temperature`` in K.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import msgspec
from bluesky.utils import MsgGenerator
from ophyd_async.core import DetectorTrigger

from emlive.stream import Calibration

from .camera import Camera, CameraTriggerInfo
from .heater import Heater
from .precession import PrecessionUnit
from .scan import Raster, ScanGenerator
from .stage import Stage

__all__ = ["aet_tilt_series", "ecm_series", "eds_tilt_series", "fem_map", "snem_map"]

logger = logging.getLogger(__name__)

#: Seconds between ``collect`` calls while a raster runs: how often stream_datum
#: documents (and so the catalog's view of the run) advance.
FLUSH_PERIOD = 0.5


# -- argument checks (all before the first yield) ---------------------------------------------
def _check_type(value, cls, what: str) -> None:
    if not isinstance(value, cls):
        raise TypeError(f"{what} must be a {cls.__name__}, got {type(value).__name__}")


def _check_shape(shape) -> tuple[int, int]:
    try:
        ny, nx = shape
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (ny, nx), got {shape!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (ny, nx)):
        raise ValueError(f"shape must be two positive integers (ny, nx), got {shape!r}")
    return ny, nx


def _check_positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def _calibration(calibration: Calibration | Mapping | None) -> dict[str, Any]:
    """Validated calibration as plain JSON-able values (for the start document and the stream)."""
    if calibration is None:
        return {}
    if isinstance(calibration, Calibration):
        return msgspec.to_builtins(calibration)
    if isinstance(calibration, Mapping):
        try:
            return msgspec.to_builtins(msgspec.convert(dict(calibration), Calibration))
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid calibration: {exc}") from None
    raise TypeError(f"calibration must be a Calibration or a mapping, got {type(calibration).__name__}")


def _mapping(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _raster_md(ny: int, nx: int, step: float) -> dict:
    return {"shape": [ny, nx], "extents": [[0.0, (ny - 1) * step], [0.0, (nx - 1) * step]],
            "hints": {"gridding": "rectilinear",
                      "dimensions": [[["scan_y"], "primary"], [["scan_x"], "primary"]]}}


# -- raster maps ----------------------------------------------------------------------------------
def _raster_map(kind: str, camera: Camera, scan: ScanGenerator, precession: PrecessionUnit, stage: Stage, *,
                shape, step, dwell, rotation, calibration, sample, md) -> MsgGenerator[str]:
    # as the caller gave them, before checking (so a rejected call's metadata would show what was asked)
    plan_args = {"camera": repr(camera), "scan": repr(scan), "precession": repr(precession), "stage": repr(stage),
                 "shape": list(shape) if isinstance(shape, (tuple, list)) else shape, "step": step,
                 "dwell": dwell, "rotation": rotation}
    _check_type(camera, Camera, "camera")
    _check_type(scan, ScanGenerator, "scan")
    _check_type(precession, PrecessionUnit, "precession")
    _check_type(stage, Stage, "stage")
    ny, nx = _check_shape(shape)
    step, dwell = _check_positive(step, "step"), _check_positive(dwell, "dwell")
    cal, sample, user_md = _calibration(calibration), _mapping(sample, "sample"), _mapping(md, "md")

    angle = yield from bps.rd(precession.angle)
    frequency = yield from bps.rd(precession.frequency)
    enabled = yield from bps.rd(precession.enabled)
    if enabled:  # the diffraction patterns depend on it: analyzers need it in the calibration
        cal = {**cal, "precession_angle_deg": float(angle), "precession_frequency_hz": float(frequency)}
    _md = {"plan_name": f"{kind}_map", "plan_args": plan_args, "detectors": [camera.name],
           "num_points": ny * nx, "technique": kind, **_raster_md(ny, nx, step),
           "step_angstrom": step, "dwell_s": dwell, "calibration": cal, "sample": sample, **user_md}
    info = CameraTriggerInfo(number_of_events=ny * nx, livetime=dwell, trigger=DetectorTrigger.EXTERNAL_EDGE,
                             scan_shape=(ny, nx), calibration=cal, sample=sample,
                             plan={"plan_name": _md["plan_name"], "technique": kind})

    @bpp.baseline_decorator([precession, stage])
    @bpp.stage_decorator([camera, scan])
    @bpp.run_decorator(md=_md)
    def inner() -> MsgGenerator[None]:
        # prepare after stage and open_run: stage() clears the detector's prepared state
        yield from bps.prepare(camera, info, wait=True)
        yield from bps.prepare(scan, Raster((ny, nx), step, dwell, float(rotation)), wait=True)
        yield from bps.declare_stream(camera, name="primary", collect=True)
        yield from bps.kickoff(camera, wait=True)
        yield from bps.kickoff(scan, wait=True)
        yield from bps.collect_while_completing(flyers=[scan, camera], dets=[camera], flush_period=FLUSH_PERIOD)

    return (yield from inner())


def snem_map(camera: Camera, scan: ScanGenerator, precession: PrecessionUnit, stage: Stage, *,
             shape: tuple[int, int], step: float, dwell: float, rotation: float = 0.0,
             calibration: Calibration | Mapping | None = None, sample: Mapping | None = None,
             md: Mapping | None = None) -> MsgGenerator[str]:
    """Scanning nanobeam electron diffraction map: one (precessed) pattern per probe position.

    A fly scan: the scan generator triggers the camera at each of ``ny * nx`` positions;
    frames go to the pipeline, the run holds ``stream_datum`` ranges into the recording.
    The precession unit and stage are read into a ``baseline`` stream; when precession
    is on, its angle and frequency are added to the calibration.

    Parameters
    ----------
    camera, scan, precession, stage
        The devices.
    shape : (ny, nx)
        Probe positions.
    step : float
        Probe step, Å.
    dwell : float
        Exposure per position, s.
    rotation : float
        Scan rotation, degrees.
    calibration : Calibration or mapping, optional
        Goes into the start document and the frame stream's ``start`` header.
    sample : mapping, optional
        Sample metadata (composition, ...), likewise.
    md : mapping, optional
        Extra start metadata; merged last, so it wins.

    Yields
    ------
    Msg

    Returns
    -------
    str
        The run's uid.
    """
    return (yield from _raster_map("snem", camera, scan, precession, stage, shape=shape, step=step, dwell=dwell,
                                   rotation=rotation, calibration=calibration, sample=sample, md=md))


def fem_map(camera: Camera, scan: ScanGenerator, precession: PrecessionUnit, stage: Stage, *,
            shape: tuple[int, int], step: float, dwell: float, rotation: float = 0.0,
            calibration: Calibration | Mapping | None = None, sample: Mapping | None = None,
            md: Mapping | None = None) -> MsgGenerator[str]:
    """Fluctuation electron microscopy map: as :func:`snem_map`, with ``technique="fem"``.

    FEM wants many statistically independent nanodiffraction patterns of an amorphous
    region; the acquisition is the same raster, the analysis differs (variance of
    intensity over positions), so only the metadata tell the analyzers apart.
    """
    return (yield from _raster_map("fem", camera, scan, precession, stage, shape=shape, step=step, dwell=dwell,
                                   rotation=rotation, calibration=calibration, sample=sample, md=md))


# -- time series ----------------------------------------------------------------------------------
def ecm_series(camera: Camera, heater: Heater, *, n_frames: int, frame_time: float, temperature: float,
               settle_time: float = 0.0, calibration: Calibration | Mapping | None = None,
               sample: Mapping | None = None, md: Mapping | None = None) -> MsgGenerator[str]:
    """Electron correlation microscopy: a time series of ``n_frames`` at one temperature.

    The heater is moved to ``temperature`` (the move waits until the read-back settles),
    then the plan waits ``settle_time`` more (thermal drift of the holder), then the
    camera free-runs on its own clock (internal trigger) for ``n_frames`` frames of
    ``frame_time`` s. The heater is read at start and end into a ``baseline`` stream.

    Returns
    -------
    str
        The run's uid.
    """
    _check_type(camera, Camera, "camera")
    _check_type(heater, Heater, "heater")
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
    frame_time = _check_positive(frame_time, "frame_time")
    temperature = _check_positive(temperature, "temperature (K)")
    if isinstance(settle_time, bool) or not isinstance(settle_time, (int, float)) or settle_time < 0:
        raise ValueError(f"settle_time must be >= 0 s, got {settle_time!r}")
    cal, sample, user_md = _calibration(calibration), _mapping(sample, "sample"), _mapping(md, "md")
    _md = {"plan_name": "ecm_series", "technique": "ecm", "detectors": [camera.name], "num_points": n_frames,
           "plan_args": {"camera": repr(camera), "heater": repr(heater), "n_frames": n_frames,
                         "frame_time": frame_time, "temperature": temperature, "settle_time": settle_time},
           "shape": [n_frames], "frame_time_s": frame_time, "temperature_K": temperature,
           "hints": {"dimensions": [[["time"], "primary"]]}, "calibration": cal, "sample": sample, **user_md}
    info = CameraTriggerInfo(number_of_events=n_frames, livetime=frame_time, scan_shape=(n_frames,),
                             calibration=cal, sample=sample,
                             plan={"plan_name": "ecm_series", "technique": "ecm", "temperature_K": temperature,
                                   "frame_time_s": frame_time})

    yield from bps.mv(heater, temperature)
    if settle_time:
        yield from bps.sleep(settle_time)

    @bpp.baseline_decorator([heater])
    @bpp.stage_decorator([camera])
    @bpp.run_decorator(md=_md)
    def inner() -> MsgGenerator[None]:
        yield from bps.prepare(camera, info, wait=True)
        yield from bps.declare_stream(camera, name="primary", collect=True)
        yield from bps.kickoff(camera, wait=True)
        yield from bps.collect_while_completing(flyers=[camera], dets=[camera], flush_period=FLUSH_PERIOD)

    return (yield from inner())


# -- tilt series ----------------------------------------------------------------------------------
def _tilt_series(kind: str, camera: Camera, scan: ScanGenerator, stage: Stage, *, angles, shape, step, dwell,
                 rotation, calibration, sample, md, positions: Sequence[str] = ()) -> MsgGenerator[str]:
    _check_type(camera, Camera, "camera")
    _check_type(scan, ScanGenerator, "scan")
    _check_type(stage, Stage, "stage")
    if isinstance(angles, (str, bytes)) or not isinstance(angles, Sequence) or not angles:
        raise ValueError(f"angles must be a non-empty sequence of tilt angles in degrees, got {angles!r}")
    angles = [float(a) for a in angles]
    if not all(math.isfinite(a) for a in angles):
        raise ValueError(f"angles must be finite, got {angles}")
    ny, nx = _check_shape(shape)
    step, dwell = _check_positive(step, "step"), _check_positive(dwell, "dwell")
    cal, sample, user_md = _calibration(calibration), _mapping(sample, "sample"), _mapping(md, "md")
    if isinstance(positions, (str, bytes)) or not all(isinstance(p, str) and p for p in positions):
        raise ValueError(f"positions must be a sequence of names, got {positions!r}")
    n_tilt, per_tilt = len(angles), ny * nx
    plan_name = f"{kind}_tilt_series"
    tomo = {"type": f"{kind}_tilt", "rotation": "stage-tilt", "angles": angles, "shape": [n_tilt, ny, nx],
            "tilt_stream": "tilt", "frames_per_tilt": per_tilt}
    _md = {"plan_name": plan_name, "technique": kind, "detectors": [camera.name], "num_points": n_tilt * per_tilt,
           "plan_args": {"camera": repr(camera), "scan": repr(scan), "stage": repr(stage), "angles": angles,
                         "shape": [ny, nx], "step": step, "dwell": dwell, "rotation": rotation},
           "tomo": tomo, **_raster_md(ny, nx, step), "step_angstrom": step, "dwell_s": dwell,
           "calibration": cal, "sample": sample, **user_md}
    info = CameraTriggerInfo(number_of_events=n_tilt * per_tilt, livetime=dwell,
                             trigger=DetectorTrigger.EXTERNAL_EDGE, scan_shape=(n_tilt, ny, nx),
                             boundary_frames=per_tilt, positions=("tilt", *positions), calibration=cal,
                             sample=sample, plan={"plan_name": plan_name, "technique": kind, "tomo": tomo,
                                                  **({kind: user_md[kind]} if kind in user_md else {})})

    @bpp.stage_decorator([camera, scan, stage])
    @bpp.run_decorator(md=_md)
    def inner() -> MsgGenerator[None]:
        # One camera preparation for the whole series: one stream run, one recording,
        # one stream_resource; each tilt is one kickoff of ny*nx frames.
        yield from bps.prepare(camera, info, wait=True)
        yield from bps.prepare(scan, Raster((ny, nx), step, dwell, float(rotation)), wait=True)
        yield from bps.declare_stream(camera, name="primary", collect=True)
        for angle in angles:
            yield from bps.checkpoint()
            yield from bps.mv(stage.tilt, angle)
            yield from bps.trigger_and_read([stage], name="tilt")
            yield from bps.mv(camera.events_to_kickoff, per_tilt)
            yield from bps.kickoff(camera, wait=True)
            yield from bps.kickoff(scan, wait=True)
            yield from bps.collect_while_completing(flyers=[scan, camera], dets=[camera],
                                                    flush_period=FLUSH_PERIOD, stream_name="primary")

    return (yield from inner())


def eds_tilt_series(camera: Camera, scan: ScanGenerator, stage: Stage, *, angles: Sequence[float],
                    shape: tuple[int, int], step: float, dwell: float, rotation: float = 0.0,
                    calibration: Calibration | Mapping | None = None, sample: Mapping | None = None,
                    md: Mapping | None = None, positions: Sequence[str] = ()) -> MsgGenerator[str]:
    """EDS/HAADF tilt series for tomography: one raster per stage tilt, all in one run.

    For each angle the stage tilts, its position is read into the ``tilt`` stream, and
    a fly raster adds ``ny * nx`` frames to ``primary``; consecutive ``stream_datum``
    ranges of ``ny * nx`` frames map to the tilts in order. The frame stream declares
    ``boundary_frames = ny * nx`` (analyzers update the reconstruction once per tilt)
    and carries the tilt angle per frame (``positions=["tilt"]``). Start metadata
    ``tomo = {"type": "eds_tilt", "rotation": "stage-tilt", "angles": ..., "shape":
    [n_tilt, ny, nx]}`` (after xpdAn's ``start["tomo"]``).

    With an :class:`~emlive.devices.EDSSpectrumSource` the camera streams one spectrum per
    probe position; ``positions=["haadf"]`` adds its HAADF value per frame, and
    ``md=source.metadata()`` puts the energy axis (``md["eds"]``) into the start document
    and the stream's ``start`` header.

    Returns
    -------
    str
        The run's uid.
    """
    return (yield from _tilt_series("eds", camera, scan, stage, angles=angles, shape=shape, step=step, dwell=dwell,
                                    rotation=rotation, calibration=calibration, sample=sample, md=md,
                                    positions=positions))


def aet_tilt_series(camera: Camera, scan: ScanGenerator, stage: Stage, *, angles: Sequence[float],
                    shape: tuple[int, int], step: float, dwell: float, rotation: float = 0.0,
                    calibration: Calibration | Mapping | None = None, sample: Mapping | None = None,
                    md: Mapping | None = None) -> MsgGenerator[str]:
    """Atomic electron tomography tilt series: as :func:`eds_tilt_series`, ``tomo.type = "aet_tilt"``.

    AET needs atomic-resolution rasters (small ``step``) at many tilts; the acquisition
    structure is the same, the reconstruction differs.
    """
    return (yield from _tilt_series("aet", camera, scan, stage, angles=angles, shape=shape, step=step, dwell=dwell,
                                    rotation=rotation, calibration=calibration, sample=sample, md=md))

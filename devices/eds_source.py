"""An EDS spectrum per probe position as a camera frame source, for the EDS tilt series.

:func:`~emlive.devices.eds_tilt_series` is one run of ``n_tilt * ny * nx`` frames: an
outer tilt loop and, per tilt, a raster of ``ny * nx`` positions fired into the camera.
:class:`EDSSpectrumSource` makes an :class:`~emlive.simulators.EDSParticle` look like
such a camera: global frame ``i`` is the spectrum of tilt ``i // (ny * nx)`` at flat
raster position ``i % (ny * nx)``, as a ``(1, n_channels)`` uint16 frame, so the
spectra stream into the pipeline (and its recording) exactly like diffraction frames.

The HAADF value at each probe position is a per-frame readback named ``"haadf"``
(:meth:`EDSSpectrumSource.positions`); the energy axis goes into the run's metadata
(:meth:`EDSSpectrumSource.metadata`).
"""

from __future__ import annotations

import numpy as np

from emlive.simulators import EDSParticle

__all__ = ["EDSSpectrumSource"]


class EDSSpectrumSource:
    """A :class:`~emlive.devices.drivers.FrameSource` of EDS spectra, one frame per probe position.

    Parameters
    ----------
    particle : EDSParticle
        The phantom; its ``tilt_angles_deg`` are the tilts of the series (pass them as
        the plan's ``angles``) and its ``scan_shape`` the raster (the plan's ``shape``).

    Attributes
    ----------
    frame_shape : (1, n_channels)
        One spectrum per frame.
    n_frames : int
        ``n_tilts * ny * nx``: the whole series. :class:`SimCameraDriver` wraps frame
        indices modulo this, so a series longer than the phantom repeats it from tilt 0.

    Examples
    --------
    >>> src = EDSSpectrumSource(EDSParticle(shape=8, voxel_nm=7.0, n_channels=1024,
    ...                                     tilt_angles_deg=[-60, 0, 60]))
    >>> src.frame_shape, src.n_frames, src.frames(60, 8).shape   # frames 60..67 span tilts 0 and 1
    ((1, 1024), 192, (8, 1, 1024))
    >>> {k: v.shape for k, v in src.positions(60, 8).items()}
    {'haadf': (8,)}
    """

    #: Name of the per-frame HAADF readback (a ``Start.positions`` entry).
    HAADF = "haadf"

    def __init__(self, particle: EDSParticle) -> None:
        if not isinstance(particle, EDSParticle):
            raise TypeError(f"particle must be an EDSParticle, got {type(particle).__name__}")
        self.particle = particle
        self.n_channels = int(particle.n_channels)
        self.frame_shape: tuple[int, int] = (1, self.n_channels)
        self.scan_shape: tuple[int, int] = tuple(int(v) for v in particle.scan_shape)
        self.per_tilt = int(particle.n_positions)
        self.n_tilts = int(particle.tilt_angles_deg.size)
        self.n_frames = self.n_tilts * self.per_tilt
        self.tilt_angles_deg = np.asarray(particle.tilt_angles_deg, dtype=float).copy()
        self._haadf: dict[int, np.ndarray] = {}  # flat HAADF image per tilt, computed once

    def __repr__(self) -> str:
        return (f"EDSSpectrumSource({self.n_tilts} tilts x {self.scan_shape[0]}x{self.scan_shape[1]} positions, "
                f"{self.n_channels} channels)")

    def _segments(self, first: int, count: int) -> list[tuple[int, int, int, int]]:
        """(tilt, first position, count, offset in the request) of each tilt the frames cover."""
        if isinstance(first, bool) or isinstance(count, bool):
            raise TypeError("first and count must be integers")
        first, count = int(first), int(count)
        if first < 0 or count < 0 or first + count > self.n_frames:
            raise ValueError(f"frames {first}..{first + count - 1} are outside the series of {self.n_frames} "
                             f"frames ({self.n_tilts} tilts x {self.per_tilt} positions)")
        segments, i, stop = [], first, first + count
        while i < stop:
            tilt, pos = divmod(i, self.per_tilt)
            n = min(stop - i, self.per_tilt - pos)  # never past the end of this tilt's raster
            segments.append((tilt, pos, n, i - first))
            i += n
        return segments

    def frames(self, first: int, count: int) -> np.ndarray:
        """Spectra of global frames ``first .. first + count - 1`` as ``(count, 1, n_channels)`` uint16.

        Frame ``i`` is ``particle.spectra(i // (ny * nx), i % (ny * nx), 1)``; a request
        may span tilt boundaries.
        """
        segments = self._segments(first, count)  # validates first
        out = np.empty((int(count), 1, self.n_channels), dtype=np.uint16)
        for tilt, pos, n, at in segments:
            out[at:at + n, 0] = self.particle.spectra(tilt, pos, n)
        return out

    def positions(self, first: int, count: int) -> dict[str, np.ndarray]:
        """Per-frame readbacks of frames ``first .. first + count - 1``, each ``(count,)`` float64.

        ``"haadf"``: the particle's HAADF image (with its noise) at each frame's tilt and
        probe position. (The tilt angle is the stage's readback, not the source's.)
        """
        segments = self._segments(first, count)
        haadf = np.empty(int(count), dtype=float)
        for tilt, pos, n, at in segments:
            img = self._haadf.get(tilt)
            if img is None:
                img = self._haadf[tilt] = np.asarray(self.particle.haadf(tilt), dtype=float).reshape(-1)
            haadf[at:at + n] = img[pos:pos + n]
        return {self.HAADF: haadf}

    def energy_axis(self) -> dict[str, float | int | str]:
        """The spectra's energy axis: channel ``k`` is centred at ``offset_kev + k * scale_kev``.

        ``offset_kev`` is the centre of channel 0 (HyperSpy's ``offset``), so
        ``offset_kev + scale_kev * arange(n_channels)`` equals ``particle.energy_axis``.
        """
        p = self.particle
        return {"n_channels": self.n_channels, "scale_kev": float(p.channel_kev),
                "offset_kev": float(p.energy_axis[0]), "units": "keV"}

    def metadata(self) -> dict[str, dict]:
        """Run metadata for the EDS analyzer: ``{"eds": {...}}``, e.g. ``eds_tilt_series(..., md=src.metadata())``.

        Holds the energy axis, the characteristic lines the phantom emits (keV) and the
        frame layout (``frame_shape``, ``frames_per_tilt``, ``haadf_position``).
        """
        p = self.particle
        return {"eds": {"energy_axis": self.energy_axis(), "beam_kev": float(p.beam_kev),
                        "lines_kev": {"Ag_La": float(p.line_energies_kev[0]), "Au_Ma": float(p.line_energies_kev[1])},
                        "frame_shape": list(self.frame_shape), "frames_per_tilt": self.per_tilt,
                        "haadf_position": self.HAADF}}

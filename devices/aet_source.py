"""The AET phantom as a frame source: one ADF-STEM image per tilt.

Atomic electron tomography records an annular-dark-field *image* per stage tilt (the
scan generator rasters, the ADF detector integrates), not a diffraction pattern per
probe. :func:`~emlive.devices.aet_tilt_series` with ``shape=(1, 1)`` and a camera
streaming this source sends exactly that: frame ``i`` is the projection at tilt ``i``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from emlive.simulators import AETParticle

__all__ = ["AETProjectionSource"]

logger = logging.getLogger(__name__)


class AETProjectionSource:
    """Frames of an :class:`~emlive.simulators.AETParticle`: its noisy projection at each angle.

    Parameters
    ----------
    particle : AETParticle
    angles : sequence of float
        Tilt angles in degrees, in acquisition order (the plan's ``angles``).
    """

    def __init__(self, particle: AETParticle, angles: Sequence[float]) -> None:
        if not isinstance(particle, AETParticle):
            raise TypeError(f"particle must be an AETParticle, got {type(particle).__name__}")
        self.particle = particle
        self.angles = [float(a) for a in angles]
        if not self.angles:
            raise ValueError("angles must not be empty")
        self.frame_shape = tuple(int(v) for v in particle.projection(self.angles[0], noise=False).shape)

    @property
    def n_frames(self) -> int:
        return len(self.angles)

    def frames(self, first: int, count: int) -> np.ndarray:
        """Projections at tilts ``first .. first+count-1`` as float32 counts (count, ny, nx)."""
        if not (0 <= first and 0 <= count and first + count <= self.n_frames):
            raise ValueError(f"frames {first}..{first + count - 1} outside the {self.n_frames} tilts")
        return self.particle.tilt_series(self.angles[first:first + count]).astype(np.float32)

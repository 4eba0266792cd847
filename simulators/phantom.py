"""What the diffraction phantoms share: frames made of binned electrons, read in any order.

A phantom says how many electrons land where for frames ``first .. first+count-1``
(``_electrons``); this base turns them into detector counts in cache-sized groups and
serves frames and chunks. Each frame depends only on (seed, index), so any frame can
be regenerated alone and chunking never changes the data.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .detector import DetectorModel


class BinnedElectronPhantom:
    """Base of phantoms whose frames are electrons binned into detector pixels.

    Subclasses set ``detector`` (:class:`DetectorModel`), ``n_frames`` and ``group_frames``
    (frames per vectorised pass, sized so the group's counts stay in cache) and implement
    ``_electrons(first, count)`` returning per-pixel electron counts (count, qy, qx).
    """

    detector: DetectorModel
    group_frames: int = 16

    @property
    def n_frames(self) -> int:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _electrons(self, first: int, count: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def frames(self, first: int, count: int) -> np.ndarray:
        """Frames ``first .. first + count - 1`` as (count, qy, qx) of the detector dtype."""
        if not (0 <= first and 0 <= count and first + count <= self.n_frames):
            raise ValueError(f"frames {first}..{first + count - 1} are outside the scan of "
                             f"{self.n_frames} frames (first >= 0, count >= 0 expected)")
        qy, qx = self.detector.shape
        out = np.empty((count, qy, qx), dtype=np.dtype(self.detector.dtype))
        for g0 in range(0, count, self.group_frames):
            g1 = min(count, g0 + self.group_frames)
            out[g0:g1] = self.detector.electrons_to_counts(self._electrons(first + g0, g1 - g0))
        return out

    def iter_chunks(self, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first, frames)`` over the whole scan, ``chunk_frames`` frames at a time."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        for first in range(0, self.n_frames, chunk_frames):
            yield first, self.frames(first, min(chunk_frames, self.n_frames - first))

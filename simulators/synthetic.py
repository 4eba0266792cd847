"""A minimal synthetic 4D-STEM source with known ground truth.

It stands in for the virtual microscope until that lands: every frame holds a
bright central disk and an amorphous-like ring, both deflected by a shift that
varies linearly across the scan (a known centre-of-mass map), with a ring
strength that varies smoothly across the scan (a known dark-field map), and
Poisson (shot) noise. It imports only numpy and scipy, so any layer may use it.

Frames are drawn as a Poisson point process of single electrons rather than by
sampling a Poisson count per pixel: binning independent electron positions
gives exactly independent Poisson counts per pixel, whose means are the
intensity integrated over each pixel (an ideally anti-aliased pattern), and the
cost scales with the dose instead of the number of pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np
from scipy import special

__all__ = ["SyntheticScan"]

logger = logging.getLogger(__name__)

_UINT16_MAX = np.iinfo(np.uint16).max
_TABLE = 1 << 14  # entries of the angle table and of each half of the radius table
_TABLE_MASK = np.uint64(_TABLE - 1)
_ANG_SHIFT = np.uint64(64 - 14)  # the top 14 bits of an electron's word pick its angle...
_RAD_SHIFT = np.uint64(64 - 28)  # ... the next 14 its radius
_FIX = 46  # fraction bits of the fixed-point positions
_GROUP_ELECTRONS = 1 << 15  # electrons per group of frames: temporaries of ~256 kB each
_GROUP_PIXELS = 1 << 19  # pixels per group of frames


class SyntheticScan:
    """Synthetic scanned diffraction patterns: a deflected disk, a ring, shot noise.

    Frame ``k`` sits at scan position ``divmod(k, nx)``. Its electrons (on
    average ``dose`` of them) either pass unscattered into the central disk, or
    (a fraction ``ring_fraction * ring_amplitude``) are scattered into a ring of
    radius ``ring_radius`` with a Gaussian radial profile of standard deviation
    ``ring_width``. The whole pattern is deflected by (``shift_y``, ``shift_x``),
    which runs linearly from ``-max_shift`` to ``+max_shift`` pixels across the
    scan (y along scan rows, x along scan columns), as a uniform in-plane field
    would deflect the beam. The pattern centre is ``((qy - 1) / 2, (qx - 1) / 2)``
    in pixel coordinates, where pixel ``(i, j)`` covers ``[i - 0.5, i + 0.5) x
    [j - 0.5, j + 0.5)``. Electrons landing outside the detector are lost.

    Each frame is drawn from its own random stream (an SFC64 generator whose
    state is hashed from ``seed`` and the frame index), so any frame can be
    regenerated alone and ``frames`` does not depend on how a scan is chunked.

    Parameters
    ----------
    scan_shape : (ny, nx)
        Scan grid, in probe positions.
    frame_shape : (qy, qx)
        Detector size, in pixels.
    dose : float
        Mean number of electrons per frame (counts, gain 1).
    disk_radius, ring_radius, ring_width : float, optional
        Pattern geometry in pixels; defaults are 1/16, 0.3 and 1/32 of the
        smaller frame side.
    seed : int
        Non-negative seed; the same seed gives the same frames.
    max_shift : float
        Largest deflection at the scan edges, in pixels.
    ring_fraction : float
        Fraction of the dose scattered into the ring where the ring amplitude is 1.

    Examples
    --------
    >>> sim = SyntheticScan(scan_shape=(4, 5), frame_shape=(32, 32), dose=500, seed=1)
    >>> sim.frames(3, 2).shape, sim.frames(3, 2).dtype
    ((2, 32, 32), dtype('uint16'))
    >>> bool((sim.frames(4, 1)[0] == sim.frames(3, 2)[1]).all())
    True
    >>> sorted(sim.ground_truth())
    ['disk_dose', 'ring_amplitude', 'ring_dose', 'shift_x', 'shift_y']
    """

    def __init__(self, scan_shape: tuple[int, int] = (32, 32), frame_shape: tuple[int, int] = (64, 64),
                 dose: float = 1000.0, disk_radius: float | None = None, ring_radius: float | None = None,
                 ring_width: float | None = None, seed: int = 0, max_shift: float = 2.0,
                 ring_fraction: float = 0.3) -> None:
        self.scan_shape = _shape2(scan_shape, "scan_shape")
        self.frame_shape = _shape2(frame_shape, "frame_shape")
        size = min(self.frame_shape)
        self.dose = _number(dose, "dose", minimum=0.0)
        self.disk_radius = _number(size / 16 if disk_radius is None else disk_radius, "disk_radius",
                                   positive=True)
        self.ring_radius = _number(0.3 * size if ring_radius is None else ring_radius, "ring_radius", positive=True)
        self.ring_width = _number(size / 32 if ring_width is None else ring_width, "ring_width", positive=True)
        self.max_shift = _number(max_shift, "max_shift", minimum=0.0)
        self.ring_fraction = _number(ring_fraction, "ring_fraction", minimum=0.0)
        if self.ring_fraction > 1:
            raise ValueError(f"ring_fraction must be in [0, 1], got {ring_fraction}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        # Key from the seed via SeedSequence, so nearby seeds give unrelated streams.
        self._key = np.random.SeedSequence(self.seed).generate_state(1, np.uint64)
        self._truth = self._make_truth()
        self._make_tables()

    @property
    def n_frames(self) -> int:
        return self.scan_shape[0] * self.scan_shape[1]

    @property
    def center(self) -> tuple[float, float]:
        """Undeflected pattern centre (cy, cx) in pixels."""
        qy, qx = self.frame_shape
        return (qy - 1) / 2, (qx - 1) / 2

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Maps of shape ``scan_shape`` that the frames were drawn from.

        Returns
        -------
        dict
            ``shift_x``, ``shift_y``: deflection of the pattern in pixels (the
            expected centre of mass relative to :attr:`center`, before binning
            and detector-edge losses); ``ring_amplitude``: relative ring strength
            in [0.2, 1]; ``disk_dose``, ``ring_dose``: expected electrons per
            frame in the disk and in the ring.
        """
        return {name: arr.copy() for name, arr in self._truth.items()}

    def frames(self, first: int, count: int) -> np.ndarray:
        """Frames ``first .. first + count - 1`` as a (count, qy, qx) uint16 array.

        Counts above 65535 in one pixel saturate, as on a 16-bit detector.
        """
        if not (0 <= first and 0 <= count and first + count <= self.n_frames):
            raise ValueError(f"frames {first}..{first + count - 1} are outside the scan of "
                             f"{self.n_frames} frames (first >= 0, count >= 0 expected)")
        qy, qx = self.frame_shape
        if count == 0:
            return np.zeros((0, qy, qx), dtype=np.uint16)
        idx = np.arange(first, first + count)
        ring_dose = self._truth["ring_dose"].ravel()[idx]
        disk_dose = self.dose - ring_dose
        pixels = qy * qx
        # Flat counts of all frames, plus one bin that collects the electrons missing the detector.
        out = np.zeros(count * pixels + 1, dtype=np.uint16)
        # Work on a few frames at a time so that the per-electron temporaries stay
        # in cache: the work is memory-bound, and this is 2-3 times faster.
        group = max(1, min(_GROUP_ELECTRONS // max(int(self.dose), 1), _GROUP_PIXELS // pixels))
        for g0 in range(0, count, group):
            g1 = min(count, g0 + group)
            self._frames_group(idx[g0:g1], disk_dose[g0:g1], ring_dose[g0:g1], out, g0 * pixels)
        return out[:-1].reshape(count, qy, qx)

    def iter_chunks(self, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first, frames)`` over the whole scan, ``chunk_frames`` frames at a time."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        for first in range(0, self.n_frames, chunk_frames):
            yield first, self.frames(first, min(chunk_frames, self.n_frames - first))

    def _frames_group(self, idx: np.ndarray, disk_dose: np.ndarray, ring_dose: np.ndarray,
                      out: np.ndarray, start: int) -> None:
        """Draw the frames ``idx`` and add their electrons into ``out[start:]`` (flat counts).

        Each electron is one random 64-bit word: its top bits index the angle
        table, the next ones the radius table (disk or ring half). Positions are
        fixed-point integers, so the hot path has no float-to-int conversion.
        """
        qy, qx = self.frame_shape
        count = idx.size
        n_disk, n_ring, words = self._draw(idx, disk_dose, ring_dose)
        per_frame = np.stack([n_disk, n_ring], axis=1).ravel()
        # Per frame the disk electrons come first: they read the first half of the radius table.
        ir = ((words >> _RAD_SHIFT) & _TABLE_MASK).view(np.int64)
        ir += np.repeat(np.tile(np.array([0, _TABLE]), count), per_frame)
        ia = (words >> _ANG_SHIFT).view(np.int64)
        radius = self._radius_fx[ir]
        frame_of = np.repeat(np.arange(count), n_disk + n_ring)
        iy = radius * self._sin_fx[ia]
        iy += self._base_fx[0, idx][frame_of]
        iy >>= _FIX  # arithmetic shift: floor, also for negative positions
        ix = radius * self._cos_fx[ia]
        ix += self._base_fx[1, idx][frame_of]
        ix >>= _FIX
        # One unsigned compare per axis also catches negative indices.
        inside = (iy.view(np.uint64) < qy) & (ix.view(np.uint64) < qx)
        pixels = qy * qx
        iy *= qx
        iy += ix
        iy += frame_of * pixels
        if per_frame.size and (n_disk + n_ring).max() > _UINT16_MAX:  # only then can a pixel overflow
            counts = np.bincount(iy[inside], minlength=count * pixels)
            out[start:start + count * pixels] = np.minimum(counts, _UINT16_MAX)
            return
        iy += start
        np.add.at(out, np.where(inside, iy, out.size - 1), np.uint16(1))

    def _draw(self, idx: np.ndarray, disk_dose: np.ndarray, ring_dose: np.ndarray) -> tuple[np.ndarray, ...]:
        """Draw the electrons of the frames ``idx``, each frame from its own stream.

        Returns the numbers of disk and ring electrons per frame and one random
        64-bit word per electron (per frame: disk electrons, then ring electrons).
        """
        bitgen = np.random.SFC64(0)
        gen = np.random.Generator(bitgen)
        state = bitgen.state
        states = _frame_states(self._key, idx)
        count = idx.size
        n_disk = np.empty(count, dtype=np.int64)
        n_ring = np.empty(count, dtype=np.int64)
        words = []
        for k in range(count):
            state["state"]["state"] = states[k]
            state["has_uint32"] = 0
            bitgen.state = state
            # Two scalar calls: ``poisson`` on an array costs ~15 times more per call.
            nd = n_disk[k] = gen.poisson(disk_dose[k])
            nr = n_ring[k] = gen.poisson(ring_dose[k])
            words.append(bitgen.random_raw(nd + nr))
        return n_disk, n_ring, np.concatenate(words)

    def _make_tables(self) -> None:
        """Fixed-point lookup tables for the electron positions.

        Angles take 2**14 values and radii 2**14 equally likely values per
        component (midpoint rules, so the pattern stays exactly symmetric about
        its centre): steps far below a pixel, and lookups are much faster than
        trigonometry and ``sqrt``. Radii carry 16 fraction bits and sines 30, so
        their product and the frame's base position carry ``_FIX`` = 46.
        """
        mid = (np.arange(_TABLE) + 0.5) / _TABLE
        disk = self.disk_radius * np.sqrt(mid)  # uniform over the disk
        ring = np.abs(self.ring_radius + self.ring_width * special.ndtri(mid))  # Gaussian radial profile
        reach = max(disk[-1], ring[-1]) + self.max_shift + max(self.frame_shape) + 1
        if reach >= 2 ** (62 - _FIX):
            raise ValueError(f"pattern too large for the fixed-point positions: {reach:.0f} px "
                             f"(frame + ring radius + shift must stay below {2 ** (62 - _FIX)} px)")
        self._radius_fx = np.round(np.concatenate([disk, ring]) * 2.0 ** 16).astype(np.int64)
        self._sin_fx = np.round(np.sin(2 * np.pi * mid) * 2.0 ** 30).astype(np.int64)
        self._cos_fx = np.round(np.cos(2 * np.pi * mid) * 2.0 ** 30).astype(np.int64)
        # Frame base positions: centre + deflection + 0.5, so that floor rounds to the nearest pixel.
        cy, cx = self.center
        base = np.stack([cy + 0.5 + self._truth["shift_y"].ravel(), cx + 0.5 + self._truth["shift_x"].ravel()])
        self._base_fx = np.round(base * 2.0 ** _FIX).astype(np.int64)

    def _make_truth(self) -> dict[str, np.ndarray]:
        ny, nx = self.scan_shape
        v = np.linspace(-1.0, 1.0, ny)[:, None] if ny > 1 else np.zeros((1, 1))
        u = np.linspace(-1.0, 1.0, nx)[None, :] if nx > 1 else np.zeros((1, 1))
        shift_y = np.broadcast_to(self.max_shift * v, (ny, nx)).copy()
        shift_x = np.broadcast_to(self.max_shift * u, (ny, nx)).copy()
        # A smooth off-centre blob, unrelated to the shifts, so a dark-field map
        # that tracks it cannot be an artefact of the deflection.
        amplitude = 0.2 + 0.8 * np.exp(-((u - 0.3) ** 2 + (v + 0.2) ** 2) / (2 * 0.45 ** 2))
        ring_dose = self.dose * self.ring_fraction * amplitude
        return {"shift_x": shift_x, "shift_y": shift_y, "ring_amplitude": amplitude,
                "disk_dose": self.dose - ring_dose, "ring_dose": ring_dose}


def _shape2(shape: tuple[int, int], what: str) -> tuple[int, int]:
    dims = tuple(shape)
    if len(dims) != 2 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in dims):
        raise ValueError(f"{what} must be two positive integers, got {shape!r}")
    return int(dims[0]), int(dims[1])


def _number(value: float, what: str, *, positive: bool = False, minimum: float | None = None) -> float:
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0) or (minimum is not None and value < minimum):
        bound = "> 0" if positive else f">= {minimum}"
        raise ValueError(f"{what} must be finite and {bound}, got {value}")
    return value


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _frame_states(key: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """SFC64 states (a, b, c, counter) for frames ``idx``, hashed from ``key`` with splitmix64.

    splitmix64 is the seeding Vigna recommends for small-state generators: every
    output word is a bijective mix of (key, frame, word) and frames get unrelated
    streams. Why not ``SeedSequence`` per frame: it costs ~3 µs a frame.
    """
    words = np.empty((idx.size, 4), dtype=np.uint64)
    z = key[0] + (idx.astype(np.uint64)[:, None] * np.uint64(3) + np.arange(1, 4, dtype=np.uint64)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    words[:, :3] = z ^ (z >> np.uint64(31))
    words[:, 3] = 1
    return words

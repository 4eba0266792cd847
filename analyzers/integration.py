"""Batched azimuthal integration I(Q) of a chunk of diffraction patterns with per-frame masks.

pyFAI builds the geometry and the pixel-splitting matrix M (CSR, npt × npix)
**once**; each chunk is then one fused numba pass: the masked mean of bin b is
``Σ_j M_bj I_j m_j / Σ_j M_bj m_j``, exactly what pyFAI's ``integrate1d``
computes with the same settings (no solid-angle or polarization correction,
the mask as ``mask = ~good``), at a fraction of its per-call overhead
(/work/shared/research/algorithms.md a2).

Elliptical distortion: the detector handed to pyFAI has its pixel corners at the
affine-corrected positions (:func:`~emlive.analyzers.calibration.ellipse_matrix`),
so pyFAI itself splits the (now parallelogram) pixels over circular rings, and
``ai.integrate1d`` on the same integrator remains the reference. Integration is
in radius (``r_mm``), mapped to q linearly: q = radius_px · reciprocal_pixel_size
(pyFAI's own q assumes straight rays to a flat detector, 0.08 % off for electrons).
The geometry: distance = effective camera length (seed Eq. 4/5), PONI = (c + 0.5)·pixel,
no tilts, as :func:`~emlive.analyzers.calibration.to_poni` writes it.

Mask convention: ``good`` is True for pixels to use (see :mod:`emlive.analyzers.masks`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from emlive.stream.protocol import Calibration

from .calibration import camera_length_from_pixel_size, electron_wavelength, ellipse_matrix

__all__ = ["RadialIntegrator", "inscribed_radius"]


def inscribed_radius(shape: tuple[int, int], calibration: Calibration) -> float:
    """Radius (undistorted px) of the largest centred circle inside the detector after the ellipse correction.

    The detector's outer edges (pixel boundaries, index −0.5 and n − 0.5) map
    to the sides of a parallelogram; the distance from the centre to side
    n·p = d is |d − n·c| / |M⁻ᵀ n|.
    """
    ny, nx = (int(v) for v in shape)
    cy, cx = calibration.center if calibration.center is not None else ((ny - 1) / 2, (nx - 1) / 2)
    minv_t = np.linalg.inv(ellipse_matrix(*calibration.ellipse)).T
    out = math.inf
    for normal, lo, hi, c in (((1.0, 0.0), -0.5, ny - 0.5, cy), ((0.0, 1.0), -0.5, nx - 0.5, cx)):
        scale = float(np.linalg.norm(minv_t @ np.asarray(normal)))
        out = min(out, (c - lo) / scale, (hi - c) / scale)
    return max(out, 0.0)


class RadialIntegrator:
    """Azimuthal integrator for one detector geometry: pyFAI sets up the CSR matrix, numba applies it per chunk.

    Parameters
    ----------
    shape : (qy, qx)
        Frame shape.
    calibration : Calibration
        Needs ``reciprocal_pixel_size`` (Å⁻¹/px, q = 2π/d); ``center`` (geometric
        centre if None) and ``ellipse`` are honoured.
    npt : int, optional
        Number of radial bins. Default: one bin per pixel of radius over ``r_range``.
    r_range : (r0, r1), optional
        Radial range in undistorted pixels. Default ``(0, R)`` with R the
        :func:`inscribed_radius` (floored to whole pixels when ``npt`` is not given).
    method : tuple
        pyFAI method; the algorithm must be CSR (its matrix is what we apply).
    pixel_size_m : float
        Physical pixel edge handed to pyFAI (only sets its units; results do not depend on it).

    Attributes
    ----------
    npt : int
    radius_px : array (npt,)
        Bin centres, undistorted pixels.
    radius_edges_px : array (npt + 1,)
    q : array (npt,)
        Bin centres in Å⁻¹ (q = 2π/d), linear in radius.
    csr : (data float32 (nnz,), indices int32 (nnz,), indptr int32 (npt + 1,))
        pyFAI's pixel-splitting matrix, rows = bins, columns = raveled pixels.
    ai : pyFAI AzimuthalIntegrator
        The integrator the matrix came from, for references (:meth:`integrate_pyfai`).
    """

    def __init__(self, shape: tuple[int, int], calibration: Calibration, *, npt: int | None = None,
                 r_range: tuple[float, float] | None = None, method=("bbox", "csr", "cython"),
                 pixel_size_m: float = 55e-6) -> None:
        try:
            ny, nx = (int(v) for v in shape)
        except (TypeError, ValueError):
            raise ValueError(f"shape must be (qy, qx), got {shape!r}") from None
        if ny < 2 or nx < 2:
            raise ValueError(f"shape must be at least (2, 2), got {shape!r}")
        if not isinstance(calibration, Calibration):
            raise ValueError("calibration must be an emlive.stream.protocol.Calibration")
        if calibration.reciprocal_pixel_size is None:
            raise ValueError("calibration needs reciprocal_pixel_size to map radius to q")
        if not (math.isfinite(pixel_size_m) and pixel_size_m > 0):
            raise ValueError(f"pixel_size_m must be finite and > 0, got {pixel_size_m!r}")
        if len(method) != 3 or str(method[1]).lower() != "csr":
            raise ValueError(f"method must be a (split, 'csr', impl) tuple, got {method!r}")
        self.shape = (ny, nx)
        self.npix = ny * nx
        self.calibration = calibration
        self.pixel_size_m = float(pixel_size_m)
        self.method = tuple(method)
        if r_range is None:
            r_in = inscribed_radius(self.shape, calibration)
            r_range = (0.0, float(math.floor(r_in)) if npt is None else r_in)
        r0, r1 = (float(v) for v in r_range)
        if not (math.isfinite(r0) and math.isfinite(r1) and 0 <= r0 < r1):
            raise ValueError(f"r_range must be finite with 0 <= r0 < r1, got {r_range!r}")
        if npt is None:
            npt = max(1, int(math.ceil(r1 - r0 - 1e-9)))
        if int(npt) != npt or npt < 1:
            raise ValueError(f"npt must be an integer >= 1, got {npt!r}")
        self.npt = int(npt)
        self.r_range = (r0, r1)

        self.ai = self._build_ai()
        self.radial_range_mm = (r0 * self.pixel_size_m * 1e3, r1 * self.pixel_size_m * 1e3)
        res = self.ai.integrate1d(np.zeros(self.shape, dtype=np.float32), self.npt, **self._pyfai_kwargs())
        engine = None
        for key, eng in self.ai.engines.items():
            if getattr(key, "algo_lower", None) == "csr" and getattr(key, "dim", 1) == 1 and eng.engine is not None:
                engine = eng.engine
        if engine is None:
            raise RuntimeError("pyFAI did not build a CSR engine")
        self.csr = (np.ascontiguousarray(engine.data, dtype=np.float32),
                    np.ascontiguousarray(engine.indices, dtype=np.int32),
                    np.ascontiguousarray(engine.indptr, dtype=np.int32))
        if self.csr[2].size != self.npt + 1:
            raise RuntimeError("pyFAI's CSR matrix does not have npt rows")
        self.radius_edges_px = np.linspace(r0, r1, self.npt + 1)
        # Bin centres in float64 (pyFAI reports them in float32: check they agree to its precision).
        self.radius_px = (self.radius_edges_px[:-1] + self.radius_edges_px[1:]) / 2
        if not np.allclose(np.asarray(res.radial) / (self.pixel_size_m * 1e3), self.radius_px, rtol=1e-5, atol=1e-4):
            raise RuntimeError("pyFAI's radial bins differ from the requested ones")
        self.q = self.radius_px * calibration.reciprocal_pixel_size
        self._row_of = np.repeat(np.arange(self.npt), np.diff(self.csr[2]))  # bin of every matrix entry
        self._rowsum = np.bincount(self._row_of, weights=self.csr[0], minlength=self.npt)

    # ------------------------------------------------------------ geometry
    def _build_ai(self):
        from pyFAI.detectors import Detector
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator

        cal, p = self.calibration, self.pixel_size_m
        ny, nx = self.shape
        cy, cx = cal.center if cal.center is not None else ((ny - 1) / 2, (nx - 1) / 2)
        det = Detector(pixel1=p, pixel2=p, max_shape=self.shape)
        m = ellipse_matrix(*cal.ellipse)
        if not np.allclose(m, np.eye(2), rtol=0, atol=1e-15):
            # Corner (i, j) of the pixel grid sits at index (i − 0.5, j − 0.5); de-warp it about the centre
            # and place it where pyFAI expects it ((index + 0.5)·pixel), so the radius is |M (p − c)|·pixel.
            dy = np.arange(ny + 1, dtype=float)[:, None] - 0.5 - cy
            dx = np.arange(nx + 1, dtype=float)[None, :] - 0.5 - cx
            uy = (m[0, 0] * dy + m[0, 1] * dx + cy + 0.5) * p
            ux = (m[1, 0] * dy + m[1, 1] * dx + cx + 0.5) * p
            corners = np.zeros((ny, nx, 4, 3), dtype=np.float64)
            # pyFAI corner order A (i, j), B (i+1, j), C (i+1, j+1), D (i, j+1); vertex (z, y, x).
            for c, (si, sj) in enumerate(((0, 0), (1, 0), (1, 1), (0, 1))):
                corners[:, :, c, 1] = uy[si:si + ny, sj:sj + nx]
                corners[:, :, c, 2] = ux[si:si + ny, sj:sj + nx]
            det.set_pixel_corners(corners)
        dist = camera_length_from_pixel_size(cal.reciprocal_pixel_size, cal.beam_energy_kev, p)
        return AzimuthalIntegrator(dist=dist, poni1=(cy + 0.5) * p, poni2=(cx + 0.5) * p, detector=det,
                                   wavelength=electron_wavelength(cal.beam_energy_kev) * 1e-10)

    def _pyfai_kwargs(self) -> dict:
        return dict(unit="r_mm", radial_range=self.radial_range_mm, method=self.method,
                    correctSolidAngle=False, polarization_factor=None)

    # --------------------------------------------------------- integration
    def sums(self, frames: np.ndarray, good: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Numerator Σ M·I·m and denominator Σ M·m per bin, each (n, npt) float64.

        Sums over any set of bins (an annulus) of both give that annulus's
        split-pixel sum and pixel count, which is what virtual detectors on
        I(Q) need. Arguments as in :meth:`integrate`.
        """
        data = self._frames(frames)
        n = data.shape[0]
        values, indices, indptr = self.csr
        num = np.empty((n, self.npt), dtype=np.float64)
        if good is None:
            _csr_sums(data, values, indices, indptr, num)
            den = np.broadcast_to(self._rowsum, (n, self.npt)).copy()
            return num, den
        g = np.asarray(good)
        if g.dtype != bool:
            raise ValueError(f"good must be a bool array (True = good pixel), got dtype {g.dtype}")
        if g.size == self.npix and g.ndim <= 2 and (g.ndim < 2 or g.shape == self.shape):
            # One mask for the chunk: drop the masked pixels from the matrix once (also skips their NaNs).
            keep = g.reshape(self.npix)[indices]
            w, ix, rows = values[keep], indices[keep], self._row_of[keep]
            ptr = np.zeros_like(indptr)
            np.cumsum(np.bincount(rows, minlength=self.npt), out=ptr[1:])
            _csr_sums(data, w, ix, ptr, num)
            row = np.bincount(rows, weights=w, minlength=self.npt)
            return num, np.broadcast_to(row, (n, self.npt)).copy()
        if g.shape not in ((n, self.npix), (n, *self.shape)):
            raise ValueError(f"good must have shape ({self.npix},), {self.shape}, ({n}, {self.npix}) or "
                             f"({n}, {self.shape[0]}, {self.shape[1]}), got {g.shape}")
        gm = np.ascontiguousarray(g.reshape(n, self.npix)).view(np.uint8)
        den = np.empty_like(num)
        exact32 = data.dtype.itemsize <= 2 or data.dtype == np.float32
        work = np.empty((2, self.npix), dtype=np.float32 if exact32 else np.float64)
        _csr_sums_masked(data, gm, values, indices, indptr, num, den, work[0], work[1])
        return num, den

    def integrate(self, frames: np.ndarray, good: np.ndarray | None = None) -> np.ndarray:
        """Masked mean intensity per radial bin, (n, npt) float64; NaN where a bin has no good pixel.

        Parameters
        ----------
        frames : array (n, qy, qx) or (n, qy*qx), any real numeric dtype (read as is, no float copy)
        good : bool array, optional
            True = use the pixel: (npix,) or (qy, qx) for the whole chunk, or (n, npix) / (n, qy, qx) per frame.
            Masked pixels never enter the sums (a NaN there is harmless); without a mask a NaN propagates.
        """
        num, den = self.sums(frames, good)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = num / den
        out[~(den > 0)] = np.nan
        return out

    def integrate_pyfai(self, frame: np.ndarray, good: np.ndarray | None = None) -> np.ndarray:
        """Reference: pyFAI ``integrate1d`` of one frame with the same integrator and settings, (npt,) float64.

        ``mask = ~good`` (pyFAI: 1 = masked); bins without a good pixel are NaN,
        as in :meth:`integrate`. pyFAI rebuilds its matrix whenever the mask
        changes, so this is slow with per-frame masks: tests and benchmarks only.
        """
        img = np.asarray(frame)
        if img.size != self.npix or img.ndim not in (1, 2):
            raise ValueError(f"frame must have {self.npix} pixels, got shape {img.shape}")
        mask = None
        if good is not None:
            g = np.asarray(good)
            if g.dtype != bool or g.size != self.npix:
                raise ValueError(f"good must be a bool array with {self.npix} pixels")
            mask = (~g).reshape(self.shape).astype(np.int8)
        res = self.ai.integrate1d(img.reshape(self.shape), self.npt, mask=mask, **self._pyfai_kwargs())
        out = np.asarray(res.intensity, dtype=np.float64).copy()
        out[~(np.asarray(res.sum_normalization) > 0)] = np.nan
        return out

    # -------------------------------------------------------------- helpers
    def _frames(self, frames: np.ndarray) -> np.ndarray:
        data = np.asarray(frames)
        if data.dtype == bool or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
            raise ValueError(f"frames must be a real numeric array, got dtype {data.dtype}")
        if data.ndim == 3 and data.shape[1:] == self.shape:
            pass
        elif not (data.ndim == 2 and data.shape[1] == self.npix):
            raise ValueError(f"frames must be (n, {self.shape[0]}, {self.shape[1]}) or (n, {self.npix}), "
                             f"got shape {data.shape}")
        return np.ascontiguousarray(data.reshape(data.shape[0], self.npix))

    def __repr__(self) -> str:
        return (f"RadialIntegrator(shape={self.shape}, npt={self.npt}, r_range={self.r_range}, "
                f"ellipse={self.calibration.ellipse}, nnz={self.csr[0].size})")


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _csr_sums(frames, values, indices, indptr, num):
    """num[f, b] = Σ_j values[j] · frames[f, indices[j]] over row b: gather straight from the raw dtype."""
    n = frames.shape[0]
    npt = indptr.size - 1
    for f in range(n):
        fr = frames[f]
        for b in range(npt):
            w = values[indptr[b]:indptr[b + 1]]
            ix = indices[indptr[b]:indptr[b + 1]]
            s = 0.0
            for j in range(w.size):
                s += np.float64(w[j]) * np.float64(fr[np.uint64(ix[j])])
            num[f, b] = s


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _csr_sums_masked(frames, good, values, indices, indptr, num, den, mv, kf):
    """As :func:`_csr_sums` with a per-frame 0/1 mask: also den[f, b] = Σ_j values[j] · good[f, indices[j]].

    Per frame, the masked frame (0 where masked: a select, so a masked NaN never
    reaches the sums) and the mask are first written out as floats ``mv``, ``kf``
    (npix,), float32 when that is exact for the input: the row sums are then
    gathers of one float type that LLVM vectorises, ~3× faster than gathering
    the raw dtype and the uint8 mask with a select per matrix entry.
    """
    n, npix = frames.shape
    npt = indptr.size - 1
    for f in range(n):
        fr = frames[f]
        g = good[f]
        for p in range(npix):
            ok = g[p] != 0
            mv[p] = fr[p] if ok else 0
            kf[p] = 1 if ok else 0
        for b in range(npt):
            w = values[indptr[b]:indptr[b + 1]]
            ix = indices[indptr[b]:indptr[b + 1]]
            s = 0.0
            d = 0.0
            for j in range(w.size):
                i = ix[j]
                wj = np.float64(w[j])
                s += wj * np.float64(mv[i])
                d += wj * np.float64(kf[i])
            num[f, b] = s
            den[f, b] = d

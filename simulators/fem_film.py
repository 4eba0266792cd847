"""Fluctuation electron microscopy (FEM) phantom: an amorphous film with medium-range-order domains.

Modelled on the pyxem FEM example (seed 002: a ZrCuAl glass, V_Ω(k) of
Daulton et al., Ultramicroscopy 110 (2010) 1279, HAADF black level 26265 counts
and slope 440.46 counts/nm used to bin by thickness, after Hwang & Voyles,
Microsc. Microanal. 17 (2011) 67 and Li et al., Microsc. Microanal. 20 (2014) 1605).

Every probe position sees an amorphous ring pattern whose strength is linear in
the local film thickness t. Coherent nano-diffraction from an amorphous solid is
speckled; where medium-range order (MRO) is present, the speckle is stronger at
the k of the ordered motif. This generator builds each pattern as

    expected(p) = dose * t(p) / t_ref * P(p) * (1 + a(k(p), region) * (S(p) - 1))

per detector pixel p, where P is the normalised ring profile I(k) (sums to 1 on
the detector), S is a unit-mean, unit-variance speckle field (|G|² of a circular
complex Gaussian field G with Gaussian correlation, so S is exponentially
distributed: fully developed speckle) and a(k, region) ∈ [0, 1] is the speckle
amplitude: a constant ``speckle_matrix`` outside the MRO domains, plus
``speckle_domain * exp(-(k - k_peak)² / (2 k_peak_width²))`` inside them.
Then Poisson electrons and the :class:`DetectorModel` make the recorded counts.

k convention: ``k = 1/d`` in Å⁻¹ (the FEM literature's), so a pixel at undistorted
radius r (pixels) has ``k = r * dk``; ``q = 2π k`` (see ``physics.py``).

Why the expected V(k) is known exactly: for the per-pixel normalised variance
over probe positions of one region (the "VImage" estimator, with the Poisson
term g/⟨I⟩ removed), E[S] = 1 and Var[S] = 1 give

    V_R(k) = (1 + a_R(k)²) ⟨t²⟩_R / ⟨t⟩_R² − 1,

which is a_R(k)² at constant thickness; the thickness term is why FEM bins by
HAADF. (Exactly, Var[S] is the pooled variance of the finite speckle bank below,
1 to within a few per cent; the ground truth uses it and reports it.)
Ring-averaged estimators (V_Ω) see a² reduced by the number of speckle
grains per ring and are not given.

Speed: a fresh correlated field per frame would cost two FFTs; instead a bank of
``n_bank`` periodic speckle fields is drawn once from the seed, and each frame
uses one of them cyclically shifted by a random offset (the fields are
stationary and periodic, so a shifted field has the same statistics). Frames
then cost one pass to build the pattern, a cumulative sum, and the electron
binning of ``detector.py``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

from .detector import DetectorModel, electron_indices, frame_rng
from .phantom import BinnedElectronPhantom

__all__ = ["FEMFilm"]

logger = logging.getLogger(__name__)



class FEMFilm(BinnedElectronPhantom):
    group_frames = 32  # frames per vectorised pass (their counts stay in cache)

    """Scanned nano-diffraction of a thickness-graded amorphous film with MRO domains.

    Frame ``i`` sits at scan position ``divmod(i, nx)`` and is drawn from its own
    random stream hashed from (``seed``, ``i``), so any frame regenerates alone.

    Parameters
    ----------
    scan_shape : (ny, nx)
        Probe positions.
    detector : DetectorModel, optional
        Detector (shape, gain, defects, beam stop, ellipse). Default: a 128²
        counting detector without defects.
    dose : float
        Mean electrons per pattern at thickness ``t_ref`` (before the beam stop).
    dk : float
        Reciprocal pixel size, Å⁻¹ per pixel in the k = 1/d convention.
    ring_k, ring_width, ring_height : tuple of float
        Centres (Å⁻¹), Gaussian widths (Å⁻¹) and heights of the amorphous peaks of I(k).
    diffuse_height, diffuse_width : float
        A Gaussian diffuse background b exp(-k² / (2 w²)) under the peaks.
    thickness_range : (t_min, t_max)
        Film thickness in nm; it ramps mostly along x (80 %) and partly along y (20 %).
    k_peak, k_peak_width : float
        Where the MRO speckle is concentrated, Å⁻¹.
    speckle_matrix, speckle_domain : float
        Speckle amplitudes a (see the module docstring); their sum must be <= 1.
    domain_fraction, domain_size : float
        Area fraction of the MRO domains and their smoothing length in probe positions.
    speckle_length : float
        Correlation length of the speckle on the detector in pixels: the
        intensity correlation is exp(-r² / speckle_length²).
    haadf_black, haadf_slope, haadf_noise : float
        HAADF counts = black + slope * t (nm) + Gaussian noise of this std (seed 002 values).
    n_bank : int
        Number of precomputed speckle fields.
    seed : int

    Examples
    --------
    >>> sim = FEMFilm(scan_shape=(4, 4), detector=DetectorModel(shape=(32, 32)), dk=0.025, seed=1)
    >>> sim.frames(2, 3).shape, sim.frames(2, 3).dtype
    ((3, 32, 32), dtype('uint16'))
    >>> bool((sim.frames(3, 1)[0] == sim.frames(2, 3)[1]).all())
    True
    >>> sim.haadf(0, 16).shape, round(float(sim.ground_truth()["k_peak"]), 2)
    ((16,), 0.4)
    """

    def __init__(self, scan_shape: tuple[int, int] = (64, 64), detector: DetectorModel | None = None,
                 dose: float = 2000.0, dk: float = 0.0125,
                 ring_k: tuple[float, ...] = (0.40, 0.68), ring_width: tuple[float, ...] = (0.035, 0.06),
                 ring_height: tuple[float, ...] = (1.0, 0.4), diffuse_height: float = 0.25,
                 diffuse_width: float = 0.3, thickness_range: tuple[float, float] = (20.0, 40.0),
                 k_peak: float = 0.40, k_peak_width: float = 0.04, speckle_matrix: float = 0.2,
                 speckle_domain: float = 0.6, domain_fraction: float = 0.3, domain_size: float = 3.0,
                 speckle_length: float = 2.0, haadf_black: float = 26265.0, haadf_slope: float = 440.46,
                 haadf_noise: float = 0.0, n_bank: int = 32, seed: int = 0) -> None:
        self.scan_shape = tuple(int(s) for s in scan_shape)
        if len(self.scan_shape) != 2 or min(self.scan_shape) < 1:
            raise ValueError(f"scan_shape must be two positive integers, got {scan_shape!r}")
        self.detector = DetectorModel(shape=(128, 128)) if detector is None else detector
        if not isinstance(self.detector, DetectorModel):
            raise TypeError(f"detector must be a DetectorModel, got {type(detector).__name__}")
        if not (len(ring_k) == len(ring_width) == len(ring_height)):
            raise ValueError("ring_k, ring_width and ring_height must have the same length, got "
                             f"{len(ring_k)}, {len(ring_width)}, {len(ring_height)}")
        for name, value in (("dose", dose), ("dk", dk), ("speckle_length", speckle_length),
                            ("domain_size", domain_size), ("k_peak_width", k_peak_width)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        if not (0 <= speckle_matrix and 0 <= speckle_domain and speckle_matrix + speckle_domain <= 1):
            raise ValueError("speckle amplitudes must be >= 0 with speckle_matrix + speckle_domain <= 1 "
                             f"(so intensities stay >= 0), got {speckle_matrix} + {speckle_domain}")
        if not 0 < domain_fraction < 1:
            raise ValueError(f"domain_fraction must be in (0, 1), got {domain_fraction}")
        t_min, t_max = (float(t) for t in thickness_range)
        if not 0 < t_min <= t_max:
            raise ValueError(f"thickness_range must satisfy 0 < t_min <= t_max, got {thickness_range!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.dose, self.dk, self.seed = float(dose), float(dk), int(seed)
        self.ring = (tuple(map(float, ring_k)), tuple(map(float, ring_width)), tuple(map(float, ring_height)))
        self.diffuse = (float(diffuse_height), float(diffuse_width))
        self.k_peak, self.k_peak_width = float(k_peak), float(k_peak_width)
        self.speckle_matrix, self.speckle_domain = float(speckle_matrix), float(speckle_domain)
        self.haadf_black, self.haadf_slope = float(haadf_black), float(haadf_slope)
        self.haadf_noise = float(haadf_noise)
        self._key = int(np.random.SeedSequence([self.seed, 2]).generate_state(1, np.uint64)[0])
        self._make_scan_maps(t_min, t_max, domain_fraction, domain_size)
        self._make_pattern()
        self._make_bank(int(n_bank), float(speckle_length))
        self._bitgen = np.random.SFC64(0)

    @property
    def n_frames(self) -> int:
        return self.scan_shape[0] * self.scan_shape[1]

    # ------------------------------------------------------------------ model
    def intensity_profile(self, k: np.ndarray) -> np.ndarray:
        """Unnormalised amorphous profile I(k): Gaussian peaks plus a diffuse Gaussian, k = 1/d in Å⁻¹."""
        k = np.asarray(k, dtype=float)
        out = self.diffuse[0] * np.exp(-k ** 2 / (2 * self.diffuse[1] ** 2))
        for kj, wj, hj in zip(*self.ring):
            out = out + hj * np.exp(-(k - kj) ** 2 / (2 * wj ** 2))
        return out

    def speckle_amplitude(self, k: np.ndarray, in_domain: bool) -> np.ndarray:
        """Speckle amplitude a(k) of the matrix or of the MRO domains (the per-pixel V is a² at fixed t)."""
        k = np.asarray(k, dtype=float)
        a = np.full(k.shape, self.speckle_matrix)
        if in_domain:
            a = a + self.speckle_domain * np.exp(-(k - self.k_peak) ** 2 / (2 * self.k_peak_width ** 2))
        return a

    def expected_pattern(self, index: int) -> np.ndarray:
        """Mean electrons per detector pixel at probe ``index``, averaged over speckle (after the beam stop)."""
        t = self._thickness.ravel()[index]
        return (self.dose * t / self._t_ref) * self._p_pix * self._transmission

    # ------------------------------------------------------------------ API
    def haadf(self, first: int, count: int) -> np.ndarray:
        """HAADF counts of probes ``first .. first + count - 1``: black + slope * t + noise (fixed by the seed)."""
        if not (0 <= first and 0 <= count and first + count <= self.n_frames):
            raise ValueError(f"probes {first}..{first + count - 1} are outside the scan of {self.n_frames}")
        return self._haadf.ravel()[first:first + count].copy()

    def ground_truth(self) -> dict[str, np.ndarray | float]:
        """What the frames were drawn from.

        Returns
        -------
        dict
            Scan maps (``scan_shape``): ``domain_mask`` (bool, MRO present),
            ``thickness`` (nm), ``haadf_expected`` (counts, noise-free).
            Scalars: ``k_peak`` (Å⁻¹), ``haadf_black``, ``haadf_slope`` (counts/nm),
            ``t_ref`` (nm), ``dose``, ``dk``, ``speckle_variance`` (Var[S] of the bank).
            Curves on ``k`` (Å⁻¹, 1/d, eight points per pixel of radius up to
            the detector edge): ``intensity_k`` (mean electrons per pixel at
            ``t_ref``), ``speckle_amplitude_domain``/``_matrix`` (a(k)),
            ``variance_intrinsic_domain``/``_matrix`` (a² Var[S], per-pixel V at
            fixed t), ``variance_domain``/``_matrix`` (per-pixel V over the region's
            probes including its thickness spread; see the module docstring).
            Detector maps: ``k_map`` (undistorted k of each pixel), ``dead_mask``,
            ``hot_mask``, ``beam_stop_mask``, ``distortion_matrix``.
        """
        # Eight points per pixel of radius, so linear interpolation of the curves is accurate to ~1e-3.
        k = np.arange(0, 8 * int(math.ceil(self._k_pix.max() / self.dk)) + 1) * (self.dk / 8)
        truth: dict[str, np.ndarray | float] = {
            "domain_mask": self._domain.copy(), "thickness": self._thickness.copy(),
            "haadf_expected": self.haadf_black + self.haadf_slope * self._thickness,
            "k_peak": self.k_peak, "haadf_black": self.haadf_black, "haadf_slope": self.haadf_slope,
            "t_ref": self._t_ref, "dose": self.dose, "dk": self.dk, "k": k, "speckle_variance": self._speckle_var,
            "intensity_k": self.dose * self.intensity_profile(k) / self._norm,
            "k_map": self._k_pix.copy(), "dead_mask": self.detector.dead_mask,
            "hot_mask": self.detector.hot_mask, "beam_stop_mask": self.detector.beam_stop_mask,
            "distortion_matrix": self.detector.distortion_matrix,
        }
        for name, inside in (("domain", True), ("matrix", False)):
            a = self.speckle_amplitude(k, inside)
            t = self._thickness[self._domain == inside]
            ratio = float(np.mean(t ** 2) / np.mean(t) ** 2) if t.size else math.nan
            truth[f"speckle_amplitude_{name}"] = a
            truth[f"variance_intrinsic_{name}"] = a ** 2 * self._speckle_var
            truth[f"variance_{name}"] = (1 + a ** 2 * self._speckle_var) * ratio - 1
        return truth

    # ------------------------------------------------------------------ internals
    def _electrons(self, first: int, count: int) -> np.ndarray:
        """Electron counts (count, qy, qx) of frames first.., each from its own stream."""
        qy, qx = self.detector.shape
        npix = qy * qx
        thickness = self._thickness.ravel()
        domain = self._domain.ravel()
        idx_all = []
        fallback = {}
        for f in range(count):
            i = first + f
            rng = frame_rng(self._key, i, self._bitgen)
            b = int(rng.integers(self._bank.shape[0]))
            sy = int(rng.integers(qy))
            sx = int(rng.integers(qx))
            base, amp = self._patterns[bool(domain[i])]
            unit = amp * self._bank[b, sy:sy + qy, sx:sx + qx]
            unit += base
            scale = self.dose * thickness[i] / self._t_ref
            if scale * self._unit_total > 0.5 * npix:  # dense frame: per-pixel Poisson is cheaper
                fallback[f] = rng.poisson(unit * scale).ravel()
                continue
            cdf = np.cumsum(unit.ravel())
            idx = electron_indices(cdf, rng, scale)
            idx += f * npix
            idx_all.append(idx)
        flat = np.bincount(np.concatenate(idx_all) if idx_all else np.zeros(0, np.int64),
                           minlength=count * npix).reshape(count, npix)
        for f, values in fallback.items():
            flat[f] = values
        return flat.reshape(count, qy, qx)

    def _make_scan_maps(self, t_min: float, t_max: float, fraction: float, size: float) -> None:
        ny, nx = self.scan_shape
        v = np.linspace(0.0, 1.0, ny)[:, None] if ny > 1 else np.zeros((1, 1))
        u = np.linspace(0.0, 1.0, nx)[None, :] if nx > 1 else np.zeros((1, 1))
        self._thickness = np.broadcast_to(t_min + (t_max - t_min) * (0.8 * u + 0.2 * v), (ny, nx)).copy()
        self._t_ref = 0.5 * (t_min + t_max)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        field = ndimage.gaussian_filter(rng.standard_normal((ny, nx)), size, mode="wrap")
        self._domain = field > np.quantile(field, 1 - fraction)
        noise = rng.standard_normal((ny, nx)) * self.haadf_noise
        self._haadf = self.haadf_black + self.haadf_slope * self._thickness + noise
        logger.debug("FEM phantom: %d domain probes of %d, thickness %.1f-%.1f nm",
                     int(self._domain.sum()), ny * nx, t_min, t_max)

    def _make_pattern(self) -> None:
        """Per-pixel k, the normalised profile P and the two region patterns (base, amplitude)."""
        self._k_pix = self.detector.physical_radius() * self.dk
        prof = self.intensity_profile(self._k_pix)
        self._norm = float(prof.sum())
        self._p_pix = prof / self._norm
        self._transmission = (~self.detector.beam_stop_mask).astype(np.float64)
        p = self._p_pix * self._transmission
        self._patterns = {}
        for inside in (False, True):
            a = self.speckle_amplitude(self._k_pix, inside)
            self._patterns[inside] = (p * (1 - a), p * a)
        self._unit_total = float(p.sum())

    def _make_bank(self, n_bank: int, length: float) -> None:
        """``n_bank`` periodic unit-mean speckle fields, tiled 2x2 so a shifted copy is a view.

        G = ifft2(H W) with W circular complex white noise and |H|² the Fourier
        transform of the amplitude correlation exp(-r² / (2 ξ²)); scaling H so
        that Σ|H|² = N² makes E|G|² = 1 exactly, so S = |G|² has mean 1 and
        variance 1, with intensity correlation exp(-r² / ξ²).
        """
        if n_bank < 1:
            raise ValueError(f"n_bank must be >= 1, got {n_bank}")
        qy, qx = self.detector.shape
        fy = np.fft.fftfreq(qy)[:, None]
        fx = np.fft.fftfreq(qx)[None, :]
        h = np.exp(-(math.pi * length) ** 2 * (fy ** 2 + fx ** 2))
        h *= math.sqrt(qy * qx) * math.sqrt(qy * qx) / math.sqrt(float((h ** 2).sum()))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 3]))
        w = (rng.standard_normal((n_bank, qy, qx)) + 1j * rng.standard_normal((n_bank, qy, qx))) / math.sqrt(2)
        s = np.abs(np.fft.ifft2(h * w)) ** 2
        # A frame reads one bank field at a uniformly random shift, so a pixel's speckle value is
        # drawn from the pooled bank values: normalise each field to unit spatial mean (making
        # E[S] = 1 exact for this bank, not only over banks) and use the pooled variance
        # (1 up to ~1/sqrt(bank grains)) in the ground truth.
        s /= s.mean(axis=(1, 2), keepdims=True)
        self._speckle_var = float(((s - 1) ** 2).mean())
        self._bank = np.tile(s, (1, 2, 2))

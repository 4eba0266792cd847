"""SNEM phantom: a Ni | Zr–X metallic glass | Ni laminate scanned by precession electron diffraction.

Modelled on seed 000 (scanning nano-structure electron microscopy, SNEM, of a
hot-rolled Ni / Zr65Cu17.5Ni10Al7.5 / Ni laminate, 200 kV, 1° precession, 3 nm
steps). What the analyses (masking -> azimuthal integration -> ePDF -> QoIs,
/work/shared/research/algorithms.md (a)) must recover is built in as ground truth:

Glass (seed 2.3): a pseudo-binary Zr–X alloy, X = Cu/Ni/Al with the nominal
X mixture (Cu 0.5, Ni 0.286, Al 0.214). The Zr fraction ``c`` is highest at the
layer centre and falls towards both interfaces (Ni enrichment); the SRO
parameter α of the seed's Eqs. 1–2 varies in a "W" across the layer plus two
patches. Pair fractions (x_ZrZr, x_ZrX, x_XX) follow from (c, α) by
:func:`pair_fractions`, which inverts Eqs. 1–2 exactly (see there).

From the pair fractions, Gaussian first shells of the partial g_ij(r) (X–X 2.55,
Zr–X 2.85, Zr–Zr 3.20 Å; seed: Ni–Ni ≥ 2.48, Zr–Zr ≈ 3.2 Å) carry N_ij
neighbours for a total coordination 12, followed by a damped oscillation to 1.
Then (Faber–Ziman, q-dependent weights, per atom, in Å²)

    S_ij(Q) − 1 = (4πρ/Q) ∫ r (g_ij(r) − 1) sin(Qr) dr,
    I(Q) = ⟨f²⟩ + Σ_ij c_i c_j f_i f_j (S_ij(Q) − 1)  = ⟨f²⟩ + ⟨f⟩² (S(Q) − 1),

f = electron form factors (:mod:`form_factors`), ⟨f⟩ = c f_Zr + (1 − c) f_X with
f_X the X-mixture mean, ⟨f²⟩ = c f_Zr² + (1 − c) ⟨f_X²⟩ over the real species.
The fraction of the beam scattered into a pixel is γ² ρ t I(Q) ΔΩ (single
scattering, γ the Lorentz factor, ΔΩ = (λ dq / 2π)² sr per pixel); the rest
stays in the direct beam, a Gaussian spot bright enough to saturate the
detector centre. The default 15 nm sends ~35 % (Zr-rich) to ~45 % (Ni) of the
beam onto the detector; much thicker lamellae break single scattering and are
refused (> 95 %). The partials model the first shells only; below the first
peak Q1, S(Q) is replaced by a half Gaussian rising from S(0) = 0.05 (see
:func:`smooth_low_q`), and I(Q) is kept >= 2 % of ⟨f²⟩ as a guard.

Ground-truth G(r) is what an ideal reduction would give from this S(Q):
(2/π) ∫ Q (S − 1) sin(Qr) dQ over Q ∈ [1, Q_full] (Q_full = inscribed detector
circle), termination ripples included; r_max is its maximum on 2.1–4 Å (seed
Table S1 (iii)) with a parabolic refinement. Patterns and G(r) use the same
bilinear interpolation between (c, α) classes; the c and α maps themselves
are exact.

Ni (fcc, a = 3.524 Å) at a zone axis: ZOLZ reflections with kinematic
|ψ_g|² = (λ F_g / V_c)² ⟨sin²(π t s_g)/(π s_g)²⟩, F_g = 4 f_e(g) e^{−M}, and
excitation error s_g = λ k²/2 − k φ cos(ψ − ψ_g) (k = g/2π) averaged over the
precession azimuth ψ (φ = 0: no precession, the curved Ewald sphere weakens
outer spots). Plus thermal-diffuse background f_e²(1 − e^{−2M}). If the spots
would take more than ``max_bragg_fraction`` of the beam (kinematic theory fails
for tens of nm of Ni) all are scaled down together: a crude, documented stand-in for
dynamical saturation.

Inclusions: a few discs inside the glass hold an fcc nano-crystal whose {111}
spots lie on the first diffuse ring (a = 2π√3 / Q1), [011] zone, random in-plane
rotation, volume fraction v(d) = v0 (1 − d²/R²) inside the disc and exactly 0 outside.

Speed: every pixel's expected pattern is a non-negative mixture of a few
precomputed templates (glass classes on a (c, α) grid, bilinear weights; Ni;
each inclusion) plus the direct beam. Poisson processes superpose, so each
frame draws each component's electrons from its own precomputed CDF
(``detector.electron_indices``) and the direct beam per pixel on a small patch:
no per-frame pattern is ever built. Each frame uses its own stream
``frame_rng(key, index)``, so frames do not depend on chunking.

Conventions: q = 2π/d in Å⁻¹ (``reciprocal_pixel_size`` is Å⁻¹ per pixel in q);
detector offsets go through ``DetectorModel.distort_coordinates`` (ellipse).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from . import physics
from .detector import DetectorModel, electron_indices, frame_rng
from .form_factors import electron_form_factor
from .glass import (GR_R, X_MIXTURE, glass_curves, glass_density, glass_intensity, intensity_cache,
                    mixture_form_factors, pair_fractions, peak_position, reduced_pdf, sro_alpha)
from .phantom import BinnedElectronPhantom

__all__ = ["NI_LATTICE", "SnemLaminate", "fcc_reflections", "glass_density", "glass_intensity",
           "kinematic_spot_power", "pair_fractions", "peak_position", "reduced_pdf", "sro_alpha"]

logger = logging.getLogger(__name__)

NI_LATTICE = 3.524  # Å
_B_DW = 0.37  # Å², Debye–Waller B of Ni at room temperature


def fcc_reflections(a: float, zone_axis: tuple[int, int, int], q_max: float,
                    rotation: float = 0.0) -> np.ndarray:
    """ZOLZ reflections of an fcc lattice at ``zone_axis`` with |g| <= q_max.

    Returns rows (h, k, l, gy, gx, |g|) with g = 2π (h, k, l)/a (Å⁻¹, q
    convention) projected on the pattern plane: x along a fixed direction
    perpendicular to the zone axis, rotated by ``rotation`` (rad, +x towards +y).
    fcc: h, k, l all even or all odd (structure factor 4 f); ZOLZ: g · u = 0.
    """
    u = np.asarray(zone_axis, dtype=float)
    if u.shape != (3,) or not np.any(u):
        raise ValueError(f"zone_axis must be three integers, not all 0, got {zone_axis!r}")
    u /= np.linalg.norm(u)
    trial = np.array([1.0, 0, 0]) if abs(u[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = trial - (trial @ u) * u
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    n = int(math.ceil(q_max * a / (2 * math.pi))) + 1
    rows = []
    rng_ = range(-n, n + 1)
    for h in rng_:
        for k in rng_:
            for l in rng_:
                if (h, k, l) == (0, 0, 0) or len({h % 2, k % 2, l % 2}) != 1:
                    continue
                g = 2 * math.pi * np.array([h, k, l]) / a
                if abs(g @ u) > 1e-9 or np.linalg.norm(g) > q_max:
                    continue
                x, y = g @ e1, g @ e2
                c, s = math.cos(rotation), math.sin(rotation)
                rows.append((h, k, l, s * x + c * y, c * x - s * y, np.linalg.norm(g)))
    return np.array(rows, dtype=float).reshape(-1, 6)


def kinematic_spot_power(g: np.ndarray, f_g: np.ndarray, cell_volume: float, thickness: float,
                         wavelength: float, precession: float, n_azimuth: int = 2048) -> np.ndarray:
    """Fraction of the beam in each spot: (λ F_g / V_c)² ⟨sin²(π t s)/(π s)²⟩ over the precession azimuth.

    ``g`` in Å⁻¹ (q convention), ``f_g`` the structure factor in Å, lengths in Å,
    ``precession`` the semi-angle φ in rad. The excitation error (1/d convention)
    of a ZOLZ reflection with the beam tilted by φ at azimuth ψ is
    s = λk²/2 − kφ cos ψ, k = g/2π; at φ = 0 the Ewald curvature alone.
    """
    k = np.asarray(g, dtype=float) / (2 * math.pi)
    psi = (np.arange(n_azimuth) + 0.5) * 2 * math.pi / n_azimuth
    s = wavelength * k[:, None] ** 2 / 2 - k[:, None] * precession * np.cos(psi)[None, :]
    x = math.pi * thickness * s
    shape = thickness ** 2 * np.sinc(x / math.pi) ** 2  # sin²(π t s)/(π s)²
    return (wavelength * np.asarray(f_g) / cell_volume) ** 2 * shape.mean(axis=1)


# ----------------------------------------------------------------- the phantom
class SnemLaminate(BinnedElectronPhantom):
    group_frames = 16  # frames per vectorised pass (their counts stay in cache)

    """Scanned precession diffraction across Ni | Zr–X glass | Ni, with ground truth for SNEM.

    Frame ``i`` sits at scan position ``divmod(i, nx)``; layers run along x.

    Parameters
    ----------
    scan_shape : (ny, nx)
    layers : (ni_left, glass, ni_right) or None
        Layer widths in probe positions, summing to nx; default 20 % | 60 % | 20 %.
    detector : DetectorModel, optional
        Default: 128² integrating camera, gain 4, 12-bit saturation (4095),
        slight ellipse (ratio 1.02): the direct beam saturates as in the seed.
    dose : float
        Electrons per frame (incident).
    reciprocal_pixel_size : float
        Å⁻¹ per pixel in the q = 2π/d convention.
    beam_energy_kev : float
        200 keV in the seed.
    thickness_nm, step_nm : float
        Lamella thickness (single-scattering intensities) and scan step (metadata).
    c_zr_center, c_zr_edge : float
        Zr fraction at the glass centre and at the interfaces.
    alpha_amplitude : float
        Amplitude of the "W" profile and of the patches of α.
    zone_axis, ni_rotation_deg : Ni orientation.
    ni_grains : {"single", "nano"}
        ``single``: one Ni crystal at the zone axis (spots); ``nano``:
        nanocrystalline Ni, many random grains in the probe volume, so the
        pattern holds powder rings at every fcc |g| (Debye–Scherrer) and the
        G(r) of the Ni layers shows the fcc distances (seed: "regions of single
        or multi-crystal nickel").
    precession_deg : float
        Precession semi-angle (seed: 1°); 0 switches precession off.
    n_inclusions, inclusion_radius, inclusion_fraction : nano-crystals in the glass.
    n_c_classes, n_alpha_classes : int
        Template grid in (c, α).
    interface_width : float
        Width (probe positions) of the smooth Ni/glass mixing at each interface.
    beam_sigma, spot_sigma : float
        Gaussian widths (pixels) of the direct beam and of diffraction spots.
    max_bragg_fraction : float
        Cap on the total spot power of one crystal (see module docstring).
    seed : int

    Examples
    --------
    >>> sim = SnemLaminate(scan_shape=(4, 10), detector=DetectorModel(shape=(32, 32)),
    ...                    reciprocal_pixel_size=0.5, n_inclusions=0, seed=1)
    >>> sim.frames(3, 2).shape, sim.frames(3, 2).dtype
    ((2, 32, 32), dtype('uint16'))
    >>> bool((sim.frames(4, 1)[0] == sim.frames(3, 2)[1]).all())
    True
    """

    def __init__(self, scan_shape: tuple[int, int] = (48, 64), layers: tuple[int, int, int] | None = None,
                 detector: DetectorModel | None = None, dose: float = 2e4,
                 reciprocal_pixel_size: float = 0.14, beam_energy_kev: float = 200.0,
                 thickness_nm: float = 15.0, step_nm: float = 3.0, c_zr_center: float = 0.65,
                 c_zr_edge: float = 0.25, alpha_amplitude: float = 0.15,
                 zone_axis: tuple[int, int, int] = (0, 0, 1), ni_rotation_deg: float = 12.0,
                 precession_deg: float = 1.0, n_inclusions: int = 3, inclusion_radius: float = 3.0,
                 inclusion_fraction: float = 0.5, n_c_classes: int = 16, n_alpha_classes: int = 5,
                 interface_width: float = 1.0, beam_sigma: float = 0.8, spot_sigma: float = 1.0,
                 max_bragg_fraction: float = 0.4, ni_grains: str = "single", seed: int = 0) -> None:
        ny, nx = (int(v) for v in scan_shape)
        if ny < 1 or nx < 3:
            raise ValueError(f"scan_shape must be (ny >= 1, nx >= 3), got {scan_shape!r}")
        self.scan_shape = (ny, nx)
        if layers is None:
            side = max(1, round(0.2 * nx))
            layers = (side, nx - 2 * side, side)
        if len(layers) != 3 or sum(layers) != nx or min(layers) < 0 or layers[1] < 1:
            raise ValueError(f"layers must be three widths (Ni, glass >= 1, Ni) summing to nx={nx}, got {layers!r}")
        self.layers = tuple(int(v) for v in layers)
        self.detector = detector or DetectorModel(shape=(128, 128), gain=4.0, saturation=4095.0,
                                                  ellipse_ratio=1.02, ellipse_angle=0.4)
        for name, v in (("dose", dose), ("reciprocal_pixel_size", reciprocal_pixel_size),
                        ("beam_energy_kev", beam_energy_kev), ("thickness_nm", thickness_nm)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v}")
        if not (0 <= c_zr_edge <= 1 and 0 <= c_zr_center <= 1):
            raise ValueError("c_zr_center and c_zr_edge must be in [0, 1]")
        if not 0 <= alpha_amplitude <= 0.45:
            raise ValueError(f"alpha_amplitude must be in [0, 0.45], got {alpha_amplitude}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if precession_deg < 0 or n_inclusions < 0 or inclusion_radius <= 0 or not 0 <= inclusion_fraction <= 1:
            raise ValueError("precession_deg >= 0, n_inclusions >= 0, inclusion_radius > 0 and "
                             f"inclusion_fraction in [0, 1] expected, got {precession_deg}, {n_inclusions}, "
                             f"{inclusion_radius}, {inclusion_fraction}")
        if n_c_classes < 1 or n_alpha_classes < 1:
            raise ValueError(f"n_c_classes and n_alpha_classes must be >= 1, got {n_c_classes}, {n_alpha_classes}")
        self.dose = float(dose)
        self.dq = float(reciprocal_pixel_size)
        self.energy = float(beam_energy_kev)
        self.wavelength = physics.wavelength(self.energy)
        self.thickness = 10.0 * float(thickness_nm)  # Å
        self.step_nm = float(step_nm)
        self.zone_axis = tuple(int(v) for v in zone_axis)
        self.precession = math.radians(precession_deg)
        self.beam_sigma, self.spot_sigma = float(beam_sigma), float(spot_sigma)
        self.max_bragg_fraction = float(max_bragg_fraction)
        if ni_grains not in ("single", "nano"):
            raise ValueError(f"ni_grains must be 'single' or 'nano', got {ni_grains!r}")
        self.ni_grains = ni_grains
        self.seed = int(seed)
        self._key = int(np.random.SeedSequence(self.seed).generate_state(1, np.uint64)[0])
        self._bitgen = np.random.SFC64(0)
        self._rng0 = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5E3]))
        self._geometry()
        self._maps(c_zr_center, c_zr_edge, alpha_amplitude, n_inclusions, inclusion_radius,
                   inclusion_fraction, interface_width)
        self._glass_templates(n_c_classes, n_alpha_classes)
        self._crystal_templates(math.radians(ni_rotation_deg))
        self._mixture()
        logger.info("SnemLaminate ready: scan %s, layers %s, %d glass classes, %d inclusions",
                    self.scan_shape, self.layers, self._n_glass, len(self._incl_tpl))

    # ------------------------------------------------------------- public
    @property
    def frame_shape(self) -> tuple[int, int]:
        """(qy, qx) of the detector: what a camera streaming this phantom declares."""
        return tuple(self.detector.shape)

    @property
    def n_frames(self) -> int:
        return self.scan_shape[0] * self.scan_shape[1]

    @property
    def calibration(self) -> dict:
        """Header values an analysis needs: energy, q pixel size (q = 2π/d), centre, ellipse."""
        det = self.detector
        return {"beam_energy_kev": self.energy, "wavelength_A": self.wavelength,
                "reciprocal_pixel_size": self.dq, "q_convention": "q = 2pi/d, 1/Angstrom per pixel",
                "dk": self.dq / (2 * math.pi), "center": det.pattern_center,
                "ellipse": {"ratio": det.ellipse_ratio, "angle": det.ellipse_angle},
                "gain": det.gain, "saturation": det.saturation,
                "precession_angle_deg": math.degrees(self.precession)}

    @property
    def sample(self) -> dict:
        """Sample description for the stream's start header (seed 000)."""
        return {"name": "Ni | Zr65Cu17.5Ni10Al7.5 | Ni laminate (SNEM phantom)",
                "layers": ["Ni", "Zr65Cu17.5Ni10Al7.5", "Ni"], "layer_widths_px": list(self.layers),
                "layer_widths_nm": [w * self.step_nm for w in self.layers], "step_nm": self.step_nm,
                "thickness_nm": self.thickness / 10, "composition_nominal": {"Zr": 65.0, "Cu": 17.5,
                                                                            "Ni": 10.0, "Al": 7.5},
                "pseudo_binary_x": dict(X_MIXTURE), "ni_lattice_A": NI_LATTICE,
                "ni_zone_axis": list(self.zone_axis)}

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Maps (ny, nx) and curves the frames were drawn from.

        Maps: ``glass_fraction`` (0 Ni .. 1 glass), ``phase`` (0 Ni, 1 glass,
        2 inclusion: glass_fraction >= 0.5 decides Ni/glass), ``c_zr``,
        ``alpha``, ``x_zrzr``, ``x_zrx``, ``x_xx`` (exact, Eqs. 1–2 hold),
        ``density`` (atoms/Å³), ``r_max`` (Å, first peak of G on 2.1–4 Å of the
        bilinearly interpolated class G(r) the pattern was built from; NaN
        without glass), ``inclusion_mask``, ``inclusion_label`` (0 none, 1..n),
        ``inclusion_fraction`` (v), ``scattered_fraction`` (expected fraction of
        the dose off the direct beam, before the beam stop).
        Curves: ``q`` (Å⁻¹), ``class_c_zr``, ``class_alpha``, ``iq_classes``
        (n_c, n_α, nq; I(Q) per atom, Å²), ``sq_classes``, ``r`` (Å),
        ``gr_classes`` (n_c, n_α, nr; G(r) from Q in ``gr_qrange``),
        ``gr_qrange``; ``ni_reflections`` rows (h, k, l, gy, gx, |g|, power),
        ``inclusion_reflections`` rows (label, h, k, l, gy, gx, |g|, power).
        """
        truth = {k: v.copy() for k, v in self._truth.items()}
        return truth

    def expected_pattern(self, index: int) -> np.ndarray:
        """Expected electrons per pixel of frame ``index`` arriving past the beam stop (before gain and defects).

        The mean of :meth:`frames` is ``detector.gain`` times this (below saturation, on good pixels).
        """
        comp, weight = self._comp[index], self._weight[index]
        out = self._beam * (self.dose * self._beam_weight[index])
        for c, w in zip(comp, weight):
            if w > 0:
                out = out + self._templates[c] * (self.dose * w * self._transmission)
        return out

    def _electrons(self, first: int, count: int) -> np.ndarray:
        """Electron counts (count, qy, qx) of frames first.., each from its own stream."""
        qy, qx = self.detector.shape
        npix = qy * qx
        parts = []
        beam_idx = self._beam_pix
        beam_mean = self._beam_patch * self.dose
        beam_counts = np.empty((count, beam_idx.size), dtype=np.int64)
        for f in range(count):
            i = first + f
            rng = frame_rng(self._key, i, self._bitgen)
            beam_counts[f] = rng.poisson(beam_mean * self._beam_weight[i])
            for c, w in zip(self._comp[i], self._weight[i]):
                if w > 0:
                    idx = electron_indices(self._cdfs[c], rng, self.dose * w)
                    idx += f * npix
                    parts.append(idx)
        flat = np.bincount(np.concatenate(parts) if parts else np.zeros(0, np.int64),
                           minlength=count * npix).reshape(count, npix)
        flat[:, beam_idx] += beam_counts
        return flat.reshape(count, qy, qx)

    # ------------------------------------------------------------- construction
    def _geometry(self) -> None:
        det = self.detector
        cy, cx = det.pattern_center
        yy = np.arange(det.shape[0], dtype=float)[:, None] - cy
        xx = np.arange(det.shape[1], dtype=float)[None, :] - cx
        self._py, self._px = det.distort_coordinates(*np.broadcast_arrays(yy, xx))
        self._q_pix = np.hypot(self._py, self._px) * self.dq
        self._q_grid = np.arange(0.0, max(float(self._q_pix.max()), 4.5) + 0.05, 0.01)
        # Inscribed circle (physical radius), the q range an azimuthal integration sees completely:
        # a physical circle of radius ρ appears as an ellipse with semi-axes ρ·ratio and ρ.
        edge = min(cy, cx, det.shape[0] - 1 - cy, det.shape[1] - 1 - cx)
        self._q_full = edge / max(det.ellipse_ratio, 1.0) * self.dq
        self._solid_angle = (self.wavelength * self.dq / (2 * math.pi)) ** 2  # sr per pixel
        self._gamma2 = physics.lorentz_factor(self.energy) ** 2
        self._transmission = (~det.beam_stop_mask).astype(float)
        beam = np.exp(-(self._py ** 2 + self._px ** 2) / (2 * self.beam_sigma ** 2))
        beam /= beam.sum()
        self._beam_pix = np.flatnonzero(beam.ravel() > 1e-9)
        self._beam = beam * self._transmission
        self._beam_patch = self._beam.ravel()[self._beam_pix]

    def _maps(self, c_center: float, c_edge: float, alpha_amp: float, n_incl: int, radius: float,
              v0: float, width: float) -> None:
        ny, nx = self.scan_shape
        left, glass, _ = self.layers
        x = np.arange(nx, dtype=float)
        x0, x1 = left - 0.5, left + glass - 0.5  # interfaces between probe positions
        w = max(width, 1e-3)
        gfrac = 0.5 * (np.tanh((x - x0) / w) - np.tanh((x - x1) / w))
        gfrac = np.where(gfrac < 1e-3, 0.0, np.where(gfrac > 1 - 1e-3, 1.0, gfrac))  # pure layers exactly pure
        gfrac = np.broadcast_to(gfrac[None, :], (ny, nx)).copy()
        u = np.clip((x - x0) / (x1 - x0), 0, 1)[None, :]
        v = (np.arange(ny, dtype=float)[:, None] + 0.5) / ny
        bump = np.sin(np.pi * u)
        c_zr = c_edge + (c_center - c_edge) * np.sqrt(bump) + 0.02 * (c_center != c_edge) * np.sin(2 * np.pi * v) * bump
        c_zr = np.clip(np.broadcast_to(c_zr, (ny, nx)), 0.02, 0.98).copy()
        alpha = alpha_amp * np.cos(4 * np.pi * u) * np.ones((ny, 1))
        rng = self._rng0
        for sign in (1.0, -1.0):  # one ordering and one clustering patch
            py, px = rng.uniform(0.2, 0.8) * ny, x0 + rng.uniform(0.2, 0.8) * (x1 - x0)
            d2 = ((np.arange(ny)[:, None] - py) ** 2 + (np.arange(nx)[None, :] - px) ** 2)
            alpha += sign * alpha_amp * np.exp(-d2 / (2 * (0.08 * max(nx, ny)) ** 2))
        alpha = np.clip(alpha, -0.9, 0.9)
        label = np.zeros((ny, nx), dtype=np.int32)
        vfrac = np.zeros((ny, nx))
        centres = []
        yy, xx = np.mgrid[0:ny, 0:nx]
        for k in range(n_incl):
            for _ in range(100):  # rejection: inside the glass centre, not touching another
                cy_, cx_ = rng.uniform(radius, max(radius, ny - 1 - radius)), x0 + rng.uniform(0.3, 0.7) * (x1 - x0)
                if all(math.hypot(cy_ - a, cx_ - b) > 2 * radius + 1 for a, b in centres):
                    break
            centres.append((cy_, cx_))
            d2 = (yy - cy_) ** 2 + (xx - cx_) ** 2
            inside = (d2 <= radius ** 2) & (gfrac > 0.5) & (label == 0)
            label[inside] = k + 1
            vfrac[inside] = v0 * (1 - d2[inside] / radius ** 2) * gfrac[inside]
        xzz, xzx, xxx = pair_fractions(c_zr, alpha)
        self._incl_centres = centres
        phase = np.where(gfrac >= 0.5, 1, 0) + (label > 0)
        self._truth = {"glass_fraction": gfrac, "phase": phase.astype(np.int8), "c_zr": c_zr, "alpha": alpha,
                       "x_zrzr": xzz, "x_zrx": xzx, "x_xx": xxx,
                       "density": np.vectorize(glass_density)(c_zr),
                       "inclusion_mask": label > 0, "inclusion_label": label, "inclusion_fraction": vfrac}

    def _glass_templates(self, n_c: int, n_a: int) -> None:
        c_map, a_map = self._truth["c_zr"], self._truth["alpha"]
        glass = self._truth["glass_fraction"] > 0
        c_sel = c_map[glass] if glass.any() else c_map.ravel()
        a_sel = a_map[glass] if glass.any() else a_map.ravel()
        cls_c = np.linspace(c_sel.min(), c_sel.max(), n_c) if np.ptp(c_sel) > 0 else c_sel[:1].copy()
        cls_a = np.linspace(a_sel.min(), a_sel.max(), n_a) if np.ptp(a_sel) > 0 else a_sel[:1].copy()
        q = self._q_grid
        iq = np.empty((cls_c.size, cls_a.size, q.size))
        sq = np.empty_like(iq)
        gr = np.empty((cls_c.size, cls_a.size, GR_R.size))
        templates = []
        qrange = (1.0, self._q_full)
        cache = self._cache = intensity_cache(q)
        cc, aa = np.meshgrid(cls_c, cls_a, indexing="ij")
        iq_flat, sq_flat = glass_curves(cc.ravel(), aa.ravel(), q, cache)
        iq[:], sq[:] = iq_flat.reshape(iq.shape), sq_flat.reshape(sq.shape)
        gr[:] = reduced_pdf(q, sq, GR_R, *qrange)
        for i, c in enumerate(cls_c):
            scale = glass_density(c) * self.thickness * self._gamma2 * self._solid_angle
            for j in range(cls_a.size):
                templates.append(np.interp(self._q_pix, q, iq[i, j]) * scale)
        self._cls_c, self._cls_a = cls_c, cls_a
        self._glass_tpl = templates
        self._n_glass = len(templates)
        self._truth.update({"q": q, "class_c_zr": cls_c, "class_alpha": cls_a, "iq_classes": iq,
                            "sq_classes": sq, "r": GR_R.copy(), "gr_classes": gr,
                            "gr_qrange": np.array(qrange)})

    def _spots_template(self, refl: np.ndarray, power: np.ndarray) -> np.ndarray:
        """Sum of Gaussian spots (physical plane, so they follow the ellipse), each normalised to its power."""
        out = np.zeros(self.detector.shape)
        for (gy, gx), p in zip(refl[:, 3:5] / self.dq, power):
            spot = np.exp(-((self._py - gy) ** 2 + (self._px - gx) ** 2) / (2 * self.spot_sigma ** 2))
            total = spot.sum()
            if total > 1e-6:  # on the detector
                out += spot * (p / total)
        return out

    def _powder_rings(self, a: float, q_max: float) -> tuple[np.ndarray, np.ndarray]:
        """Debye–Scherrer rings of a random fcc powder: |g| of each family and its kinematic power.

        Power of a ring ∝ multiplicity · |F_g|² / |g| (the electron powder
        Lorentz factor for a thin, randomly oriented polycrystal), F_g = 4 f_e(g) e^{−M}.
        """
        n = int(math.ceil(q_max * a / (2 * math.pi))) + 1
        hkl = np.array([(h, k, l) for h in range(-n, n + 1) for k in range(-n, n + 1) for l in range(-n, n + 1)
                        if (h, k, l) != (0, 0, 0) and len({h % 2, k % 2, l % 2}) == 1])
        g = 2 * math.pi * np.sqrt((hkl ** 2).sum(axis=1)) / a
        g = g[g <= q_max]
        families, mult = np.unique(np.round(g, 9), return_counts=True)
        f_g = 4 * electron_form_factor("Ni", families) * np.exp(-_B_DW * (families / (4 * math.pi)) ** 2)
        return families, mult * f_g ** 2 / families

    def _rings_template(self, g: np.ndarray, power: np.ndarray) -> np.ndarray:
        """Sum of rings (physical plane, so they follow the ellipse) of Gaussian radial profile, each of its power."""
        out = np.zeros(self.detector.shape)
        radius = np.hypot(self._py, self._px)
        for gi, p in zip(g / self.dq, power):
            ring = np.exp(-(radius - gi) ** 2 / (2 * self.spot_sigma ** 2))
            total = ring.sum()
            if total > 1e-6:
                out += ring * (p / total)
        return out

    def _crystal_templates(self, ni_rotation: float) -> None:
        q_corner = float(self._q_pix.max())
        lam = self.wavelength
        # Ni: spots at the zone axis, plus thermal diffuse scattering.
        refl = fcc_reflections(NI_LATTICE, self.zone_axis, q_corner + 3 * self.spot_sigma * self.dq, ni_rotation)
        dw = np.exp(-_B_DW * (refl[:, 5] / (4 * math.pi)) ** 2)  # e^{-M}, M = B s², s = q/4π
        f_g = 4 * electron_form_factor("Ni", refl[:, 5]) * dw * math.sqrt(self._gamma2)
        power = kinematic_spot_power(refl[:, 5], f_g, NI_LATTICE ** 3, self.thickness, lam, self.precession)
        power *= min(1.0, self.max_bragg_fraction / max(power.sum(), 1e-12))
        f_ni = electron_form_factor("Ni", self._q_pix)
        tds = f_ni ** 2 * (1 - np.exp(-2 * _B_DW * (self._q_pix / (4 * math.pi)) ** 2))
        rho_ni = 4 / NI_LATTICE ** 3
        if self.ni_grains == "nano":
            rings, ring_power = self._powder_rings(NI_LATTICE, q_corner + 3 * self.spot_sigma * self.dq)
            ring_power *= min(1.0, self.max_bragg_fraction / max(ring_power.sum(), 1e-12))
            bragg = self._rings_template(rings, ring_power)
        else:
            bragg = self._spots_template(refl, power)
        ni = bragg + tds * (rho_ni * self.thickness * self._gamma2 * self._solid_angle)
        # Inclusions: fcc with {111} on the first diffuse peak of the glass there, [011] zone.
        incl_tpl, incl_rows = [], []
        label_map = self._truth["inclusion_label"]
        q = self._q_grid
        for k, _centre in enumerate(self._incl_centres):
            inside = label_map == k + 1
            if not inside.any():
                incl_tpl.append(np.zeros(self.detector.shape))
                continue
            c = float(self._truth["c_zr"][inside].mean())
            a_ = float(self._truth["alpha"][inside].mean())
            iq = glass_curves(np.array([c]), np.array([a_]), q, self._cache)[0][0]
            sel = q > 1.5
            q1 = float(q[sel][np.argmax(iq[sel] / mixture_form_factors(q[sel])[0] ** 2)])  # peak of S-like shape
            a_inc = 2 * math.pi * math.sqrt(3) / q1
            rot = float(self._rng0.uniform(0, 2 * math.pi))
            r_inc = fcc_reflections(a_inc, (0, 1, 1), q_corner, rot)
            f_zr, f_x, _ = mixture_form_factors(r_inc[:, 5])
            f_inc = 4 * (c * f_zr + (1 - c) * f_x) * math.sqrt(self._gamma2)
            p_inc = kinematic_spot_power(r_inc[:, 5], f_inc, a_inc ** 3, self.thickness, lam, self.precession)
            p_inc *= min(1.0, self.max_bragg_fraction / max(p_inc.sum(), 1e-12))
            incl_tpl.append(self._spots_template(r_inc, p_inc))
            incl_rows.append(np.column_stack([np.full(len(r_inc), k + 1), r_inc, p_inc]))
        self._ni_tpl = ni
        self._incl_tpl = incl_tpl
        self._truth["ni_reflections"] = np.column_stack([refl, power])
        self._truth["inclusion_reflections"] = (np.concatenate(incl_rows) if incl_rows else np.zeros((0, 8)))

    def _mixture(self) -> None:
        """Per frame: template ids and weights, direct-beam weight, CDFs; and the r_max map."""
        ny, nx = self.scan_shape
        n = ny * nx
        gfrac = self._truth["glass_fraction"].ravel()
        vfrac = self._truth["inclusion_fraction"].ravel()
        label = self._truth["inclusion_label"].ravel()
        c, a = self._truth["c_zr"].ravel(), self._truth["alpha"].ravel()
        ic, tc = _bracket(self._cls_c, c)
        ia, ta = _bracket(self._cls_a, a)
        n_a = self._cls_a.size
        ng = self._n_glass
        comp = np.zeros((n, 6), dtype=np.int64)
        weight = np.zeros((n, 6))
        glass_w = gfrac * (1 - vfrac)
        for k, (dc, da) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
            cc = np.minimum(ic + dc, self._cls_c.size - 1)
            aa = np.minimum(ia + da, n_a - 1)
            comp[:, k] = cc * n_a + aa
            weight[:, k] = glass_w * (tc if dc else 1 - tc) * (ta if da else 1 - ta)
        comp[:, 4] = ng
        weight[:, 4] = 1 - gfrac
        comp[:, 5] = np.where(label > 0, ng + label, ng)  # weight 0 where no inclusion
        weight[:, 5] = np.where(label > 0, gfrac * vfrac, 0.0)
        templates = list(self._glass_tpl) + [self._ni_tpl] + list(self._incl_tpl)
        scattered = np.array([t.sum() for t in templates])
        frac = (weight * scattered[comp]).sum(axis=1)
        if frac.max() > 0.95:
            raise ValueError(f"the model scatters {frac.max():.2f} of the beam onto the detector (> 0.95); "
                             "lower thickness_nm or max_bragg_fraction")
        self._templates = templates
        self._cdfs = [np.cumsum((t * self._transmission).ravel()) for t in templates]
        self._comp, self._weight = comp, weight
        self._beam_weight = 1 - frac
        self._truth["scattered_fraction"] = frac.reshape(ny, nx)
        # r_max of the bilinearly interpolated class G(r), as the patterns are interpolated.
        gr = self._truth["gr_classes"].reshape(ng, -1)
        g_pix = sum(weight[:, k, None] * gr[comp[:, k]] for k in range(4))
        norm = weight[:, :4].sum(axis=1)
        r_max = np.full(n, np.nan)
        for i in np.flatnonzero(norm > 0):
            r_max[i] = peak_position(GR_R, g_pix[i] / norm[i])
        self._truth["r_max"] = r_max.reshape(ny, nx)


def _bracket(nodes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower node index and fractional position of ``values`` on sorted ``nodes`` (for bilinear weights)."""
    if nodes.size == 1:
        return np.zeros(values.size, dtype=np.int64), np.zeros(values.size)
    i = np.clip(np.searchsorted(nodes, values, side="right") - 1, 0, nodes.size - 2)
    t = np.clip((values - nodes[i]) / (nodes[i + 1] - nodes[i]), 0.0, 1.0)
    return i, t


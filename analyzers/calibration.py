"""Diffraction-plane calibration: wavelength, effective camera length, ellipse, PONI geometry.

Pure functions (plus the frozen :class:`Ellipse`) that turn the header
calibration (:class:`emlive.stream.protocol.Calibration`) into what radial
integration needs, and that measure the elliptical distortion from an
amorphous ring.

Conventions (those of :class:`~emlive.stream.protocol.Calibration`):

- ``reciprocal_pixel_size`` ``dq`` is Å⁻¹ per pixel with q = 2π/d; the seed's
  ``Δk`` uses k = 1/d, so ``Δk = dq / 2π``.
- ``center`` is (cy, cx) in pixel-index coordinates (pixel 0 centred at 0).
- ``ellipse = (ratio, angle_deg)``: a circle of radius r appears on the detector
  as an ellipse with semi-axis ``r·ratio`` along ``angle_deg`` (measured from +x
  towards +y) and ``r`` across it, as in the simulators' ``DetectorModel``.

The seed (SNEM paper, Methods 2.4.1) Eqs. 4–7 are small-angle relations for an
effective camera length L (the projector system is linear in k, so L is only a
device to feed x-ray software such as pyFAI). The equations' typeset maths is
missing from our text copy of the seed; the forms below are rebuilt from its
prose ("Δk = 2 sinθ/λ", "2θ ≈ x/L", "k = 1/d") and are the only forms consistent
with it:

- Eq. 4: L = x / (λ Δk) for a pixel of physical edge x;
- Eq. 5: L = 1 / (λ Δk), L in pixel edge lengths;
- Eq. 6: L = r / (λ k_hkl), r the spot's distance from the centre in pixels;
- Eq. 7: L = r d_hkl / λ.

pyFAI's q unit assumes straight rays to a flat detector (q = 4π sin(θ)/λ with
2θ = atan(r/L)), 0.08 % off at high q for electrons: integrate in radius and map
radius to q linearly with ``dq`` (see /work/shared/research/algorithms.md (a2)).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from scipy import constants as _c
from scipy import ndimage

from emlive.stream.protocol import Calibration

__all__ = [
    "Ellipse", "electron_wavelength", "electron_energy",
    "camera_length_from_pixel_size", "camera_length_from_bragg_spot",
    "reciprocal_pixel_size_from_camera_length",
    "fit_ellipse", "ring_points", "ellipse_matrix", "affine_correction", "corrected_radius",
    "to_poni", "from_poni",
]

_REST_J = _c.m_e * _c.c ** 2  # electron rest energy, J


# ------------------------------------------------------------------ wavelength
def electron_wavelength(energy_kev: float | np.ndarray) -> float | np.ndarray:
    """Relativistic electron wavelength in Å.

    λ = h / sqrt(2 m0 e E (1 + e E / (2 m0 c²))), CODATA constants from
    :mod:`scipy.constants`. Kept here (not imported from the simulators) because
    analyzers must not depend on simulators; the tests check both agree.

    Parameters
    ----------
    energy_kev : float or array
        Beam (kinetic) energy in keV, > 0.

    Examples
    --------
    >>> round(electron_wavelength(200.0), 6)
    0.025079
    """
    e = np.asarray(energy_kev, dtype=float)
    if np.any(~(e > 0)):
        raise ValueError(f"energy_kev must be > 0, got {energy_kev!r}")
    ev = _c.e * e * 1e3
    lam = _c.h / np.sqrt(2 * _c.m_e * ev * (1 + ev / (2 * _REST_J))) * 1e10
    return float(lam) if lam.ndim == 0 else lam


def electron_energy(wavelength_a: float) -> float:
    """Beam energy in keV for a wavelength in Å: the inverse of :func:`electron_wavelength`.

    Needed to turn a PONI file (which stores only λ) back into a Calibration.
    Uses E = sqrt((pc)² + (m0c²)²) − m0c² with p = h/λ.
    """
    if not wavelength_a > 0:
        raise ValueError(f"wavelength must be > 0, got {wavelength_a!r}")
    pc = _c.h / (wavelength_a * 1e-10) * _c.c
    return (math.hypot(pc, _REST_J) - _REST_J) / _c.e / 1e3


# -------------------------------------------------------------- camera length
def camera_length_from_pixel_size(reciprocal_pixel_size: float, energy_kev: float,
                                  pixel_size_m: float = 1.0) -> float:
    """Effective camera length from the reciprocal pixel size (seed Eq. 5, and Eq. 4).

    L = x / (λ Δk) with Δk = dq / 2π (the seed uses k = 1/d). With the default
    ``pixel_size_m=1`` the result is Eq. 5, in pixel edge lengths; with the
    physical pixel edge in metres it is Eq. 4, in metres (what pyFAI takes).

    Parameters
    ----------
    reciprocal_pixel_size : float
        dq in Å⁻¹ per pixel, q = 2π/d.
    energy_kev : float
        Beam energy (sets λ).
    pixel_size_m : float
        Physical pixel edge; 1 gives pixel units.
    """
    if not reciprocal_pixel_size > 0 or not pixel_size_m > 0:
        raise ValueError("reciprocal_pixel_size and pixel_size_m must be > 0")
    dk = reciprocal_pixel_size / (2 * math.pi)
    return pixel_size_m / (electron_wavelength(energy_kev) * dk)


def camera_length_from_bragg_spot(distance_px: float, d_spacing: float, energy_kev: float,
                                  pixel_size_m: float = 1.0) -> float:
    """Effective camera length from one known Bragg spot (seed Eq. 7).

    L = r d_hkl / λ (Eq. 6, L = r / (λ k_hkl), with k_hkl = 1/d_hkl). It needs no
    prior reciprocal pixel size, so it bootstraps a calibration from a crystal
    of known lattice (e.g. Ni {111}, d = a/√3).

    Parameters
    ----------
    distance_px : float
        Distance of the spot centre from the pattern centre, in pixels.
    d_spacing : float
        Interplanar spacing d_hkl in Å.
    energy_kev : float
    pixel_size_m : float
        1 gives pixel edge lengths, the physical edge gives metres.
    """
    if not (distance_px > 0 and d_spacing > 0 and pixel_size_m > 0):
        raise ValueError("distance_px, d_spacing and pixel_size_m must be > 0")
    return distance_px * d_spacing / electron_wavelength(energy_kev) * pixel_size_m


def reciprocal_pixel_size_from_camera_length(camera_length: float, energy_kev: float,
                                             pixel_size_m: float = 1.0) -> float:
    """Reciprocal pixel size dq (Å⁻¹/px, q = 2π/d) from a camera length: Eq. 4/5 solved for Δk.

    dq = 2π x / (λ L). ``camera_length`` and ``pixel_size_m`` share units
    (both 1-based pixel units, or both metres).
    """
    if not camera_length > 0 or not pixel_size_m > 0:
        raise ValueError("camera_length and pixel_size_m must be > 0")
    return 2 * math.pi * pixel_size_m / (electron_wavelength(energy_kev) * camera_length)


# -------------------------------------------------------------------- ellipse
@dataclass(frozen=True)
class Ellipse:
    """An ellipse on the detector: centre (cy, cx) px, semi-axes px, major-axis angle.

    ``angle_deg`` is the direction of the semi-major axis from +x towards +y, in
    [-90, 90). ``ratio = semi_major / semi_minor`` ≥ 1, so ``(ratio, angle_deg)``
    is directly the Calibration's ``ellipse`` field.
    """

    center: tuple[float, float]
    semi_major: float
    semi_minor: float
    angle_deg: float

    @property
    def ratio(self) -> float:
        return self.semi_major / self.semi_minor

    def to_calibration(self, calibration: Calibration | None = None, **changes) -> Calibration:
        """A Calibration (copied from ``calibration``) carrying this centre and ellipse."""
        base = calibration if calibration is not None else Calibration()
        fields = {name: getattr(base, name) for name in base.__struct_fields__}
        fields.update(center=(float(self.center[0]), float(self.center[1])),
                      ellipse=(float(self.ratio), float(self.angle_deg)), **changes)
        return Calibration(**fields)


def fit_ellipse(points_y: np.ndarray, points_x: np.ndarray) -> Ellipse:
    """Direct least-squares ellipse fit (Fitzgibbon 1999, numerically stable form of Halíř & Flusser 1998).

    Fits the conic a x² + b xy + c y² + d x + e y + f = 0 under the ellipse
    constraint 4ac − b² = 1: non-iterative, always returns an ellipse, and is
    unbiased enough for points spread all round a ring (ring maxima along radial
    lines). Points are centred and scaled first for conditioning.

    Parameters
    ----------
    points_y, points_x : array (n,), n ≥ 5
        Pixel coordinates of points on the ellipse.

    Returns
    -------
    Ellipse
    """
    y = np.asarray(points_y, dtype=float).ravel()
    x = np.asarray(points_x, dtype=float).ravel()
    if x.shape != y.shape or x.size < 5 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("need >= 5 finite points of matching shape")
    my, mx = y.mean(), x.mean()
    s = math.sqrt(((x - mx) ** 2 + (y - my) ** 2).mean()) or 1.0
    xn, yn = (x - mx) / s, (y - my) / s
    d1 = np.column_stack([xn * xn, xn * yn, yn * yn])
    d2 = np.column_stack([xn, yn, np.ones_like(xn)])
    s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
    t = -np.linalg.solve(s3, s2.T)
    m = s1 + s2 @ t
    m = np.array([m[2] / 2, -m[1], m[0] / 2])  # C1⁻¹ M
    _, vecs = np.linalg.eig(m)
    vecs = np.real(vecs)
    cond = 4 * vecs[0] * vecs[2] - vecs[1] ** 2
    if not (cond > 0).any():
        raise ValueError("points do not define an ellipse")
    a1 = vecs[:, int(np.argmax(cond))]
    a, b, c, d, e, f = (*a1, *(t @ a1))
    q = np.array([[a, b / 2], [b / 2, c]])
    x0, y0 = np.linalg.solve(2 * q, [-d, -e])
    f0 = f + (d * x0 + e * y0) / 2
    lam, vec = np.linalg.eigh(q / -f0)  # x^T (Q/-f0) x = 1; ascending eigenvalues
    if not (lam > 0).all():
        raise ValueError("fitted conic is not a real ellipse")
    major, minor = 1 / math.sqrt(lam[0]), 1 / math.sqrt(lam[1])
    angle = math.degrees(math.atan2(vec[1, 0], vec[0, 0]))
    angle = (angle + 90.0) % 180.0 - 90.0
    return Ellipse(center=(float(my + s * y0), float(mx + s * x0)), semi_major=major * s, semi_minor=minor * s,
                   angle_deg=angle)


def ring_points(image: np.ndarray, center_guess: tuple[float, float], r_min: float, r_max: float,
                n_angles: int = 180, *, mask: np.ndarray | None = None, smooth: float = 1.0,
                step: float = 0.25, fit_half_width: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel positions of a ring's maximum along ``n_angles`` radial lines.

    Input for :func:`fit_ellipse`: on an amorphous pattern (e.g. the mean of
    glass frames) the first diffuse ring is a broad, isotropic maximum, and a
    linear distortion scales every radial line's profile, so its maximum traces
    the ellipse. Each profile is read by bilinear interpolation of the image
    (Gaussian-smoothed by ``smooth`` px against shot noise), and the maximum is
    refined by a least-squares parabola over ±``fit_half_width`` px. Lines whose
    maximum sits at the search edge, whose parabola is not a maximum, or that
    cross masked pixels are dropped, and so are radius outliers (median ± max(4·MAD, 0.5 px)),
    e.g. lines caught by a Bragg spot.

    Parameters
    ----------
    image : array (ny, nx)
    center_guess : (cy, cx)
        Approximate pattern centre, px; the radial search window must contain the
        ring for every angle despite the centre's error.
    r_min, r_max : float
        Radial search window, px.
    n_angles : int
    mask : bool array (ny, nx), optional
        True = bad pixel (beam stop, hot pixel).
    smooth, step, fit_half_width : float
        Gaussian σ (0 = none), radial sampling and parabola half-window, px.

    Returns
    -------
    (points_y, points_x) : arrays (m,), m ≤ n_angles
    """
    img = np.asarray(image, dtype=float)
    if img.ndim != 2:
        raise ValueError("image must be 2-D")
    if not 0 <= r_min < r_max:
        raise ValueError("need 0 <= r_min < r_max")
    if smooth > 0:
        img = ndimage.gaussian_filter(img, smooth, mode="nearest")
    cy, cx = center_guess
    theta = np.arange(n_angles) * (2 * np.pi / n_angles)
    r = np.arange(r_min, r_max + step / 2, step)
    yy = cy + np.sin(theta)[:, None] * r[None, :]
    xx = cx + np.cos(theta)[:, None] * r[None, :]
    prof = ndimage.map_coordinates(img, [yy, xx], order=1, mode="constant", cval=np.nan)
    if mask is not None:
        bad = ndimage.map_coordinates(np.asarray(mask, dtype=float), [yy, xx], order=1, mode="constant",
                                      cval=1.0) > 0
        prof[bad] = np.nan
    ok = np.isfinite(prof).all(axis=1)
    k = np.argmax(np.where(np.isfinite(prof), prof, -np.inf), axis=1)
    hw = max(1, int(round(fit_half_width / step)))
    ok &= (k >= hw) & (k < r.size - hw)
    offs = np.arange(-hw, hw + 1)
    idx = np.clip(k[:, None] + offs[None, :], 0, r.size - 1)
    win = np.take_along_axis(prof, idx, axis=1)
    # Least-squares parabola v = a u² + b u + c in the sample offset u, per line.
    vand = np.column_stack([offs ** 2, offs, np.ones_like(offs)]).astype(float)
    coef = np.linalg.pinv(vand) @ np.where(np.isfinite(win), win, 0.0).T
    a, b = coef[0], coef[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        du = -b / (2 * a)
    ok &= (a < 0) & (np.abs(du) <= hw)
    rr = r_min + (k + du) * step
    # Drop lines caught by something else (a Bragg spot, a neighbouring ring): the ring's radius varies
    # only by the ellipticity, so a robust (median/MAD) radius outlier test is safe.
    if ok.sum() >= 5:
        med = np.median(rr[ok])
        mad = 1.4826 * np.median(np.abs(rr[ok] - med))
        ok &= np.abs(rr - med) <= max(4 * mad, 0.5)
    return (cy + np.sin(theta) * rr)[ok], (cx + np.cos(theta) * rr)[ok]


def ellipse_matrix(ratio: float, angle_deg: float) -> np.ndarray:
    """2×2 matrix (y, x order) taking distorted offsets to circular ones for an ellipse (ratio, angle_deg).

    R(φ) diag(1/ratio, 1) R(−φ) in (x, y): it shrinks the stretched direction φ
    by the ratio and leaves the perpendicular one alone, so a ring of radius r
    (semi-axes r·ratio, r) maps to a circle of radius r. Same matrix as the
    simulators' ``DetectorModel.distortion_matrix``.
    """
    if not ratio > 0:
        raise ValueError("ratio must be > 0")
    phi = math.radians(angle_deg)
    c, s = math.cos(phi), math.sin(phi)
    rot = np.array([[c, -s], [s, c]])
    m_xy = rot @ np.diag([1.0 / ratio, 1.0]) @ rot.T
    return m_xy[::-1, ::-1].copy()


def affine_correction(ellipse: Ellipse | Calibration) -> tuple[np.ndarray, tuple[float, float]]:
    """Affine de-warping: (M, (cy, cx)) with (y, x)_circular = M @ ((y, x) − centre).

    Accepts a fitted :class:`Ellipse` or a :class:`Calibration` (its ``ellipse``
    and ``center``), both with the Calibration's (ratio, angle_deg) convention.
    The circle's radius is the ellipse's minor semi-axis, so the reciprocal
    pixel size of the corrected plane is the one along the unstretched direction.
    """
    if isinstance(ellipse, Calibration):
        if ellipse.center is None:
            raise ValueError("calibration has no center")
        ratio, angle = ellipse.ellipse
        center = ellipse.center
    else:
        ratio, angle, center = ellipse.ratio, ellipse.angle_deg, ellipse.center
    return ellipse_matrix(ratio, angle), (float(center[0]), float(center[1]))


def corrected_radius(shape: tuple[int, int], calibration: Calibration) -> np.ndarray:
    """Undistorted radius (px) of every pixel centre: the map to bin on for radial integration.

    Radius after :func:`affine_correction`, so rings are circles in it and
    q = radius · ``reciprocal_pixel_size``. Without a ``center`` the geometric
    centre ((ny − 1)/2, (nx − 1)/2) is used.
    """
    ny, nx = shape
    center = calibration.center if calibration.center is not None else ((ny - 1) / 2, (nx - 1) / 2)
    m = ellipse_matrix(*calibration.ellipse)
    dy = np.arange(ny, dtype=float)[:, None] - center[0]
    dx = np.arange(nx, dtype=float)[None, :] - center[1]
    return np.hypot(m[0, 0] * dy + m[0, 1] * dx, m[1, 0] * dy + m[1, 1] * dx)


# ----------------------------------------------------------------------- PONI
def to_poni(calibration: Calibration, pixel_size_m: float, detector_shape: tuple[int, int]) -> str:
    """pyFAI PONI text (version 2) for the de-warped diffraction plane.

    Distance is the effective camera length (seed Eq. 4/5) from
    ``reciprocal_pixel_size``, else ``camera_length_m``; the rotations are 0
    because the ellipse is removed by the affine correction first, which a PONI
    cannot express (pyFAI tilts are not an affine stretch). pyFAI puts pixel i's
    centre at (i + 0.5)·pixel, so Poni = (c + 0.5)·pixel for our index-based
    centre. Use the geometry for radius ("r_mm") only and map radius to q
    linearly (module docstring).
    """
    ny, nx = (int(v) for v in detector_shape)
    if not pixel_size_m > 0:
        raise ValueError("pixel_size_m must be > 0")
    if calibration.reciprocal_pixel_size is not None:
        dist = camera_length_from_pixel_size(calibration.reciprocal_pixel_size, calibration.beam_energy_kev,
                                             pixel_size_m)
    elif calibration.camera_length_m is not None:
        dist = calibration.camera_length_m
    else:
        raise ValueError("calibration needs reciprocal_pixel_size or camera_length_m")
    cy, cx = calibration.center if calibration.center is not None else ((ny - 1) / 2, (nx - 1) / 2)
    config = {"pixel1": pixel_size_m, "pixel2": pixel_size_m, "max_shape": [ny, nx]}
    lines = [
        "# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis",
        "# Written by emlive.analyzers.calibration (effective camera length, seed Eq. 5)",
        "poni_version: 2",
        "Detector: Detector",
        f"Detector_config: {json.dumps(config)}",
        f"Distance: {dist!r}",
        f"Poni1: {(cy + 0.5) * pixel_size_m!r}",
        f"Poni2: {(cx + 0.5) * pixel_size_m!r}",
        "Rot1: 0.0",
        "Rot2: 0.0",
        "Rot3: 0.0",
        f"Wavelength: {electron_wavelength(calibration.beam_energy_kev) * 1e-10!r}",
    ]
    return "\n".join(lines) + "\n"


def from_poni(text: str) -> dict:
    """Parse PONI text (versions 1, 2, 2.1) into geometry plus our calibration fields.

    Returns the pyFAI values in SI units (``dist``, ``poni1``, ``poni2``,
    ``rot1``–``rot3`` rad, ``wavelength`` m, ``pixel1``, ``pixel2``,
    ``max_shape``, ``detector``, ``detector_config``, ``poni_version``) and, when
    derivable, ``center`` (cy, cx) px, ``beam_energy_kev`` and
    ``reciprocal_pixel_size`` (Eq. 4 solved for Δk) so a Calibration can be built.
    """
    raw: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        raw[key.strip().lower()] = value.strip()
    out: dict = {"poni_version": float(raw.get("poni_version", 1)), "detector": raw.get("detector")}
    for key, name in (("distance", "dist"), ("poni1", "poni1"), ("poni2", "poni2"), ("rot1", "rot1"),
                      ("rot2", "rot2"), ("rot3", "rot3"), ("wavelength", "wavelength")):
        if key in raw:
            out[name] = float(raw[key])
    config = json.loads(raw["detector_config"]) if "detector_config" in raw else {}
    out["detector_config"] = config
    pixel1 = config.get("pixel1", float(raw["pixelsize1"]) if "pixelsize1" in raw else None)
    pixel2 = config.get("pixel2", float(raw["pixelsize2"]) if "pixelsize2" in raw else None)
    out["pixel1"], out["pixel2"] = pixel1, pixel2
    out["max_shape"] = tuple(config["max_shape"]) if config.get("max_shape") else None
    if pixel1 and pixel2 and "poni1" in out and "poni2" in out:
        out["center"] = (out["poni1"] / pixel1 - 0.5, out["poni2"] / pixel2 - 0.5)
    if out.get("wavelength"):
        out["beam_energy_kev"] = electron_energy(out["wavelength"] * 1e10)
        if out.get("dist") and pixel1:
            out["reciprocal_pixel_size"] = 2 * math.pi * pixel1 / (out["wavelength"] * 1e10 * out["dist"])
    return out

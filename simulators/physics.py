"""Electron-optics constants and reciprocal-space conventions shared by the simulators.

Conventions (used by every simulator here, and stated in their docstrings):

- Energies ``E`` are beam energies in keV; wavelengths are in Å.
- ``k = 1 / d`` (crystallographic convention, Å⁻¹) is what the FEM literature
  plots V(k) against (Voyles & Muller, Ultramicroscopy 93 (2002) 147; Daulton et
  al., Ultramicroscopy 110 (2010) 1279). ``q = 2 π / d = 2 π k`` (physics
  convention, Å⁻¹) is what scattering and PDF codes use. Helpers convert both ways.
- In the small-angle limit a scattering vector of magnitude ``k`` appears at the
  scattering angle ``θ ≈ λ k`` (full angle, not half angle), so a detector pixel of
  angular size ``δθ`` has reciprocal pixel size ``dk = δθ / λ``.
- A radius on the detector is measured in pixels from the pattern centre.

All constants come from :mod:`scipy.constants` (CODATA).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import constants as _c

__all__ = [
    "H", "M0", "E_CHARGE", "C", "K_B", "REST_ENERGY_KEV",
    "wavelength", "interaction_parameter", "lorentz_factor",
    "k_to_q", "q_to_k", "pixel_radius_to_k", "k_to_pixel_radius", "pixel_radius_to_q",
    "q_to_pixel_radius", "angle_to_k", "k_to_angle",
]

logger = logging.getLogger(__name__)

H = _c.h  # J s
M0 = _c.m_e  # kg
E_CHARGE = _c.e  # C
C = _c.c  # m / s
K_B = _c.k  # J / K
REST_ENERGY_KEV = M0 * C ** 2 / E_CHARGE / 1e3  # 510.999 keV


def wavelength(energy_kev: float | np.ndarray) -> float | np.ndarray:
    """Relativistic electron wavelength in Å.

    λ = h / sqrt(2 m0 e E (1 + e E / (2 m0 c²))) (e.g. Kirkland, *Advanced
    Computing in Electron Microscopy*, eq. 2.5).

    Parameters
    ----------
    energy_kev : float or array
        Beam energy in keV (> 0).

    Examples
    --------
    >>> round(wavelength(300.0), 6), round(wavelength(200.0), 6)
    (0.019687, 0.025079)
    """
    e = np.asarray(energy_kev, dtype=float)
    if np.any(~(e > 0)):
        raise ValueError(f"energy_kev must be > 0 keV, got {energy_kev!r}")
    ev = E_CHARGE * e * 1e3  # J
    lam = H / np.sqrt(2 * M0 * ev * (1 + ev / (2 * M0 * C ** 2))) * 1e10
    return float(lam) if lam.ndim == 0 else lam


def lorentz_factor(energy_kev: float | np.ndarray) -> float | np.ndarray:
    """γ = 1 + E / (m0 c²), dimensionless."""
    return 1.0 + np.asarray(energy_kev, dtype=float) / REST_ENERGY_KEV if np.ndim(energy_kev) else \
        1.0 + float(energy_kev) / REST_ENERGY_KEV


def interaction_parameter(energy_kev: float | np.ndarray) -> float | np.ndarray:
    """Relativistic interaction parameter σ in rad / (V Å).

    σ = 2 π m e λ / h² with the relativistic mass m = γ m0, equivalently
    σ = (2 π / (λ V)) (m0 c² + e V) / (2 m0 c² + e V) (Kirkland eq. 5.6). It
    converts a projected potential (V Å) into a phase shift (rad), and is
    cross-checked against the second form in the tests.

    Examples
    --------
    >>> round(interaction_parameter(200.0) * 1e3, 4), round(interaction_parameter(300.0) * 1e3, 4)
    (0.7288, 0.6526)

    i.e. 0.7288 rad / (kV Å) at 200 keV, the value tabulated by Kirkland.
    """
    lam_m = np.asarray(wavelength(energy_kev)) * 1e-10
    gamma = lorentz_factor(energy_kev)
    sigma = 2 * np.pi * gamma * M0 * E_CHARGE * lam_m / H ** 2 * 1e-10  # rad / (V m) -> rad / (V Å)
    return float(sigma) if np.ndim(sigma) == 0 else sigma


def k_to_q(k: float | np.ndarray) -> float | np.ndarray:
    """q = 2 π k: from the 1/d convention to the 2π/d convention (both Å⁻¹)."""
    return 2 * math.pi * k


def q_to_k(q: float | np.ndarray) -> float | np.ndarray:
    """k = q / (2 π): from the 2π/d convention to the 1/d convention (both Å⁻¹)."""
    return q / (2 * math.pi)


def pixel_radius_to_k(radius_px: float | np.ndarray, dk: float) -> float | np.ndarray:
    """Scattering vector k = 1/d (Å⁻¹) of a detector radius in pixels.

    ``dk`` is the reciprocal pixel size in Å⁻¹ per pixel, in the k = 1/d convention.
    """
    _check_positive(dk, "dk")
    return radius_px * dk


def k_to_pixel_radius(k: float | np.ndarray, dk: float) -> float | np.ndarray:
    """Detector radius in pixels of the scattering vector ``k`` (1/d, Å⁻¹)."""
    _check_positive(dk, "dk")
    return k / dk


def pixel_radius_to_q(radius_px: float | np.ndarray, dk: float) -> float | np.ndarray:
    """q = 2π/d (Å⁻¹) of a detector radius; ``dk`` is still the pixel size in the k = 1/d convention."""
    return k_to_q(pixel_radius_to_k(radius_px, dk))


def q_to_pixel_radius(q: float | np.ndarray, dk: float) -> float | np.ndarray:
    """Detector radius in pixels of ``q`` (2π/d, Å⁻¹) for pixel size ``dk`` (1/d convention)."""
    return k_to_pixel_radius(q_to_k(q), dk)


def angle_to_k(theta_mrad: float | np.ndarray, energy_kev: float) -> float | np.ndarray:
    """k = sin(θ)/λ ≈ θ/λ (Å⁻¹) for a full scattering angle θ in mrad (exact: 2 sin(θ/2)/λ)."""
    return 2 * np.sin(np.asarray(theta_mrad) * 1e-3 / 2) / wavelength(energy_kev)


def k_to_angle(k: float | np.ndarray, energy_kev: float) -> float | np.ndarray:
    """Full scattering angle θ in mrad of the scattering vector ``k`` (1/d, Å⁻¹): θ = 2 asin(λ k / 2)."""
    return 2e3 * np.arcsin(np.asarray(k) * wavelength(energy_kev) / 2)


def _check_positive(value: float, what: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be finite and > 0, got {value!r}")

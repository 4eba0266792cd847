"""Electron atomic form factors for the analysis side: Mott–Bethe from xraylib, and mixture averages.

Why a second implementation: analyzers must not import the simulators (the
simulator is the ground truth the analysis is tested against), so the analysis
carries its own physics. The tests check that both agree.

Mott–Bethe (International Tables C, 4.3.1; Kirkland, *Advanced Computing in
Electron Microscopy*, eq. 5.15 written in s):

    f_e(s) = C (Z − f_x(s)) / s²,   s = sin θ / λ = q / (4π) Å⁻¹,
    C = m0 e² / (8 π ε0 h²) = 1 / (8 π² a0) = 0.023934 Å,

with f_x from xraylib ``FF_Rayl`` (Hubbell tables). Values are the
non-relativistic f_e in Å; multiply by γ for the relativistic amplitude.

The 0/0 limit at small s: xraylib gives f_x to about 5 significant digits
(± 0.0005 electrons), which Mott–Bethe amplifies by C/s² (0.03 Å at
s = 0.02 Å⁻¹, and table interpolation makes it worse: Ni at s = 0.01 reads
8.9 Å instead of 6.6 Å). Route chosen here: the low-order expansion

    Z − f_x(s) = (s² / C) (f0 − f2 s² + f4 s⁴),

fitted by ordinary least squares to Z − f_x itself on s ∈ (0, 0.12] Å⁻¹.
Fitting Z − f_x (not f_e) weights every point by the same, s-independent
table error, so the unstable small-s points cannot dominate, and the
expansion is exact in form (f_x is even in s; f0 = C·8π²⟨r²⟩/3, the Ibers
relation). Three terms on this window reproduce hydrogen's analytic curve to
3e-4 and Mott–Bethe of Al…Au to ~0.3 % (a wider window or fewer terms is
biased by the s⁶ term of heavy atoms, more terms start fitting the noise).
The expansion is used below s = 0.06 Å⁻¹ and blended linearly into
Mott–Bethe over s ∈ [0.06, 0.12] (q ∈ [0.75, 1.51] Å⁻¹); above, the curve
is Mott–Bethe itself, so the high-s limit is Rutherford C Z / s².
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
import xraylib
from scipy import constants as _c

__all__ = ["MOTT_BETHE_C", "atomic_number", "electron_form_factor", "mixture_factors", "normalized_composition"]

#: m0 e² / (8 π ε0 h²) in Å: f_e = MOTT_BETHE_C (Z − f_x) / s² with s in Å⁻¹.
MOTT_BETHE_C = _c.m_e * _c.e ** 2 / (8 * math.pi * _c.epsilon_0 * _c.h ** 2) * 1e-10

_FIT_S_MAX = 0.12  # Å⁻¹: window (0, _FIT_S_MAX] of the small-s expansion
_FIT_STEP = 0.0025  # Å⁻¹: sampling of f_x on that window
_BLEND = (0.06, 0.12)  # Å⁻¹ in s: expansion below the first, Mott–Bethe above the second
_N_TERMS = 3  # f0, f2, f4


def atomic_number(element: int | str) -> int:
    """Atomic number of ``element``: a symbol such as ``"Zr"`` or an int accepted by xraylib.

    Raises
    ------
    ValueError
        Unknown symbol or atomic number outside xraylib's tables.
    """
    if isinstance(element, str):
        try:
            z = int(xraylib.SymbolToAtomicNumber(element.strip().capitalize()))
        except ValueError:
            z = 0
        if z < 1:
            raise ValueError(f"unknown element symbol {element!r}; expected e.g. 'Ni' or 'Zr'")
        return z
    if isinstance(element, (int, np.integer)) and not isinstance(element, bool):
        z = int(element)
        try:
            xraylib.FF_Rayl(z, 0.1)
        except ValueError:
            raise ValueError(f"atomic number {z} is outside xraylib's form-factor tables") from None
        return z
    raise ValueError(f"element must be a symbol or an atomic number, got {element!r}")


def _fx(z: int, s: np.ndarray) -> np.ndarray:
    """X-ray form factor f_x(s) (electrons) from xraylib; s > 0 in Å⁻¹, any shape."""
    flat = np.ascontiguousarray(s, dtype=float).ravel()
    return np.array([xraylib.FF_Rayl(z, float(v)) for v in flat]).reshape(np.shape(s))


@functools.lru_cache(maxsize=None)
def _small_s_coefficients(z: int) -> tuple[float, ...]:
    """(f0, −f2, f4) in Å, Å³, Å⁵ of f_e(s) = f0 − f2 s² + f4 s⁴, least squares on Z − f_x (see module doc)."""
    s = np.arange(1, int(round(_FIT_S_MAX / _FIT_STEP)) + 1) * _FIT_STEP
    basis = np.stack([s ** (2 * k + 2) for k in range(_N_TERMS)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, z - _fx(z, s), rcond=None)
    return tuple(float(c) * MOTT_BETHE_C for c in coef)


def electron_form_factor(element: int | str, q: float | np.ndarray) -> float | np.ndarray:
    """Electron atomic form factor f_e(q) in Å (non-relativistic), vectorised over ``q``.

    Parameters
    ----------
    element : str or int
        Symbol (``"Zr"``) or atomic number.
    q : float or array
        q = 4π sinθ/λ = 2π/d in Å⁻¹, finite and >= 0.

    Returns
    -------
    float or array
        f_e in Å, same shape as ``q``.

    Examples
    --------
    >>> round(float(electron_form_factor("H", 0.0)), 3)  # the Bohr radius
    0.529
    """
    z = atomic_number(element)
    qa = np.asarray(q, dtype=float)
    if not np.all(np.isfinite(qa)) or np.any(qa < 0):
        raise ValueError("q must be finite and >= 0 Å⁻¹")
    s = np.atleast_1d(qa) / (4 * math.pi)
    coef = _small_s_coefficients(z)
    s2 = s * s
    low = coef[0] + s2 * (coef[1] + s2 * coef[2])
    out = low.copy()
    hi = s > _BLEND[0]
    if np.any(hi):
        sh = s[hi]
        mott = MOTT_BETHE_C * (z - _fx(z, sh)) / sh ** 2
        w = np.clip((sh - _BLEND[0]) / (_BLEND[1] - _BLEND[0]), 0.0, 1.0)
        out[hi] = (1 - w) * low[hi] + w * mott
    return float(out[0]) if qa.ndim == 0 else out.reshape(qa.shape)


def normalized_composition(composition: Mapping[str, float]) -> dict[str, float]:
    """Atomic fractions summing to 1 from at.% or fractions, e.g. ``{"Zr": 65, "Cu": 17.5, ...}``.

    Raises
    ------
    ValueError
        Empty mapping, negative or non-finite amounts, zero total, unknown element.
    """
    if not isinstance(composition, Mapping) or not composition:
        raise ValueError("composition must be a non-empty mapping element -> amount")
    amounts = {}
    for el, v in composition.items():
        atomic_number(el)  # validates the symbol
        v = float(v)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"composition amount of {el!r} must be finite and >= 0, got {v}")
        amounts[el] = v
    total = sum(amounts.values())
    if total <= 0:
        raise ValueError("composition amounts sum to 0")
    return {el: v / total for el, v in amounts.items()}


def mixture_factors(composition: Mapping[str, float], q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compositional averages (⟨f⟩, ⟨f²⟩) = (Σ cᵢfᵢ, Σ cᵢfᵢ²) in Å and Å² on ``q`` (Å⁻¹).

    Parameters
    ----------
    composition : mapping
        Element symbol -> amount (at.% or fractions; normalised to 1 here).
    q : array
        q = 2π/d in Å⁻¹, finite and >= 0.
    """
    fractions = normalized_composition(composition)
    qa = np.asarray(q, dtype=float)
    f_mean = np.zeros(qa.shape)
    f2_mean = np.zeros(qa.shape)
    for el, c in fractions.items():
        if c == 0:
            continue
        f = electron_form_factor(el, qa)
        f_mean += c * f
        f2_mean += c * f * f
    return f_mean, f2_mean

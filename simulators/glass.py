"""The Zr–X metallic glass of the SNEM laminate: pair fractions, partial PDFs, S(Q), I(Q) and G(r).

A pseudo-binary Zr–X model (seed 000: X averages Cu, Ni and Al of Zr65Cu17.5Ni10Al7.5).
The chemical short-range-order parameter follows the seed's Eqs. 1–2; scattering is
kinematic with Faber–Ziman weights and electron form factors (:mod:`.form_factors`).
Split from :mod:`.laminate`, which places this glass in a scanned sample.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .form_factors import electron_form_factor

logger = logging.getLogger(__name__)

X_MIXTURE = {"Cu": 17.5 / 35.0, "Ni": 10.0 / 35.0, "Al": 7.5 / 35.0}  # X of Zr65Cu17.5Ni10Al7.5
SHELL_R = {"XX": 2.55, "ZrX": 2.85, "ZrZr": 3.20}  # Å, first-shell pair distances
SHELL_SIGMA = {"XX": 0.13, "ZrX": 0.15, "ZrZr": 0.17}  # Å
COORDINATION = 12.0
_S0 = 0.05  # S(Q -> 0) of a dense glass (low compressibility)
_R = np.arange(0.005, 25.0, 0.01)  # Å, real-space grid of the partials
GR_R = np.arange(1.5, 8.0, 0.01)  # Å, grid of the ground-truth G(r)
_RMAX_WINDOW = (2.1, 4.0)  # Å, seed Table S1 (iii)


# ----------------------------------------------------------------- glass physics
def pair_fractions(c_zr: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-neighbour pair fractions (x_ZrZr, x_ZrX, x_XX) with Zr fraction ``c_zr`` and SRO ``alpha``.

    Construction (inverts the seed's Eqs. 1–2 exactly): the pair ends must give
    the composition, c = x_ZrZr + x_ZrX / 2 and 1 − c = x_XX + x_ZrX / 2, so with
    y = x_ZrX and m = min(c, 1 − c), N_max = y + min(x_ZrZr, x_XX) = y/2 + m and
    N_rand = N_max / 2. Then α = (y − N_rand)/(N_max − N_rand) = 2y/N_max − 1 solves to

        y = 2 (α + 1) m / (3 − α),

    which keeps all fractions in [0, 1] for α ∈ [−1, 1]. Note: with this
    definition an ideally random alloy (y = 2c(1 − c)) has α = (2 − 3m)/(2 − m),
    1/3 at c = 1/2, not 0; the seed's Eq. 2 is used as written.
    """
    c = np.asarray(c_zr, dtype=float)
    a = np.asarray(alpha, dtype=float)
    if np.any((c < 0) | (c > 1)) or np.any((a < -1) | (a > 1)):
        raise ValueError("c_zr must be in [0, 1] and alpha in [-1, 1]")
    m = np.minimum(c, 1 - c)
    y = 2 * (a + 1) * m / (3 - a)
    return c - y / 2, y, 1 - c - y / 2


def sro_alpha(x_zrzr: np.ndarray, x_zrx: np.ndarray, x_xx: np.ndarray) -> np.ndarray:
    """SRO parameter of the seed, Eqs. 1–2.

    α = (x_ZrX − N_rand)/(N_max − N_rand), N_max = x_ZrX + min(x_ZrZr, x_XX),
    N_rand = N_max/2: > 0 Zr–X ordering, < 0 clustering of like atoms.
    """
    n_max = np.asarray(x_zrx) + np.minimum(x_zrzr, x_xx)
    n_rand = n_max / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x_zrx - n_rand) / (n_max - n_rand)


def glass_density(c_zr: float) -> float:
    """Number density ρ (atoms/Å³): Vegard's law on the volume per atom, pure Zr 0.0429, X (Ni-like) 0.085."""
    return 1.0 / (c_zr / 0.0429 + (1 - c_zr) / 0.085)


def _partials(c: float, alpha: float, rho: float) -> dict[str, np.ndarray]:
    """Partial g_ij(r) on ``_R``: Gaussian first shell with N_ij neighbours, then a damped oscillation to 1.

    N_ZrZr = 12 x_ZrZr / c, N_ZrX = 6 x_ZrX / c, N_XZr = 6 x_ZrX / (1 − c),
    N_XX = 12 x_XX / (1 − c): every atom has 12 neighbours and the bond counts
    per atom are the pair fractions. A shell of N_ij neighbours at r_ij is
    N_ij / (4πρ c_j r²) · Normal(r; r_ij, σ_ij) in g_ij.
    """
    xzz, xzx, xxx = pair_fractions(c, alpha)
    cj = {"ZrZr": c, "ZrX": 1 - c, "XX": 1 - c}  # partner concentration
    eps = 1e-12
    n = {"ZrZr": COORDINATION * xzz / max(c, eps), "ZrX": COORDINATION / 2 * xzx / max(c, eps),
         "XX": COORDINATION * xxx / max(1 - c, eps)}
    out = {}
    for pair, r1 in SHELL_R.items():
        sig = SHELL_SIGMA[pair]
        shell = np.exp(-(_R - r1) ** 2 / (2 * sig ** 2)) / (sig * math.sqrt(2 * math.pi))
        first = n[pair] / (4 * math.pi * rho * max(cj[pair], eps) * _R ** 2) * shell
        onset = 1.25 * r1
        step = 0.5 * (1 + np.tanh((_R - onset) / (0.06 * r1)))
        osc = 0.6 * np.exp(-np.clip(_R - onset, 0, None) / 3.0) * -np.cos(2 * np.pi * (_R - onset) / (0.9 * r1))
        g = first + step * (1 + osc)
        out[pair] = g
    return out


def mixture_form_factors(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f_Zr(q), f_X(q) (mixture mean) and ⟨f_X²⟩(q) in Å / Å²."""
    f_zr = electron_form_factor("Zr", q)
    fx = {el: electron_form_factor(el, q) for el in X_MIXTURE}
    f_x = sum(w * fx[el] for el, w in X_MIXTURE.items())
    f_x2 = sum(w * fx[el] ** 2 for el, w in X_MIXTURE.items())
    return f_zr, f_x, f_x2


def glass_intensity(c_zr: float, alpha: float, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kinematic electron intensity I(Q) per atom (Å²) and S(Q) of the Zr–X glass at q (Å⁻¹, q = 2π/d).

    Faber–Ziman with q-dependent weights (module docstring); below the first
    peak, the smooth low-Q form of :func:`smooth_low_q`. Evaluated on a
    0.01 Å⁻¹ grid from 0 and interpolated, exactly as the pattern templates are,
    so ``q`` may have any shape and order.
    """
    q = np.asarray(q, dtype=float)
    grid = np.arange(0.0, max(float(q.max(initial=0.0)), 4.5) + 0.05, 0.01)
    iq, sq = glass_curves(np.array([float(c_zr)]), np.array([float(alpha)]), grid)
    return np.interp(q, grid, iq[0]), np.interp(q, grid, sq[0])


def glass_curves(cs: np.ndarray, alphas: np.ndarray, q: np.ndarray,
                  cache: tuple[np.ndarray, tuple[np.ndarray, ...]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """I(Q) and S(Q) (n, nq) for the pairs (cs[i], alphas[i]): all partial transforms in one matrix product."""
    q = np.maximum(np.asarray(q, dtype=float), 1e-3)
    kernel, (f_zr, f_x, f_x2) = cache if cache is not None else intensity_cache(q)
    rhos = np.array([glass_density(c) for c in cs])
    h = np.empty((_R.size, 3 * cs.size))
    for i, (c, a, rho) in enumerate(zip(cs, alphas, rhos)):
        g = _partials(c, a, rho)
        for j, pair in enumerate(("ZrZr", "ZrX", "XX")):
            h[:, 3 * i + j] = g[pair] - 1
    s_all = (kernel @ h).T.reshape(cs.size, 3, q.size) * (4 * np.pi * rhos[:, None, None] / q[None, None, :])
    c = cs[:, None]
    mean_f = c * f_zr + (1 - c) * f_x
    mean_f2 = c * f_zr ** 2 + (1 - c) * f_x2
    interference = (c * c * f_zr ** 2 * s_all[:, 0] + 2 * c * (1 - c) * f_zr * f_x * s_all[:, 1]
                    + (1 - c) ** 2 * f_x ** 2 * s_all[:, 2])
    s_q = smooth_low_q(q, 1 + interference / mean_f ** 2)
    intensity = np.maximum(mean_f2 + mean_f ** 2 * (s_q - 1), 0.02 * mean_f2)
    return intensity, 1 + (intensity - mean_f2) / mean_f ** 2


def smooth_low_q(q: np.ndarray, s_q: np.ndarray) -> np.ndarray:
    """Replace S(Q) below the first peak Q1 by a half Gaussian from S0 = 0.05 to the peak.

    Why: the partials are a first-shell model without the long-range sum rules,
    and their transform puts spurious rings (even S < 0) between the beam and the
    first diffuse peak, where a dense glass has a small, featureless S. The half
    Gaussian S0 + (S(Q1) − S0) exp(−(Q − Q1)²/(2σ²)) keeps the peak position,
    height and the model's left half width at half maximum (σ = HWHM/1.1774),
    and joins the model at Q1 with zero slope. Q1 is the largest maximum of S on
    1.5–4.5 Å⁻¹; rows of ``s_q`` are treated separately.
    """
    out = np.array(s_q, dtype=float)
    win = np.flatnonzero((q > 1.5) & (q < 4.5))
    for row in out:
        i1 = win[np.argmax(row[win])]
        half = _S0 + (row[i1] - _S0) / 2
        below = np.flatnonzero(row[:i1] < half)
        hwhm = q[i1] - q[below[-1]] if below.size else q[i1] / 4
        sigma = max(hwhm, 0.05) / math.sqrt(2 * math.log(2))
        row[:i1] = _S0 + (row[i1] - _S0) * np.exp(-(q[:i1] - q[i1]) ** 2 / (2 * sigma ** 2))
    return out


def intensity_cache(q: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """What :func:`glass_intensity` needs per q grid: the kernel r sin(Qr) dr (tapered 22–25 Å), form factors."""
    q = np.maximum(np.asarray(q, dtype=float), 1e-3)
    window = np.where(_R > 22.0, 0.5 * (1 + np.cos(np.pi * (_R - 22.0) / 3.0)), 1.0)
    kernel = np.sin(np.outer(q, _R)) * (_R * window * 0.01)  # dr = 0.01 Å
    return kernel, mixture_form_factors(q)


def reduced_pdf(q: np.ndarray, s_q: np.ndarray, r: np.ndarray, qmin: float, qmax: float) -> np.ndarray:
    """G(r) = (2/π) ∫_{qmin}^{qmax} Q (S(Q) − 1) sin(Qr) dQ (PDFgetX3 eq. 3), trapezoid; ``s_q`` is (..., nq)."""
    sel = (q >= qmin) & (q <= qmax)
    qq = q[sel]
    wq = np.zeros(qq.size)
    wq[1:] += np.diff(qq) / 2
    wq[:-1] += np.diff(qq) / 2
    f = qq * (np.asarray(s_q)[..., sel] - 1) * wq
    return 2 / np.pi * f @ np.sin(np.outer(qq, r))


def partial_pdfs(c_zr: float, alpha: float, r: np.ndarray, qmin: float, qmax: float) -> dict[str, np.ndarray]:
    """Ground truth for bond analyses: each pair's reduced PDF G_ij(r), band-limited to [qmin, qmax] as measured.

    G_ij = (2/π) ∫ Q (S_ij − 1) sin(Qr) dQ with S_ij the transform of the partial
    g_ij of :func:`_partials` (unweighted: the shapes an NMF should find), keys
    ``"XX"``, ``"ZrX"``, ``"ZrZr"``.
    """
    q = np.arange(0.01, qmax + 0.01, 0.01)
    kernel, _ = intensity_cache(q)
    rho = glass_density(c_zr)
    return {pair: reduced_pdf(q, 1 + (kernel @ (g - 1)) * 4 * np.pi * rho / q, np.asarray(r, float), qmin, qmax)
            for pair, g in _partials(c_zr, alpha, rho).items()}


def peak_position(r: np.ndarray, g: np.ndarray, window: tuple[float, float] = _RMAX_WINDOW) -> float:
    """r of the maximum of G on ``window``, refined by a 3-point parabola (algorithms.md a4)."""
    sel = np.flatnonzero((r >= window[0]) & (r <= window[1]))
    i = sel[np.argmax(g[sel])]
    if 0 < i < r.size - 1:
        gm, g0, gp = g[i - 1], g[i], g[i + 1]
        den = gm - 2 * g0 + gp
        delta = 0.5 * (gm - gp) / den if den != 0 else 0.0
        return float(r[i] + delta * (r[1] - r[0]))
    return float(r[i])


# ----------------------------------------------------------------- crystals

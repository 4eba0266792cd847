"""NMF "bond maps" and the chemical short-range-order parameter (seed 000, Results 2.3 and Fig. 9).

The seed factorises every glass position's G(r) with scikit-learn's NMF after a
positive shift, finds that three of four components resemble the Zr–X, Zr–Zr and
X–X partial PDFs of a pseudo-binary [Zr, X] glass (the fourth scales with the
shift: a background), normalises the weights to 100 % and maps them as bond
maps, and computes the SRO parameter of its Eqs. 1–2 from pair fractions:

    N_max = x_ZrX + min(x_ZrZr, x_XX),  N_rand = N_max / 2,
    α = (x_ZrX − N_rand) / (N_max − N_rand)   (> 0 Zr–X ordering, < 0 clustering).

Choices made here (the seed leaves them open), each a parameter:

* The factorisation uses the first-shell window of G(r) (2.1–4 Å, the seed's
  fit range, where the three pair distances overlap); on the whole curve the
  later shells mix the components and they stop resembling partials.
* Shift: G − min(G) + ``margin`` · (max − min), one constant for all positions
  (a larger shift makes the background component dominate).
* Components are ordered by the position of their maximum; the background is the
  one whose weight varies least between positions (relative standard deviation):
  it is common to the whole data set, as the seed says. The other three are assigned,
  shortest first, to A'–A' < A–B < A–A pairs where A is the larger atom (Zr, X–X
  shortest: seed "X–X peak is the shortest").
* Pair fractions from weights: a pair's first shell adds to G(r) a peak of area
  ∝ x_ij f_i f_j / (⟨f⟩² r_ij) (Faber–Ziman weights, G = 4πρ r (g − 1)), so
  x_ij ∝ w_ij · area_j · r_j / (f_i f_j), with area_j the area of component j
  above its minimum and f the mean electron form factors over the Q range used.
  ``scattering_weights=False`` gives the seed's plain normalised weights.

Whether the data determine the components at all is measured, not assumed
(:func:`component_stability`): NMF is unique only where some positions nearly
lack each component. A glass in which every position mixes all three pairs
leaves it free to rotate; restarts then reach the same error with other
components, and the bond maps are the seed's "semi-qualitative" reading.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["NmfBonds", "fit_bonds", "project_bonds", "component_stability", "pair_fractions", "sro_alpha",
           "PAIRS"]

logger = logging.getLogger(__name__)

#: Pair types of the pseudo-binary, in the order of their first-shell distance (X–X shortest).
PAIRS = ("xx", "zrx", "zrzr")


@dataclass
class NmfBonds:
    """One factorisation: components (k, nr) sorted by peak position, weights (n, k), and their roles."""

    components: np.ndarray
    weights: np.ndarray
    shift: float
    pair_components: tuple[int, int, int]  # component index of X–X, Zr–X, Zr–Zr
    background: int
    peak_positions: np.ndarray
    reconstruction_error: float
    n_iter: int
    converged: bool = True

    def bond_fractions(self, r: np.ndarray, form_products: tuple[float, float, float] | None = None
                       ) -> np.ndarray:
        """(n, 3) pair fractions (x_XX, x_ZrX, x_ZrZr) per position, summing to 1 (NaN for empty rows).

        ``form_products`` = (f_X², f_Zr f_X, f_Zr²) applies the scattering-weight
        correction of the module docstring; ``None`` normalises the raw weights
        (the seed's bond maps).
        """
        cols = list(self.pair_components)
        w = self.weights[:, cols].astype(np.float64)
        if form_products is not None:
            step = float(np.mean(np.diff(r))) if r.size > 1 else 1.0
            comps = self.components[cols]
            area = (comps - comps.min(axis=1, keepdims=True)).sum(axis=1) * step
            scale = area * self.peak_positions[cols] / np.asarray(form_products, dtype=np.float64)
            w = w * scale[None, :]
        total = w.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, w / total, np.nan)


def fit_bonds(curves: np.ndarray, r: np.ndarray, *, n_components: int = 4, margin: float = 0.1,
              max_iter: int = 1000, tol: float = 1e-4, random_state: int = 0, shift: float | None = None,
              warm_start: NmfBonds | None = None) -> NmfBonds:
    """Factorise the rows of ``curves`` (n, nr), finite rows only, into sorted, normalised components.

    Parameters
    ----------
    curves : (n, nr) array
        G(r) on the window ``r``; rows with NaN are left out and get NaN weights.
    margin : float
        Shift above the global minimum, relative to the data range.
    shift : float, optional
        Use this shift instead (to keep the factorisation comparable while a scan grows).
    warm_start : NmfBonds, optional
        A previous factorisation of the same window: its components start the
        solver (live updates during a scan converge in a few iterations).
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    x = np.asarray(curves, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != r.size:
        raise ValueError(f"curves must be (n, {r.size}) to match r, got {x.shape}")
    if n_components < 4:
        raise ValueError("n_components must be >= 4: three pair components and a background")
    ok = np.isfinite(x).all(axis=1)
    if ok.sum() < n_components:
        raise ValueError(f"need at least {n_components} finite curves, got {int(ok.sum())}")
    data = x[ok]
    if shift is None:
        shift = float(-data.min() + margin * np.ptp(data))
    pos = np.maximum(data + shift, 0.0)
    with warnings.catch_warnings(record=True) as caught:
        # live updates stop early on purpose: report it in ``converged`` rather than as a warning
        warnings.simplefilter("always", ConvergenceWarning)
        if warm_start is not None and warm_start.components.shape == (n_components, r.size):
            h0 = warm_start.components.copy()
            w0 = np.full((pos.shape[0], n_components), pos.mean() / max(h0.mean() * n_components, 1e-12))
            model = NMF(n_components, init="custom", max_iter=max_iter, tol=tol, random_state=random_state)
            w = model.fit_transform(pos, W=w0, H=h0)
        else:
            model = NMF(n_components, init="nndsvda", max_iter=max_iter, tol=tol, random_state=random_state)
            w = model.fit_transform(pos)
    converged = not any(issubclass(c.category, ConvergenceWarning) for c in caught)
    for c in caught:
        if not issubclass(c.category, ConvergenceWarning):
            warnings.warn_explicit(c.message, c.category, c.filename, c.lineno)
    h = model.components_
    norm = np.linalg.norm(h, axis=1)
    norm[norm == 0] = 1.0
    h = h / norm[:, None]
    w = w * norm[None, :]
    peaks = r[np.argmax(h, axis=1)]
    order = np.argsort(peaks, kind="stable")
    h, w, peaks = h[order], w[:, order], peaks[order]
    # the background is common to the whole data set: its weight varies least between positions
    spread = w.std(axis=0) / np.maximum(w.mean(axis=0), 1e-12)
    background = int(np.argmin(spread))
    structured = [j for j in range(n_components) if j != background]
    # of the others, the three that vary most, shortest first, are X–X, Zr–X, Zr–Zr
    top = sorted(sorted(structured, key=lambda j: -spread[j])[:3])
    weights = np.full((x.shape[0], n_components), np.nan)
    weights[ok] = w
    return NmfBonds(components=h, weights=weights, shift=shift, pair_components=tuple(top),
                    background=background, peak_positions=peaks,
                    reconstruction_error=float(model.reconstruction_err_), n_iter=int(model.n_iter_),
                    converged=converged)


def project_bonds(bonds: NmfBonds, curves: np.ndarray) -> NmfBonds:
    """Non-negative weights of other curves on fixed components (the NMF's W step with H held).

    Live maps: components come from a subset of positions, every position gets its
    weights here; the end-of-scan factorisation refits everything.
    """
    from sklearn.decomposition import non_negative_factorization
    from sklearn.exceptions import ConvergenceWarning

    x = np.asarray(curves, dtype=np.float64)
    ok = np.isfinite(x).all(axis=1)
    weights = np.full((x.shape[0], bonds.components.shape[0]), np.nan)
    if ok.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a preview: a few hundred steps suffice
            w, _, _ = non_negative_factorization(np.maximum(x[ok] + bonds.shift, 0.0), H=bonds.components,
                                                 n_components=bonds.components.shape[0], update_H=False,
                                                 max_iter=200)
        weights[ok] = w
    return NmfBonds(components=bonds.components, weights=weights, shift=bonds.shift,
                    pair_components=bonds.pair_components, background=bonds.background,
                    peak_positions=bonds.peak_positions, reconstruction_error=bonds.reconstruction_error,
                    n_iter=bonds.n_iter, converged=bonds.converged)


def _relative_error(pos: np.ndarray, w: np.ndarray, h: np.ndarray) -> float:
    return float(np.linalg.norm(pos - w @ h) / np.linalg.norm(pos))


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of every row of ``a`` with every row of ``b`` (mean removed: the shift is not a resemblance)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    return a @ b.T


def component_stability(bonds: NmfBonds, curves: np.ndarray, *, restarts: int = 3, tol: float = 1e-6,
                        max_iter: int = 20000, random_state: int = 0, tolerance: float = 1e-3
                        ) -> tuple[np.ndarray, int]:
    """How well random restarts that fit ``curves`` as well as ``bonds`` reproduce each of its components.

    Why: NMF is unique only when the data reach the edges of the cone of its
    components (positions where a component is nearly absent). Glass positions
    that all mix all pairs leave the factorisation free to rotate: restarts then
    reach the same error with other components, and the bond maps are the
    seed's "semi-qualitative" reading, not measured pair fractions.

    Each restart starts from random components (same shift) and runs to the
    solver tolerance ``tol``, tighter than scikit-learn's default: an early stop
    leaves restarts apart that would meet. It counts only if its relative error
    is within ``tolerance`` of that of ``bonds`` on the same curves (a worse
    local minimum is no alternative). Components are matched one to one by
    correlation (mean removed). Returns, per component of ``bonds``, the lowest
    matched correlation over the counted restarts (1 = the data determine it;
    NaN if no restart counted), and the number counted.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.decomposition import NMF, non_negative_factorization
    from sklearn.exceptions import ConvergenceWarning

    if restarts < 1:
        raise ValueError("restarts must be >= 1")
    x = np.asarray(curves, dtype=np.float64)
    k = bonds.components.shape[0]
    if x.ndim != 2 or x.shape[1] != bonds.components.shape[1]:
        raise ValueError(f"curves must be (n, {bonds.components.shape[1]}) like the components, got {x.shape}")
    pos = np.maximum(x[np.isfinite(x).all(axis=1)] + bonds.shift, 0.0)
    if pos.shape[0] < k:
        raise ValueError(f"need at least {k} finite curves, got {pos.shape[0]}")
    worst = np.full(k, np.inf)
    counted = 0
    rng = np.random.default_rng(random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # every fit is judged by its error
        w, _, _ = non_negative_factorization(pos, H=bonds.components, n_components=k, update_H=False,
                                             tol=tol, max_iter=max_iter)
        reference = _relative_error(pos, w, bonds.components)
        for _ in range(restarts):
            model = NMF(k, init="random", tol=tol, max_iter=max_iter, random_state=int(rng.integers(2 ** 31)))
            w = model.fit_transform(pos)
            if _relative_error(pos, w, model.components_) > reference * (1 + tolerance):
                continue
            counted += 1
            sim = _pearson(bonds.components, model.components_)
            rows, cols = linear_sum_assignment(-sim)
            worst[rows] = np.minimum(worst[rows], sim[rows, cols])
    return (np.where(np.isfinite(worst), worst, np.nan), counted)


def sro_alpha(x_zrzr: np.ndarray, x_zrx: np.ndarray, x_xx: np.ndarray) -> np.ndarray:
    """The seed's SRO parameter (Eqs. 1–2) from pair fractions; NaN where undefined.

    Examples
    --------
    >>> float(sro_alpha(0.25, 0.5, 0.25))   # x_ZrX = N_max / 2: the seed's "random" reference
    0.333...
    """
    x_zrzr, x_zrx, x_xx = (np.asarray(v, dtype=np.float64) for v in (x_zrzr, x_zrx, x_xx))
    n_max = x_zrx + np.minimum(x_zrzr, x_xx)
    n_rand = n_max / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x_zrx - n_rand) / (n_max - n_rand)


def pair_fractions(bonds: NmfBonds, r: np.ndarray, form_products: tuple[float, float, float] | None
                   ) -> dict[str, np.ndarray]:
    """Bond maps (x_XX, x_ZrX, x_ZrZr per position) and the SRO parameter α from a factorisation."""
    x = bonds.bond_fractions(r, form_products)
    return {"xx": x[:, 0], "zrx": x[:, 1], "zrzr": x[:, 2], "alpha": sro_alpha(x[:, 2], x[:, 1], x[:, 0])}

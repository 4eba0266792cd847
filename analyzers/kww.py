"""Batched, bounded KWW fits of per-pixel intensity autocorrelations for electron correlation microscopy (ECM).

Every pixel of an ECM dark-field series has an intensity autocorrelation g2(t),
fitted with the Kohlrausch–Williams–Watts (stretched exponential) form

    g2(t) = baseline + A exp(−2 (t/τ)^β),   A > 0, τ > 0, 0.1 < β < 2

(Zhang et al., Nat. Commun. 9 (2018) 1129; research note (d)). The reference
analysis calls ``scipy.optimize.curve_fit`` once per pixel. That is far too slow
for a live 128² map, so :func:`fit_kww` runs all pixels in one numba loop and
minimises **the same objective** as ``curve_fit(..., sigma=1/sqrt(w),
bounds=...)``:

    cost = ½ Σ_k w_k (model(t_k) − g2_k)²,

where the weights w_k = 1/σ_k² are optional (for example the number of pairs
behind each multi-tau lag).

Solver: projected Levenberg–Marquardt, as in :mod:`emlive.analyzers.peakfit`
(Marquardt's diagonal scaling, Nielsen's damping update, an analytic Jacobian,
box bounds by clipping with an active set, and scipy's ``ftol``/``xtol``/``gtol``
stopping tests). The Cholesky solve is reused from there. Internally the
parameters are (A, ln τ, β). τ spans decades across a map, and g2 is close to
linear in ln τ but strongly curved in τ itself (the decay moves by the same lag
ratio for the same relative change of τ). The change of variables is a
bijection on τ > 0, so the stationary points, and therefore the optimum, are
those of the τ-space problem ``curve_fit`` solves. Only the path to the optimum
differs. τ bounds are mapped to ln τ bounds (a lower bound of 0 becomes −∞).

Starting values (:func:`initial_guess`) are read off each curve:
A = g2(t₁) − baseline at the first lag, τ = the lag where g2 − baseline first
falls to A/e² (the KWW value at t = τ, interpolated in ln t), and β = 1. All
three are then moved strictly inside the bounds. ``p0="notebook"`` gives the
reference notebook's [g2(t₁) − 1, 200·t₁, 1] instead.

Trajectories must be many τ long for g2 to be trusted. The ECM literature asks
for ≳ 40 τ, and :func:`reliability` flags the rest. :func:`tau_histogram` bins a
τ map on log-spaced bins to give the distribution curve of the papers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .levenberg import _active_set, _after_accept, _projected_step, _solve_damped

__all__ = ["KwwResult", "fit_kww", "initial_guess", "kww_model", "reliability", "tau_histogram",
           "DEFAULT_BOUNDS", "STATUS"]

_INF = math.inf
DEFAULT_BOUNDS = ((0.0, 0.0, 0.1), (_INF, _INF, 2.0))  # (A, tau, beta) lower, upper: research note (d)
_LAMBDA0 = 1e-3  # initial Marquardt damping, relative to diag(JᵀJ)
_FASTMATH = {"reassoc", "contract", "arcp"}  # no 'nnan'/'ninf': the NaN checks must survive
_BIG = 6.0  # β ln(t/τ) above this: (t/τ)^β > 400, exp(−2 (t/τ)^β) underflows to 0

# status codes of a row
_ST_NAN = -1  # non-finite g2 on the selected lags, or fewer than 3 lags with positive weight: not fitted
_ST_FLAT = -2  # constant g2 on the selected lags: nothing decays, not fitted
_ST_NO_AMPLITUDE = -3  # fitted, but A ended on a lower bound <= 0: the decay vanished, tau and beta are undetermined
STATUS = {-3: "amplitude on its lower bound (tau, beta undetermined)", -2: "flat curve, not fitted",
          -1: "non-finite values or fewer than 3 weighted lags, not fitted", 0: "max_iter reached",
          1: "gtol", 2: "ftol", 3: "xtol"}


@dataclass(frozen=True)
class KwwResult:
    """Per-curve results of :func:`fit_kww`. Every array has ``g2.shape[:-1]``.

    ``A``, ``tau`` (in the units of ``t``) and ``beta`` are the fitted parameters
    (NaN where not fitted). ``cost`` is ½ Σ w (model − g2)², ``curve_fit``'s
    objective at the optimum. ``chi2`` is the reduced chi-square 2·cost/(n − 3)
    over the n lags with positive weight: about 1 when the weights are true
    1/σ², otherwise a relative quality measure. ``r2`` is the weighted
    coefficient of determination. ``success`` means converged (``status`` > 0).
    ``n_iter`` counts the trial steps. ``status`` holds the codes of
    :data:`STATUS`.
    """

    A: np.ndarray
    tau: np.ndarray
    beta: np.ndarray
    cost: np.ndarray
    chi2: np.ndarray
    r2: np.ndarray
    success: np.ndarray
    n_iter: np.ndarray
    status: np.ndarray

    @property
    def params(self) -> np.ndarray:
        """(..., 3) array of (A, tau, beta), the order of ``p0`` and ``bounds``."""
        return np.stack([self.A, self.tau, self.beta], axis=-1)


def kww_model(t: np.ndarray, A, tau, beta, baseline: float = 1.0) -> np.ndarray:
    """g2(t) = baseline + A exp(−2 (t/τ)^β). Parameters broadcast against ``t`` (plain numpy, for tests and plots)."""
    t = np.asarray(t, dtype=float)
    return baseline + np.asarray(A, dtype=float) * np.exp(-2.0 * (t / np.asarray(tau, dtype=float))
                                                          ** np.asarray(beta, dtype=float))


# ------------------------------------------------------------------ numba kernels
@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _evaluate(logt, yy, sw, base, x, f, jac, want_jac):
    """Weighted residuals f = √w (model − y) at x = (A, ln τ, β) and ½ Σ f². With ``want_jac`` also ∂f/∂x (3, m)."""
    amp = x[0]
    ltau = x[1]
    b = x[2]
    total = 0.0
    for k in range(logt.size):
        d = logt[k] - ltau  # ln(t/τ)
        bd = b * d
        if bd > _BIG:
            e = 0.0
            p = 0.0  # p·e → 0: the Jacobian terms vanish with e
        else:
            p = math.exp(bd)  # (t/τ)^β
            e = math.exp(-2.0 * p)
        r = sw[k] * (base + amp * e - yy[k])
        f[k] = r
        total += r * r
        if want_jac:
            je = sw[k] * e
            jac[0, k] = je
            jac[1, k] = 2.0 * amp * b * p * je  # ∂/∂ln τ
            jac[2, k] = -2.0 * amp * p * d * je  # ∂/∂β
    return 0.5 * total


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _normal(jac, f, hess, grad):
    """hess = J Jᵀ, grad = J f (3 parameters, parameter-major Jacobian)."""
    m = f.size
    for i in range(3):
        s = 0.0
        for k in range(m):
            s += jac[i, k] * f[k]
        grad[i] = s
        for j in range(i + 1):
            s = 0.0
            for k in range(m):
                s += jac[i, k] * jac[j, k]
            hess[i, j] = s
            hess[j, i] = s


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _lm(logt, yy, sw, base, x, lower, upper, max_iter, xtol, ftol, gtol, buf_m, buf_p, mat, free):
    """Projected Levenberg–Marquardt from ``x`` (A, ln τ, β), updated in place. Returns (cost, status, iterations)."""
    f, ft = buf_m[0], buf_m[1]
    jac = buf_m[2:5]
    jact = buf_m[5:8]
    hess = buf_p[:3]
    grad, diag, step, xt = buf_p[3], buf_p[4], buf_p[5], buf_p[6]
    cost = _evaluate(logt, yy, sw, base, x, f, jac, True)
    _normal(jac, f, hess, grad)
    for i in range(3):
        diag[i] = hess[i, i]
    lam = _LAMBDA0
    nu = 2.0
    it = 0
    while it < max_iter:
        gmax, xnorm = _active_set(x, grad, diag, lower, upper, free)
        if gmax <= gtol:
            return cost, 1, it
        it += 1
        if not _solve_damped(hess, grad, diag, lam, free, mat, step):
            lam *= nu
            nu *= 2.0
            continue
        snorm, pred = _projected_step(x, step, grad, hess, lower, upper, xt)
        cost_t = _evaluate(logt, yy, sw, base, xt, ft, jact, True)
        actual = cost - cost_t
        if math.isfinite(cost_t) and actual > 0.0 and pred > 0.0:
            ratio = actual / pred
            for i in range(3):
                x[i] = xt[i]
            f, ft = ft, f
            jac, jact = jact, jac
            cost = cost_t
            _normal(jac, f, hess, grad)
            lam = _after_accept(hess, diag, lam, ratio)
            nu = 2.0
            if actual < ftol * cost and ratio > 0.25:
                return cost, 2, it
        else:
            lam *= nu
            nu *= 2.0
        if snorm < xtol * (xtol + xnorm):
            return cost, 3, it
    return cost, 0, it


@numba.njit(cache=True, nogil=True)
def _row_state(yy, sw):
    """Row check before a fit: returns (status or 1 when fittable, number of weighted lags)."""
    m = yy.size
    n_pos = 0
    lo = _INF
    hi = -_INF
    for k in range(m):
        v = yy[k]
        if not math.isfinite(v):
            return _ST_NAN, 0
        if sw[k] > 0.0:
            n_pos += 1
            lo = min(lo, v)
            hi = max(hi, v)
    if n_pos < 3:
        return _ST_NAN, n_pos
    if hi - lo <= 0.0:
        return _ST_FLAT, n_pos
    return 1, n_pos


@numba.njit(cache=True, nogil=True)
def _inside(v, lo, hi):
    """v moved strictly inside [lo, hi]: 1e-10 relative from a bound, as least_squares(method='trf') does."""
    v = min(max(v, lo), hi)
    if v <= lo:
        v = lo + 1e-10 * max(1.0, abs(lo))
    elif v >= hi:
        v = hi - 1e-10 * max(1.0, abs(hi))
    if v < lo or v > hi:
        v = 0.5 * (lo + hi)
    return v


@numba.njit(cache=True, nogil=True)
def _guess_rows(t, ys, sws, base, lower, upper, notebook, out):
    """Data-driven (A, τ, β) per row (τ-space, inside the bounds); NaN for rows that cannot be fitted."""
    n, m = ys.shape
    per_row = sws.shape[0] > 1
    for row in range(n):
        yy = ys[row]
        sw = sws[row if per_row else 0]
        st, _ = _row_state(yy, sw)
        if st == _ST_NAN:
            out[row, :] = np.nan
            continue
        first = 0
        while sw[first] <= 0.0:
            first += 1
        amp = yy[first] - base
        if notebook:
            tau = 200.0 * t[first]
        else:
            if not amp > 0.0:
                amp = -_INF
                for k in range(first, m):
                    if sw[k] > 0.0:
                        amp = max(amp, yy[k] - base)
            target = amp * math.exp(-2.0)
            tau = t[m - 1]
            prev = -1
            for k in range(first, m):
                if sw[k] <= 0.0:
                    continue
                v = yy[k] - base
                if v <= target:
                    if prev < 0:
                        tau = t[k]
                    else:
                        v0 = yy[prev] - base
                        fr = (v0 - target) / (v0 - v) if v0 != v else 0.0
                        tau = math.exp(math.log(t[prev]) + fr * (math.log(t[k]) - math.log(t[prev])))
                    break
                prev = k
        out[row, 0] = _inside(amp, lower[0], upper[0])
        out[row, 1] = _inside(tau, lower[1], upper[1])
        out[row, 2] = _inside(1.0, lower[2], upper[2])


@numba.njit(cache=True, nogil=True)
def _fit_rows(t, ys, sws, base, x0s, lower, upper, max_iter, xtol, ftol, gtol,
              params, costs, chi2, r2, status, n_iter):
    """Fit every row of ``ys`` (n, m) from ``x0s`` (n, 3) in τ-space; results written to the output arrays."""
    n, m = ys.shape
    per_row = sws.shape[0] > 1
    logt = np.log(t)
    lo = np.empty(3)
    hi = np.empty(3)
    lo[0], hi[0], lo[2], hi[2] = lower[0], upper[0], lower[2], upper[2]
    lo[1] = math.log(lower[1]) if lower[1] > 0.0 else -_INF
    hi[1] = math.log(upper[1])
    buf_m = np.empty((8, m))
    buf_p = np.empty((7, 3))
    mat = np.empty((3, 3))
    free = np.empty(3, dtype=np.bool_)
    x = np.empty(3)
    for row in range(n):
        yy = ys[row]
        sw = sws[row if per_row else 0]
        st, n_pos = _row_state(yy, sw)
        if st < 0:
            params[row, :] = np.nan
            costs[row] = np.nan
            chi2[row] = np.nan
            r2[row] = np.nan
            status[row] = st
            n_iter[row] = 0
            continue
        x[0] = _inside(x0s[row, 0], lo[0], hi[0])
        x[1] = _inside(math.log(x0s[row, 1]), lo[1], hi[1])
        x[2] = _inside(x0s[row, 2], lo[2], hi[2])
        cost, st, it = _lm(logt, yy, sw, base, x, lo, hi, max_iter, xtol, ftol, gtol, buf_m, buf_p, mat, free)
        if lo[0] <= 0.0 and x[0] <= lo[0] + 2e-10 * max(1.0, abs(lo[0])):
            st = _ST_NO_AMPLITUDE
        params[row, 0] = x[0]
        # exp(ln τ) can land an ulp outside a τ bound: a parameter on a bound returns the bound exactly
        if x[1] <= lo[1]:
            params[row, 1] = lower[1]
        elif x[1] >= hi[1]:
            params[row, 1] = upper[1]
        else:
            params[row, 1] = min(max(math.exp(x[1]), lower[1]), upper[1])
        params[row, 2] = x[2]
        costs[row] = cost
        status[row] = st
        n_iter[row] = it
        chi2[row] = 2.0 * cost / (n_pos - 3) if n_pos > 3 else np.nan
        sw_sum = 0.0
        wy = 0.0
        for k in range(m):
            w = sw[k] * sw[k]
            sw_sum += w
            wy += w * yy[k]
        ybar = wy / sw_sum
        tot = 0.0
        for k in range(m):
            dv = yy[k] - ybar
            tot += sw[k] * sw[k] * dv * dv
        r2[row] = 1.0 - 2.0 * cost / tot if tot > 0.0 else np.nan


# ------------------------------------------------------------------ validation
def _bounds(bounds) -> tuple[np.ndarray, np.ndarray]:
    try:
        lo = np.array(bounds[0], dtype=float).reshape(-1)
        hi = np.array(bounds[1], dtype=float).reshape(-1)
        if len(bounds) != 2:
            raise TypeError
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"bounds must be ((A_lo, tau_lo, beta_lo), (A_hi, tau_hi, beta_hi)), got {bounds!r}") \
            from None
    if lo.size != 3 or hi.size != 3:
        raise ValueError(f"bounds must hold 3 lower and 3 upper values (A, tau, beta), got {lo.size} and {hi.size}")
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)) or np.any(lo >= hi):
        raise ValueError(f"each lower bound must be strictly less than its upper bound (and not NaN), got {bounds!r}")
    if lo[1] < 0 or lo[2] < 0:
        raise ValueError(f"the lower bounds of tau and beta must be >= 0, got {lo[1]} and {lo[2]}")
    return lo, hi


def _prepare(t, g2, weights, t_max, lag_mask, baseline):
    """Validate inputs; return (t_sel, y (n, m), sqrt(w) (1 or n, m), batch shape)."""
    t = np.asarray(t, dtype=float)
    g2 = np.asarray(g2, dtype=float)
    if t.ndim != 1 or t.size < 3:
        raise ValueError(f"t must be a 1-D array of at least 3 lags, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t <= 0) or np.any(np.diff(t) <= 0):
        raise ValueError("t must be finite, > 0 (drop lag 0) and strictly increasing")
    if g2.ndim < 1 or g2.shape[-1] != t.size:
        raise ValueError(f"g2 must have shape (..., {t.size}) to match t, got {g2.shape}")
    if not math.isfinite(baseline):
        raise ValueError(f"baseline must be finite, got {baseline!r}")
    sel = np.ones(t.size, dtype=bool)
    if lag_mask is not None:
        mask = np.asarray(lag_mask)
        if mask.dtype != bool or mask.shape != t.shape:
            raise ValueError(f"lag_mask must be a boolean array of shape {t.shape}, got {mask.dtype} {mask.shape}")
        sel &= mask
    if t_max is not None:
        if not (math.isfinite(t_max) and t_max > 0):
            raise ValueError(f"t_max must be a finite number > 0, got {t_max!r}")
        sel &= t <= t_max
    if sel.sum() < 3:
        raise ValueError(f"the lag selection keeps {int(sel.sum())} lags; at least 3 are needed")
    batch = g2.shape[:-1]
    y = np.ascontiguousarray(g2.reshape(-1, t.size)[:, sel])
    if weights is None:
        sw = np.ones((1, int(sel.sum())))
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape == t.shape:
            w2 = w[None, sel]
        elif w.shape == g2.shape:
            w2 = w.reshape(-1, t.size)[:, sel]
        else:
            raise ValueError(f"weights must have shape {t.shape} or {g2.shape}, got {w.shape}")
        if not np.all(np.isfinite(w2)) or np.any(w2 < 0):
            raise ValueError("weights must be finite and >= 0 (1/sigma² per lag)")
        sw = np.ascontiguousarray(np.sqrt(w2))
        if w.shape == t.shape and np.count_nonzero(sw) < 3:
            raise ValueError("weights must be positive on at least 3 selected lags")
    return np.ascontiguousarray(t[sel]), y, sw, batch


def initial_guess(t: np.ndarray, g2: np.ndarray, *, weights: np.ndarray | None = None,
                  bounds=DEFAULT_BOUNDS, baseline: float = 1.0, t_max: float | None = None,
                  lag_mask: np.ndarray | None = None, notebook: bool = False) -> np.ndarray:
    """Data-driven starting values (..., 3) = (A, tau, beta) per curve, strictly inside ``bounds``.

    A = g2(t₁) − baseline at the first selected lag (with positive weight). If
    that is not positive, the largest g2 − baseline is used instead. τ is the
    first lag where g2 − baseline falls to A/e², interpolated linearly in ln t
    (the last lag if it never does). β = 1. With ``notebook`` the reference
    notebook's [g2(t₁) − 1, 200·t₁, 1] is used instead. Rows that cannot be
    fitted (non-finite values, fewer than 3 weighted lags) get NaN. The
    arguments are those of :func:`fit_kww`.
    """
    lo, hi = _bounds(bounds)
    tt, y, sw, batch = _prepare(t, g2, weights, t_max, lag_mask, float(baseline))
    out = np.empty((y.shape[0], 3))
    _guess_rows(tt, y, sw, float(baseline), lo, hi, bool(notebook), out)
    return out.reshape(*batch, 3)


# ------------------------------------------------------------------ public fit
def fit_kww(t: np.ndarray, g2: np.ndarray, *, weights: np.ndarray | None = None,
            p0: np.ndarray | str | None = None, bounds=DEFAULT_BOUNDS, baseline: float = 1.0,
            t_max: float | None = None, lag_mask: np.ndarray | None = None, max_iter: int = 100,
            xtol: float = 1e-8, ftol: float = 1e-8, gtol: float = 1e-8) -> KwwResult:
    """Fit g2 = baseline + A exp(−2 (t/τ)^β) to every curve of ``g2`` by bounded weighted least squares.

    Minimises ½ Σ w (model − g2)², the objective of ``scipy.optimize.curve_fit(kww,
    t, g2_row, p0, sigma=1/sqrt(w), bounds=bounds)``, in one numba loop over
    the curves (see the module docstring for the solver and the ln τ variable).

    Parameters
    ----------
    t : (nlags,) array
        Lag times, finite, > 0 and strictly increasing (drop lag 0: it holds
        the shot noise). τ is returned in the same units.
    g2 : (..., nlags) array
        Autocorrelation curves, for example one per pixel. Rows with a
        non-finite value on the selected lags are not fitted (``status`` −1,
        NaN parameters). Constant rows are not fitted either (``status`` −2).
    weights : (nlags,) or (..., nlags) array, optional
        1/σ² per lag (>= 0), for example the number of pairs behind each
        multi-tau lag. A lag with weight 0 is ignored. Default: all 1.
    p0 : None, "notebook", (3,) or (..., 3) array
        Start (A, tau, beta). None (default) uses :func:`initial_guess` per
        curve. ``"notebook"`` uses the reference notebook's [g2(t₁) − 1,
        200·t₁, 1]. Explicit values must lie inside the bounds; they are moved
        1e-10 inside a bound they sit on, as scipy's "trf" does.
    bounds : ((A_lo, tau_lo, beta_lo), (A_hi, tau_hi, beta_hi))
        Box bounds, ±inf allowed. Default A > 0, τ > 0, 0.1 < β < 2.
        tau_lo and beta_lo must be >= 0.
    baseline : float
        The fixed long-time limit of g2 (1 for a normalised g2).
    t_max : float, optional
        Use only lags t <= t_max.
    lag_mask : (nlags,) bool array, optional
        Use only the lags where it is True (combined with ``t_max``).
    max_iter : int
        Maximum number of trial steps per curve.
    xtol, ftol, gtol : float
        scipy's tolerances: relative step size, relative cost decrease (with
        gain ratio > 0.25), and max-norm of the projected gradient (in
        (A, ln τ, β)).

    Returns
    -------
    KwwResult
        Maps of ``A``, ``tau``, ``beta``, ``cost``, ``chi2``, ``r2``,
        ``success``, ``n_iter`` and ``status``, each of shape ``g2.shape[:-1]``.
    """
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    for name, tol in (("xtol", xtol), ("ftol", ftol), ("gtol", gtol)):
        if not (np.isfinite(tol) and tol >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {tol!r}")
    lo, hi = _bounds(bounds)
    base = float(baseline)
    tt, y, sw, batch = _prepare(t, g2, weights, t_max, lag_mask, base)
    n = y.shape[0]
    if p0 is None or (isinstance(p0, str) and p0 == "notebook"):
        x0 = np.empty((n, 3))
        _guess_rows(tt, y, sw, base, lo, hi, p0 is not None, x0)
    elif isinstance(p0, str):
        raise ValueError(f"p0 must be None, 'notebook' or an array, got {p0!r}")
    else:
        x0 = np.asarray(p0, dtype=float)
        if x0.shape == (3,):
            x0 = np.broadcast_to(x0, (n, 3))
        elif x0.shape == (*batch, 3):
            x0 = x0.reshape(n, 3)
        else:
            raise ValueError(f"p0 must have shape (3,) or {(*batch, 3)}, got {x0.shape}")
        if not np.all(np.isfinite(x0)):
            raise ValueError("p0 must be finite")
        if np.any((x0 < lo) | (x0 > hi)):
            raise ValueError("p0 is infeasible: outside the bounds")
        if np.any(x0[:, 1] <= 0):
            raise ValueError("p0 must have tau > 0")
        x0 = np.ascontiguousarray(x0)
    params = np.empty((n, 3))
    cost = np.empty(n)
    chi2 = np.empty(n)
    r2 = np.empty(n)
    status = np.empty(n, dtype=np.int8)
    n_iter = np.empty(n, dtype=np.int32)
    # NaN starts come from rows the kernel skips anyway; give it finite numbers
    _fit_rows(tt, y, sw, base, np.nan_to_num(x0, nan=1.0), lo, hi, int(max_iter), float(xtol), float(ftol),
              float(gtol), params, cost, chi2, r2, status, n_iter)
    return KwwResult(A=params[:, 0].reshape(batch), tau=params[:, 1].reshape(batch),
                     beta=params[:, 2].reshape(batch), cost=cost.reshape(batch), chi2=chi2.reshape(batch),
                     r2=r2.reshape(batch), success=(status > 0).reshape(batch), n_iter=n_iter.reshape(batch),
                     status=status.reshape(batch))


# ------------------------------------------------------------------ map helpers
def reliability(tau: np.ndarray, series_duration: float, factor: float = 40) -> np.ndarray:
    """True where τ <= T/``factor`` (T the series duration, same units as τ): the trajectory is long enough.

    The ECM literature asks for trajectories ≳ 40 τ long before g2 and its KWW
    fit are trusted (research note (d)). NaN τ gives False.
    """
    if not (math.isfinite(series_duration) and series_duration > 0):
        raise ValueError(f"series_duration must be a finite number > 0, got {series_duration!r}")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be a finite number > 0, got {factor!r}")
    tau = np.asarray(tau, dtype=float)
    with np.errstate(invalid="ignore"):
        return (tau > 0) & (tau <= series_duration / factor)


def tau_histogram(tau: np.ndarray, bins: int | np.ndarray = 30, *, range: tuple[float, float] | None = None,
                  mask: np.ndarray | None = None, density: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of τ on log-spaced bins: the τ distribution curve of ECM papers.

    Parameters
    ----------
    tau : array
        τ map. NaN, infinite and non-positive values are ignored.
    bins : int or 1-D array
        Number of log-spaced bins, or explicit increasing positive edges.
    range : (low, high), optional
        Span of the log-spaced bins (> 0). Default: the finite positive τ's min and max.
    mask : bool array, optional
        Only τ where it is True (for example :func:`reliability`), same shape as ``tau``.
    density : bool
        Normalise to a probability density per unit ln τ (the integral over ln τ is 1).

    Returns
    -------
    counts, edges : arrays
        ``counts`` (nbins,) and the bin ``edges`` (nbins + 1,).
    """
    tau = np.asarray(tau, dtype=float)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != tau.shape:
            raise ValueError(f"mask must be a boolean array of shape {tau.shape}, got {mask.dtype} {mask.shape}")
        tau = tau[mask]
    v = tau[np.isfinite(tau) & (tau > 0)].ravel()
    if np.ndim(bins) == 0:
        nb = int(bins)
        if nb != bins or nb < 1:
            raise ValueError(f"bins must be a positive integer or an array of edges, got {bins!r}")
        if range is None:
            if v.size == 0:
                lo_v, hi_v = 1.0, 10.0
            else:
                lo_v, hi_v = float(v.min()), float(v.max())
        else:
            lo_v, hi_v = (float(r) for r in range)
            if not (0 < lo_v < hi_v and math.isfinite(hi_v)):
                raise ValueError(f"range must be (low, high) with 0 < low < high, got {range!r}")
        if lo_v == hi_v:
            lo_v, hi_v = lo_v / 1.1, hi_v * 1.1
        edges = np.geomspace(lo_v, hi_v, nb + 1)
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(edges <= 0) \
                or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be a 1-D increasing array of at least 2 positive finite values")
    counts, _ = np.histogram(v, bins=edges)
    if density:
        total = counts.sum()
        widths = np.diff(np.log(edges))
        return (counts / (total * widths) if total else np.zeros(counts.size)), edges
    return counts, edges

"""Batched robust fits of one or two Gaussians plus a linear baseline to the first peak of G(r).

The SNEM seed (Methods 4, Eq. 11; Table S1 (iii)–(iv)) maps, for every pattern,
the parameters of

    G(r) = Σ_{i=1..m} A_i / (σ_i √(2π)) · exp(−(r − r_i)² / (2σ_i²)) + a·r + b,   m ∈ {1, 2},

fitted on 2.1–4 Å with ``scipy.optimize.curve_fit(method="trf", loss="soft_l1",
f_scale=0.005)`` one pattern at a time. A live scan needs thousands of fits per
second, so :func:`fit_gaussians` runs the whole chunk in one numba loop (one
pattern per iteration) and minimises **the same objective** as scipy,

    cost = ½ Σ_k f_scale² ρ((res_k / f_scale)²),   ρ_soft_l1(z) = 2(√(1 + z) − 1),

so that the optimum agrees with ``curve_fit`` wherever the problem is well posed.

Solver: Levenberg–Marquardt on scipy's robust rescaling of the residuals and
Jacobian (``least_squares`` turns a robust loss into a weighted Gauss–Newton
model: gradient Jᵀ(ρ′ f), Hessian Jᵀ diag(ρ′ + 2ρ″ f²) J, see Triggs et al.,
"Bundle adjustment — a modern synthesis", 2000, §4.3), with Marquardt's diagonal
scaling (scale-free in the parameters), Nielsen's damping update, an analytic
Jacobian, and box bounds by projection: a parameter sitting on a bound whose
gradient points outwards is held for that iteration (active set), every trial
point is clipped to the box and accepted only if the true robust cost falls.
Stopping tests are scipy's (``ftol`` on the cost decrease, ``xtol`` on the step,
``gtol`` on the projected gradient), so both stop at the same precision.

Cost per iteration: the exponentials are evaluated by a vectorisable kernel
(Cody–Waite reduction and a Taylor polynomial, ~3e-16 relative; numba's
``math.exp`` is a scalar libm call and was most of the time); a trial point costs
only the residuals and the loss, its Jacobian and weights are built once it is
accepted (reusing its exponentials). Iterations: from the rough data-driven start,
a loose ordinary least-squares stage and loose robust stages at 30, 10 and 3 times
``f_scale`` come first (continuation): with a tiny ``f_scale`` the robust loss is
nearly L1 and Gauss–Newton steps from far away are short.

The seed's initial values (σ = 0.01 Å, two orders of magnitude narrower than the
peak) are poor starting points, so :func:`initial_guess` reads heights,
positions and widths off each curve and is used unless ``p0`` is given
(``p0="seed"`` selects Table S1 (iii)).

:func:`peak_position` is the model-free QoI: the argmax of G on a window,
refined below the grid step by the 3-point parabola (research note a4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .levenberg import _active_set, _after_accept, _projected_step, _solve_damped

__all__ = [
    "FitResult", "fit_gaussians", "gaussian_model", "gaussian_qois", "initial_guess", "peak_position",
    "param_names", "seed_parameters", "two_peak_start", "LOSSES", "DEFAULT_WINDOW",
]

DEFAULT_WINDOW = (2.1, 4.0)  # Å, seed Table S1 (iii)
LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")  # scipy.optimize.least_squares names
_INF = math.inf
_SQRT2PI = math.sqrt(2.0 * math.pi)
_LAMBDA0 = 1e-3  # initial Marquardt damping, relative to diag(JᵀWJ)
_PREFIT_TOL = 1e-2  # ftol = xtol of the least-squares stage and of the continuation stages
_CONTINUATION = (30.0, 10.0, 3.0)  # f_scale multiples of the robust stages before the requested one
_FASTMATH = {"reassoc", "contract", "arcp"}  # vectorised sums; no 'nnan'/'ninf': NaN checks must survive
# Not on _jacobian and _lm: with fast-math, LLVM optimised them differently when their callees were inlined
# (a fresh compile) than when linked from numba's cache, so a worker that compiled and a host that loaded
# the cache disagreed in the last bits, and ~8 % of two-peak fits ended in another local optimum.
_WINDOW_TOL = 1e-9  # Å: grids built with np.arange end at 4.000000000000005
_EPS = 2.220446049250313e-16  # floor of the Hessian weights (scipy's EPS)
# exp by Cody–Waite reduction (ln 2 split as in fdlibm) and the Taylor coefficients 1/k! of e^t
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.0 / math.log(2.0)
_EXP_MIN = -708.0
_EXP_C = tuple(1.0 / math.factorial(k) for k in range(13))

# Table S1 (iii), order (A1, r1, σ1, A2, r2, σ2, a, b); one peak: (A, r, σ, a, b) with r on the whole window.
_SEED = {
    2: (np.array([0.01, 2.4, 0.01, 0.01, 3.5, 0.01, 1.0, 1.0]),
        np.array([0.01, 2.4, 0.01, 0.01, 3.0, 0.01, -_INF, -_INF]),
        np.array([_INF, 3.0, 1.0, _INF, 4.0, 1.0, _INF, _INF])),
    1: (np.array([0.01, 2.4, 0.01, 1.0, 1.0]),
        np.array([0.01, 2.1, 0.01, -_INF, -_INF]),
        np.array([_INF, 4.0, 1.0, _INF, _INF])),
}

# status codes of a row
_ST_NAN = -1  # status of a row with NaN/inf in the window (others: 0 max_iter, 1 gtol, 2 ftol, 3 xtol)


@dataclass(frozen=True)
class FitResult:
    """Per-pattern results of :func:`fit_gaussians`; leading dimensions are those of ``g`` without its last axis.

    ``params`` (..., P) in :func:`param_names` order; ``cost`` scipy's
    ``least_squares`` cost at ``params``; ``success`` converged (``status`` > 0);
    ``n_iter`` iterations (trial steps) used; ``status`` −1 NaN/inf in the
    window (not fitted, ``params`` NaN), 0 ``max_iter`` reached, 1 ``gtol``,
    2 ``ftol``, 3 ``xtol``.
    """

    params: np.ndarray
    cost: np.ndarray
    success: np.ndarray
    n_iter: np.ndarray
    status: np.ndarray
    n_peaks: int

    @property
    def names(self) -> tuple[str, ...]:
        return param_names(self.n_peaks)


def param_names(n_peaks: int) -> tuple[str, ...]:
    """Parameter order of Eq. 11: ``(A1, r1, sigma1, [A2, r2, sigma2,] a, b)``."""
    _check_n_peaks(n_peaks)
    names: list[str] = []
    for i in range(1, n_peaks + 1):
        names += [f"A{i}", f"r{i}", f"sigma{i}"]
    return (*names, "a", "b")


def seed_parameters(n_peaks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p0, lower, upper) of seed Table S1 (iii) for two peaks; for one peak the first Gaussian's, r on 2.1–4 Å."""
    _check_n_peaks(n_peaks)
    return tuple(a.copy() for a in _SEED[n_peaks])


# ------------------------------------------------------------------ model and derived quantities
def gaussian_model(r: np.ndarray, params: np.ndarray, n_peaks: int) -> np.ndarray:
    """Eq. 11 evaluated at ``r`` (nr,) for ``params`` (..., P); returns (..., nr). Plain numpy, for tests and plots."""
    _check_n_peaks(n_peaks)
    r = np.asarray(r, dtype=float)
    p = np.asarray(params, dtype=float)
    if p.shape[-1:] != (3 * n_peaks + 2,):
        raise ValueError(f"params must have last dimension {3 * n_peaks + 2} for n_peaks={n_peaks}, got {p.shape}")
    p = p[..., None]
    out = p[..., 3 * n_peaks, :] * r + p[..., 3 * n_peaks + 1, :]
    for i in range(n_peaks):
        area, centre, sigma = p[..., 3 * i, :], p[..., 3 * i + 1, :], p[..., 3 * i + 2, :]
        out = out + area / (sigma * _SQRT2PI) * np.exp(-0.5 * ((r - centre) / sigma) ** 2)
    return out


def gaussian_qois(params: np.ndarray, n_peaks: int) -> dict[str, np.ndarray]:
    """Quantities of interest of fitted ``params`` (..., P), each (...).

    Per peak i: ``area{i}`` (A_i), ``center{i}`` (r_i, Å), ``width{i}`` (σ_i, Å),
    ``height{i}`` (A_i / (σ_i √(2π)), the Gaussian's maximum) and
    ``sharpness{i}`` (height / width); ``slope``, ``intercept`` of the baseline;
    for two peaks ``r1_plus_r2`` (the seed's chemical-SRO indicator, Fig. 7).
    """
    _check_n_peaks(n_peaks)
    p = np.asarray(params, dtype=float)
    if p.shape[-1:] != (3 * n_peaks + 2,):
        raise ValueError(f"params must have last dimension {3 * n_peaks + 2} for n_peaks={n_peaks}, got {p.shape}")
    out: dict[str, np.ndarray] = {}
    for i in range(n_peaks):
        area, centre, sigma = p[..., 3 * i], p[..., 3 * i + 1], p[..., 3 * i + 2]
        height = area / (sigma * _SQRT2PI)
        k = i + 1
        out[f"area{k}"] = area
        out[f"center{k}"] = centre
        out[f"width{k}"] = sigma
        out[f"height{k}"] = height
        out[f"sharpness{k}"] = height / sigma
    out["slope"] = p[..., 3 * n_peaks]
    out["intercept"] = p[..., 3 * n_peaks + 1]
    if n_peaks == 2:
        out["r1_plus_r2"] = p[..., 1] + p[..., 4]
    return out


# ------------------------------------------------------------------ numba kernels
@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _exp_into(a, out, bits):
    """out = exp(a) for a ≤ 0 in loops LLVM vectorises (numba's math.exp is a scalar libm call, most of a fit's time).

    Cody–Waite: a = n ln2 + t with |t| ≤ ln2/2 (ln2 split in two parts so n·ln2_hi is exact), e^t by its Taylor
    series to t¹² (truncation < 2e-16 relative), 2ⁿ written into the exponent bits; a below −708 (where e^a
    leaves the normal range) gives 0.
    """
    m = a.size
    for k in range(m):
        ak = max(a[k], _EXP_MIN)
        n = math.floor(ak * _INV_LN2 + 0.5)
        t = (ak - n * _LN2_HI) - n * _LN2_LO
        p = _EXP_C[12]
        p = _EXP_C[11] + t * p
        p = _EXP_C[10] + t * p
        p = _EXP_C[9] + t * p
        p = _EXP_C[8] + t * p
        p = _EXP_C[7] + t * p
        p = _EXP_C[6] + t * p
        p = _EXP_C[5] + t * p
        p = _EXP_C[4] + t * p
        p = _EXP_C[3] + t * p
        p = _EXP_C[2] + t * p
        p = 1.0 + t * p
        out[k] = 1.0 + t * p
        bits[k] = (np.int64(n) + 1023) << 52
    scale = bits.view(np.float64)
    for k in range(m):
        out[k] = out[k] * scale[k] if a[k] > _EXP_MIN else 0.0


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _evaluate(rr, yy, x, npk, f, jac, dd, tmp, bits):
    """f = model − y at x; also each Gaussian's unit-area profile G_p = ∂f/∂A_p into ``jac[3p]`` and its
    standardised distance d = (r − r_p)/σ_p into ``dd[p]``, from which :func:`_jacobian` completes the rest."""
    m = rr.size
    sl = x[3 * npk]
    ic = x[3 * npk + 1]
    for k in range(m):
        f[k] = sl * rr[k] + ic - yy[k]
    for p in range(npk):
        mu = x[3 * p + 1]
        inv_s = 1.0 / x[3 * p + 2]
        c = inv_s / _SQRT2PI
        area = x[3 * p]
        d = dd[p]
        g = jac[3 * p]
        for k in range(m):
            dk = (rr[k] - mu) * inv_s
            d[k] = dk
            tmp[k] = -0.5 * dk * dk
        _exp_into(tmp, g, bits)
        for k in range(m):
            gk = c * g[k]
            g[k] = gk
            f[k] += area * gk


@numba.njit(cache=True, nogil=True)
def _jacobian(x, npk, jac, dd):
    """The centre and width rows of the Jacobian from G_p and d (:func:`_evaluate`); the baseline rows are fixed."""
    m = jac.shape[1]
    for p in range(npk):
        area = x[3 * p]
        inv_s = 1.0 / x[3 * p + 2]
        g = jac[3 * p]
        jm = jac[3 * p + 1]
        js = jac[3 * p + 2]
        d = dd[p]
        for k in range(m):
            v = area * g[k] * inv_s
            jm[k] = v * d[k]
            js[k] = v * (d[k] * d[k] - 1.0)


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _robust(f, loss, f_scale, u, w, want_weights):
    """Cost ½ Σ f_scale² ρ(z), z = (f/f_scale)²; weights u = ρ′f (gradient), w = ρ′ + 2ρ″f² (Hessian).

    ρ and its derivatives are those of scipy.optimize._lsq.least_squares (with
    ρ″ divided by f_scale², as scipy does); w is floored at EPS as scipy does.
    One loop per loss, so that the common ones vectorise.
    """
    inv2 = 1.0 / (f_scale * f_scale)
    total = 0.0
    m = f.size
    if loss == 0:  # linear
        for k in range(m):
            total += f[k] * f[k]
        total *= inv2
        if want_weights:
            for k in range(m):
                u[k] = f[k]
                w[k] = 1.0
    elif loss == 1:  # soft_l1: ρ = 2(√(1+z) − 1), ρ′ = 1/√(1+z), ρ′ + 2ρ″z = (1+z)^(−3/2)
        if want_weights:
            for k in range(m):
                t = 1.0 + f[k] * f[k] * inv2
                r1 = 1.0 / math.sqrt(t)
                total += t * r1
                u[k] = r1 * f[k]
                w[k] = max(r1 * r1 * r1, _EPS)
        else:
            for k in range(m):
                total += math.sqrt(1.0 + f[k] * f[k] * inv2)
        total = 2.0 * (total - m)
    else:
        for k in range(m):
            fk = f[k]
            z = fk * fk * inv2
            if loss == 2:  # huber
                if z <= 1.0:
                    r0 = z
                    r1 = 1.0
                    r2z = 0.0
                else:
                    sz = math.sqrt(z)
                    r0 = 2.0 * sz - 1.0
                    r1 = 1.0 / sz
                    r2z = -0.5 / sz
            elif loss == 3:  # cauchy
                t = 1.0 + z
                r0 = math.log1p(z)
                r1 = 1.0 / t
                r2z = -z / (t * t)
            else:  # arctan
                t = 1.0 + z * z
                r0 = math.atan(z)
                r1 = 1.0 / t
                r2z = -2.0 * z * z / (t * t)
            total += r0
            if want_weights:
                u[k] = r1 * fk
                w[k] = max(r1 + 2.0 * r2z, _EPS)  # ρ′ + 2 (ρ″/f_scale²) f² = ρ′ + 2 ρ″ z
    return 0.5 * f_scale * f_scale * total


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _normal_equations(jac, u, w, hess, grad, tmp):
    """hess = J diag(w) Jᵀ (upper and lower), grad = J u."""
    n_par, m = jac.shape
    for i in range(n_par):
        ji = jac[i]
        s = 0.0
        for k in range(m):
            s += ji[k] * u[k]
            tmp[k] = ji[k] * w[k]
        grad[i] = s
        for j in range(i + 1):
            jj = jac[j]
            s = 0.0
            for k in range(m):
                s += tmp[k] * jj[k]
            hess[i, j] = s
            hess[j, i] = s


@numba.njit(cache=True, nogil=True)
def _lm(rr, yy, x, lower, upper, npk, loss, f_scale, max_iter, xtol, ftol, gtol, lam0, buf_m, bits, buf_p, mat,
        free):
    """Projected Levenberg–Marquardt on the robust objective from ``x`` (updated in place).

    Returns (cost, status, iterations). ``buf_m`` (5 + 2·(P + npk), m) and ``buf_p``
    (P + 4, P) are scratch; rows 3·npk, 3·npk + 1 of both Jacobians in ``buf_m`` must hold r and 1.
    A trial point costs the residuals and the loss only; the Jacobian and the weights are
    completed once it is accepted.
    """
    n_par = x.size
    f, ft, u, w, tmp = buf_m[0], buf_m[1], buf_m[2], buf_m[3], buf_m[4]
    jac = buf_m[5:5 + n_par]
    jact = buf_m[5 + n_par:5 + 2 * n_par]
    dd = buf_m[5 + 2 * n_par:5 + 2 * n_par + npk]
    ddt = buf_m[5 + 2 * n_par + npk:5 + 2 * n_par + 2 * npk]
    hess = buf_p[:n_par]
    grad, diag, step, xt = buf_p[n_par], buf_p[n_par + 1], buf_p[n_par + 2], buf_p[n_par + 3]
    _evaluate(rr, yy, x, npk, f, jac, dd, tmp, bits)
    _jacobian(x, npk, jac, dd)
    cost = _robust(f, loss, f_scale, u, w, True)
    _normal_equations(jac, u, w, hess, grad, tmp)
    for i in range(n_par):
        diag[i] = hess[i, i]
    lam = lam0
    nu = 2.0
    it = 0
    while it < max_iter:
        gmax, xnorm = _active_set(x, grad, diag, lower, upper, free)
        if gmax < gtol:
            return cost, 1, it
        it += 1
        if not _solve_damped(hess, grad, diag, lam, free, mat, step):
            lam *= nu
            nu *= 2.0
            continue
        snorm, pred = _projected_step(x, step, grad, hess, lower, upper, xt)
        _evaluate(rr, yy, xt, npk, ft, jact, ddt, tmp, bits)
        cost_t = _robust(ft, loss, f_scale, u, w, False)
        actual = cost - cost_t
        if math.isfinite(cost_t) and actual > 0.0 and pred > 0.0:
            ratio = actual / pred
            for i in range(n_par):
                x[i] = xt[i]
            f, ft = ft, f
            jac, jact = jact, jac
            dd, ddt = ddt, dd
            cost = cost_t
            _jacobian(x, npk, jac, dd)
            _robust(f, loss, f_scale, u, w, True)
            _normal_equations(jac, u, w, hess, grad, tmp)
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
def _fit_rows(rr, ys, x0s, lower, upper, npk, loss, f_scale, max_iter, xtol, ftol, gtol, prefit,
              params, costs, status, n_iter):
    """Fit every row of ``ys`` (n, m) from ``x0s`` (n, P); results written to the output arrays."""
    n, m = ys.shape
    n_par = 3 * npk + 2
    buf_m = np.empty((5 + 2 * n_par + 2 * npk, m))
    for b in (5, 5 + n_par):  # the baseline rows of both Jacobians: ∂f/∂a = r, ∂f/∂b = 1
        buf_m[b + 3 * npk] = rr
        buf_m[b + 3 * npk + 1] = 1.0
    bits = np.empty(m, dtype=np.int64)
    buf_p = np.empty((n_par + 4, n_par))
    mat = np.empty((n_par, n_par))
    free = np.empty(n_par, dtype=np.bool_)
    x = np.empty(n_par)
    for row in range(n):
        yy = ys[row]
        finite = True
        for k in range(m):
            if not math.isfinite(yy[k]):
                finite = False
                break
        if not finite:
            params[row, :] = np.nan
            costs[row] = np.nan
            status[row] = _ST_NAN
            n_iter[row] = 0
            continue
        # start strictly inside the box, as least_squares(method="trf") does (make_strictly_feasible, rstep 1e-10)
        for i in range(n_par):
            xi = min(max(x0s[row, i], lower[i]), upper[i])
            if xi <= lower[i]:
                xi = lower[i] + 1e-10 * max(1.0, abs(lower[i]))
            elif xi >= upper[i]:
                xi = upper[i] - 1e-10 * max(1.0, abs(upper[i]))
            if xi < lower[i] or xi > upper[i]:
                xi = 0.5 * (lower[i] + upper[i])
            x[i] = xi
        used = 0
        if prefit and loss != 0:
            # ordinary least squares first, loosely: from a rough start it reaches the robust optimum's basin in
            # far fewer iterations than the robust loss with its tiny f_scale does
            _, _, used = _lm(rr, yy, x, lower, upper, npk, 0, f_scale, max_iter, _PREFIT_TOL, _PREFIT_TOL, gtol,
                             _LAMBDA0, buf_m, bits, buf_p, mat, free)
            # then the robust loss with a wider f_scale, narrowed step by step: each stage starts near its optimum,
            # and the last one near the target's, which the tiny f_scale alone reaches only by many short steps
            for widen in _CONTINUATION:
                _, _, it = _lm(rr, yy, x, lower, upper, npk, loss, f_scale * widen, max_iter, _PREFIT_TOL,
                               _PREFIT_TOL, gtol, _LAMBDA0, buf_m, bits, buf_p, mat, free)
                used += it
        cost, st, it = _lm(rr, yy, x, lower, upper, npk, loss, f_scale, max_iter, xtol, ftol, gtol, _LAMBDA0,
                           buf_m, bits, buf_p, mat, free)
        params[row, :] = x
        costs[row] = cost
        status[row] = st
        n_iter[row] = used + it


@numba.njit(cache=True, nogil=True)
def _interp_at(rr, y, x):
    """Linear interpolation of y at x on the increasing grid rr (clamped)."""
    m = rr.size
    if x <= rr[0]:
        return y[0]
    if x >= rr[m - 1]:
        return y[m - 1]
    lo = 0
    hi = m - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rr[mid] <= x:
            lo = mid
        else:
            hi = mid
    t = (x - rr[lo]) / (rr[hi] - rr[lo])
    return y[lo] + t * (y[hi] - y[lo])


@numba.njit(cache=True, nogil=True)
def _box_margin(lo, hi):  # pragma: no cover - numba
    """How far inside [lo, hi] a start is moved: 1e-3 of a finite range, else 1e-10 relative to the finite bound."""
    if math.isfinite(lo) and math.isfinite(hi):
        return 1e-3 * (hi - lo)
    if math.isfinite(lo):
        return 1e-10 * max(1.0, abs(lo))
    if math.isfinite(hi):
        return 1e-10 * max(1.0, abs(hi))
    return 0.0


@numba.njit(cache=True, nogil=True)
def _guess_rows(rr, ys, npk, lower, upper, out):
    """Data-driven start per row: baseline through the minima either side of the peak, heights, moments, HWHM."""
    n, m = ys.shape
    sm = np.empty(m)
    y = np.empty(m)
    two_pi = math.sqrt(2.0 * math.pi)
    for row in range(n):
        g = ys[row]
        finite = True
        for k in range(m):
            if not math.isfinite(g[k]):
                finite = False
        if not finite or m < 3:
            out[row, :] = np.nan
            continue
        # 3-point median: single-point outliers must not become "the peak"
        sm[0] = g[0]
        sm[m - 1] = g[m - 1]
        for k in range(1, m - 1):
            a, b, c = g[k - 1], g[k], g[k + 1]
            sm[k] = max(min(a, b), min(max(a, b), c))
        i0 = 0
        for k in range(m):
            if sm[k] > sm[i0]:
                i0 = k
        il = 0
        for k in range(i0 + 1):
            if sm[k] < sm[il]:
                il = k
        ir = i0
        for k in range(i0, m):
            if sm[k] < sm[ir]:
                ir = k
        if ir > il:
            slope = (sm[ir] - sm[il]) / (rr[ir] - rr[il])
        else:
            slope = 0.0
        icpt = sm[il] - slope * rr[il]
        for k in range(m):
            y[k] = sm[k] - (slope * rr[k] + icpt)
        ip = il
        for k in range(il, ir + 1):
            if y[k] > y[ip]:
                ip = k
        h = y[ip]
        # half width at half maximum either side (linear interpolation of the crossing)
        wl = rr[ip] - rr[0]
        for k in range(ip - 1, -1, -1):
            if y[k] <= 0.5 * h:
                t = (0.5 * h - y[k]) / (y[k + 1] - y[k]) if y[k + 1] != y[k] else 0.0
                wl = rr[ip] - (rr[k] + t * (rr[k + 1] - rr[k]))
                break
        wr = rr[m - 1] - rr[ip]
        for k in range(ip + 1, m):
            if y[k] <= 0.5 * h:
                t = (y[k - 1] - 0.5 * h) / (y[k - 1] - y[k]) if y[k - 1] != y[k] else 0.0
                wr = rr[k - 1] + t * (rr[k] - rr[k - 1]) - rr[ip]
                break
        spacing = (rr[m - 1] - rr[0]) / (m - 1)
        sigma = max(0.5 * (wl + wr), spacing) / (2.0 * math.sqrt(2.0 * math.log(2.0)) / 2.0)
        if h <= 0.0:
            h = 0.0
        if npk == 1:
            out[row, 0] = h * sigma * two_pi
            out[row, 1] = rr[ip]
            out[row, 2] = sigma
        else:
            # centroid and spread of the positive part between the minima; two peaks ±0.7 sd about the centroid
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            for k in range(il, ir + 1):
                if y[k] > 0.0:
                    dr = 0.5 * (rr[min(k + 1, m - 1)] - rr[max(k - 1, 0)])
                    s0 += y[k] * dr
                    s1 += y[k] * dr * rr[k]
                    s2 += y[k] * dr * rr[k] * rr[k]
            if s0 > 0.0:
                mu = s1 / s0
                sd = math.sqrt(max(s2 / s0 - mu * mu, 0.0))
            else:
                mu = rr[ip]
                sd = sigma
            sd = max(sd, spacing)
            c1 = mu - 0.7 * sd
            c2 = mu + 0.7 * sd
            h1 = max(_interp_at(rr, y, c1), 0.0)
            h2 = max(_interp_at(rr, y, c2), 0.0)
            area = s0 if s0 > 0.0 else h * sigma * two_pi
            tot = h1 + h2
            f1 = h1 / tot if tot > 0.0 else 0.5
            out[row, 0] = area * f1
            out[row, 1] = c1
            out[row, 2] = 0.6 * sd
            out[row, 3] = area * (1.0 - f1)
            out[row, 4] = c2
            out[row, 5] = 0.6 * sd
        out[row, 3 * npk] = slope
        out[row, 3 * npk + 1] = icpt
        for i in range(3 * npk + 2):   # into the box
            lo = lower[i]
            hi = upper[i]
            margin = _box_margin(lo, hi)
            v = out[row, i]
            if v < lo + margin:
                v = lo + margin
            if v > hi - margin:
                v = hi - margin
            if v < lo or v > hi:
                v = 0.5 * (lo + hi)
            out[row, i] = v


# ------------------------------------------------------------------ validation
def _check_n_peaks(n_peaks: int) -> None:
    if isinstance(n_peaks, bool) or n_peaks not in (1, 2):
        raise ValueError(f"n_peaks must be 1 or 2, got {n_peaks!r}")


def _check_grid(r, g, min_size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(r, g) as float arrays: r strictly increasing with at least ``min_size`` points, g (..., r.size)."""
    r = np.asarray(r, dtype=float)
    g = np.asarray(g, dtype=float)
    if r.ndim != 1 or r.size < min_size:
        raise ValueError(f"r must be {what}, got shape {r.shape}")
    if not np.all(np.isfinite(r)) or np.any(np.diff(r) <= 0):
        raise ValueError("r must be finite and strictly increasing")
    if g.ndim < 1 or g.shape[-1] != r.size:
        raise ValueError(f"g must have shape (..., {r.size}) to match r, got {g.shape}")
    return r, g


def _window_mask(r: np.ndarray, window) -> np.ndarray:
    """Points of r inside the (low, high) window, with a rounding tolerance at both ends."""
    lo, hi = (float(v) for v in window)
    if not lo < hi:
        raise ValueError(f"window must be (low, high) with low < high, got {window!r}")
    return (r >= lo - _WINDOW_TOL) & (r <= hi + _WINDOW_TOL)


def _window_points(r: np.ndarray, g: np.ndarray, window: tuple[float, float] | None,
                   need: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate (r, g), return (r_win, g_win (n, m), batch shape)."""
    r, g = _check_grid(r, g, 3, "a 1-D grid of at least 3 points")
    sel = np.ones(r.size, dtype=bool) if window is None else _window_mask(r, window)
    if sel.sum() < need:
        raise ValueError(f"window {window!r} holds {int(sel.sum())} points of r; at least {need} are needed")
    batch = g.shape[:-1]
    return (np.ascontiguousarray(r[sel]), np.ascontiguousarray(g.reshape(-1, r.size)[:, sel]), batch)


def _bounds(n_peaks: int, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    _, lo_d, hi_d = _SEED[n_peaks]
    n_par = 3 * n_peaks + 2
    lo = lo_d.copy() if lower is None else np.array(lower, dtype=float).reshape(-1)
    hi = hi_d.copy() if upper is None else np.array(upper, dtype=float).reshape(-1)
    if lo.size != n_par or hi.size != n_par:
        raise ValueError(f"lower and upper must have {n_par} entries {param_names(n_peaks)}, "
                         f"got {lo.size} and {hi.size}")
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)) or np.any(lo >= hi):
        raise ValueError("each lower bound must be strictly less than its upper bound (and not NaN)")
    sig = lo[2:3 * n_peaks:3]
    if np.any(sig <= 0):
        raise ValueError(f"the lower bounds of the widths sigma must be > 0, got {sig}")
    return lo, hi


def initial_guess(r: np.ndarray, g: np.ndarray, n_peaks: int, *, lower=None, upper=None,
                  window: tuple[float, float] | None = DEFAULT_WINDOW) -> np.ndarray:
    """Data-driven starting parameters (..., P) for :func:`fit_gaussians`, read off each curve.

    On a 3-point-median copy of the curve inside ``window``: the baseline joins
    the minima left and right of the maximum; one peak takes the maximum above
    it and the half width at half maximum; two peaks sit at ±0.7 standard
    deviations of the peak's profile about its centroid, with widths 0.6 sd and
    the profile area shared in proportion to the heights there. Everything is
    then moved inside the bounds. Rows with NaN get NaN.
    """
    _check_n_peaks(n_peaks)
    lo, hi = _bounds(n_peaks, lower, upper)
    rr, ys, batch = _window_points(r, g, window, 3)
    out = np.empty((ys.shape[0], 3 * n_peaks + 2))
    _guess_rows(rr, ys, n_peaks, lo, hi, out)
    return out.reshape(*batch, 3 * n_peaks + 2)


def two_peak_start(r: np.ndarray, g: np.ndarray, one_peak: np.ndarray, *, lower=None, upper=None,
                   window: tuple[float, float] | None = DEFAULT_WINDOW) -> np.ndarray:
    """Two-Gaussian start (..., 8) from a one-Gaussian fit (..., 5) of the same curves.

    The fitted peak and baseline stay; the second peak sits at the largest residual
    of that fit among the second centre's bounds (the upper tenth left out), 0.6 of
    the first width, its area from that residual; the first area gives up half of
    it. Why: from :func:`initial_guess`'s symmetric split, curves whose first peak
    sits near its lower bound (Ni-rich glass) leave the second Gaussian collapsed
    onto its bounds and use up ``max_iter``; from here about five times fewer do,
    and the others end where they did. Rows whose one-peak fit is not finite get
    :func:`initial_guess`'s start, rows whose curve is not finite the seed's (they are
    not fitted). Everything is moved inside the bounds as there.
    """
    lo, hi = _bounds(2, lower, upper)
    rr, ys, batch = _window_points(r, g, window, 3)
    one = np.asarray(one_peak, dtype=float).reshape(-1, 5)
    if one.shape[0] != ys.shape[0]:
        raise ValueError(f"one_peak has {one.shape[0]} rows for {ys.shape[0]} curves")
    with np.errstate(invalid="ignore", over="ignore"):   # rows without a fit are NaN: they fall back below
        res = ys - gaussian_model(rr, one, 1)
    top = hi[4] - 0.1 * (hi[4] - lo[4]) if math.isfinite(hi[4] - lo[4]) else hi[4]
    search = (rr >= lo[4]) & (rr <= top)
    if not search.any():
        search = np.ones(rr.size, dtype=bool)
    cols = np.flatnonzero(search)
    sub = res[:, cols]
    j = cols[np.argmax(np.where(np.isfinite(sub), sub, -np.inf), axis=1)]
    h2 = np.maximum(res[np.arange(res.shape[0]), j], 0.0)
    s2 = 0.6 * one[:, 2]
    a2 = h2 * s2 * _SQRT2PI
    with np.errstate(invalid="ignore"):
        out = np.column_stack([one[:, 0] - 0.5 * a2, one[:, 1], one[:, 2], a2, rr[j], s2, one[:, 3], one[:, 4]])
    margin = np.array([_box_margin(a, b) for a, b in zip(lo, hi)])   # into the box, as _guess_rows
    out = np.clip(out, lo + margin, hi - margin)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        fallback = np.empty((int(bad.sum()), 8))
        _guess_rows(rr, np.ascontiguousarray(ys[bad]), 2, lo, hi, fallback)
        out[bad] = fallback
    nan = ~np.isfinite(out).all(axis=1)   # a curve that is not finite: any start (fit_gaussians skips the row)
    out[nan] = np.clip(_SEED[2][0], lo + margin, hi - margin)
    return out.reshape(*batch, 8)


# ------------------------------------------------------------------ public fit
def fit_gaussians(r: np.ndarray, g: np.ndarray, n_peaks: int, *, p0: np.ndarray | str | None = None,
                  lower: np.ndarray | None = None, upper: np.ndarray | None = None, loss: str = "soft_l1",
                  f_scale: float = 0.005, max_iter: int = 200, xtol: float = 1e-8, ftol: float = 1e-8,
                  gtol: float = 1e-8, window: tuple[float, float] | None = DEFAULT_WINDOW,
                  prefit: bool | None = None) -> FitResult:
    """Fit Eq. 11 with ``n_peaks`` Gaussians to every curve of ``g`` by robust, bounded least squares.

    Minimises scipy's ``least_squares`` objective ½ Σ f_scale² ρ((res/f_scale)²)
    (``curve_fit(..., method="trf", loss=loss, f_scale=f_scale)``) in a numba
    loop over the patterns (see the module docstring for the solver).

    Parameters
    ----------
    r : (nr,) array
        Strictly increasing radial grid, Å.
    g : (..., nr) array
        G(r) curves; rows with a non-finite value inside ``window`` are not
        fitted (``success`` False, ``status`` −1, NaN parameters).
    n_peaks : {1, 2}
        Number of Gaussians m.
    p0 : None, "seed", (P,) or (..., P) array
        Start: None (default) :func:`initial_guess` per curve; ``"seed"`` the
        Table S1 (iii) values; or explicit values inside the bounds (moved 1e-10
        inside a bound they sit on, as scipy's "trf" does).
    lower, upper : (P,) arrays, optional
        Bounds in :func:`param_names` order (±inf allowed); default Table S1
        (iii) (one peak: the first Gaussian's, r on 2.1–4 Å). Width lower
        bounds must be > 0.
    loss : {"soft_l1", "linear", "huber", "cauchy", "arctan"}
        Robust loss ρ, as in scipy.
    f_scale : float
        Inlier residual scale (> 0), in the units of G.
    max_iter : int
        Maximum number of trial steps per curve.
    xtol, ftol, gtol : float
        scipy's tolerances: relative step size, relative cost decrease (with
        ratio > 0.25), max-norm of the projected gradient.
    window : (low, high) or None
        Fit range in Å, inclusive (seed: 2.1–4); None uses all of ``r``.
    prefit : bool or None
        Run loose stages (ftol = xtol = 1e-2) before the robust one: ordinary
        least squares, then the robust loss at 30, 10 and 3 × ``f_scale``. The
        result is an optimum of the requested objective either way; from the
        rough :func:`initial_guess` it saves a third to a half of the iterations.
        None (default): only when ``p0`` is None. An explicit ``p0`` is then
        followed without it, closer to scipy's path (from a poor start such as
        Table S1's, a non-convex problem's local optimum depends on the path).

    Returns
    -------
    FitResult
        ``params`` (..., P), ``cost``, ``success``, ``n_iter``, ``status`` (...).
    """
    _check_n_peaks(n_peaks)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if not (np.isfinite(f_scale) and f_scale > 0):
        raise ValueError(f"f_scale must be a finite number > 0, got {f_scale!r}")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    for name, tol in (("xtol", xtol), ("ftol", ftol), ("gtol", gtol)):
        if not (np.isfinite(tol) and tol >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {tol!r}")
    lo, hi = _bounds(n_peaks, lower, upper)
    n_par = 3 * n_peaks + 2
    rr, ys, batch = _window_points(r, g, window, n_par)
    n = ys.shape[0]
    if prefit is None:
        prefit = p0 is None
    if p0 is None:
        x0 = np.empty((n, n_par))
        _guess_rows(rr, ys, n_peaks, lo, hi, x0)
    else:
        if isinstance(p0, str):
            if p0 != "seed":
                raise ValueError(f"p0 must be None, 'seed' or an array, got {p0!r}")
            p0 = _SEED[n_peaks][0]
        x0 = np.asarray(p0, dtype=float)
        if x0.shape == (n_par,):
            x0 = np.broadcast_to(x0, (n, n_par))
        elif x0.shape == (*batch, n_par):
            x0 = x0.reshape(n, n_par)
        else:
            raise ValueError(f"p0 must have shape ({n_par},) or {(*batch, n_par)}, got {x0.shape}")
        if not np.all(np.isfinite(x0)):
            raise ValueError("p0 must be finite")
        if np.any((x0 < lo) | (x0 > hi)):
            raise ValueError("p0 is infeasible: outside the bounds")
        x0 = np.ascontiguousarray(x0)
    params = np.empty((n, n_par))
    cost = np.empty(n)
    status = np.empty(n, dtype=np.int8)
    n_iter = np.empty(n, dtype=np.int32)
    _fit_rows(rr, ys, x0, lo, hi, n_peaks, LOSSES.index(loss), float(f_scale), int(max_iter),
              float(xtol), float(ftol), float(gtol), bool(prefit), params, cost, status, n_iter)
    return FitResult(params=params.reshape(*batch, n_par), cost=cost.reshape(batch),
                     success=(status > 0).reshape(batch), n_iter=n_iter.reshape(batch),
                     status=status.reshape(batch), n_peaks=n_peaks)


# ------------------------------------------------------------------ model-free first-peak position
def peak_position(r: np.ndarray, g: np.ndarray,
                  window: tuple[float, float] = DEFAULT_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Position and height of the maximum of each curve on ``window``, refined by a 3-point parabola.

    The grid argmax on the window (NaNs ignored) is refined through the parabola
    of it and its two grid neighbours (research note a4; on a uniform grid
    δ = ½(G₋ − G₊)/(G₋ − 2G₀ + G₊), r_max = r₀ + δ·Δr, height = G₀ − ¼(G₋ − G₊)δ;
    the non-uniform-grid form is used, which reduces to it). No refinement, i.e.
    the grid point, when a neighbour is missing (grid end or NaN), higher than
    the maximum (the curve still rises past the window's edge) or the three
    points are not concave.

    Parameters
    ----------
    r : (nr,) array
        Strictly increasing grid, Å.
    g : (..., nr) array
        Curves.
    window : (low, high)
        Inclusive search range, Å; neighbours just outside it are used for the parabola.

    Returns
    -------
    r_max, height : arrays of shape g.shape[:-1]
        NaN for curves without a finite value in the window.
    """
    r, g = _check_grid(r, g, 1, "a non-empty 1-D grid")
    idx = np.flatnonzero(_window_mask(r, window))
    if idx.size == 0:
        raise ValueError(f"window {window!r} holds no point of r")
    batch = g.shape[:-1]
    gg = g.reshape(-1, r.size)
    sub = gg[:, idx]
    ok = np.isfinite(sub).any(axis=1)
    masked = np.where(np.isfinite(sub), sub, -np.inf)
    i = idx[np.argmax(masked, axis=1)]
    rows = np.arange(gg.shape[0])
    g0 = gg[rows, i]
    r_out = r[i].copy()
    h_out = g0.copy()
    inner = (i > 0) & (i < r.size - 1)
    im = np.where(inner, i - 1, i)
    ip = np.where(inner, i + 1, i)
    gm, gp = gg[rows, im], gg[rows, ip]
    h1 = r[i] - r[im]
    h2 = r[ip] - r[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (g0 - gm) / h1
        d2 = (gp - g0) / h2
        curv = (d2 - d1) / (h1 + h2)  # second-order coefficient
        slope = (d1 * h2 + d2 * h1) / (h1 + h2)  # derivative of the parabola at r0
        refine = inner & ok & np.isfinite(gm) & np.isfinite(gp) & (gm <= g0) & (gp <= g0) & (curv < 0)
        delta = np.where(refine, -slope / (2 * curv), 0.0)
        r_out = np.where(refine, r[i] + delta, r_out)
        h_out = np.where(refine, g0 - slope * slope / (4 * curv), h_out)
    r_out[~ok] = np.nan
    h_out[~ok] = np.nan
    return r_out.reshape(batch), h_out.reshape(batch)

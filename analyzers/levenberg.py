"""The steps of a projected Levenberg–Marquardt shared by the batched fits (Gaussian peaks, KWW).

Each fit keeps its own loop because the objective (robust loss, weights, parameters)
and its buffers differ; what a box-constrained LM step does is the same and lives here:
the active set of parameters held on a bound, the damped Cholesky solve on the free
ones, the projected step with its predicted reduction, and the damping update after
an accepted step (Nielsen's rule, as in scipy's ``least_squares``).
"""

from __future__ import annotations

import math

import numba

__all__: list[str] = []  # numba kernels for the fit modules, not a public API


@numba.njit(cache=True, nogil=True)
def _active_set(x, grad, diag, lower, upper, free):
    """Hold parameters on a bound whose descent leaves the box; floor tiny scales. Returns (max |g| free, ‖x‖)."""
    gmax = 0.0
    xnorm = 0.0
    dmax = 0.0
    for i in range(x.size):
        held = (x[i] <= lower[i] and grad[i] > 0.0) or (x[i] >= upper[i] and grad[i] < 0.0)
        free[i] = not held
        if not held and abs(grad[i]) > gmax:
            gmax = abs(grad[i])
        xnorm += x[i] * x[i]
        if diag[i] > dmax:
            dmax = diag[i]
    floor = dmax * 1e-12 + 1e-300
    for i in range(x.size):
        if diag[i] < floor:
            diag[i] = floor
    return gmax, math.sqrt(xnorm)


@numba.njit(cache=True, nogil=True)
def _solve_damped(hess, grad, diag, lam, free, mat, step):
    """Solve (H + λ diag(D)) s = −g on the free parameters by Cholesky; s = 0 on held ones. False if not SPD."""
    n_par = grad.size
    for i in range(n_par):
        step[i] = 0.0
        for j in range(n_par):
            mat[i, j] = 0.0
    for i in range(n_par):
        if not free[i]:
            continue
        for j in range(i + 1):
            if free[j]:
                mat[i, j] = hess[i, j]
        mat[i, i] += lam * diag[i]
    # in-place Cholesky of the free block (lower triangle)
    for i in range(n_par):
        if not free[i]:
            continue
        for j in range(i + 1):
            if not free[j]:
                continue
            s = mat[i, j]
            for k in range(j):
                if free[k]:
                    s -= mat[i, k] * mat[j, k]
            if i == j:
                if not s > 0.0:
                    return False
                mat[i, i] = math.sqrt(s)
            else:
                mat[i, j] = s / mat[j, j]
    # forward (L y = −g), then backward (Lᵀ s = y)
    for i in range(n_par):
        if not free[i]:
            continue
        s = -grad[i]
        for k in range(i):
            if free[k]:
                s -= mat[i, k] * step[k]
        step[i] = s / mat[i, i]
    for i in range(n_par - 1, -1, -1):
        if not free[i]:
            continue
        s = step[i]
        for k in range(i + 1, n_par):
            if free[k]:
                s -= mat[k, i] * step[k]
        step[i] = s / mat[i, i]
    return True


@numba.njit(cache=True, nogil=True)
def _projected_step(x, step, grad, hess, lower, upper, xt):
    """xt = x + step clipped to the box (step updated to match). Returns (‖step‖, predicted cost reduction)."""
    n_par = x.size
    snorm = 0.0
    pred_lin = 0.0
    for i in range(n_par):
        xt[i] = min(max(x[i] + step[i], lower[i]), upper[i])
        step[i] = xt[i] - x[i]
        snorm += step[i] * step[i]
        pred_lin += grad[i] * step[i]
    pred_quad = 0.0
    for i in range(n_par):
        for j in range(n_par):
            pred_quad += step[i] * hess[i, j] * step[j]
    return math.sqrt(snorm), -(pred_lin + 0.5 * pred_quad)


@numba.njit(cache=True, nogil=True)
def _after_accept(hess, diag, lam, ratio):
    """Scales only grow (Marquardt's diag), λ shrinks by Nielsen's rule; returns the new λ."""
    for i in range(diag.size):
        if hess[i, i] > diag[i]:
            diag[i] = hess[i, i]
    c = 2.0 * ratio - 1.0
    return lam * max(1.0 / 3.0, 1.0 - c * c * c)

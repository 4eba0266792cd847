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
    """Solve (H + λ diag(D)) s = −g on the free parameters by Cholesky; s = 0 on held ones. False if not SPD.

    The free block is packed into the leading corner of ``mat`` (and −g into ``step``) first, so that the
    factorisation and the solves run without branches; the solution is scattered back at the end.
    """
    n_par = grad.size
    a = 0
    for i in range(n_par):
        if not free[i]:
            continue
        b = 0
        for j in range(i + 1):
            if free[j]:
                mat[a, b] = hess[i, j]
                b += 1
        mat[a, a] += lam * diag[i]
        step[a] = -grad[i]
        a += 1
    nf = a
    # in-place Cholesky, row by row: L[a, b] = (M[a, b] − Σ_{k<b} L[a, k] L[b, k]) / L[b, b], with 1/L[b, b]
    # kept on the diagonal (multiplications instead of divisions); then L y = −g and Lᵀ s = y in step[:nf]
    for a in range(nf):
        for b in range(a):
            s = mat[a, b]
            for k in range(b):
                s -= mat[a, k] * mat[b, k]
            mat[a, b] = s * mat[b, b]
        s = mat[a, a]
        for k in range(a):
            s -= mat[a, k] * mat[a, k]
        if not s > 0.0:
            return False
        mat[a, a] = 1.0 / math.sqrt(s)
    for a in range(nf):
        s = step[a]
        for k in range(a):
            s -= mat[a, k] * step[k]
        step[a] = s * mat[a, a]
    for a in range(nf - 1, -1, -1):
        s = step[a]
        for k in range(a + 1, nf):
            s -= mat[k, a] * step[k]
        step[a] = s * mat[a, a]
    # scatter: packed slot a ≤ parameter i, so walking down never overwrites an unread slot
    a = nf - 1
    for i in range(n_par - 1, -1, -1):
        if free[i]:
            step[i] = step[a]
            a -= 1
        else:
            step[i] = 0.0
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

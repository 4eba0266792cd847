"""PDFgetX3 reduction (emlive.analyzers.pdf) against independent truths.

(a) the simulator's glass: its I(Q) reduced by us must give the G(r) the simulator computes from its true S(Q);
(b) the batched reducer must equal a plain per-frame loop (np.interp, lstsq on a monomial basis,
    scipy trapezoid), including frames with different NaN bins;
(c) the mixing of the two polynomial degrees, and input validation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import trapezoid

from emlive.analyzers.form_factors import mixture_factors
from emlive.analyzers.pdf import PdfParams, PdfReducer, PdfResult
from emlive.simulators.glass import X_MIXTURE, glass_intensity, peak_position, reduced_pdf

NQ = 180
Q_DATA = (np.arange(NQ) + 0.5) * 12.0 / NQ  # bin centres of a radial integration, 0.033..11.97 Å⁻¹
BMG = {"Zr": 65, "Cu": 17.5, "Ni": 10, "Al": 7.5}


def glass_composition(c_zr: float) -> dict[str, float]:
    """The simulator's pseudo-binary Zr/X glass as an element mixture (X = X_MIXTURE)."""
    return {"Zr": c_zr, **{el: (1 - c_zr) * w for el, w in X_MIXTURE.items()}}


# ------------------------------------------------------------------ (a) ideal data
@pytest.mark.parametrize(("c_zr", "alpha"), [(0.65, 0.2), (0.4, -0.3), (0.8, 0.6)])
def test_reproduces_simulator_gr(c_zr, alpha):
    iq, sq_true = glass_intensity(c_zr, alpha, Q_DATA)
    params = PdfParams(glass_composition(c_zr))
    reducer = PdfReducer(Q_DATA, params)
    r = reducer.r
    g_true = reduced_pdf(Q_DATA, sq_true, r, params.qmin, params.qmax)
    win = (r >= 1.5) & (r <= 10.0)
    smooth_bg = 0.4 * iq[-1] * (1 + Q_DATA / 6) + 2.0 * iq.max() * np.exp(-Q_DATA / 0.8)
    frames = np.stack([iq, 37.0 * iq, 0.02 * (iq + smooth_bg)])
    frames[1:, Q_DATA < 0.45] = np.nan  # beam stop
    res = reducer.reduce(frames)
    assert res.scale[0] == pytest.approx(1.0, rel=0.02)  # ideal data are I per atom: s = 1
    assert res.scale[1] == pytest.approx(1 / 37.0, rel=0.02)
    for g in res.gr:
        assert np.corrcoef(g[win], g_true[win])[0, 1] >= 0.99
        assert abs(peak_position(r, g) - peak_position(r, g_true)) <= 0.02
    np.testing.assert_allclose(res.fq, res.q * (res.sq - 1), rtol=1e-12, atol=1e-12)


def test_background_is_removed_by_the_adhoc_polynomial():
    iq, sq_true = glass_intensity(0.65, 0.2, Q_DATA)
    bg = 0.4 * iq[-1] * (1 + Q_DATA / 6) + 2.0 * iq.max() * np.exp(-Q_DATA / 0.8)
    corr = {}
    for rpoly in (0.0, 1.2):
        reducer = PdfReducer(Q_DATA, PdfParams(glass_composition(0.65), rpoly=rpoly))
        g_true = reduced_pdf(Q_DATA, sq_true, reducer.r, 0.1, 8.1)
        win = (reducer.r >= 1.5) & (reducer.r <= 10.0)
        g = reducer.reduce(iq + bg).gr[0]
        corr[rpoly] = np.corrcoef(g[win], g_true[win])[0, 1]
    assert corr[1.2] >= 0.99 > corr[0.0]  # a linear term alone (n = 0) leaves the background in


# ------------------------------------------------------------------ (b) batched == per-frame loop
def reference_reduce(q, iq, params, degrees=None):
    """PDFgetX3 steps for one frame, written plainly (module docstring of emlive.analyzers.pdf)."""
    qmaxinst = min(params.qmaxinst, q[-1])
    step = params.qstep if params.qstep is not None else (q[-1] - q[0]) / (q.size - 1)
    grid = q[0] + step * np.arange(int(math.floor((qmaxinst - q[0]) / step + 1e-9)) + 1)
    if params.qstep is None and np.allclose(np.diff(q), step, rtol=1e-6, atol=0):
        grid = q[: grid.size]  # an equidistant data grid is used as it is
    y = np.interp(grid, q, iq)  # NaN propagates from a NaN neighbour
    ok = np.isfinite(y)
    f, f2 = mixture_factors(params.composition, grid)
    # scale: minimise Σ Q²/⟨f⟩⁴ (I − ⟨f²⟩/s)² over valid points in [qmin, qmaxinst]
    sel = ok & (grid >= params.qmin - 1e-9)  # points at qmin up to rounding count
    w = grid[sel] ** 2 / f[sel] ** 4
    scale = np.sum(w * f2[sel] ** 2) / np.sum(w * y[sel] * f2[sel])
    fm = grid * (scale * y - f2) / f ** 2
    # ad-hoc: least squares of Q·P_n(Q) on the valid points, any basis of that space (monomials here)
    n_r = params.rpoly * qmaxinst / math.pi
    if degrees is None:
        lo = math.floor(n_r)
        degrees = [(lo, 1.0)] if n_r == lo else [(lo, lo + 1 - n_r), (lo + 1, n_r - lo)]
    t = grid / qmaxinst
    corr = np.zeros_like(grid)
    for n, weight in degrees:
        basis = np.stack([t ** (k + 1) for k in range(n + 1)], axis=1)
        coef, *_ = np.linalg.lstsq(basis[ok], fm[ok], rcond=None)
        corr += weight * (basis @ coef)
    fc = fm - corr
    tr = (grid >= params.qmin - 1e-9) & (grid <= params.qmax + 1e-9)
    r = params.rmin + params.rstep * np.arange(int(round((params.rmax - params.rmin) / params.rstep)) + 1)
    fc0 = np.where(ok, fc, 0.0)[tr]
    gr = 2 / np.pi * trapezoid(fc0[:, None] * np.sin(np.outer(grid[tr], r)), grid[tr], axis=0)
    return dict(q=grid, fq=np.where(ok, fc, np.nan), sq=np.where(ok, 1 + fc / grid, np.nan), r=r, gr=gr,
                scale=scale)


def noisy_batch(q, n, seed):
    """Frames of different glasses, scales, backgrounds and NaN patterns (beam stop, dead bins)."""
    rng = np.random.default_rng(seed)
    frames = np.empty((n, q.size))
    for i in range(n):
        iq, _ = glass_intensity(rng.uniform(0.3, 0.9), rng.uniform(-0.5, 0.8), q)
        bg = rng.uniform(0, 0.5) * iq[-1] * (1 + q / rng.uniform(3, 10))
        frames[i] = rng.uniform(0.1, 50) * (iq + bg) * (1 + 0.02 * rng.standard_normal(q.size))
        frames[i, q < rng.uniform(0.05, 0.6)] = np.nan
        frames[i, rng.choice(q.size, size=rng.integers(0, 6), replace=False)] = np.nan
    frames[0, (q > 2.0) & (q < 2.3)] = np.nan  # a hole inside [qmin, qmax]
    return frames


def assert_matches_reference(res, frames, q, params, degrees=None):
    for i, frame in enumerate(frames):
        ref = reference_reduce(q, frame, params, degrees)
        np.testing.assert_allclose(res.q, ref["q"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.r, ref["r"], rtol=1e-12, atol=1e-12)
        assert res.scale[i] == pytest.approx(ref["scale"], rel=1e-10)
        for key in ("fq", "sq", "gr"):
            got, want = getattr(res, key)[i], ref[key]
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            ok = ~np.isnan(want)
            np.testing.assert_allclose(got[ok], want[ok], rtol=0, atol=1e-10 * np.max(np.abs(want[ok])))


@pytest.mark.parametrize("qstep", [None, 0.05])
def test_batched_equals_per_frame_loop(qstep):
    frames = noisy_batch(Q_DATA, 6, seed=3)
    params = PdfParams(BMG, qstep=qstep, rmax=12.0, rstep=0.02)
    reducer = PdfReducer(Q_DATA, params)
    assert len(reducer.degrees) == 2  # n_r = 4.58: both degrees mixed
    res = reducer.reduce(frames)
    assert isinstance(res, PdfResult)
    assert res.sq.shape == res.fq.shape == (6, res.q.size) and res.gr.shape == (6, res.r.size)
    assert_matches_reference(res, frames, Q_DATA, params)
    # one frame at a time gives the same (no cross-talk between frames)
    single = reducer.reduce(frames[2])
    np.testing.assert_allclose(single.gr[0], res.gr[2], rtol=0, atol=1e-12 * np.abs(res.gr[2]).max())


def test_short_data_clip_qmaxinst_and_nonuniform_grid():
    q = np.sort(np.random.default_rng(1).uniform(0.05, 10.0, 150))
    frames = noisy_batch(q, 3, seed=5)
    params = PdfParams(BMG, qstep=0.07)  # qmaxinst 12 > data end: the fit uses the data end
    reducer = PdfReducer(q, params)
    assert reducer.qmaxinst == pytest.approx(q[-1])
    assert reducer.n_r == pytest.approx(1.2 * q[-1] / math.pi)
    assert_matches_reference(reducer.reduce(frames), frames, q, params)


def test_frame_without_data_is_nan_and_does_not_spoil_the_batch():
    frames = noisy_batch(Q_DATA, 3, seed=7)
    frames[1] = np.nan
    reducer = PdfReducer(Q_DATA, PdfParams(BMG))
    res = reducer.reduce(frames)
    assert np.all(np.isnan(res.gr[1])) and np.isnan(res.scale[1])
    assert np.all(np.isfinite(res.gr[[0, 2]]))
    assert_matches_reference(PdfResult(res.q, res.sq[[0, 2]], res.fq[[0, 2]], res.r, res.gr[[0, 2]],
                                       res.scale[[0, 2]]), frames[[0, 2]], Q_DATA, PdfParams(BMG))


# ------------------------------------------------------------------ (c) degree mixing, validation
def test_integer_n_r_uses_one_degree_and_mixing_is_continuous():
    frames = noisy_batch(Q_DATA, 3, seed=11)
    qend = min(12.0, Q_DATA[-1])
    rpoly_int = 4 * math.pi / qend  # n_r = 4 up to rounding
    params = PdfParams(BMG, rpoly=rpoly_int)
    reducer = PdfReducer(Q_DATA, params)
    assert reducer.degrees == (4,)
    res = reducer.reduce(frames)
    assert_matches_reference(res, frames, Q_DATA, params, degrees=[(4, 1.0)])
    # approaching the integer from either side converges to the single-degree result (no rounding jump)
    for eps in (-1e-6, 1e-6):
        near = PdfReducer(Q_DATA, PdfParams(BMG, rpoly=rpoly_int * (1 + eps))).reduce(frames)
        np.testing.assert_allclose(near.gr, res.gr, rtol=0, atol=1e-4 * np.abs(res.gr).max())
    # halfway between 4 and 5: the mean of the two single-degree corrections
    half = PdfParams(BMG, rpoly=4.5 * math.pi / qend)
    mid = PdfReducer(Q_DATA, half).reduce(frames)
    assert_matches_reference(mid, frames, Q_DATA, half, degrees=[(4, 0.5), (5, 0.5)])


@pytest.mark.parametrize("kwargs", [
    dict(qmin=8.1, qmax=8.1), dict(qmin=9.0, qmax=8.1), dict(qmin=-0.1), dict(qmax=13.0),
    dict(rpoly=-1.0), dict(rstep=0.0), dict(rmin=10.0), dict(rmin=-1.0), dict(qstep=0.0), dict(qstep=-0.1),
    dict(qmax=float("nan")), dict(composition={"Zr": 1, "Qq": 1}), dict(composition={}),
    dict(composition={"Zr": -1.0, "Cu": 2.0}),
])
def test_params_validation(kwargs):
    kwargs = {"composition": BMG, **kwargs}
    with pytest.raises(ValueError):
        PdfParams(**kwargs)


def test_reducer_validation():
    params = PdfParams(BMG)
    with pytest.raises(ValueError, match="beyond the data range"):
        PdfReducer(np.linspace(0.05, 7.0, 100), params)  # qmax 8.1 > data end
    for q in (Q_DATA[::-1], np.r_[Q_DATA[:5], Q_DATA[4:]], np.r_[np.nan, Q_DATA[1:]], Q_DATA[:1],
              Q_DATA.reshape(10, -1)):
        with pytest.raises(ValueError):
            PdfReducer(q, params)
    with pytest.raises(ValueError):
        PdfReducer(Q_DATA, {"composition": BMG})
    reducer = PdfReducer(Q_DATA, params)
    with pytest.raises(ValueError):
        reducer.reduce(np.ones((2, NQ + 1)))


def test_params_are_hashable_and_composition_is_copied():
    comp = dict(BMG)
    a = PdfParams(comp)
    comp["Zr"] = 0
    assert a.composition["Zr"] == 65
    assert hash(a) == hash(PdfParams(dict(BMG))) and a == PdfParams(dict(BMG))
    assert a != PdfParams(dict(BMG), rpoly=1.0)

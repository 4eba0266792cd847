"""Batched KWW fits against scipy.optimize.curve_fit, the model's ground truth and the ECM phantom's maps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import OptimizeWarning, curve_fit

from emlive.analyzers.kww import (DEFAULT_BOUNDS, KwwResult, fit_kww, initial_guess, kww_model, reliability,
                                  tau_histogram)
from emlive.simulators.ecm_nanowire import ECMNanowire

DT = 0.25  # s per frame
LAG_FRAMES = np.unique(np.round(np.geomspace(1, 2000, 45)).astype(int))  # log-spaced, like multi-tau
T_LAGS = LAG_FRAMES * DT


def kww(t, a, tau, beta):
    """The model for curve_fit, written out independently of the module."""
    return 1.0 + a * np.exp(-2.0 * (t / tau) ** beta)


def curve_fit_rows(t, y, p0, sigma, bounds=DEFAULT_BOUNDS, with_errors=False):
    """scipy's fit of each row (NaN where it fails), with the same model, p0, sigma and bounds.

    With ``with_errors`` also the standard errors sqrt(diag(pcov)) (absolute_sigma: σ are true errors).
    """
    out = np.full((y.shape[0], 3), np.nan)
    err = np.full((y.shape[0], 3), np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", OptimizeWarning)
        for i in range(y.shape[0]):
            s = sigma if sigma is None or sigma.ndim == 1 else sigma[i]
            try:
                popt, pcov = curve_fit(kww, t, y[i], p0=p0[i], sigma=s, bounds=bounds, absolute_sigma=True)
                out[i] = popt
                err[i] = np.sqrt(np.diag(pcov))
            except RuntimeError:
                pass
    return (out, err) if with_errors else out


def well_posed(params, t):
    """Rows fitted without running off: finite, with τ inside the sampled lag range."""
    return np.isfinite(params).all(axis=1) & (params[:, 1] > t[0]) & (params[:, 1] < t[-1])


def symmetric_g2(frames, lags):
    """Per-pixel g2(Δ) = mean(I[Δ:] I[:−Δ]) / (mean(I[Δ:]) mean(I[:−Δ])), plain numpy (research note d)."""
    i = frames.reshape(frames.shape[0], -1).astype(float)
    out = np.empty((i.shape[1], lags.size))
    for j, d in enumerate(lags):
        a, b = i[d:], i[:-d]
        out[:, j] = (a * b).mean(0) / (a.mean(0) * b.mean(0))
    return out


@pytest.fixture(scope="module")
def synthetic():
    """Noisy KWW curves on log-spaced lags; the noise grows with lag as on multi-tau levels with fewer pairs."""
    rng = np.random.default_rng(11)
    n = 120
    a = rng.uniform(0.1, 0.3, n)
    tau = np.exp(rng.uniform(np.log(1.0), np.log(20.0), n))  # s: between 4 and 80 frames
    beta = rng.uniform(0.5, 1.5, n)
    sigma = 0.002 * np.sqrt(T_LAGS / T_LAGS[0])
    y = kww(T_LAGS, a[:, None], tau[:, None], beta[:, None]) + sigma * rng.standard_normal((n, T_LAGS.size))
    return {"a": a, "tau": tau, "beta": beta, "sigma": sigma, "y": y}


# ------------------------------------------------------------------ (a) synthetic curves
def test_model_is_the_kww_formula():
    t = T_LAGS
    np.testing.assert_allclose(kww_model(t, 0.2, 3.0, 0.7), kww(t, 0.2, 3.0, 0.7), rtol=1e-14)
    np.testing.assert_allclose(kww_model(t, 0.2, 3.0, 0.7, baseline=0.5), kww(t, 0.2, 3.0, 0.7) - 0.5, rtol=1e-14)


def test_recovers_parameters_and_agrees_with_curve_fit(synthetic):
    s = synthetic
    w = 1.0 / s["sigma"] ** 2
    res = fit_kww(T_LAGS, s["y"], weights=w)
    assert isinstance(res, KwwResult) and res.tau.shape == (s["y"].shape[0],)
    assert res.success.all()
    # the same objective as curve_fit: same optimum from the same start, weights and bounds
    p0 = initial_guess(T_LAGS, s["y"], weights=w)
    ref, err = curve_fit_rows(T_LAGS, s["y"], p0, s["sigma"], with_errors=True)
    ok = well_posed(ref, T_LAGS)
    assert ok.mean() > 0.95
    # recovery: errors consistent with the fit's standard errors (median |z| of a normal variable is 0.67)
    truth = np.column_stack([s["a"], s["tau"], s["beta"]])
    z = np.abs(res.params - truth)[ok] / err[ok]
    assert np.all(np.median(z, axis=0) < 1.0)
    np.testing.assert_allclose(res.params[ok], ref[ok], rtol=0.01)
    # cost is ½ Σ w (model − y)², curve_fit's objective, and no worse than curve_fit's
    mine = kww(T_LAGS, *res.params[ok].T[:, :, None])
    theirs = kww(T_LAGS, *ref[ok].T[:, :, None])
    np.testing.assert_allclose(res.cost[ok], 0.5 * np.sum(w * (mine - s["y"][ok]) ** 2, axis=1), rtol=1e-9)
    assert np.all(res.cost[ok] <= 0.5 * np.sum(w * (theirs - s["y"][ok]) ** 2, axis=1) * (1 + 1e-6))
    # fit quality: χ²/dof about 1 with the true σ; weighted R² by its definition
    assert 0.7 < np.median(res.chi2) < 1.3
    ss_res = np.sum(w * (kww(T_LAGS, *res.params.T[:, :, None]) - s["y"]) ** 2, axis=1)
    ybar = np.sum(w * s["y"], axis=1, keepdims=True) / w.sum()
    np.testing.assert_allclose(res.r2, 1 - ss_res / np.sum(w * (s["y"] - ybar) ** 2, axis=1), rtol=1e-9)
    np.testing.assert_allclose(res.chi2, ss_res / (T_LAGS.size - 3), rtol=1e-9)


def test_notebook_start_and_unweighted_fit_agree_with_curve_fit(synthetic):
    s = synthetic
    y = s["y"][:40]
    res = fit_kww(T_LAGS, y, p0="notebook")
    p0 = np.column_stack([y[:, 0] - 1, np.full(len(y), 200 * T_LAGS[0]), np.ones(len(y))])
    np.testing.assert_allclose(initial_guess(T_LAGS, y, notebook=True), p0, rtol=1e-12)
    ref = curve_fit_rows(T_LAGS, y, p0, None)
    ok = well_posed(ref, T_LAGS) & res.success
    assert ok.mean() > 0.9
    np.testing.assert_allclose(res.params[ok], ref[ok], rtol=0.01)


def test_explicit_p0_batch_shape_and_per_row_weights(synthetic):
    s = synthetic
    y = s["y"][:12].reshape(3, 4, -1)
    w = np.broadcast_to(1.0 / s["sigma"] ** 2, y.shape)
    a = fit_kww(T_LAGS, y, weights=w, p0=[0.2, 5.0, 1.0])
    b = fit_kww(T_LAGS, y.reshape(12, -1), weights=1.0 / s["sigma"] ** 2, p0=np.tile([0.2, 5.0, 1.0], (12, 1)))
    assert a.tau.shape == (3, 4) and a.params.shape == (3, 4, 3)
    np.testing.assert_allclose(a.params.reshape(12, 3), b.params, rtol=1e-12)
    one = fit_kww(T_LAGS, y[1, 2], weights=w[1, 2])
    assert one.tau.shape == () and bool(one.success)


def test_lag_selection_equals_fitting_the_slice(synthetic):
    y = synthetic["y"][:20]
    keep = T_LAGS <= 60.0
    a = fit_kww(T_LAGS, y, t_max=60.0)
    b = fit_kww(T_LAGS[keep], y[:, keep])
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12)
    mask = np.arange(T_LAGS.size) % 2 == 0
    c = fit_kww(T_LAGS, y, lag_mask=mask)
    d = fit_kww(T_LAGS[mask], y[:, mask])
    np.testing.assert_allclose(c.params, d.params, rtol=1e-12)
    # a zero weight drops a lag
    w = mask.astype(float)
    e = fit_kww(T_LAGS, y, weights=w, p0=initial_guess(T_LAGS[mask], y[:, mask]))
    np.testing.assert_allclose(e.params, d.params, rtol=1e-6)


# ------------------------------------------------------------------ (b) ECM phantom
def _phantom_fit(n_frames, seed):
    sim = ECMNanowire(shape=(16, 16), n_frames=n_frames, drift=(0, 0), drift_wobble=0, seed=seed)
    truth = sim.ground_truth()
    lags = np.unique(np.round(np.geomspace(1, n_frames // 4, 45)).astype(int))
    g2 = symmetric_g2(sim.frames(0, n_frames), lags)
    t = lags * truth["frame_time"]  # s, like truth["tau"]
    weights = (n_frames - lags).astype(float)  # pairs behind each lag
    return truth, t, g2, weights, fit_kww(t, g2, weights=weights)


def test_phantom_tau_and_beta_maps_recovered():
    # 16000 frames (4000 s): each pixel's g2 estimate carries statistical noise ∝ sqrt(τ/T). At 4000 frames
    # it alone gives a ~15 % median τ error per pixel, at the limit; 4× longer halves it
    n_frames = 16000
    truth, t, g2, _, res = _phantom_fit(n_frames, seed=5)
    reliable = reliability(truth["tau"], n_frames * truth["frame_time"]).ravel()
    truth = {k: np.ravel(v) for k, v in truth.items()}
    assert reliable.sum() > 100
    tau_err = np.abs(res.tau / truth["tau"] - 1)[reliable]
    beta_err = np.abs(res.beta - truth["beta"])[reliable]
    assert np.median(tau_err) <= 0.15
    assert np.median(beta_err) <= 0.15
    assert np.all(res.success[reliable])
    # off the wire nothing fluctuates: constant or amplitude-free curves, flagged
    off = ~truth["wire_mask"]
    assert not res.success[off].any()
    assert np.all(np.isin(res.status[off], (-2, -3)))


def test_phantom_brief_config_agrees_with_curve_fit():
    truth, t, g2, weights, res = _phantom_fit(4000, seed=2)
    wire = truth["wire_mask"].ravel()
    p0 = initial_guess(t, g2, weights=weights)[wire]
    ref = curve_fit_rows(t, g2[wire], p0, 1.0 / np.sqrt(weights))
    ok = well_posed(ref, t)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(res.params[wire][ok], ref[ok], rtol=0.01)
    assert res.success[wire][ok].all()


# ------------------------------------------------------------------ (c) bounds, flags, validation
def test_bounds_respected_and_match_curve_fit(synthetic):
    s = synthetic
    y = s["y"][:30]
    bounds = ((0.15, 2.0, 0.8), (0.25, 10.0, 1.2))
    res = fit_kww(T_LAGS, y, bounds=bounds, weights=1.0 / s["sigma"] ** 2)
    lo, hi = np.array(bounds)
    assert np.all((res.params >= lo) & (res.params <= hi))
    assert np.any(res.params == lo) and np.any(res.params == hi)  # some truths lie outside the box
    ref = curve_fit_rows(T_LAGS, y, initial_guess(T_LAGS, y, bounds=bounds, weights=1.0 / s["sigma"] ** 2),
                         s["sigma"], bounds=bounds)
    ok = np.isfinite(ref).all(axis=1)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(res.params[ok], ref[ok], rtol=0.01, atol=1e-6)
    # default bounds on wild data: A > 0, τ > 0, 0.1 <= β <= 2
    rng = np.random.default_rng(3)
    wild = 1 + 0.5 * rng.standard_normal((50, T_LAGS.size))
    r2 = fit_kww(T_LAGS, wild)
    fitted = r2.status > -2
    assert np.all(r2.A[fitted] >= 0) and np.all(r2.tau[fitted] > 0)
    assert np.all((r2.beta[fitted] >= 0.1) & (r2.beta[fitted] <= 2.0))


def test_flat_nan_and_amplitude_free_rows_flagged(synthetic):
    y = synthetic["y"][:4].copy()
    y[0] = 1.0  # flat
    y[1, 7] = np.nan  # NaN
    y[2] = 1 - 0.1 * np.exp(-T_LAGS / 5)  # rises towards the baseline: best A >= 0 is 0
    res = fit_kww(T_LAGS, y)
    assert res.status.tolist()[:3] == [-2, -1, -3]
    assert res.success.tolist() == [False, False, False, True]
    assert np.isnan(res.params[:2]).all() and np.isnan(res.cost[:2]).all()
    assert res.A[2] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(initial_guess(T_LAGS, y)[1]).all()
    # fewer than 3 weighted lags in a row
    w = np.ones((4, T_LAGS.size))
    w[3, 2:] = 0
    assert fit_kww(T_LAGS, y, weights=w).status[3] == -1


def test_input_validation():
    t = T_LAGS[:10]
    y = kww(t, 0.2, 1.0, 1.0)
    bad = [
        dict(t=t[::-1]), dict(t=np.r_[0.0, t[1:]]), dict(t=t[:2], g2=y[:2]), dict(t=t[None]),
        dict(g2=y[:5]), dict(weights=-np.ones(10)), dict(weights=np.ones(3)), dict(weights=np.r_[1, 1, np.zeros(8)]),
        dict(p0=[0.2, 1.0]), dict(p0=[0.2, 1.0, 3.0]), dict(p0=[0.2, np.nan, 1.0]), dict(p0="seed"),
        dict(bounds=((0, 0, 0.1), (1, 1, 0.05))), dict(bounds=((0, 0), (1, 1))), dict(bounds=((0, -1, 0.1),
                                                                                               (1, 1, 2))),
        dict(bounds=5), dict(max_iter=0), dict(max_iter=True), dict(xtol=-1.0), dict(t_max=t[1]),
        dict(t_max=np.nan), dict(lag_mask=np.ones(10)), dict(lag_mask=np.ones(9, bool)), dict(baseline=np.inf),
    ]
    for kw in bad:
        args = {"t": t, "g2": y, **kw}
        with pytest.raises(ValueError):
            fit_kww(args.pop("t"), args.pop("g2"), **args)


# ------------------------------------------------------------------ map helpers
def test_reliability():
    tau = np.array([1.0, 25.0, 25.1, np.nan, -1.0, 0.0])
    np.testing.assert_array_equal(reliability(tau, 1000.0), [True, True, False, False, False, False])
    np.testing.assert_array_equal(reliability(tau, 1000.0, factor=100), [True, False, False, False, False, False])
    for args in ((tau, 0.0), (tau, np.inf), (tau, 10.0, 0)):
        with pytest.raises(ValueError):
            reliability(*args)


def test_tau_histogram():
    rng = np.random.default_rng(5)
    tau = np.exp(rng.normal(1.0, 0.8, (20, 20)))
    tau[0, :3] = (np.nan, -1.0, np.inf)
    counts, edges = tau_histogram(tau, 12)
    valid = tau[np.isfinite(tau) & (tau > 0)]
    np.testing.assert_allclose(edges, np.geomspace(valid.min(), valid.max(), 13))
    np.testing.assert_array_equal(counts, np.histogram(valid, edges)[0])
    dens, e2 = tau_histogram(tau, 12, density=True)
    assert np.sum(dens * np.diff(np.log(e2))) == pytest.approx(1.0)
    mask = tau < 3.0
    c3, e3 = tau_histogram(tau, np.geomspace(0.1, 100, 7), mask=mask)
    np.testing.assert_array_equal(c3, np.histogram(tau[mask & np.isfinite(tau) & (tau > 0)], e3)[0])
    c4, e4 = tau_histogram(tau, 5, range=(0.5, 50))
    assert e4[0] == pytest.approx(0.5) and e4[-1] == pytest.approx(50)
    for kw in (dict(bins=0), dict(bins=np.array([1.0, 0.5])), dict(range=(0, 1)), dict(mask=np.ones(3, bool))):
        with pytest.raises(ValueError):
            tau_histogram(tau, **kw)

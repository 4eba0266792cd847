"""Tests of emlive.simulators.ecm_nanowire against its ground truth."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from emlive.simulators import ecm_nanowire
from emlive.simulators.ecm_nanowire import ECMNanowire


def g2_fft(series: np.ndarray) -> np.ndarray:
    """Per-pixel symmetric-normalised g2 for every lag by a plain zero-padded FFT autocorrelation.

    g2(Δ) = mean(I_t I_{t+Δ}) / (mean(I[:T-Δ]) mean(I[Δ:])) (TDF-ECM notebook, Zhang et al. 2018).
    """
    n_t = series.shape[0]
    spec = np.fft.rfft(series, n=2 * n_t, axis=0)
    lag = np.arange(n_t)
    count = (n_t - lag)[:, None]
    num = np.fft.irfft(spec * np.conj(spec), n=2 * n_t, axis=0)[:n_t] / count
    cum = np.concatenate([np.zeros((1, series.shape[1])), np.cumsum(series, axis=0)])
    return num / ((cum[n_t - lag] / count) * ((cum[n_t] - cum[lag]) / count))


@pytest.fixture(scope="module")
def still():
    """32² pixels, 2000 frames, no drift: τ of 2.4-16 frames, so T > 120 τ everywhere."""
    sim = ECMNanowire(shape=(32, 32), n_frames=2000, drift=(0.0, 0.0), drift_wobble=0.0,
                      tau_bulk=(1.5, 4.0), tau_surface=0.6, seed=5)
    series = sim.frames(0, sim.n_frames).reshape(sim.n_frames, -1).astype(np.float64)
    return sim, g2_fft(series)


def test_per_pixel_g2_follows_the_kww_ground_truth(still):
    """Per-pixel g2 at lags 1, 3, 6, 12 and 25 frames, averaged over the pixels of each
    dynamical domain (same τ and β), against 1 + A exp(-2 (t/τ)^β) with each pixel's own A and τ.

    Statistical error: pixels hold independent fields, so the error of the domain mean is the
    pixel-to-pixel scatter of (measured − model) over sqrt(n) (about A sqrt(τ/T) per pixel,
    0.01-0.03 here). The estimator's bias, about −2 A ∫|g1|² dt / T < 0.003, is added. Allow
    4.5 standard errors (50 comparisons) and require the single pixels to scatter as expected."""
    sim, g2 = still
    truth = sim.ground_truth()
    dt = truth["frame_time"]
    labels = truth["domain_labels"].ravel()
    tau, beta, a = (truth[k].ravel() for k in ("tau", "beta", "A"))
    checked = 0
    for label in np.unique(labels[labels >= 0]):
        sel = (labels == label) & (a > 0.2)  # away from the crystallite
        if sel.sum() < 8:
            continue
        for lag in (1, 3, 6, 12, 25):
            model = 1 + a[sel] * np.exp(-2 * (lag * dt / tau[sel]) ** beta[sel])
            dev = g2[lag, sel] - model
            se = dev.std(ddof=1) / np.sqrt(sel.sum())
            assert abs(dev.mean()) < 4.5 * se + 0.003, (label, lag, dev.mean(), se)
            assert dev.std() < 0.06  # single pixels: ~A sqrt(τ/T)
            checked += 1
    assert checked >= 20
    # Where nothing fluctuates (support, away from the crystallite), g2 is 1.
    static = ~truth["wire_mask"].ravel() & (truth["mean_intensity"].ravel() < 25)
    np.testing.assert_allclose(g2[1:50, static], 1.0, atol=1e-6)


def test_surface_relaxes_faster_than_the_bulk(still):
    """Measured: the lag at which the surface-averaged (g2 − 1)/A falls below e⁻² (t = τ)."""
    sim, g2 = still
    truth = sim.ground_truth()
    a = truth["A"].ravel()
    surface = truth["surface_mask"].ravel() & (a > 0.2)
    bulk = truth["wire_mask"].ravel() & ~truth["surface_mask"].ravel() & (a > 0.2)
    decay = (g2[:200] - 1) / np.where(a > 0, a, 1)
    lag_surface = np.argmax(decay[1:, surface].mean(axis=1) < np.exp(-2)) + 1
    lag_bulk = np.argmax(decay[1:, bulk].mean(axis=1) < np.exp(-2)) + 1
    assert lag_surface < lag_bulk / 2
    assert np.nanmax(truth["tau"][truth["surface_mask"]]) < np.nanmin(truth["tau"][bulk.reshape(32, 32)])
    assert lag_surface * truth["frame_time"] == pytest.approx(0.6, rel=0.5)


def test_drift_moves_the_crystallite_along_the_known_trajectory():
    sim = ECMNanowire(shape=(48, 48), n_frames=60, drift=(2.0, -3.0), drift_wobble=0.5, seed=2,
                      crystallite_intensity=3000.0)
    truth = sim.ground_truth()
    frames = sim.frames(0, sim.n_frames)
    assert truth["drift"].shape == (60, 2)
    np.testing.assert_allclose(truth["drift"][0], 0.0, atol=1e-12)
    np.testing.assert_allclose(truth["drift"][-1], [2.0, -3.0 + 0.5 * (np.sin(2 * np.pi * 0.7 + 0.4)
                                                                     - np.sin(0.4))], atol=1e-9)
    yy, xx = np.mgrid[0:48, 0:48]
    for k in (0, 20, 59):
        cy, cx = truth["crystallite_trajectory"][k]
        win = (np.abs(yy - cy) <= 4) & (np.abs(xx - cx) <= 4)
        w = np.clip(frames[k] - 300.0, 0, None) * win  # the blob's top only: speckle stays below
        centroid = (np.sum(w * yy) / w.sum(), np.sum(w * xx) / w.sum())
        np.testing.assert_allclose(centroid, (cy, cx), atol=0.15)
    # The static crystallite is the brightest feature, as the drift reference must be.
    iy, ix = np.unravel_index(np.argmax(frames[0]), frames[0].shape)
    assert np.hypot(iy - truth["crystallite_position"][0], ix - truth["crystallite_position"][1]) < 1.5


def test_series_is_deterministic_and_seed_dependent():
    a = ECMNanowire(shape=(16, 16), n_frames=100, seed=7)
    b = ECMNanowire(shape=(16, 16), n_frames=100, seed=7)
    np.testing.assert_array_equal(a.frames(0, 100), b.frames(0, 100))
    np.testing.assert_array_equal(a.frames(30, 5), a.frames(0, 100)[30:35])
    assert not np.array_equal(a.frames(0, 10), ECMNanowire(shape=(16, 16), n_frames=100, seed=8).frames(0, 10))
    for key in ("tau", "beta", "A"):
        np.testing.assert_array_equal(a.ground_truth()[key], b.ground_truth()[key])


def test_cooling_slows_the_dynamics_and_widens_the_distribution():
    hot = ECMNanowire(shape=(24, 24), n_frames=8, temperature=523.15, seed=1).ground_truth()
    cold = ECMNanowire(shape=(24, 24), n_frames=8, temperature=513.15, seed=1).ground_truth()
    bulk = hot["wire_mask"] & ~hot["surface_mask"]
    assert (cold["tau"][hot["wire_mask"]] > hot["tau"][hot["wire_mask"]]).all()
    np.testing.assert_allclose(hot["tau"], hot["tau_ref"])
    spread = [np.log(t["tau"][bulk]).std() for t in (hot, cold)]
    assert spread[1] > spread[0]


def test_shot_noise_option_gives_counts_with_the_same_mean():
    sim = ECMNanowire(shape=(16, 16), n_frames=400, shot_noise=True, drift=(0.0, 0.0), drift_wobble=0.0, seed=3)
    frames = sim.frames(0, 400)
    assert np.array_equal(frames, np.rint(frames))
    mean = sim.ground_truth()["mean_intensity"]
    wire = sim.ground_truth()["wire_mask"]
    assert frames[:, wire].mean() == pytest.approx(mean[wire].mean(), rel=0.03)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="contrast"):
        ECMNanowire(contrast=1.5)
    with pytest.raises(ValueError, match="outside the series"):
        ECMNanowire(shape=(8, 8), n_frames=10).frames(5, 10)


def test_docstring_example_runs():
    assert doctest.testmod(ecm_nanowire).failed == 0

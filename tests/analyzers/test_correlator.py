"""Tests of emlive.analyzers.correlator: streaming multi-tau g2 against the FFT g2, a direct numpy reference,
the exact binning identity of multi-tau, and the KWW ground truth of the ECM phantom."""

from __future__ import annotations

import doctest
import pickle

import numpy as np
import pytest

from emlive.analyzers import correlator
from emlive.analyzers.correlator import MultiTauCorrelator, fft_g2, multi_tau_lags
from emlive.simulators import ECMNanowire


def speckle_series(t_len=1000, npix=37, seed=0):
    """Positive, correlated intensities: |F|² of a moving-average complex Gaussian field plus a static part."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((t_len + 20, npix)) + 1j * rng.standard_normal((t_len + 20, npix))
    kernel = np.exp(-np.arange(20) / 6.0)
    field = np.stack([np.convolve(z[:, p], kernel, mode="valid")[:t_len] for p in range(npix)], axis=1)
    return np.abs(field) ** 2 + rng.uniform(0.5, 3.0, npix)


def direct_g2(x: np.ndarray, lag: int) -> np.ndarray:
    """Symmetric g2 of (T, npix) at one lag, straight from the definition (loops over pixels)."""
    out = np.empty(x.shape[1])
    for p in range(x.shape[1]):
        i = x[:, p]
        past, future = i[:i.size - lag], i[lag:]
        out[p] = np.mean(past * future) / (np.mean(past) * np.mean(future))
    return out


def binned(x: np.ndarray, b: int) -> np.ndarray:
    """Means of b consecutive frames (the first ⌊T/b⌋·b frames)."""
    n = x.shape[0] // b
    return x[:n * b].reshape(n, b, *x.shape[1:]).mean(axis=1)


def test_doctests():
    assert doctest.testmod(correlator).failed == 0


def test_multi_tau_lags_follow_the_scikit_beam_convention():
    lags, levels = multi_tau_lags(4, 8)
    assert lags.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56]
    assert levels.tolist() == [0] * 8 + [1] * 4 + [2] * 4 + [3] * 4
    lags, levels = multi_tau_lags(3, 4)
    assert lags.tolist() == [0, 1, 2, 3, 4, 6, 8, 12] and levels.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    assert np.all(np.diff(multi_tau_lags(12, 16)[0]) > 0)


# --- (a), (b), (d): exact identities -----------------------------------------------------------

def test_level_zero_equals_fft_g2():
    x = speckle_series()
    c = MultiTauCorrelator(x.shape[1], n_levels=6)
    c.update(x)
    lags, g = c.g2(include_zero=True)
    lev0 = c.levels == 0
    np.testing.assert_allclose(g[:, lev0], fft_g2(x, lags[lev0]), rtol=1e-10, atol=0)
    assert lags[0] == 0 and np.allclose(g[:, 0], np.mean(x ** 2, 0) / np.mean(x, 0) ** 2, rtol=1e-12)


@pytest.mark.parametrize("t_len", [1000, 1024, 777])
def test_level_i_equals_fft_g2_of_the_binned_series(t_len):
    x = speckle_series(t_len)
    c = MultiTauCorrelator(x.shape[1], n_levels=7, per_level=8)
    c.update(x)
    lags, g = c.g2()
    levels = c.levels[1:]
    for i in range(1, 7):
        sel = levels == i
        b = 2 ** i
        xb = binned(x, b)
        j = lags[sel] // b
        ok = j < xb.shape[0]
        np.testing.assert_allclose(g[:, sel][:, ok], fft_g2(xb, j[ok]), rtol=1e-10, atol=0)
        assert np.all(np.isnan(g[:, sel][:, ~ok]))  # lags longer than the binned series: no pair yet
        assert np.array_equal(c.counts[1:][sel], np.maximum(xb.shape[0] - j, 0))


def test_streaming_equals_direct_numpy_reference():
    x = speckle_series(300, npix=11, seed=4)
    c = MultiTauCorrelator(11, n_levels=5, per_level=6)
    c.update(x.astype(np.float32))
    lags, g = c.g2()
    x32 = x.astype(np.float32).astype(np.float64)
    for k, (lag, level) in enumerate(zip(lags, c.levels[1:])):
        b = 2 ** level
        np.testing.assert_allclose(g[:, k], direct_g2(binned(x32, b), lag // b), rtol=1e-10)


def test_fft_g2_equals_direct_definition_and_keeps_the_image_shape():
    x = speckle_series(200, npix=12, seed=2)
    lags = np.array([0, 1, 5, 50, 199])
    got = fft_g2(x.reshape(200, 3, 4), lags)
    assert got.shape == (3, 4, 5)
    want = np.stack([direct_g2(x, int(lag)) for lag in lags], axis=1).reshape(3, 4, 5)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(fft_g2(x)[:, lags[1:] - 1], want.reshape(12, 5)[:, 1:], rtol=1e-10)


def test_binning_difference_is_minus_the_mean_within_bin_covariance():
    """Exact multi-tau identity: bin-b estimate at lag jb minus the unbinned one = −⟨cov_k(I_t, I_t+jb)⟩/(IP·IF).

    For T − jb a multiple of b, both use the same past and future means, and within bin k
    b·mean(x)·mean(y) − Σ x y = −b·cov_k(x, y), x = I over the bin, y = I over the bin jb later.
    """
    x = speckle_series(1024, npix=9, seed=3)
    c = MultiTauCorrelator(9, n_levels=6)
    c.update(x)
    lags, g = c.g2()
    for k in np.flatnonzero(c.levels[1:] >= 1):
        lag, b = int(lags[k]), 2 ** int(c.levels[1 + k])
        n = x.shape[0] - lag
        xb, yb = x[:n].reshape(n // b, b, -1), x[lag:].reshape(n // b, b, -1)
        cov = ((xb * yb).mean(1) - xb.mean(1) * yb.mean(1)).mean(0)
        np.testing.assert_allclose(g[:, k] - direct_g2(x, lag), -cov / (x[:n].mean(0) * x[lag:].mean(0)),
                                   rtol=1e-8, atol=1e-12)


# --- (b) averaging error on the phantom, (e) KWW ground truth -----------------------------------

@pytest.fixture(scope="module")
def slow_phantom():
    """τ = 30–80 frames ≫ the bins (2..32 frames); no drift, no shot noise; T a multiple of 32."""
    sim = ECMNanowire(shape=(16, 16), n_frames=4096, frame_time=1.0, tau_bulk=(40.0, 80.0), tau_surface=30.0,
                      drift=(0, 0), drift_wobble=0.0, shot_noise=False, seed=3)
    return sim.frames(0, sim.n_frames).reshape(sim.n_frames, -1), sim.ground_truth()


def test_higher_levels_match_unbinned_fft_g2_within_the_averaging_error(slow_phantom):
    """|g2_bin(jb) − g2(jb)| ≤ 2A((b−1)/τ)^β on every wire pixel.

    Why: the difference is −⟨cov_k⟩/(IP·IF) (previous test); by Cauchy–Schwarz |cov_k| ≤ the within-bin
    variance of I, whose expectation is ⟨I⟩²·A·(1 − mean_{u,v<b} φ(u−v)) with φ = exp(−2(t/τ)^β) for
    the KWW speckle, and 1 − φ(d) ≤ 2(d/τ)^β ≤ 2((b−1)/τ)^β. (The *mean* difference, A(φ̄ − φ), is
    only second order, ≈ Aφ''(b²−1)/12; the bound covers the sample's fluctuation as well.)
    """
    x, truth = slow_phantom
    wire = truth["wire_mask"].ravel()
    tau, beta, amp = truth["tau"].ravel()[wire], truth["beta"].ravel()[wire], truth["A"].ravel()[wire]
    c = MultiTauCorrelator(x.shape[1], n_levels=6)
    c.update(x)
    lags, g = c.g2()
    ref = fft_g2(x, lags)
    for k in np.flatnonzero(c.levels[1:] >= 1):
        b = 2 ** int(c.levels[1 + k])
        tol = 2 * amp * ((b - 1) / tau) ** beta
        assert np.all(np.abs(g[wire, k] - ref[wire, k]) <= tol), (lags[k], b)
    off = ~wire & (truth["mean_intensity"].ravel() > 0)   # static pixels: g2 = 1 at every level
    np.testing.assert_allclose(g[off], 1.0, atol=1e-12)


def test_recovered_g2_approaches_the_kww_ground_truth():
    """g2(t) → 1 + A exp(−2(t/τ)^β) at lags t ≤ T/40.

    Tolerance: the relative standard error of a time average over T frames of a signal with
    correlation time τ is ~sqrt(τ/T), so σ ≈ A·sqrt(τ/T) per lag and pixel; a few pixels are
    checked at ~20 correlated lags each against 8σ, and the mean over all wire pixels (independent
    speckle) of (g2 − 1)/A − φ against 5σ/sqrt(n_pixels) at the lags ≤ τ (no normalisation bias).
    """
    t_len = 4096
    sim = ECMNanowire(shape=(16, 16), n_frames=t_len, drift=(0, 0), drift_wobble=0.0, shot_noise=True, seed=1)
    truth = sim.ground_truth()
    x = sim.frames(0, t_len).reshape(t_len, -1)
    wire = np.flatnonzero(truth["wire_mask"].ravel())
    tau = truth["tau"].ravel() / truth["frame_time"]
    beta, amp = truth["beta"].ravel(), truth["A"].ravel()
    c = MultiTauCorrelator(x.shape[1], n_levels=5)
    for first in range(0, t_len, 256):
        c.update(x[first:first + 256])
    lags, g = c.g2()
    sel = lags <= t_len / 40
    t = lags[sel].astype(float)
    phi = np.exp(-2 * (t[None, :] / tau[wire, None]) ** beta[wire, None])
    model = 1 + amp[wire, None] * phi
    sigma = amp[wire] * np.sqrt(tau[wire] / t_len)
    for p in np.linspace(0, wire.size - 1, 6).round().astype(int):
        assert np.all(np.abs(g[wire[p], sel] - model[p]) <= 8 * sigma[p])
    norm = (g[wire][:, sel] - 1) / amp[wire, None] - phi
    short = t <= np.nanmin(tau[wire])
    bound = 5 * np.mean(np.sqrt(tau[wire] / t_len)) / np.sqrt(wire.size)
    assert np.all(np.abs(norm[:, short].mean(0)) <= bound)


# --- (c) streaming properties ------------------------------------------------------------------

def test_chunking_gives_identical_state():
    x = speckle_series(500, npix=1100, seed=5).astype(np.float32)  # > one pixel block of the kernel

    def run(step):
        c = MultiTauCorrelator(x.shape[1], n_levels=6)
        for first in range(0, x.shape[0], step):
            c.update(x[first:first + step])
        return c

    one, chunks, whole = run(1), run(37), run(x.shape[0])
    for name in MultiTauCorrelator._STATE_ARRAYS:
        assert np.array_equal(getattr(one, name), getattr(whole, name)), name
        assert np.array_equal(getattr(chunks, name), getattr(whole, name)), name
    assert one.n_frames == chunks.n_frames == whole.n_frames == 500
    single = MultiTauCorrelator(x.shape[1], n_levels=6)
    for frame in x:
        single.update(frame)  # (npix,) is one frame
    assert np.array_equal(single.sum_product, whole.sum_product)


def test_state_round_trip_continues_exactly():
    x = speckle_series(400, npix=20, seed=6)
    full = MultiTauCorrelator(20, n_levels=5)
    full.update(x)
    first = MultiTauCorrelator(20, n_levels=5)
    first.update(x[:171])
    resumed = MultiTauCorrelator.from_state(first.state())
    resumed.update(x[171:])
    again = pickle.loads(pickle.dumps(first))
    again.update(x[171:])
    for c in (resumed, again):
        assert np.array_equal(c.g2()[1], full.g2()[1], equal_nan=True)
        assert c.n_frames == 400


def masked_g2(x: np.ndarray, present: np.ndarray, lag: int, b: int) -> tuple[np.ndarray, int]:
    """Symmetric g2 of the b-binned series at binned lag ``lag``, over the pairs of bins whose frames all
    arrived, and the number of such pairs (numpy, from the definition)."""
    nb = x.shape[0] // b
    xb = x[:nb * b].reshape(nb, b, -1).mean(axis=1)
    whole = present[:nb * b].reshape(nb, b).all(axis=1)
    ok = whole[:nb - lag] & whole[lag:]
    past, future = xb[:nb - lag][ok], xb[lag:][ok]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.mean(past * future, axis=0) / (np.mean(past, axis=0) * np.mean(future, axis=0)), int(ok.sum())


def test_skipped_frames_take_no_part_in_any_pair():
    """A lost stretch and a lost single frame: every lag's g2 and pair count equal the definition over the pairs
    (of 2^i-binned frames) whose frames all arrived; lags keep their time meaning across the gaps."""
    x = speckle_series(400, npix=9, seed=9)
    present = np.ones(400, dtype=bool)
    present[130:178] = present[301] = False
    c = MultiTauCorrelator(9, n_levels=5, per_level=6)
    c.update(x[:130])
    c.skip(48)
    c.update(x[178:301])
    c.skip(1)
    c.update(x[302:])
    assert c.n_frames == 400
    lags, g = c.g2()
    for k, (lag, level) in enumerate(zip(lags, c.levels[1:])):
        b = 2 ** level
        want, pairs = masked_g2(x, present, lag // b, b)
        assert c.counts[k + 1] == pairs
        np.testing.assert_allclose(g[:, k], want, rtol=1e-10)
    skipped = MultiTauCorrelator(9, n_levels=5, per_level=6)
    skipped.update(x[:130])
    skipped.skip(0)                        # nothing lost: no effect
    with pytest.raises(ValueError):
        skipped.skip(-1)
    assert skipped.n_frames == 130


def test_memory_does_not_grow_with_the_series_and_missing_lags_are_nan():
    c = MultiTauCorrelator(50, n_levels=6)
    size = c.nbytes
    c.update(np.ones((3, 50)))
    lags, g = c.g2()
    assert np.all(g[:, lags <= 2] == 1) and np.all(np.isnan(g[:, lags > 2]))
    c.update(np.ones((5000, 50), dtype=np.uint16))
    assert c.nbytes == size and c.n_frames == 5003 and np.all(c.g2()[1] == 1)


def test_float32_state_is_close_to_float64():
    x = speckle_series(600, npix=16, seed=7)
    c64, c32 = MultiTauCorrelator(16, n_levels=5), MultiTauCorrelator(16, n_levels=5, dtype=np.float32)
    c64.update(x)
    c32.update(x)
    np.testing.assert_allclose(c32.g2()[1], c64.g2()[1], rtol=1e-4)


def test_dark_pixel_gives_nan_not_a_warning():
    x = speckle_series(100, npix=4, seed=8)
    x[:, 2] = 0
    c = MultiTauCorrelator(4, n_levels=3)
    c.update(x)
    g = c.g2()[1]
    assert np.all(np.isnan(g[2])) and np.all(np.isfinite(np.delete(g, 2, axis=0)))
    assert np.all(np.isnan(fft_g2(x, np.array([1, 5]))[2]))


# --- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(npix=0), dict(npix=2.5), dict(npix=4, per_level=7), dict(npix=4, per_level=0),
                                    dict(npix=4, n_levels=0), dict(npix=4, dtype=np.int32)])
def test_constructor_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        MultiTauCorrelator(**kwargs)


def test_update_and_fft_g2_reject_bad_input():
    c = MultiTauCorrelator(4)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        c.update(np.ones((3, 5)))
    with pytest.raises(ValueError, match="real"):
        c.update(np.ones((3, 4), dtype=complex))
    with pytest.raises(ValueError, match="lacks"):
        MultiTauCorrelator.from_state({"npix": 4})
    bad = c.state()
    bad["sum_past"] = bad["sum_past"][:, :1]
    with pytest.raises(ValueError, match="shape"):
        MultiTauCorrelator.from_state(bad)
    with pytest.raises(ValueError, match="at least 2"):
        fft_g2(np.ones((1, 4)))
    with pytest.raises(ValueError, match="array"):
        fft_g2(np.ones(10))
    with pytest.raises(ValueError, match="lags"):
        fft_g2(np.ones((10, 4)), np.array([10]))
    with pytest.raises(ValueError, match="lags"):
        fft_g2(np.ones((10, 4)), np.array([1.5]))
    with pytest.raises(ValueError):
        multi_tau_lags(3, 5)

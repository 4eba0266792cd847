"""Drift tracking: known subpixel translations of a static bright feature are recovered."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from emlive.analyzers.drift import DriftSmoother, DriftTracker, bright_feature_window, smooth_drift, undo_shift


def _series(shifts: np.ndarray, rng) -> np.ndarray:
    yy, xx = np.mgrid[0:48, 0:48]
    base = 20 + 1000 * np.exp(-((yy - 20.3) ** 2 + (xx - 27.8) ** 2) / (2 * 1.6 ** 2))
    frames = [ndimage.fourier_shift(np.fft.fft2(base), s) for s in shifts]
    frames = np.real(np.fft.ifft2(frames)).astype(np.float32)
    return frames + rng.normal(0, 2, frames.shape).astype(np.float32)


@pytest.mark.parametrize(("rereference_every", "overlap"), [(0, 0), (7, 0), (7, 3)])
def test_known_translations_are_recovered(rereference_every, overlap):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 40)
    shifts = np.stack([1.7 * t + 0.3 * np.sin(6 * t), -2.4 * t], axis=1)
    shifts -= shifts[0]
    tracker = DriftTracker(rereference_every=rereference_every, overlap=overlap, upsample=100)
    est = np.concatenate([tracker.update(chunk) for chunk in np.array_split(_series(shifts, rng), 3)])
    np.testing.assert_allclose(est, shifts, atol=0.03)
    assert tracker.n_frames == 40


def test_window_is_on_the_bright_feature_and_undo_shift_inverts():
    rng = np.random.default_rng(1)
    frames = _series(np.array([[0.0, 0.0], [2.0, -1.0]]), rng)
    wy, wx = bright_feature_window(frames[0], size=16)
    assert wy.start <= 20 < wy.stop and wx.start <= 28 < wx.stop
    back = undo_shift(frames[1], (2.0, -1.0))
    np.testing.assert_allclose(back[8:40, 8:40], frames[0][8:40, 8:40], atol=15)  # noise 2, linear interpolation


def test_smoothing_keeps_a_linear_trend_and_averages_noise():
    rng = np.random.default_rng(2)
    t = np.arange(300.0)
    trend = np.stack([0.01 * t - 0.5, -0.003 * t], axis=1)
    np.testing.assert_allclose(smooth_drift(trend, 10), trend, atol=1e-12)  # ends included: no lag
    noisy = trend + rng.normal(0, 0.05, trend.shape)
    err = smooth_drift(noisy, 10) - trend
    assert np.sqrt(np.mean(err[10:-10] ** 2)) < 0.05 / np.sqrt(21) * 1.3  # a 21-frame mean inside the series


@pytest.mark.parametrize("pieces", [1, 4, 13])
def test_streaming_smoother_equals_the_batch_smoothing(pieces):
    rng = np.random.default_rng(3)
    raw = np.cumsum(rng.normal(0, 0.05, (157, 2)), axis=0)
    for from_first in (False, True):
        sm = DriftSmoother(12, from_first=from_first)
        out = np.concatenate([sm.push(p) for p in np.array_split(raw, pieces)] + [sm.flush()])
        batch = smooth_drift(raw, 12)
        np.testing.assert_allclose(out, batch - batch[0] if from_first else batch, atol=1e-9)


def test_smoothing_across_lost_frames_uses_their_indices():
    t = np.concatenate([np.arange(0, 100), np.arange(150, 300)])     # frames 100..149 never arrived
    trend = np.stack([0.01 * t, -0.02 * t + 1.0], axis=1)
    np.testing.assert_allclose(smooth_drift(trend, 10, frames=t), trend, atol=1e-9)
    assert np.abs(smooth_drift(trend, 10) - trend).max() > 0.1        # taken as contiguous, the gap is a jump
    sm = DriftSmoother(10, from_first=False)
    parts = [sm.push(trend[i:i + 37], t[i:i + 37]) for i in range(0, t.size, 37)] + [sm.flush()]
    np.testing.assert_allclose(np.concatenate(parts), trend, atol=1e-9)


def test_bad_input():
    with pytest.raises(ValueError):
        DriftTracker(upsample=0)
    with pytest.raises(ValueError, match="overlap"):
        DriftTracker(rereference_every=10, overlap=10)
    with pytest.raises(ValueError):
        DriftSmoother(-1)
    with pytest.raises(ValueError):
        DriftTracker().update(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        bright_feature_window(np.zeros((6, 6)))

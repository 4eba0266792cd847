"""Tests of emlive.simulators.detector."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from emlive.simulators import detector
from emlive.simulators.detector import DetectorModel, bin_electrons, frame_rng


@pytest.mark.parametrize("path", ["per_pixel", "binned"])
@pytest.mark.parametrize("gain", [1.0, 3.0])
def test_counts_have_poisson_mean_and_gain_scaled_variance(path, gain):
    """mean = g λ and var = g² λ = g mean. With n = 4000 frames the sample mean of one pixel
    scatters by g sqrt(λ / n) and the variance by g² λ sqrt(2 / n); averaged over 64 independent
    pixels both shrink 8-fold more; allow 5 of those."""
    det = DetectorModel(shape=(8, 8), gain=gain, dtype="float32")
    lam = 0.3
    rng = np.random.default_rng(7)
    n = 4000
    if path == "per_pixel":
        frames = det.expected_to_counts(np.full((n, 8, 8), lam), rng)
    else:
        frames = np.stack([det.sample(np.full((8, 8), 1 / 64), 64 * lam, rng) for _ in range(n)])
    mean = frames.mean(axis=0).mean()
    var = frames.var(axis=0, ddof=1).mean()
    assert mean == pytest.approx(gain * lam, abs=5 * gain * math.sqrt(lam / n) / 8)
    assert var == pytest.approx(gain ** 2 * lam, abs=5 * gain ** 2 * lam * math.sqrt(2 / n) / 8)


def test_binned_and_per_pixel_paths_agree_per_pixel():
    """Both samplers give each pixel the mean of the pattern (a non-uniform one)."""
    pattern = np.arange(1.0, 17.0).reshape(4, 4)
    pattern /= pattern.sum()
    det = DetectorModel(shape=(4, 4), dtype="float64")
    rng = np.random.default_rng(3)
    n, dose = 20000, 4.0
    binned = sum(det.sample_electrons(pattern, dose, rng) for _ in range(n)) / n
    tol = 5 * np.sqrt(dose * pattern / n)
    assert np.all(np.abs(binned - dose * pattern) < tol)
    counts = bin_electrons(np.cumsum(np.full(10, 0.0)), rng)
    assert counts.sum() == 0 and counts.shape == (10,)


def test_dead_pixels_read_zero_and_hot_pixels_read_high():
    det = DetectorModel(shape=(64, 64), dead_fraction=0.02, hot_fraction=0.01, hot_level=3000, seed=9)
    assert det.dead_mask.sum() == round(0.02 * 4096) and det.hot_mask.sum() == round(0.01 * 4096)
    assert not (det.dead_mask & det.hot_mask).any()
    frame = det.expected_to_counts(np.full((64, 64), 10.0), np.random.default_rng(1))
    assert (frame[det.dead_mask] == 0).all()
    assert (frame[det.hot_mask] >= 3000).all()
    good = ~det.dead_mask & ~det.hot_mask
    assert frame[good].max() < 100 and frame[good].min() >= 0


def test_saturation_clips_and_dtype_is_respected():
    det = DetectorModel(shape=(4, 4), gain=10.0, saturation=1000, dtype="uint16")
    frame = det.expected_to_counts(np.full((4, 4), 500.0), np.random.default_rng(0))
    assert frame.dtype == np.uint16 and (frame == 1000).all()
    with pytest.raises(ValueError, match="does not fit"):
        DetectorModel(saturation=70000, dtype="uint16")
    wide = DetectorModel(shape=(4, 4), saturation=1e6, dtype="uint32")
    assert wide.expected_to_counts(np.full((4, 4), 1e5), np.random.default_rng(0)).min() > 65535


def test_beam_stop_blocks_electrons_and_the_rod_reaches_the_edge():
    det = DetectorModel(shape=(33, 33), beam_stop_radius=4.0, beam_stop_rod_width=3.0,
                        beam_stop_rod_angle=0.0)
    mask = det.beam_stop_mask
    assert mask[16, 16] and mask[16, 20] and not mask[16, 11] and mask[16, 32]  # disk, rod towards +x
    assert not mask[0, 16] and not mask[16, 0]
    frames = det.expected_to_counts(np.full((50, 33, 33), 20.0), np.random.default_rng(0))
    assert (frames[:, mask] == 0).all() and (frames[:, ~mask] > 0).mean() > 0.99
    binned = det.sample(np.full((33, 33), 1 / 33 ** 2), 300.0, np.random.default_rng(0))
    assert (binned[mask] == 0).all() and binned.sum() > 0


@pytest.mark.parametrize(("ratio", "angle"), [(1.1, 0.3), (0.9, -1.0), (1.0, 0.0)])
def test_ellipse_distortion_maps_a_circle_to_the_expected_ellipse(ratio, angle):
    """A physical circle of radius r must appear on the detector as the ellipse with semi-axes
    r * ratio along ``angle`` and r across it: detector points of that ellipse map back onto it."""
    det = DetectorModel(shape=(64, 64), ellipse_ratio=ratio, ellipse_angle=angle)
    r = 20.0
    s = np.linspace(0, 2 * np.pi, 73)
    # The expected ellipse written out independently, in (x, y) with y along rows.
    x = r * ratio * np.cos(s) * np.cos(angle) - r * np.sin(s) * np.sin(angle)
    y = r * ratio * np.cos(s) * np.sin(angle) + r * np.sin(s) * np.cos(angle)
    py, px = det.distort_coordinates(y, x)
    np.testing.assert_allclose(np.hypot(py, px), r, rtol=1e-12)
    # The major-axis end maps to (r cos φ, r sin φ): the direction is preserved.
    py, px = det.distort_coordinates(r * ratio * np.sin(angle), r * ratio * np.cos(angle))
    np.testing.assert_allclose([px, py], [r * np.cos(angle), r * np.sin(angle)], atol=1e-12)
    radius = det.physical_radius()
    assert radius.shape == (64, 64) and radius.min() < 1


def test_everything_is_deterministic_given_the_seed():
    a = DetectorModel(shape=(32, 32), dead_fraction=0.05, hot_fraction=0.05, seed=4)
    b = DetectorModel(shape=(32, 32), dead_fraction=0.05, hot_fraction=0.05, seed=4)
    c = DetectorModel(shape=(32, 32), dead_fraction=0.05, hot_fraction=0.05, seed=5)
    np.testing.assert_array_equal(a.dead_mask, b.dead_mask)
    assert not np.array_equal(a.dead_mask, c.dead_mask)
    mean = np.full((32, 32), 1 / 1024)
    np.testing.assert_array_equal(a.sample(mean, 200.0, frame_rng(1, 7)), b.sample(mean, 200.0, frame_rng(1, 7)))
    assert not np.array_equal(a.sample(mean, 200.0, frame_rng(1, 7)), a.sample(mean, 200.0, frame_rng(1, 8)))
    np.testing.assert_array_equal(frame_rng(3, 11).random(4), frame_rng(3, 11, np.random.SFC64(0)).random(4))


def test_bad_parameters_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="dead_fraction"):
        DetectorModel(dead_fraction=1.5)
    with pytest.raises(ValueError, match="gain"):
        DetectorModel(gain=0.0)
    with pytest.raises(ValueError, match="detector shape"):
        DetectorModel(shape=(8, 8)).expected_to_counts(np.zeros((4, 4)), np.random.default_rng(0))
    with pytest.raises(ValueError, match=">= 0"):
        DetectorModel(shape=(2, 2)).sample(-np.ones((2, 2)), 1.0, np.random.default_rng(0))


def test_docstring_example_runs():
    assert doctest.testmod(detector).failed == 0

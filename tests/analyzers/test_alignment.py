"""Tilt-series alignment: known shifts put on the phantom's HAADF maps are found again."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from emlive.analyzers.alignment import apply_shifts, com_x, profile_shift, tilt_shifts
from emlive.simulators import EDSParticle


@pytest.fixture(scope="module")
def haadf():
    sim = EDSParticle(shape=48, voxel_nm=1.5, tilt_angles_deg=np.linspace(-75, 75, 11), seed=2)
    return np.stack([sim.haadf(t, noise=False) for t in range(11)])


def test_known_shifts_are_recovered(haadf):
    rng = np.random.default_rng(0)
    truth = rng.uniform(-3, 3, (haadf.shape[0], 2))
    moved = np.stack([np.real(np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(m), s))) for m, s in zip(haadf, truth)])
    found = tilt_shifts(moved) - tilt_shifts(haadf)  # relative to the unshifted series' own offsets
    truth_rel = truth - truth.mean(axis=0) * np.array([1, 0])  # y referenced to the mean, as tilt_shifts does
    np.testing.assert_allclose(found[:, 0], truth_rel[:, 0], atol=0.1)
    np.testing.assert_allclose(found[:, 1], truth[:, 1], atol=0.1)
    aligned = apply_shifts(moved, -found)  # back onto the original frame, up to the common y offset
    expected = apply_shifts(haadf, np.tile([truth[:, 0].mean(), 0.0], (haadf.shape[0], 1)))
    for a, e in zip(aligned, expected):
        assert np.corrcoef(a.ravel(), e.ravel())[0, 1] > 0.995


def test_helpers():
    img = np.zeros((5, 9))
    img[2, 6] = 1.0
    assert com_x(img) == 6.0 and np.isnan(com_x(np.zeros((3, 3))))
    y = np.exp(-0.5 * ((np.arange(40) - 17.0) / 2.5) ** 2)
    assert profile_shift(y, np.roll(y, 3)) == pytest.approx(3.0, abs=0.05)
    with pytest.raises(ValueError):
        tilt_shifts(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        apply_shifts(np.zeros((2, 4, 4)), np.zeros((3, 2)))

"""Tests of emlive.analyzers.masks: ring map, static mask, and the numba auto mask against a plain numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emlive.analyzers.calibration import corrected_radius
from emlive.analyzers.masks import auto_mask, ring_index, ring_order, static_mask
from emlive.simulators.laminate import SnemLaminate
from emlive.stream.protocol import Calibration


# ------------------------------------------------------------------ reference
def reference_auto_mask(frames, ring, n_rings, good=None, *, alpha=3.5, lower=1.0, upper=None, saturation=None,
                        max_iter=10):
    """The rule written out: per frame, per ring, np.mean / np.std of the good pixels, drop |v - mean| > alpha std."""
    frames = np.asarray(frames)
    data = frames.reshape(frames.shape[0], -1).astype(np.float64)
    members = [np.flatnonzero(ring == k) for k in range(n_rings)]
    static = np.ones(data.shape[1], bool) if good is None else np.asarray(good).ravel()
    out = np.zeros(data.shape, bool)
    for f, v in enumerate(data):
        m = static & np.isfinite(v)
        if lower is not None:
            m &= v >= lower
        if upper is not None:
            m &= v <= upper
        if saturation is not None:
            m &= v < saturation
        for idx in members:
            for _ in range(max_iter):
                sel = idx[m[idx]]
                if sel.size <= 1:
                    break
                vals = v[sel]
                mean, std = np.mean(vals), np.std(vals)
                if std == 0:
                    break
                bad = np.abs(vals - mean) > alpha * std
                if not bad.any():
                    break
                m[sel[bad]] = False
        out[f] = m
    return out


# ------------------------------------------------------------------ data
N = 96
CAL = Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.1, center=(47.3, 48.6), ellipse=(1.04, 25.0))


def amorphous_with_spots(n_frames=6, seed=0):
    """Amorphous rings + Poisson noise + Gaussian Bragg spots.

    Returns frames (uint16), the spot pixels a 3.5σ test can see (the spot adds far more than the ring's
    noise), and every pixel a spot touches at all (its faint wings), each bool (n, npix).
    """
    rng = np.random.default_rng(seed)
    r = corrected_radius((N, N), CAL)
    lam = 300 * np.exp(-r / 25) + 80 * np.exp(-((r - 22) ** 2) / 18) + 40 * np.exp(-((r - 38) ** 2) / 30) + 8
    yy, xx = np.mgrid[0:N, 0:N].astype(float)
    frames = np.empty((n_frames, N, N), np.uint16)
    spots = np.zeros((n_frames, N * N), bool)
    touched = np.zeros((n_frames, N * N), bool)
    for f in range(n_frames):
        add = np.zeros((N, N))
        for _ in range(8):
            rad, phi = rng.uniform(12, 44), rng.uniform(0, 2 * np.pi)
            cy, cx = CAL.center[0] + rad * np.sin(phi), CAL.center[1] + rad * np.cos(phi)
            add += rng.uniform(800, 3000) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.0 ** 2))
        frames[f] = rng.poisson(lam + add)
        spots[f] = (add > 10 * np.sqrt(lam) + 20).ravel()
        touched[f] = (add > 0.5).ravel()
    return frames, spots, touched


@pytest.fixture(scope="module")
def synthetic():
    frames, spots, touched = amorphous_with_spots()
    ring, n_rings = ring_index((N, N), CAL)
    good = static_mask((N, N), edge=3, center=CAL.center, beam_stop_radius=3)
    return frames, (spots, touched), ring, n_rings, good


@pytest.fixture(scope="module")
def phantom():
    sim = SnemLaminate(scan_shape=(4, 12), seed=1)
    c = sim.calibration
    cal = Calibration(beam_energy_kev=c["beam_energy_kev"], reciprocal_pixel_size=c["reciprocal_pixel_size"],
                      center=tuple(float(v) for v in c["center"]),
                      ellipse=(c["ellipse"]["ratio"], math.degrees(c["ellipse"]["angle"])))
    # Ni (crystal), glass and interface frames.
    frames = np.concatenate([sim.frames(0, 2), sim.frames(4, 2), sim.frames(2, 1)])
    return frames, cal, c["saturation"]


# ------------------------------------------------------------------ ring_index
def test_ring_index_follows_corrected_radius():
    r = corrected_radius((N, N), CAL).ravel()
    ring, n_rings = ring_index((N, N), CAL, ring_width=2.0, r_min=5.0, r_max=40.0)
    assert ring.dtype == np.int32 and ring.shape == (N * N,)
    assert n_rings == 18
    inside = (r >= 5) & (r < 40)
    np.testing.assert_array_equal(ring[~inside], -1)
    np.testing.assert_array_equal(ring[inside], np.floor((r[inside] - 5) / 2).astype(int))


def test_ring_index_default_covers_all_pixels():
    ring, n_rings = ring_index((N, N), CAL)
    r = corrected_radius((N, N), CAL).ravel()
    assert (ring >= 0).all() and ring.max() == n_rings - 1
    np.testing.assert_array_equal(ring, np.floor(r).astype(int))


def test_ring_order_groups_rings():
    ring, n_rings = ring_index((N, N), CAL, r_max=30.0)
    perm, starts = ring_order(ring, n_rings)
    assert sorted(perm.tolist()) == list(range(N * N))
    for k in (0, 7, n_rings - 1):
        assert set(perm[starts[k]:starts[k + 1]].tolist()) == set(np.flatnonzero(ring == k).tolist())
    assert (ring[perm[starts[n_rings]:]] == -1).all()


@pytest.mark.parametrize("kwargs", [dict(ring_width=0), dict(ring_width=float("nan")), dict(r_min=-1),
                                    dict(r_min=5, r_max=5), dict(r_max=float("inf"))])
def test_ring_index_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        ring_index((N, N), CAL, **kwargs)


def test_ring_index_rejects_bad_shape():
    with pytest.raises(ValueError):
        ring_index((0, 5), CAL)


# ------------------------------------------------------------------ static_mask
def test_static_mask_true_means_good():
    dead = np.array([[10, 20], [30, 40]])
    extra = np.ones((20, 30), bool)
    extra[5, 6] = False
    m = static_mask((20, 30), edge=3, center=(9.0, 14.0), beam_stop_radius=2.0, dead_pixels=dead[:0], extra=extra)
    yy, xx = np.mgrid[0:20, 0:30]
    expect = (yy >= 3) & (yy < 17) & (xx >= 3) & (xx < 27) & (np.hypot(yy - 9, xx - 14) > 2) & extra
    np.testing.assert_array_equal(m, expect)
    m2 = static_mask((50, 50), edge=0, dead_pixels=dead)
    assert m2.sum() == 2500 - 2 and not m2[10, 20] and not m2[30, 40]
    img = np.zeros((50, 50), bool)
    img[1, 2] = True
    assert not static_mask((50, 50), edge=0, dead_pixels=img)[1, 2]
    assert static_mask((50, 50), edge=0).all()
    # Default centre is the geometric centre.
    m3 = static_mask((11, 11), edge=0, beam_stop_radius=0.5)
    assert m3.sum() == 120 and not m3[5, 5]


@pytest.mark.parametrize("kwargs", [dict(edge=-1), dict(beam_stop_radius=-1.0), dict(dead_pixels=np.array([[60, 1]])),
                                    dict(dead_pixels=np.zeros((3, 3), bool)), dict(dead_pixels=np.array([1.5, 2.0])),
                                    dict(extra=np.ones((50, 50), int)), dict(extra=np.ones((5, 5), bool))])
def test_static_mask_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        static_mask((50, 50), **kwargs)


# ------------------------------------------------------------------ auto_mask
def test_auto_mask_equals_reference_on_synthetic(synthetic):
    frames, _, ring, n_rings, good = synthetic
    got = auto_mask(frames, ring, n_rings, good)
    assert got.dtype == bool and got.shape == (frames.shape[0], N * N)
    np.testing.assert_array_equal(got, reference_auto_mask(frames, ring, n_rings, good))


def test_auto_mask_removes_spots_keeps_amorphous(synthetic):
    frames, (spots, touched), ring, n_rings, good = synthetic
    got = auto_mask(frames, ring, n_rings, good)
    gb = np.broadcast_to(good.ravel(), got.shape)
    spot_px = spots & gb
    assert spot_px.sum() > 100
    recall = (~got[spot_px]).mean()
    assert recall >= 0.95
    # Amorphous pixels: static-good and untouched by any spot; a 3.5σ clip of Poisson rings loses very few.
    amorphous = gb & ~touched & (frames.reshape(got.shape) >= 1)
    lost = (~got[amorphous]).mean()
    assert lost < 0.02


@pytest.mark.parametrize("kwargs", [dict(), dict(alpha=2.5, max_iter=3), dict(lower=None, upper=400.0),
                                    dict(saturation=200.0, alpha=3.0), dict(max_iter=1)])
def test_auto_mask_options_equal_reference(synthetic, kwargs):
    frames, _, ring, n_rings, good = synthetic
    np.testing.assert_array_equal(auto_mask(frames[:3], ring, n_rings, good, **kwargs),
                                  reference_auto_mask(frames[:3], ring, n_rings, good, **kwargs))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint32, np.float32, np.float64])
def test_auto_mask_any_dtype(synthetic, dtype):
    frames, _, ring, n_rings, good = synthetic
    data = np.minimum(frames[:2], 255).astype(dtype) if dtype == np.uint8 else frames[:2].astype(dtype)
    if np.issubdtype(dtype, np.floating):
        data = data + np.float32(0.25)  # non-integer values
    got = auto_mask(data.reshape(2, -1), ring, n_rings, good.ravel())
    np.testing.assert_array_equal(got, reference_auto_mask(data, ring, n_rings, good))


def test_auto_mask_non_finite_is_bad_and_ring_minus_one_keeps_thresholds(synthetic):
    frames, _, _, _, _ = synthetic
    ring, n_rings = ring_index((N, N), CAL, r_min=10.0, r_max=30.0)
    data = frames[:2].astype(np.float64)
    data[0, 50, 50] = np.nan
    data[1, 40, 40] = -np.inf
    data[1, 41, 41] = np.inf
    got = auto_mask(data, ring, n_rings, upper=500.0)
    np.testing.assert_array_equal(got, reference_auto_mask(data, ring, n_rings, upper=500.0))
    np.testing.assert_array_equal(auto_mask(data, ring, n_rings, lower=None),
                                  reference_auto_mask(data, ring, n_rings, lower=None))
    assert not got[0, 50 * N + 50] and not got[1, 40 * N + 40] and not got[1, 41 * N + 41]
    out = ring == -1
    flat = data.reshape(2, -1)
    np.testing.assert_array_equal(got[:, out], (np.isfinite(flat) & (flat >= 1) & (flat <= 500))[:, out])


def test_auto_mask_constant_and_tiny_rings_are_left_alone():
    ring = np.array([0, 0, 0, 1, 1, 2, -1], np.int32)
    frames = np.array([[5, 5, 5, 7, 900, 3, 0]], np.uint16)
    got = auto_mask(frames, ring, 3)
    np.testing.assert_array_equal(got, [[True, True, True, True, True, True, False]])
    np.testing.assert_array_equal(got, reference_auto_mask(frames, ring, 3))


def test_auto_mask_equals_reference_on_phantom(phantom):
    frames, cal, saturation = phantom
    shape = frames.shape[1:]
    ring, n_rings = ring_index(shape, cal)
    good = static_mask(shape, edge=3)
    got = auto_mask(frames, ring, n_rings, good, saturation=saturation)
    np.testing.assert_array_equal(got, reference_auto_mask(frames, ring, n_rings, good, saturation=saturation))
    # The saturated direct beam is gone and most of the pattern stays.
    flat = frames.reshape(frames.shape[0], -1)
    assert not got[flat >= saturation].any()
    assert (flat >= saturation).any()
    counted = (flat >= 1) & (flat < saturation) & good.ravel()
    assert not got[~counted].any()
    assert got[counted].mean() > 0.8


def test_auto_mask_rejects_bad_input(synthetic):
    frames, _, ring, n_rings, good = synthetic
    bad_calls = [
        lambda: auto_mask(frames[:, :10], ring, n_rings),
        lambda: auto_mask(frames[0], ring, n_rings),
        lambda: auto_mask(frames.astype(bool), ring, n_rings),
        lambda: auto_mask(frames.astype(complex), ring, n_rings),
        lambda: auto_mask(frames, ring, n_rings, good.astype(int)),
        lambda: auto_mask(frames, ring, n_rings, good[:10]),
        lambda: auto_mask(frames, ring, n_rings, alpha=0),
        lambda: auto_mask(frames, ring, n_rings, max_iter=0),
        lambda: auto_mask(frames, ring, n_rings, lower=float("nan")),
        lambda: auto_mask(frames, ring, n_rings - 1),
        lambda: auto_mask(frames, ring.astype(float), n_rings),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()


def test_auto_mask_with_precomputed_order_is_the_same(synthetic):
    frames, _, ring, n_rings, good = synthetic
    order = ring_order(ring, n_rings)
    np.testing.assert_array_equal(auto_mask(frames, ring, n_rings, good, order=order),
                                  reference_auto_mask(frames, ring, n_rings, good))
    with pytest.raises(ValueError):
        auto_mask(frames, ring, n_rings, good, order=(order[0][:-1], order[1]))


def test_auto_mask_non_finite_pixel_does_not_stop_its_ring_clipping(synthetic):
    """A NaN/inf pixel is bad and selected out of the ring statistics: the rest of its ring is still clipped."""
    frames, _, ring, n_rings, good = synthetic
    data = frames[:2].astype(np.float64).reshape(2, -1)
    k = int(ring[np.flatnonzero(ring >= 0)[len(np.flatnonzero(ring >= 0)) // 2]])
    members = np.flatnonzero(ring == k)
    data[:, members[0]] = np.nan
    data[:, members[1]] = np.inf
    data[:, members[2]] = 1e6  # an outlier on the same ring
    got = auto_mask(data, ring, n_rings, good)
    np.testing.assert_array_equal(got, reference_auto_mask(data, ring, n_rings, good))
    assert not got[:, members[:3]].any()

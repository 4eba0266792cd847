"""Tests of emlive.analyzers.integration: the batched CSR integrator against pyFAI's own integrate1d."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # pyFAI's OpenMP engine stalls on this machine otherwise

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from emlive.analyzers.calibration import (  # noqa: E402
    camera_length_from_pixel_size, corrected_radius, electron_wavelength, ellipse_matrix)
from emlive.analyzers.integration import RadialIntegrator, inscribed_radius  # noqa: E402
from emlive.analyzers.masks import auto_mask, ring_index, static_mask  # noqa: E402
from emlive.simulators.laminate import SnemLaminate  # noqa: E402
from emlive.stream.protocol import Calibration  # noqa: E402

N = 80
CAL = Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.12, center=(38.6, 40.2), ellipse=(1.06, 35.0))
RTOL = 1e-5


def ring_frames(cal, n=4, shape=(N, N), seed=0, r0=22.0, width=1.5):
    """Poisson frames of an amorphous ring at undistorted radius r0 (elliptical on the detector for cal)."""
    r = corrected_radius(shape, cal)
    lam = 400 * np.exp(-((r - r0) ** 2) / (2 * width ** 2)) + 150 * np.exp(-r / 12) + 20
    return np.random.default_rng(seed).poisson(lam, (n, *shape)).astype(np.uint16)


def assert_matches(got, ref):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    assert ok.sum() > 0
    rel = np.abs(got[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-300)
    assert rel.max() <= RTOL, rel.max()


@pytest.fixture(scope="module")
def integ():
    return RadialIntegrator((N, N), CAL)


@pytest.fixture(scope="module")
def masked_chunk():
    frames = ring_frames(CAL)
    ring, n_rings = ring_index((N, N), CAL)
    good = auto_mask(frames, ring, n_rings, static_mask((N, N), edge=3), alpha=3.0)
    return frames, good


# ------------------------------------------------------------------ geometry
def test_default_bins_one_per_pixel_to_inscribed_circle(integ):
    r_in = inscribed_radius((N, N), CAL)
    assert integ.npt == math.floor(r_in)
    np.testing.assert_allclose(np.diff(integ.radius_edges_px), 1.0)
    assert integ.radius_edges_px[0] == 0.0
    # Without ellipse the inscribed circle is the distance to the nearest detector edge.
    plain = Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.1, center=(30.2, 41.0))
    assert inscribed_radius((64, 90), plain) == pytest.approx(30.7)
    # With it, the circle maps back inside the detector and touches its edge.
    m_inv = np.linalg.inv(ellipse_matrix(*CAL.ellipse))
    t = np.linspace(0, 2 * np.pi, 20001)

    def inside(radius):
        y, x = m_inv @ np.stack([np.sin(t), np.cos(t)]) * radius
        y, x = y + CAL.center[0], x + CAL.center[1]
        return ((y >= -0.5) & (y <= N - 0.5) & (x >= -0.5) & (x <= N - 0.5)).all()

    assert inside(r_in - 1e-9) and not inside(r_in + 1e-3)


def test_q_is_linear_in_radius_and_matches_pyfai_bins(integ):
    np.testing.assert_allclose(integ.q, integ.radius_px * CAL.reciprocal_pixel_size, rtol=1e-15)
    np.testing.assert_allclose(np.diff(integ.q), CAL.reciprocal_pixel_size, rtol=1e-12)
    res = integ.ai.integrate1d(np.ones((N, N)), integ.npt, unit="r_mm", radial_range=integ.radial_range_mm,
                               correctSolidAngle=False, polarization_factor=None)
    np.testing.assert_allclose(res.radial / (integ.pixel_size_m * 1e3), integ.radius_px, rtol=1e-6, atol=1e-5)


def test_ring_at_known_q_peaks_there():
    """A ring drawn at q0 (radius q0/dq in the undistorted plane) comes out at q0."""
    q0 = 3.1
    frame = np.exp(-((corrected_radius((N, N), CAL) - q0 / CAL.reciprocal_pixel_size) ** 2) / (2 * 1.2 ** 2))
    integ = RadialIntegrator((N, N), CAL, npt=120, r_range=(10.0, 40.0))
    prof = integ.integrate(frame[None])[0]
    k = int(np.argmax(prof))
    y0, y1, y2 = prof[k - 1:k + 2]
    q_peak = integ.q[k] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (integ.q[1] - integ.q[0])
    assert q_peak == pytest.approx(q0, abs=0.02 * CAL.reciprocal_pixel_size)


def test_pyfai_geometry_is_the_effective_camera_length(integ):
    assert integ.ai.dist == pytest.approx(camera_length_from_pixel_size(0.12, 200.0, 55e-6))
    assert integ.ai.wavelength == pytest.approx(electron_wavelength(200.0) * 1e-10)
    assert integ.ai.poni1 == pytest.approx((CAL.center[0] + 0.5) * 55e-6)
    assert integ.ai.poni2 == pytest.approx((CAL.center[1] + 0.5) * 55e-6)
    # pyFAI's own radius of every pixel is our undistorted radius.
    r_pyfai = integ.ai.array_from_unit(unit="r_mm", typ="center") / (55e-6 * 1e3)
    np.testing.assert_allclose(r_pyfai.ravel(), corrected_radius((N, N), CAL).ravel(), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------ against pyFAI integrate1d
def test_per_frame_auto_mask_matches_pyfai(integ, masked_chunk):
    frames, good = masked_chunk
    got = integ.integrate(frames, good)
    assert got.shape == (frames.shape[0], integ.npt) and got.dtype == np.float64
    assert (~good).sum(axis=1).min() > 0
    for f in range(frames.shape[0]):
        assert_matches(got[f], integ.integrate_pyfai(frames[f], good[f]))


def test_shared_mask_and_no_mask_match_pyfai(integ, masked_chunk):
    frames, good = masked_chunk
    st = static_mask((N, N), edge=3, beam_stop_radius=4.0, center=CAL.center)
    got = integ.integrate(frames, st)
    nomask = integ.integrate(frames)
    for f in (0, 2):
        assert_matches(got[f], integ.integrate_pyfai(frames[f], st))
        assert_matches(nomask[f], integ.integrate_pyfai(frames[f]))
    # Shared mask = the same mask given per frame.
    np.testing.assert_allclose(integ.integrate(frames, np.broadcast_to(st.ravel(), (4, N * N)).copy()), got,
                               rtol=1e-12)


def test_sums_are_pyfai_signal_and_normalization(integ, masked_chunk):
    frames, good = masked_chunk
    num, den = integ.sums(frames, good)
    res = integ.ai.integrate1d(frames[1], integ.npt, mask=(~good[1]).reshape(N, N).astype(np.int8),
                               unit="r_mm", radial_range=integ.radial_range_mm, correctSolidAngle=False,
                               polarization_factor=None)
    np.testing.assert_allclose(num[1], res.sum_signal.ravel(), rtol=RTOL)
    np.testing.assert_allclose(den[1], res.sum_normalization.ravel(), rtol=RTOL)


def test_phantom_frames_with_auto_mask_match_pyfai():
    sim = SnemLaminate(scan_shape=(4, 12), seed=1)
    c = sim.calibration
    cal = Calibration(beam_energy_kev=c["beam_energy_kev"], reciprocal_pixel_size=c["reciprocal_pixel_size"],
                      center=tuple(float(v) for v in c["center"]),
                      ellipse=(c["ellipse"]["ratio"], math.degrees(c["ellipse"]["angle"])))
    frames = np.concatenate([sim.frames(0, 1), sim.frames(5, 2)])
    shape = frames.shape[1:]
    ring, n_rings = ring_index(shape, cal)
    good = auto_mask(frames, ring, n_rings, static_mask(shape, edge=3), saturation=c["saturation"])
    integ = RadialIntegrator(shape, cal)
    got = integ.integrate(frames, good)
    for f in range(frames.shape[0]):
        assert_matches(got[f], integ.integrate_pyfai(frames[f], good[f]))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.float32, np.float64])
def test_any_dtype_and_flat_frames(integ, masked_chunk, dtype):
    frames, good = masked_chunk
    data = (frames[:2] % 200).astype(dtype)
    expect = integ.integrate(data.astype(np.float64), good[:2])
    np.testing.assert_allclose(integ.integrate(data.reshape(2, -1), good[:2].reshape(2, N, N)), expect, rtol=1e-12)
    assert_matches(expect[1], integ.integrate_pyfai(data[1].astype(np.float64), good[1]))


# ------------------------------------------------------------------ behaviour
def test_bin_without_good_pixels_is_nan(integ, masked_chunk):
    frames, good = masked_chunk
    r = corrected_radius((N, N), CAL).ravel()
    g = good.copy()
    g[1, (r >= 8.5) & (r < 14.5)] = False  # pixels reach ±0.75 px in radius with bbox splitting: bins 10..12 empty
    got = integ.integrate(frames, g)
    assert np.isnan(got[1, 10:13]).all()
    assert not np.isnan(got[0, 10:13]).any() and not np.isnan(got[1, 16:20]).any()
    assert_matches(got[1], integ.integrate_pyfai(frames[1], g[1]))
    num, den = integ.sums(frames, g)
    assert (den[1, 10:13] == 0).all()


def test_distorted_ring_is_as_sharp_as_undistorted():
    """The ellipse correction turns a strongly elliptical ring back into a sharp peak."""
    round_cal = Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.12, center=CAL.center)
    ell_cal = Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.12, center=CAL.center,
                          ellipse=(1.10, 35.0))

    def width(cal_frame, cal_integ):
        frame = np.exp(-((corrected_radius((N, N), cal_frame) - 24.0) ** 2) / (2 * 1.0 ** 2))
        integ = RadialIntegrator((N, N), cal_integ, npt=140, r_range=(10.0, 38.0))
        prof = integ.integrate(frame[None])[0]
        w = prof - prof.min()
        mean = (w * integ.radius_px).sum() / w.sum()
        return math.sqrt((w * (integ.radius_px - mean) ** 2).sum() / w.sum()), mean

    sharp, c_round = width(round_cal, round_cal)
    corrected, c_ell = width(ell_cal, ell_cal)
    uncorrected, _ = width(ell_cal, round_cal)
    assert corrected == pytest.approx(sharp, rel=0.05)
    assert c_ell == pytest.approx(c_round, abs=0.05)
    assert uncorrected > 1.25 * sharp  # the ellipse smears the ring over radii 24..26.4 without the correction


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs", [dict(npt=0), dict(npt=2.5), dict(r_range=(5.0, 5.0)), dict(r_range=(-1.0, 5.0)),
                                    dict(method=("bbox", "histogram", "cython")), dict(pixel_size_m=0.0)])
def test_constructor_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        RadialIntegrator((N, N), CAL, **kwargs)


def test_constructor_rejects_bad_geometry():
    with pytest.raises(ValueError):
        RadialIntegrator((N, N), Calibration(beam_energy_kev=200.0, center=(40.0, 40.0)))
    with pytest.raises(ValueError):
        RadialIntegrator((1, N), CAL)
    with pytest.raises(ValueError):
        RadialIntegrator((N, N), {"center": (1, 2)})


def test_integrate_rejects_bad_input(integ, masked_chunk):
    frames, good = masked_chunk
    bad_calls = [
        lambda: integ.integrate(frames[:, :10]),
        lambda: integ.integrate(frames[0]),
        lambda: integ.integrate(frames.astype(bool)),
        lambda: integ.integrate(frames, good.astype(np.uint8)),
        lambda: integ.integrate(frames, good[:2]),
        lambda: integ.integrate(frames, good[:, :10]),
        lambda: integ.sums(frames, good[0, :10]),
        lambda: integ.integrate_pyfai(frames[0, :10]),
        lambda: integ.integrate_pyfai(frames[0], good[0, :10]),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()


def test_masked_nan_pixels_do_not_leak(integ, masked_chunk):
    frames, good = masked_chunk
    data = frames[:2].astype(np.float64)
    g = good[:2].copy()
    data[0, 30, 30] = data[1, 20, 50] = np.nan
    g[0, 30 * N + 30] = g[1, 20 * N + 50] = False
    per_frame = integ.integrate(data, g)
    assert np.isfinite(per_frame).all()
    assert_matches(per_frame[1], integ.integrate_pyfai(np.nan_to_num(data[1]), g[1]))
    shared = g[0] & g[1]
    assert np.isfinite(integ.integrate(data, shared)).all()
    assert_matches(integ.integrate(data, shared)[0], integ.integrate_pyfai(np.nan_to_num(data[0]), shared))


def test_empty_outer_bins_with_shared_mask():
    """Bins beyond every good pixel (the matrix has entries there, the mask removes all of them) are NaN."""
    integ = RadialIntegrator((N, N), CAL, npt=30, r_range=(0.0, 30.0))
    r = corrected_radius((N, N), CAL).ravel()
    frame = ring_frames(CAL, n=1)
    shared = r < 20.0
    got = integ.integrate(frame, shared)[0]
    assert np.isnan(got[22:]).all() and np.isfinite(got[:19]).all()
    assert_matches(got, integ.integrate_pyfai(frame[0], shared))

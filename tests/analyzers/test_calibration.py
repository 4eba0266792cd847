"""Tests of emlive.analyzers.calibration: seed Eqs. 5/7, ellipse fit and correction, PONI with pyFAI as peer."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from emlive.analyzers import calibration as cal
from emlive.analyzers.calibration import (Ellipse, affine_correction, camera_length_from_bragg_spot,
                                          camera_length_from_pixel_size, corrected_radius, electron_energy,
                                          electron_wavelength, fit_ellipse, from_poni, ring_points,
                                          reciprocal_pixel_size_from_camera_length, to_poni)
from emlive.simulators import SnemLaminate, physics
from emlive.stream.protocol import Calibration

TRUE_RATIO, TRUE_ANGLE_DEG = 1.02, math.degrees(0.4)  # SnemLaminate's default detector


def test_doctests():
    assert doctest.testmod(cal).failed == 0


# ------------------------------------------------------------------ wavelength
@pytest.mark.parametrize("kev", [60.0, 80.0, 200.0, 300.0, 1000.0])
def test_wavelength_matches_simulator(kev):
    assert electron_wavelength(kev) == pytest.approx(physics.wavelength(kev), rel=1e-14)
    assert electron_energy(electron_wavelength(kev)) == pytest.approx(kev, rel=1e-12)


def test_wavelength_array_and_errors():
    e = np.array([100.0, 200.0])
    np.testing.assert_allclose(electron_wavelength(e), physics.wavelength(e), rtol=1e-14)
    with pytest.raises(ValueError):
        electron_wavelength(0.0)


# -------------------------------------------------------------- camera length
def test_eq5_eq7_hand_example():
    # 200 keV: λ = 0.0250793 Å. Seed Eq. 5 with Δk = 0.01 Å⁻¹ (k = 1/d), i.e. dq = 2π·0.01 = 0.0628319 Å⁻¹:
    #   L = 1 / (λ Δk) = 1 / 2.50793e-4 = 3987.35 pixel edges; with p = 55 µm (Eq. 4) L = 0.219304 m.
    # Seed Eq. 7 with Ni {111}: d = 3.524 / √3 = 2.03458 Å. The spot sits at r = 1/(Δk d) = 100 / 2.03458 = 49.150 px,
    #   and L = r d / λ = 49.150 · 2.03458 / 0.0250793 = 3987.35 pixel edges again.
    lam = electron_wavelength(200.0)
    assert lam == pytest.approx(0.0250793, abs=1e-7)
    dq = 2 * math.pi * 0.01
    assert camera_length_from_pixel_size(dq, 200.0) == pytest.approx(3987.35, abs=0.01)
    assert camera_length_from_pixel_size(dq, 200.0, 55e-6) == pytest.approx(0.219304, abs=1e-6)
    d111 = 3.524 / math.sqrt(3)
    assert d111 == pytest.approx(2.03458, abs=1e-5)
    r = 1 / (0.01 * d111)
    assert r == pytest.approx(49.150, abs=1e-3)
    assert camera_length_from_bragg_spot(r, d111, 200.0) == pytest.approx(3987.35, abs=0.01)


@pytest.mark.parametrize("dq,kev,p", [(0.14, 200.0, 55e-6), (0.02, 300.0, 1.0), (0.5, 80.0, 150e-6)])
def test_camera_length_round_trips(dq, kev, p):
    length = camera_length_from_pixel_size(dq, kev, p)
    assert reciprocal_pixel_size_from_camera_length(length, kev, p) == pytest.approx(dq, rel=1e-13)
    # A ring at q sits at r = q / dq px; Eq. 7 with d = 2π/q must give the same L as Eq. 5.
    q = 2.7
    assert camera_length_from_bragg_spot(q / dq, 2 * math.pi / q, kev, p) == pytest.approx(length, rel=1e-13)
    # Eq. 4 = Eq. 5 × pixel edge.
    assert length == pytest.approx(camera_length_from_pixel_size(dq, kev) * p, rel=1e-13)


def test_camera_length_errors():
    with pytest.raises(ValueError):
        camera_length_from_pixel_size(0.0, 200.0)
    with pytest.raises(ValueError):
        camera_length_from_bragg_spot(10.0, -1.0, 200.0)


# -------------------------------------------------------------------- ellipse
def ellipse_points(center, a, b, angle_deg, n=200, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    phi = math.radians(angle_deg)
    u, v = a * np.cos(t), b * np.sin(t)
    x = center[1] + u * math.cos(phi) - v * math.sin(phi) + rng.normal(0, noise, n)
    y = center[0] + u * math.sin(phi) + v * math.cos(phi) + rng.normal(0, noise, n)
    return y, x


@pytest.mark.parametrize("angle", [-70.0, 0.0, 22.9, 89.0])
def test_fit_ellipse_exact(angle):
    y, x = ellipse_points((40.2, 70.7), 30.0, 25.0, angle)
    e = fit_ellipse(y, x)
    np.testing.assert_allclose(e.center, (40.2, 70.7), atol=1e-9)
    assert (e.semi_major, e.semi_minor) == pytest.approx((30.0, 25.0), abs=1e-9)
    assert e.angle_deg == pytest.approx(angle, abs=1e-7)


def test_fit_ellipse_noisy():
    # 400 points with 0.05 px noise on a 1.02 ellipse (the phantom's): the semi-axis difference is 0.4 px, eight times
    # the noise, and each parameter's error falls as noise/√n ≈ 0.0025 px.
    y, x = ellipse_points((63.5, 63.5), 20.4, 20.0, TRUE_ANGLE_DEG, n=400, noise=0.05, seed=3)
    e = fit_ellipse(y, x)
    np.testing.assert_allclose(e.center, (63.5, 63.5), atol=0.02)
    assert e.ratio == pytest.approx(1.02, abs=0.002)
    assert e.angle_deg == pytest.approx(TRUE_ANGLE_DEG, abs=2.0)


def test_fit_ellipse_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_ellipse([1, 2, 3], [1, 2, 3])


def test_affine_correction_matches_simulator_and_circularises():
    sim_m = SnemLaminate(scan_shape=(4, 12), n_inclusions=0, seed=0).detector.distortion_matrix
    e = Ellipse(center=(10.0, 20.0), semi_major=30.6, semi_minor=30.0, angle_deg=TRUE_ANGLE_DEG)
    m, c = affine_correction(e)
    np.testing.assert_allclose(m, sim_m, atol=1e-14)
    assert c == (10.0, 20.0)
    m2, _ = affine_correction(e.to_calibration())
    np.testing.assert_allclose(m2, m, atol=1e-14)
    y, x = ellipse_points(c, 30.6, 30.0, TRUE_ANGLE_DEG)
    py, px = m @ np.array([y - c[0], x - c[1]])
    np.testing.assert_allclose(np.hypot(py, px), 30.0, atol=1e-12)


def test_to_calibration_keeps_other_fields():
    base = Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.14)
    out = Ellipse((1.0, 2.0), 10.2, 10.0, 5.0).to_calibration(base)
    assert out.reciprocal_pixel_size == 0.14 and out.center == (1.0, 2.0)
    assert out.ellipse == pytest.approx((1.02, 5.0))


# ---------------------------------------------------- on the simulated pattern
@pytest.fixture(scope="module")
def laminate():
    sim = SnemLaminate(scan_shape=(4, 12), n_inclusions=0, seed=0)
    glass = sim.ground_truth()["phase"].ravel() == 1
    mean = sim.frames(0, sim.n_frames)[glass].astype(float).mean(0)
    return sim, mean, sim.expected_pattern(int(np.flatnonzero(glass)[1]))


def test_phantom_truth(laminate):
    sim, _, _ = laminate
    truth = sim.calibration["ellipse"]
    assert (truth["ratio"], truth["angle"]) == (TRUE_RATIO, 0.4)


def test_ellipse_from_noise_free_pattern(laminate):
    # Noise-free, the only errors are bilinear interpolation and the parabola's bias on a sampled peak:
    # measured 1.0194 and 23.6° (truth 1.02, 22.9°) on a ring of radius ~18.7 px.
    sim, _, ideal = laminate
    py, px = ring_points(ideal, (64.0, 63.0), 10, 28, smooth=0)
    assert py.size > 150  # a few lines through a sharper outer feature are rejected as outliers
    e = fit_ellipse(py, px)
    np.testing.assert_allclose(e.center, sim.detector.pattern_center, atol=0.01)
    assert e.ratio == pytest.approx(TRUE_RATIO, abs=0.002)
    assert e.angle_deg == pytest.approx(TRUE_ANGLE_DEG, abs=1.5)


def test_ellipse_from_mean_glass_pattern(laminate):
    # Mean of the 32 glass frames of the phantom (Poisson noise). Over seeds 0..9 the fit gave ratio 1.0194 ± 0.0018,
    # angle 21.9° ± 3.3° and centre ± 0.015 px (the ellipticity is only ±0.19 px on the ~18.7 px ring, so the
    # angle is the noisiest parameter). Tolerances are ~3σ: ratio 0.006, angle 10°, centre 0.1 px.
    sim, mean, _ = laminate
    py, px = ring_points(mean, (64.0, 63.0), 10, 28)
    e = fit_ellipse(py, px)
    np.testing.assert_allclose(e.center, sim.detector.pattern_center, atol=0.1)
    assert e.ratio == pytest.approx(TRUE_RATIO, abs=0.006)
    assert e.angle_deg == pytest.approx(TRUE_ANGLE_DEG, abs=10.0)


def test_corrected_radius_circularises_ring(laminate):
    sim, mean, ideal = laminate
    truth = Calibration(center=sim.detector.pattern_center, ellipse=(TRUE_RATIO, TRUE_ANGLE_DEG))
    rmap = corrected_radius(sim.frame_shape, truth)
    np.testing.assert_allclose(rmap, sim.detector.physical_radius(), atol=1e-12)
    # Ring maxima of the noise-free pattern: their radius spread drops from the ellipticity (±0.19 px) to ~0.
    py, px = ring_points(ideal, sim.detector.pattern_center, 10, 28, smooth=0)
    m, (cy, cx) = affine_correction(truth)
    raw = np.hypot(py - cy, px - cx)
    corr = np.hypot(*(m @ np.array([py - cy, px - cx])))
    assert raw.std() > 0.1 and corr.std() < 0.03
    # With the fitted calibration from the noisy mean the spread still shrinks well below the raw one.
    fitted = fit_ellipse(*ring_points(mean, (64.0, 63.0), 10, 28)).to_calibration()
    mf, (fy, fx) = affine_correction(fitted)
    corr_fit = np.hypot(*(mf @ np.array([py - fy, px - fx])))
    assert corr_fit.std() < 0.5 * raw.std()
    assert corrected_radius((5, 7), Calibration())[2, 3] == 0.0  # geometric centre without a center


# ----------------------------------------------------------------------- PONI
def test_poni_round_trip_with_pyfai(tmp_path):
    pyFAI = pytest.importorskip("pyFAI")
    c = Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.14, center=(63.5, 40.0))
    p = 55e-6
    path = tmp_path / "ours.poni"
    path.write_text(to_poni(c, p, (128, 128)))
    ai = pyFAI.load(str(path))
    length = camera_length_from_pixel_size(0.14, 200.0, p)
    assert ai.dist == pytest.approx(length, rel=1e-12)
    assert ai.poni1 == pytest.approx(64.0 * p, rel=1e-12)
    assert ai.poni2 == pytest.approx(40.5 * p, rel=1e-12)
    assert ai.wavelength == pytest.approx(electron_wavelength(200.0) * 1e-10, rel=1e-12)
    assert (ai.rot1, ai.rot2, ai.rot3) == (0.0, 0.0, 0.0)
    assert ai.detector.pixel1 == p and tuple(ai.detector.max_shape) == (128, 128)
    # pyFAI puts our centre where we do: pixel (63, 40) is half a pixel off it (rArray is float32, hence 1e-5).
    r = ai.rArray((128, 128)) / p
    assert r[63, 40] == pytest.approx(0.5, abs=1e-5) and r[63, 100] == pytest.approx(math.hypot(0.5, 60), abs=1e-4)
    back = from_poni(path.read_text())
    assert back["center"] == pytest.approx((63.5, 40.0), abs=1e-9)
    assert back["reciprocal_pixel_size"] == pytest.approx(0.14, rel=1e-12)
    assert back["beam_energy_kev"] == pytest.approx(200.0, rel=1e-10)


def test_from_poni_reads_pyfai_file(tmp_path):
    pyFAI = pytest.importorskip("pyFAI")
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator
    det = Detector(pixel1=75e-6, pixel2=75e-6, max_shape=(256, 200))
    ai = AzimuthalIntegrator(dist=0.3, poni1=0.0096, poni2=0.0075, detector=det,
                             wavelength=electron_wavelength(300.0) * 1e-10)
    path = tmp_path / "pyfai.poni"
    ai.write(str(path))
    got = from_poni(path.read_text())
    assert got["dist"] == pytest.approx(0.3) and got["poni1"] == pytest.approx(0.0096)
    assert got["poni2"] == pytest.approx(0.0075) and got["wavelength"] == pytest.approx(ai.wavelength)
    assert got["pixel1"] == 75e-6 and got["max_shape"] == (256, 200)
    assert got["rot1"] == got["rot2"] == got["rot3"] == 0.0
    assert got["center"] == pytest.approx((0.0096 / 75e-6 - 0.5, 0.0075 / 75e-6 - 0.5))
    assert got["beam_energy_kev"] == pytest.approx(300.0, rel=1e-10)
    assert got["reciprocal_pixel_size"] == pytest.approx(
        reciprocal_pixel_size_from_camera_length(0.3, 300.0, 75e-6), rel=1e-12)


def test_to_poni_needs_a_scale():
    with pytest.raises(ValueError):
        to_poni(Calibration(), 55e-6, (64, 64))
    text = to_poni(Calibration(camera_length_m=0.25), 55e-6, (64, 64))
    got = from_poni(text)
    assert got["dist"] == 0.25 and got["center"] == pytest.approx((31.5, 31.5))

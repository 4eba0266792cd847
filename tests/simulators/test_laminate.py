"""SNEM laminate phantom (seed 000): ground truth is what the frames carry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from emlive.simulators import physics
from emlive.simulators.detector import DetectorModel
from emlive.simulators.laminate import (NI_LATTICE, SnemLaminate, glass_density, glass_intensity, pair_fractions,
                                 sro_alpha)

DQ = 0.16  # Å⁻¹ per pixel (q = 2π/d)


@pytest.fixture(scope="module")
def sim() -> SnemLaminate:
    return SnemLaminate(scan_shape=(16, 24), detector=DetectorModel(shape=(96, 96)), reciprocal_pixel_size=DQ,
                        n_inclusions=2, inclusion_radius=2.5, n_c_classes=10, n_alpha_classes=4, seed=3)


def test_alpha_from_pair_fractions_is_the_requested_alpha(sim):
    gt = sim.ground_truth()
    xzz, xzx, xxx = gt["x_zrzr"], gt["x_zrx"], gt["x_xx"]
    np.testing.assert_allclose(xzz + xzx + xxx, 1.0, atol=1e-12)
    np.testing.assert_allclose(xzz + xzx / 2, gt["c_zr"], atol=1e-12)  # pair ends give the composition
    np.testing.assert_allclose(sro_alpha(xzz, xzx, xxx), gt["alpha"], atol=1e-12)
    assert gt["alpha"].min() < -0.05 and gt["alpha"].max() > 0.05  # α really varies
    c, a = np.meshgrid(np.linspace(0.01, 0.99, 21), np.linspace(-1, 1, 21))
    fr = pair_fractions(c, a)
    assert min(f.min() for f in fr) >= 0
    np.testing.assert_allclose(sro_alpha(*fr), a, atol=1e-12)


def test_r_max_shifts_to_larger_r_where_zr_rich(sim):
    gt = sim.ground_truth()
    glass = gt["glass_fraction"] > 0
    c, r = gt["c_zr"][glass], gt["r_max"][glass]
    assert np.all(np.isfinite(r)) and np.all(np.isnan(gt["r_max"][~glass]))
    assert np.corrcoef(c, r)[0, 1] > 0.9
    assert r[c > 0.6].mean() - r[c < 0.35].mean() > 0.3  # Zr–Zr 3.2 Å vs X–X 2.55 Å shells
    # The diffuse ring moves the other way: Q1 of the Zr-rich glass is smaller.
    q = np.linspace(1.5, 4.0, 251)
    assert q[np.argmax(glass_intensity(0.65, 0.0, q)[0])] < q[np.argmax(glass_intensity(0.3, 0.0, q)[0])] - 0.15


def test_mean_glass_pattern_matches_analytic_intensity():
    c, n_frames = 0.5, 200
    det = DetectorModel(shape=(80, 80))
    lam = SnemLaminate(scan_shape=(n_frames, 8), layers=(2, 4, 2), detector=det, reciprocal_pixel_size=DQ,
                       c_zr_center=c, c_zr_edge=c, alpha_amplitude=0.0, n_inclusions=0, interface_width=0.1, seed=5)
    col = 4  # pure glass column
    idx = np.arange(n_frames) * 8 + col
    assert np.all(lam.ground_truth()["glass_fraction"][:, col] == 1)
    total = sum(lam.frames(int(i), 1)[0].astype(float) for i in idx)
    # Analytic: dose ρ t γ² I(Q) ΔΩ per pixel, Q the undistorted radius.
    q_pix = det.physical_radius() * DQ
    iq, _ = glass_intensity(c, 0.0, q_pix.ravel())
    omega = (physics.wavelength(200.0) * DQ / (2 * math.pi)) ** 2
    model = n_frames * lam.dose * glass_density(c) * 150.0 * physics.lorentz_factor(200.0) ** 2 * omega \
        * iq.reshape(q_pix.shape)
    rbin = np.rint(q_pix / DQ).astype(int)
    for r in range(8, 38):
        ring = rbin == r
        meas, expect = total[ring].sum(), model[ring].sum()
        assert abs(meas - expect) < 5 * math.sqrt(expect) + 0.005 * expect, (r, meas, expect)


def test_ni_spots_at_fcc_g_vectors():
    lam = SnemLaminate(scan_shape=(2, 10), detector=DetectorModel(shape=(128, 128)), reciprocal_pixel_size=0.14,
                       n_inclusions=0, ni_rotation_deg=17.0, interface_width=0.1, seed=2)
    pattern = lam.expected_pattern(0)  # Ni layer
    assert lam.ground_truth()["glass_fraction"][0, 0] == 0
    cy, cx = lam.detector.pattern_center
    yy, xx = np.mgrid[0:128, 0:128]
    peaks = (pattern == ndimage.maximum_filter(pattern, size=5)) & (pattern > 0.2 * np.sort(pattern.ravel())[-200])
    peaks &= np.hypot(yy - cy, xx - cx) > 6
    allowed = sorted({h * h + k * k for h in range(0, 12, 2) for k in range(0, 12, 2)} - {0})
    g_allowed = 2 * np.pi * np.sqrt(allowed) / NI_LATTICE
    found = 0
    for py, px in zip(*np.nonzero(peaks)):
        win = pattern[py - 2:py + 3, px - 2:px + 3]
        wy, wx = np.mgrid[-2:3, -2:3]
        my, mx = py + (win * wy).sum() / win.sum(), px + (win * wx).sum() / win.sum()
        radius = math.hypot(my - cy, mx - cx)
        if radius > 58:  # spots cut by the detector edge bias the centroid
            continue
        g_px = g_allowed / 0.14
        assert np.min(np.abs(g_px - radius)) < 0.5, radius
        found += 1
    assert found >= 8  # {200} x4, {220} x4 at least
    refl = lam.ground_truth()["ni_reflections"]
    np.testing.assert_allclose(refl[:, 5], 2 * np.pi * np.linalg.norm(refl[:, :3], axis=1) / NI_LATTICE)


def test_nanocrystalline_ni_gives_rings_at_every_fcc_g():
    lam = SnemLaminate(scan_shape=(2, 10), detector=DetectorModel(shape=(128, 128), ellipse_ratio=1.0),
                       reciprocal_pixel_size=0.14, n_inclusions=0, interface_width=0.1, ni_grains="nano", seed=2)
    pattern = lam.expected_pattern(0)  # Ni layer
    cy, cx = lam.detector.pattern_center
    yy, xx = np.mgrid[0:128, 0:128]
    radius = np.hypot(yy - cy, xx - cx)
    prof = ndimage.mean(pattern, np.round(radius).astype(int), index=np.arange(1, 61))
    prof = np.concatenate([[np.nan], prof])
    # fcc: h, k, l all even or all odd -> h²+k²+l² = 3, 4, 8, 11, 12, 16, 19, 20 below the detector edge;
    # {222} (12) and {420} (20) sit 2 px from stronger rings and merge into them
    g_px = 2 * np.pi * np.sqrt([3, 4, 8, 11, 16, 19]) / NI_LATTICE / 0.14
    maxima = [i for i in range(2, 60) if prof[i] > prof[i - 1] and prof[i] >= prof[i + 1]]
    for g in g_px:
        assert min(abs(m - g) for m in maxima) <= 1.0, (g, maxima)
    # rings are isotropic: the azimuthal spread on the {111} ring is only Poisson-free smoothness
    ring = np.abs(radius - g_px[0]) < 0.5
    assert pattern[ring].std() / pattern[ring].mean() < 0.1
    with pytest.raises(ValueError, match="ni_grains"):
        SnemLaminate(scan_shape=(2, 10), ni_grains="powdery")


def test_precession_evens_out_spot_intensities():
    det = DetectorModel(shape=(64, 64))
    powers = {}
    for prec in (0.0, 1.0):
        lam = SnemLaminate(scan_shape=(1, 5), detector=det, reciprocal_pixel_size=0.3, n_inclusions=0,
                           precession_deg=prec, thickness_nm=5.0, max_bragg_fraction=10.0)
        r = lam.ground_truth()["ni_reflections"]
        p = {tuple(np.abs(row[:3]).astype(int)): row[6] for row in r}
        powers[prec] = p[(4, 0, 0)] / p[(2, 0, 0)]
    assert powers[1.0] > 3 * powers[0.0]


def test_inclusion_spots_only_inside_mask(sim):
    gt = sim.ground_truth()
    mask = gt["inclusion_mask"]
    assert mask.any() and np.all(gt["glass_fraction"][mask] == 1)
    q1_rows = gt["inclusion_reflections"]
    q1 = q1_rows[:, 6].min()  # {111} on the first ring
    q_pix = sim.detector.physical_radius() * DQ
    annulus = np.abs(q_pix - q1) < 1.5 * DQ
    ny, nx = sim.scan_shape
    glass = gt["glass_fraction"] == 1
    for i in range(ny * nx):
        y, x = divmod(i, nx)
        if not glass[y, x]:
            continue
        ring = sim.expected_pattern(i)[annulus]
        contrast = ring.max() / ring.mean()
        if mask[y, x] and gt["inclusion_fraction"][y, x] > 0.1:
            assert contrast > 3, (y, x, contrast)
        elif not mask[y, x]:
            assert contrast < 1.3, (y, x, contrast)


def test_frames_deterministic_chunk_independent_and_saturated():
    lam = SnemLaminate(scan_shape=(3, 8), detector=DetectorModel(shape=(48, 48), gain=4, saturation=4095),
                       reciprocal_pixel_size=0.4, n_inclusions=1, inclusion_radius=1.0, seed=9)
    again = SnemLaminate(scan_shape=(3, 8), detector=DetectorModel(shape=(48, 48), gain=4, saturation=4095),
                         reciprocal_pixel_size=0.4, n_inclusions=1, inclusion_radius=1.0, seed=9)
    block = lam.frames(5, 4)
    assert block.shape == (4, 48, 48) and block.dtype == np.uint16
    np.testing.assert_array_equal(block, again.frames(5, 4))
    np.testing.assert_array_equal(lam.frames(7, 1)[0], block[2])
    chunks = np.concatenate([f for _, f in lam.iter_chunks(5)])
    np.testing.assert_array_equal(chunks, lam.frames(0, lam.n_frames))
    other = SnemLaminate(scan_shape=(3, 8), detector=DetectorModel(shape=(48, 48)), reciprocal_pixel_size=0.4,
                         n_inclusions=1, inclusion_radius=1.0, seed=10)
    assert not np.array_equal(other.frames(5, 4), block)
    cy, cx = (int(round(v)) for v in lam.detector.pattern_center)
    assert block[:, cy - 1:cy + 2, cx - 1:cx + 2].max() == 4095  # the direct beam saturates
    cal, sample = lam.calibration, lam.sample
    assert cal["reciprocal_pixel_size"] == 0.4 and cal["beam_energy_kev"] == 200.0 and "ellipse" in cal
    assert sample["layers"][1] == "Zr65Cu17.5Ni10Al7.5"
    with pytest.raises(ValueError, match="outside the scan"):
        lam.frames(20, 5)
    with pytest.raises(ValueError, match="layers"):
        SnemLaminate(scan_shape=(2, 8), layers=(2, 2, 2))

"""EDS line intensities on the EDSParticle phantom: exact recovery without noise, unbiased with Poisson noise."""

import time

import numpy as np
import pytest
from scipy import special

from emlive.analyzers.eds_lines import LineWindows, gaussian_window_fraction, normalise_tilt_series
from emlive.simulators import EDSParticle

LINES = [("Ag", "La"), ("Au", "Ma")]
MODES = ["side-windows", "linear", "power-law"]


@pytest.fixture(scope="module")
def particle():
    return EDSParticle(shape=32, voxel_nm=2.0, tilt_angles_deg=[-50, 0, 30], seed=7)


def _truth(particle, tilt):
    return particle.expected_line_counts(tilt).reshape(2, -1).T  # (positions, lines)


@pytest.mark.parametrize("mode", MODES)
def test_noise_free_intensities_equal_expected_line_counts(particle, mode):
    lw = LineWindows(particle.energy_axis, LINES, background=mode, fwhm_kev=particle.fwhm_kev)
    spectra = particle.spectra(1, 0, particle.n_positions, noise=False)
    got = lw.intensities(spectra)
    exp = _truth(particle, 1)
    inside = exp.min(axis=1) > 0.1 * exp.max()
    assert inside.sum() > 100
    np.testing.assert_allclose(got[inside], exp[inside], rtol=0.01)
    # Outside the particle there is neither line nor background.
    np.testing.assert_allclose(got[exp.max(axis=1) == 0], 0.0, atol=1e-6)


def test_uncorrected_window_keeps_the_gaussian_fraction(particle):
    # ±0.6 FWHM of a Gaussian holds erf(0.6 * 2.3548 / sqrt 2) = 84.2 % (whole channels move it by a few %).
    assert gaussian_window_fraction(1.2) == pytest.approx(special.erf(0.6 * 2.3548200450309493 / np.sqrt(2)))
    assert gaussian_window_fraction(1.2) == pytest.approx(0.8423, abs=1e-4)
    lw = LineWindows(particle.energy_axis, LINES, fwhm_kev=particle.fwhm_kev, correct=False)
    spectra = particle.spectra(1, 0, particle.n_positions, noise=False)
    exp = _truth(particle, 1)
    inside = exp.min(axis=1) > 0.1 * exp.max()
    ratio = lw.intensities(spectra)[inside] / exp[inside]
    np.testing.assert_allclose(ratio, gaussian_window_fraction(1.2), atol=0.04)


def test_three_background_modes_agree(particle):
    spectra = particle.spectra(2, 0, particle.n_positions, noise=False)
    exp = _truth(particle, 2)
    inside = exp.min(axis=1) > 0.1 * exp.max()
    res = [LineWindows(particle.energy_axis, LINES, background=m).intensities(spectra)[inside] for m in MODES]
    for r in res[1:]:
        np.testing.assert_allclose(r, res[0], rtol=0.01)


@pytest.mark.parametrize("mode", ["side-windows", "linear"])
def test_poisson_noise_is_unbiased(particle, mode):
    lw = LineWindows(particle.energy_axis, LINES, background=mode)
    total, var, truth = np.zeros(2), np.zeros(2), np.zeros(2)
    for t in range(3):
        mean = particle.spectra(t, 0, particle.n_positions, noise=False).astype(float)
        noisy = particle.spectra(t, 0, particle.n_positions)
        total += lw.intensities(noisy).sum(axis=0)
        truth += lw.intensities(mean).sum(axis=0)
        var += (mean @ lw.matrix ** 2).sum(axis=0)  # Poisson: var = sum_k M_k^2 mean_k
    z = (total - truth) / np.sqrt(var)
    assert np.all(np.abs(z) < 4), z


def test_power_law_with_noise_is_unbiased_to_a_percent(particle):
    lw = LineWindows(particle.energy_axis, LINES, background="power-law")
    got, exp = np.zeros(2), np.zeros(2)
    for t in range(3):
        got += lw.intensities(particle.spectra(t, 0, particle.n_positions)).sum(axis=0)
        exp += _truth(particle, t).sum(axis=0)
    np.testing.assert_allclose(got, exp, rtol=0.02)


def test_power_law_background_is_removed_exactly():
    e = (np.arange(2048) + 0.5) * 0.01
    spectra = np.stack([1e4 * e ** -1.3, 5e3 * e ** -2.0])
    lw = LineWindows(e, LINES, background="power-law")
    np.testing.assert_allclose(lw.intensities(spectra), 0.0, atol=1e-6 * spectra.max())
    # A straight line is removed exactly by the linear modes.
    lines = np.stack([100.0 - 3.0 * e, 50 + 0 * e])
    for mode in ("side-windows", "linear"):
        np.testing.assert_allclose(LineWindows(e, LINES, background=mode).intensities(lines), 0.0, atol=1e-9)


def test_axis_forms_maps_and_errors(particle):
    n = particle.n_channels
    a = LineWindows(particle.energy_axis, LINES)
    b = LineWindows((0.5 * particle.channel_kev, particle.channel_kev, n), LINES)
    np.testing.assert_allclose(a.matrix, b.matrix)
    spectra = particle.spectra(0, 0, particle.n_positions)
    maps = a.maps(spectra, particle.scan_shape)
    assert set(maps) == {"Ag_La", "Au_Ma"} and maps["Ag_La"].shape == particle.scan_shape
    np.testing.assert_allclose(maps["Au_Ma"].ravel(), a.intensities(spectra)[:, 1])
    with pytest.raises(ValueError, match="background"):
        LineWindows(particle.energy_axis, LINES, background="spline")
    with pytest.raises(ValueError, match="no channel"):
        LineWindows((0.0, 0.01, 100), [("Zn", "Ka")])
    with pytest.raises(ValueError, match="channels"):
        a.intensities(np.zeros((2, n - 1)))
    with pytest.raises(ValueError, match="not linear"):
        _ = LineWindows(particle.energy_axis, LINES, background="power-law").matrix


def test_normalise_tilt_series_undoes_per_tilt_scaling(particle):
    truth = particle.ground_truth()["line_counts"][:, 0]  # Ag, (tilts, ny, nx): mass is conserved
    shadow = np.array([0.6, 1.0, 0.8])
    out = normalise_tilt_series(truth * shadow[:, None, None])
    sums = out.reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(sums, sums.mean())
    per_tilt = truth.reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(out / sums[:, None, None], truth / per_tilt[:, None, None], rtol=1e-12)
    fixed = normalise_tilt_series(np.stack([np.ones((2, 2)), np.zeros((2, 2))]), total=8.0)
    np.testing.assert_allclose(fixed[0], 2.0)
    np.testing.assert_allclose(fixed[1], 0.0)


@pytest.mark.parametrize("mode", MODES)
def test_speed_report(particle, mode, capsys):
    lw = LineWindows(particle.energy_axis, LINES, background=mode)
    chunk = np.tile(particle.spectra(1, 0, particle.n_positions), (4, 1))  # 4096 uint16 spectra
    t0 = time.perf_counter()
    lw.intensities(chunk)
    dt = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n{mode}: {chunk.shape[0] / dt:,.0f} spectra/s ({chunk.shape[1]} channels)")

"""Tests of emlive.simulators.eds_particle against analytic chord lengths and the seed's thin-film model."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import erf

from emlive.simulators import eds_particle
from emlive.simulators.eds_particle import EDSParticle

AG, AU = 107.8682, 196.96657  # g/mol, independent of xraylib


@pytest.fixture(scope="module")
def sim():
    return EDSParticle(shape=32, voxel_nm=2.0, tilt_angles_deg=[-60.0, 0.0, 35.0], r_outer_nm=25.0,
                       r_core_nm=12.0, core_offset_nm=(-3.0, 2.0, 5.0), seed=3)


def naive_projection(sim, angle_deg):
    """Chord lengths through the particle and its core, written out per pixel."""
    ny, nx = sim.scan_shape
    gt = sim.ground_truth()
    oz, oy, ox = gt["core_center_nm"]
    th = np.deg2rad(angle_deg)
    out = np.zeros((2, ny, nx))
    for i in range(ny):
        for j in range(nx):
            y, x = (i - (ny - 1) / 2) * sim.pixel_nm, (j - (nx - 1) / 2) * sim.pixel_nm
            l_out = 2 * np.sqrt(max(gt["r_outer_nm"] ** 2 - x * x - y * y, 0.0))
            cx = ox * np.cos(th) + oz * np.sin(th)
            l_core = 2 * np.sqrt(max(gt["r_core_nm"] ** 2 - (x - cx) ** 2 - (y - oy) ** 2, 0.0))
            out[:, i, j] = gt["shell_number_density"] * (l_out - l_core) + gt["core_number_density"] * l_core
    return out


@pytest.mark.parametrize("tilt", [0, 1, 2])
def test_sinogram_equals_analytic_chord_projection(sim, tilt):
    sino = sim.sinograms()
    ref = naive_projection(sim, sim.tilt_angles_deg[tilt])
    np.testing.assert_allclose(sino["Ag"][tilt], ref[0], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(sino["Au"][tilt], ref[1], rtol=1e-12, atol=1e-9)


def test_zero_tilt_sinogram_matches_summed_voxel_volume(sim):
    gt = sim.ground_truth()
    for el in ("Ag", "Au"):
        summed = gt[f"n_{el}"].sum(axis=0) * sim.voxel_nm
        sino = gt[f"sinogram_{el}"][1]
        # Same total amount (voxelisation error ~0.5 %), and close pixel by pixel away from edges.
        assert summed.sum() == pytest.approx(sino.sum(), rel=0.01)
        assert np.abs(summed - sino).mean() < 0.02 * sino.max()


def test_number_densities_follow_the_mixing_rule(sim):
    gt = sim.ground_truth()
    for wt, n in ((gt["core_wt"], gt["core_number_density"]), (gt["shell_wt"], gt["shell_number_density"])):
        rho = 1 / (wt[0] / 10.5 + wt[1] / 19.32)
        np.testing.assert_allclose(n, rho * wt / [AG, AU] * 6.02214076e23 / 1e21, rtol=1e-3)
    np.testing.assert_allclose(gt["core_wt"], [0.2, 0.8])
    np.testing.assert_allclose(gt["shell_wt"], [0.8, 0.2])


def test_line_counts_are_poisson_around_projected_amount(sim):
    gt = sim.ground_truth()
    edges = np.arange(sim.n_channels + 1) * sim.channel_kev
    spectra = sim.spectra(0, 0, sim.n_positions).astype(float)
    mean = sim.spectra(0, 0, sim.n_positions, noise=False).astype(float)
    no_brems = EDSParticle(shape=32, voxel_nm=2.0, tilt_angles_deg=[-60.0, 0.0, 35.0],
                           core_offset_nm=(-3.0, 2.0, 5.0), brems_barn_per_amu=0.0)
    background = mean - no_brems.spectra(0, 0, sim.n_positions, noise=False)
    # Independent reference: seed eq. 4, counts = dose * Omega/4pi * sigma_ion * omega * p * N.
    k = np.array([2.44e3 * 0.057 * 0.816, 7.46e3 * 0.030 * 0.999]) * 1e-10
    expected = sim.dose * sim.solid_angle_sr / (4 * np.pi) * k[:, None] * np.stack(
        [gt["sinogram_Ag"][0].ravel(), gt["sinogram_Au"][0].ravel()])
    for a, e_line in enumerate(gt["line_energies_kev"]):
        w = slice(int((e_line - 0.15) / sim.channel_kev), int((e_line + 0.15) / sim.channel_kev))
        # Fraction of each line's Gaussian that falls in this window (the other line's tail overlaps).
        frac = [0.5 * (erf((edges[w.stop] - e) / (np.sqrt(2) * sim.fwhm_kev(e) / 2.3548))
                       - erf((edges[w.start] - e) / (np.sqrt(2) * sim.fwhm_kev(e) / 2.3548)))
                for e in gt["line_energies_kev"]]
        observed = spectra[:, w].sum(1)
        net = (observed - background[:, w].sum(1) - frac[1 - a] * expected[1 - a]) / frac[a]
        inside = expected[a] > 20
        z = (net[inside] - expected[a][inside]) / (np.sqrt(mean[inside][:, w].sum(1)) / frac[a])
        assert abs(z.mean()) < 0.15 and 0.85 < z.std() < 1.15


def test_mean_spectrum_is_the_sum_of_lines_and_background(sim):
    gt = sim.ground_truth()
    mean = sim.spectra(2, 0, sim.n_positions, noise=False).astype(float)
    brems = EDSParticle(shape=32, voxel_nm=2.0, tilt_angles_deg=[-60.0, 0.0, 35.0], core_offset_nm=(-3.0, 2.0, 5.0),
                        brems_barn_per_amu=0.0).spectra(2, 0, sim.n_positions, noise=False).astype(float)
    np.testing.assert_allclose(brems.sum(1), gt["line_counts"][2].sum(0).ravel(), rtol=1e-4, atol=1e-4)
    assert (mean >= brems - 1e-4).all()
    mass = gt["projected_mass"][2].ravel()
    background = (mean - brems).sum(1)
    inside = mass > 0
    ratio = background[inside] / mass[inside]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # background proportional to projected mass


def test_peaks_sit_at_the_line_energies(sim):
    e = sim.energy_axis
    assert e.size >= 1024 and np.allclose(np.diff(e), 0.01)
    ny, nx = sim.scan_shape
    mean = sim.spectra(1, (ny // 2) * nx + nx // 2, 1, noise=False)[0]
    for e_line in (2.984, 2.1216):
        w = np.abs(e - e_line) < 0.3
        peak = e[w][np.argmax(mean[w])]
        assert abs(peak - e_line) <= 0.01
    fwhm = sim.fwhm_kev([5.8987, 2.984])
    assert fwhm[0] == pytest.approx(0.130) and 0.08 < fwhm[1] < 0.105


def test_noise_free_line_ratios_recover_core_and_shell_compositions(sim):
    gt = sim.ground_truth()
    lc = gt["line_counts"][1].reshape(2, -1)
    k = gt["line_cross_sections_nm2"]
    atoms = lc / k[:, None]
    ny, nx = sim.scan_shape
    y = (np.arange(ny) - (ny - 1) / 2)[:, None] * sim.pixel_nm
    x = (np.arange(nx) - (nx - 1) / 2)[None, :] * sim.pixel_nm
    oz, oy, ox = gt["core_center_nm"]
    d_core = np.hypot(y - oy, x - ox).ravel()
    d_out = np.hypot(y, x).ravel()
    # Shell only: probes that miss the core's projection; Cliff–Lorimer with k ∝ 1/sigma.
    shell = (d_core > gt["r_core_nm"] + 1) & (d_out < gt["r_outer_nm"] - 1)
    wt = atoms[:, shell].sum(1) * [AG, AU]
    np.testing.assert_allclose(wt / wt.sum(), [0.8, 0.2], atol=1e-6)
    # Core: remove the shell's share along each chord through the core (geometry from the radii).
    centre = np.argmin(d_core)
    l_out = 2 * np.sqrt(gt["r_outer_nm"] ** 2 - d_out[centre] ** 2)
    l_core = 2 * np.sqrt(gt["r_core_nm"] ** 2 - d_core[centre] ** 2)
    shell_n = atoms[:, shell][:, 0] / (2 * np.sqrt(gt["r_outer_nm"] ** 2 - d_out[shell][0] ** 2))
    core_atoms = atoms[:, centre] - shell_n * (l_out - l_core)
    wt = core_atoms * [AG, AU]
    np.testing.assert_allclose(wt / wt.sum(), [0.2, 0.8], atol=1e-6)


def test_haadf_follows_the_seed_model(sim):
    gt = sim.ground_truth()
    sigma = np.array([9.90e6, 1.98e7]) * 1e-10  # seed Table 2, barn -> nm^2
    model = sim.dose * sim.haadf_collection * (sigma[0] * gt["sinogram_Ag"][2] + sigma[1] * gt["sinogram_Au"][2])
    np.testing.assert_allclose(sim.haadf(2, noise=False), model, rtol=1e-12)
    noisy = sim.haadf(2)
    inside = model > 0
    z = (noisy[inside] - model[inside]) / np.sqrt(model[inside])
    assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.2
    gamma = EDSParticle(shape=8, voxel_nm=8.0, tilt_angles_deg=[0.0], haadf_exponent=1.7)
    assert gamma.haadf_weights_nm2[1] / gamma.haadf_weights_nm2[0] == pytest.approx((79 / 47) ** 1.7)


def test_spectra_are_deterministic_and_independent_of_chunking(sim):
    block = sim.spectra(1, 500, 20)
    np.testing.assert_array_equal(block, sim.spectra(1, 500, 20))
    np.testing.assert_array_equal(block[7], sim.spectra(1, 507, 1)[0])
    again = EDSParticle(shape=32, voxel_nm=2.0, tilt_angles_deg=[-60.0, 0.0, 35.0], r_outer_nm=25.0,
                        r_core_nm=12.0, core_offset_nm=(-3.0, 2.0, 5.0), seed=3)
    np.testing.assert_array_equal(block, again.spectra(1, 500, 20))
    np.testing.assert_array_equal(sim.haadf(0), again.haadf(0))
    assert not np.array_equal(block, sim.spectra(2, 500, 20))
    other = EDSParticle(shape=32, voxel_nm=2.0, tilt_angles_deg=[-60.0, 0.0, 35.0], core_offset_nm=(-3.0, 2.0, 5.0),
                        seed=4)
    assert not np.array_equal(block, other.spectra(1, 500, 20))


def test_bad_arguments_say_what_was_expected(sim):
    with pytest.raises(ValueError, match="tilt_index"):
        sim.spectra(3, 0, 1)
    with pytest.raises(ValueError, match="outside the raster"):
        sim.spectra(0, sim.n_positions - 1, 2)
    with pytest.raises(ValueError, match="inside the particle"):
        EDSParticle(r_outer_nm=10, r_core_nm=8, core_offset_nm=(0, 0, 5))
    with pytest.raises(ValueError, match="core_wt"):
        EDSParticle(core_wt=(0.5, 0.6))


def test_imports_nothing_else_of_emlive():
    code = ("import sys, emlive.simulators.eds_particle; print(sorted(m for m in sys.modules "
            "if m.startswith('emlive.') and not m.startswith('emlive.simulators')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_docstring_example_runs():
    assert doctest.testmod(eds_particle).failed == 0
